"""Pictures for people: keypoints, matches and tracks drawn with OpenCV (no ROS)."""

from __future__ import annotations

import cv2
import numpy as np


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any uint8 gray/RGB image -> BGR uint8 for OpenCV drawing."""
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.dtype.kind == "f" else 1.0 / 256), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)


def draw_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches: np.ndarray,
    inliers: np.ndarray | None = None,
) -> np.ndarray:
    """Side-by-side picture: inlier matches in green, outliers in red, keypoints as dots."""
    a, b = to_bgr(image0), to_bgr(image1)
    h = max(a.shape[0], b.shape[0])
    canvas = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    off = np.array([a.shape[1], 0], np.float32)
    for p in kpts0.astype(int):
        cv2.circle(canvas, (int(p[0]), int(p[1])), 1, (255, 200, 0), -1)
    for p in (kpts1 + off).astype(int):
        cv2.circle(canvas, (int(p[0]), int(p[1])), 1, (255, 200, 0), -1)
    if inliers is None:
        inliers = np.ones(len(matches), bool)
    p0 = kpts0[matches[:, 0]].astype(int)
    p1 = (kpts1[matches[:, 1]] + off).astype(int)
    for ok in (False, True):  # outliers first so inliers stay on top
        sel = inliers == ok
        lines = np.concatenate([p0[sel], p1[sel]], 1).reshape(-1, 2, 2)
        cv2.polylines(canvas, list(lines), False, (0, 220, 0) if ok else (0, 0, 255), 1, cv2.LINE_AA)
    return canvas
