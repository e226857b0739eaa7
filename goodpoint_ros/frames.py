"""Frame-to-frame matching with geometric verification (ROS-free), run by ``pipeline.FramePipeline``;
defaults are the node's parameters (``params.TABLE``)."""

from __future__ import annotations

import numpy as np

from goodpoint_ros.geometry import verify
from goodpoint_ros.matching import match_features
from goodpoint_ros.params import TABLE


def match_frames(
    f0: dict,
    f1: dict,
    k0: np.ndarray,
    k1: np.ndarray,
    ratio: float = TABLE["match_ratio"].default,
    max_distance: float = TABLE["match_max_distance"].default,
    method: str = TABLE["verification_method"].default,
    threshold: float = TABLE["verification_threshold"].default,
    K: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match two frames' features (tensors ``f0``, ``f1``; numpy keypoints ``k0``, ``k1``).

    Returns matches Mx2 int64, descriptor distances M float32 and the inlier mask M bool.
    ``ratio >= 1`` and ``max_distance <= 0`` disable those tests; ``method='none'`` (or
    ``essential`` without intrinsics) marks every match an inlier.
    """
    m, d = match_features(
        f0, f1, ratio=ratio if ratio < 1.0 else None, max_distance=max_distance if max_distance > 0 else None
    )
    m = m.cpu().numpy().astype(np.int64).reshape(-1, 2)
    d = d.float().cpu().numpy()
    if method == "none" or (method == "essential" and K is None):
        return m, d, np.ones(len(m), bool)
    _, inl = verify(k0[m[:, 0]], k1[m[:, 1]], method, threshold, K=K)
    return m, d, inl
