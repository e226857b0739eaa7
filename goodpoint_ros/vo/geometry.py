"""Homographies, point warping and geometric verification (OpenCV RANSAC/USAC wrappers)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def warp_points(points: np.ndarray | torch.Tensor, H: np.ndarray | torch.Tensor):
    """Apply a 3x3 homography to Nx2 (x, y) points (numpy or torch, same type out)."""
    if isinstance(points, torch.Tensor):
        Ht = torch.as_tensor(H, dtype=points.dtype, device=points.device)
        p = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ Ht.transpose(-1, -2)
        return p[..., :2] / _safe(p[..., 2:])
    p = np.concatenate([points, np.ones_like(points[..., :1])], -1) @ np.asarray(H, dtype=np.float64).T
    z = p[..., 2:]
    z = np.where(np.abs(z) < 1e-12, 1e-12, z)
    return (p[..., :2] / z).astype(points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64)


def _safe(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)


def inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mask of points that fall inside an image of the given size (pixel centres are integers)."""
    x, y = points[:, 0], points[:, 1]
    return (x >= -0.5) & (y >= -0.5) & (x <= width - 0.5) & (y <= height - 0.5)


def same_aspect(size_a: tuple[int, int], size_b: tuple[int, int], tolerance: float = 0.01) -> bool:
    """Whether two (width, height) sizes have the same aspect ratio within ``tolerance``: one image
    may then be scaled onto the other (a camera_info or depth image at another resolution)."""
    (wa, ha), (wb, hb) = size_a, size_b
    return abs((wa / wb) / (ha / hb) - 1.0) <= tolerance


def warp_image(image: np.ndarray, H: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp ``image`` by ``H`` into an image of ``size`` = (width, height)."""
    return cv2.warpPerspective(image, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


METHODS = ("homography", "fundamental", "essential")


def verify(
    pts0: np.ndarray,
    pts1: np.ndarray,
    method: str = "homography",
    threshold: float = 3.0,
    K: np.ndarray | None = None,
    confidence: float = 0.999,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Robustly fit a model to matched Nx2 points; returns (matrix or None, inlier mask N bool).

    ``essential`` needs the 3x3 intrinsics ``K``; ``threshold`` is in pixels for all methods.
    Uses USAC_MAGSAC where OpenCV has it, RANSAC otherwise.
    """
    n = len(pts0)
    none = (None, np.zeros(n, dtype=bool))
    if method not in METHODS:
        raise ValueError(f"unknown verification method '{method}' (use one of {METHODS})")
    need = {"homography": 4, "fundamental": 8, "essential": 5}[method]
    if n < need:
        return none
    p0 = np.ascontiguousarray(pts0, dtype=np.float64).reshape(-1, 1, 2)
    p1 = np.ascontiguousarray(pts1, dtype=np.float64).reshape(-1, 1, 2)
    flag = getattr(cv2, "USAC_MAGSAC", cv2.RANSAC)
    try:
        if method == "homography":
            M, mask = cv2.findHomography(p0, p1, flag, threshold, confidence=confidence, maxIters=2000)
        elif method == "fundamental":
            M, mask = cv2.findFundamentalMat(p0, p1, flag, threshold, confidence, 2000)
        else:
            if K is None:
                raise ValueError("essential-matrix verification needs the intrinsics K")
            M, mask = cv2.findEssentialMat(p0, p1, np.asarray(K, dtype=np.float64), flag, confidence, threshold)
    except cv2.error:
        return none
    if M is None or mask is None:
        return none
    if M.shape[0] > 3:  # several solutions: keep the first
        M = M[:3]
    return M, mask.ravel().astype(bool)


def corner_error(H_est: np.ndarray | None, H_true: np.ndarray, height: int, width: int) -> float:
    """Mean distance of the image corners mapped by the estimated vs the true homography."""
    if H_est is None:
        return float("inf")
    c = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    return float(np.linalg.norm(warp_points(c, H_est) - warp_points(c, H_true), axis=1).mean())
