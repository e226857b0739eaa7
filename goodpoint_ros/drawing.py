"""Pictures for people: keypoints, matches and tracks drawn with OpenCV (no ROS)."""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any image -> uint8 for display: floats are [0, 1], other integers 16-bit."""
    if image.dtype == np.uint8:
        return image
    return np.clip(image * (255.0 if image.dtype.kind == "f" else 1.0 / 256), 0, 255).astype(np.uint8)


def id_colours(ids: np.ndarray, code: int = cv2.COLOR_HSV2RGB) -> np.ndarray:
    """One saturated colour per track id (Nx3 uint8, RGB or with ``code`` BGR): a hash of the id
    picks the hue, so neighbouring ids get distant colours and an id keeps its colour."""
    hue = (np.asarray(ids).astype(np.uint64) * 2654435761 % 180).astype(np.uint8)
    return cv2.cvtColor(np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 255)], 1)[None], code)[0]


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any gray/RGB image -> BGR uint8 for OpenCV drawing."""
    image = to_uint8(image)
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


def draw_debug(
    image: np.ndarray, kpts: np.ndarray, ids: np.ndarray, pts0: np.ndarray, pts1: np.ndarray, inliers: np.ndarray
) -> np.ndarray:
    """RGB uint8 picture (the node's ``~/debug_image``): keypoints coloured by track id, inlier
    motion vectors green, outliers red."""
    image = to_uint8(image)
    canvas = np.ascontiguousarray(np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]).copy()
    h, w = canvas.shape[:2]
    if len(pts0):
        segs = np.round(np.stack([pts0, pts1], 1)).astype(np.int32)
        cv2.polylines(canvas, list(segs[~inliers]), False, (255, 0, 0), 1)
        cv2.polylines(canvas, list(segs[inliers]), False, (0, 255, 0), 1)
    xy = np.round(kpts).astype(np.int64)
    colours = id_colours(ids)
    for dx in (-1, 0, 1):  # 3x3 dots by fancy indexing: no per-keypoint loop
        for dy in (-1, 0, 1):
            x, y = np.clip(xy[:, 0] + dx, 0, w - 1), np.clip(xy[:, 1] + dy, 0, h - 1)
            canvas[y, x] = colours
    return canvas
