"""Keypoint metrics for one image pair related by a known homography (the metrics of the GoodPoint and MD-Net papers).

Names and definitions:
- repeatability (SuperPoint / GoodPoint 5.3): keypoints of each image whose projection falls in
  the other image's shared area; a point repeats when a keypoint of the other image lies within
  ``epsilon`` px of its projection. (repeated0 + repeated1) / (shared0 + shared1).
- mma@Tpx, matching accuracy / precision (D2-Net, MD-Net VI.A): fraction of mutual-nearest-
  neighbour matches whose reprojection error ||H x0 - x1|| is at most T px; all matches count.
- matching_score: correct matches (at ``epsilon``) / mean number of shared keypoints.
- coverage (Irschara et al. 2009, GoodPoint 5.3 with r = 25 px): fraction of the shared-area
  pixels that lie within r px of a correctly matched keypoint, mean of both images.
- harmonic_mean (GoodPoint 5.3): 3 / (1/precision + 1/repeatability + 1/coverage), precision =
  mma@epsilon; 0 when any of the three is 0.
- corner_error and homography_accuracy@Tpx: H estimated from the matches (``verify``, USAC), mean
  distance of the four image corners mapped by the estimate vs the truth, correct below T px.
- sep@Npx (MD-Net V.C): 1 - (keypoints with a keypoint of another detector set within N px) /
  keypoints; NaN for single-set detectors. Mean of both images.

Everything runs batched in torch (distances) and OpenCV (distance transform), no loops over
keypoints. ``H`` maps image-0 pixels (x, y) to image-1 pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from goodpoint_ros.vo.geometry import corner_error, inside, verify, warp_points
from goodpoint_ros.vo.matching import match_features

__all__ = [
    "evaluate_pair", "coverage_fraction", "separability", "shared_mask", "harmonic_mean", "summarize",
    "paired_bootstrap",
]  # fmt: skip


def _np(x: Any, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _torch_feats(f: dict) -> dict[str, torch.Tensor]:
    """Feature dict (numpy or torch) -> CPU tensors, so metrics do not depend on the device."""
    out = {}
    for k in ("keypoints", "descriptors", "scores"):
        if k in f:
            out[k] = torch.as_tensor(_np(f[k], np.float32))
    n = out["keypoints"].shape[0]
    det = f.get("detector")
    out["detector"] = torch.zeros(n, dtype=torch.uint8) if det is None else torch.as_tensor(_np(det, np.uint8))
    out["keypoints"] = out["keypoints"].reshape(-1, 2)
    return out


def _in_valid(points: np.ndarray, shape: tuple[int, int], valid: np.ndarray | None) -> np.ndarray:
    """Points inside an image of ``shape`` (and on a True pixel of ``valid`` when given)."""
    ok = inside(points, shape[0], shape[1])
    if valid is not None and ok.any():
        v = _np(valid, bool).reshape(shape)
        xi = np.clip(np.round(points[:, 0]).astype(int), 0, shape[1] - 1)
        yi = np.clip(np.round(points[:, 1]).astype(int), 0, shape[0] - 1)
        ok &= v[yi, xi]
    return ok


def shared_mask(
    H: np.ndarray,
    shape: tuple[int, int],
    other_shape: tuple[int, int],
    valid: np.ndarray | None = None,
    other_valid: np.ndarray | None = None,
) -> np.ndarray:
    """HxW bool: pixels of an image of ``shape`` whose projection by ``H`` lands in the other image."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    m = _in_valid(warp_points(pts, H), other_shape, other_valid).reshape(h, w)
    if valid is not None:
        m &= _np(valid, bool).reshape(h, w)
    return m


def coverage_fraction(points: np.ndarray, area: np.ndarray, radius: float) -> float:
    """Fraction of True pixels of ``area`` (HxW) within ``radius`` px of any of ``points`` (Nx2).

    Points are rasterised to their nearest pixel (<= 0.71 px error) and an exact Euclidean
    distance transform gives every pixel's distance to the nearest point.
    """
    total = int(area.sum())
    if total == 0:
        return 0.0
    h, w = area.shape
    pts = np.round(_np(points).reshape(-1, 2)).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] < w) & (pts[:, 1] < h)]
    if len(pts) == 0:
        return 0.0
    seeds = np.full((h, w), 255, np.uint8)
    seeds[pts[:, 1], pts[:, 0]] = 0
    dist = cv2.distanceTransform(seeds, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return float(((dist <= radius) & area).sum() / total)


def separability(keypoints: np.ndarray | torch.Tensor, detector: np.ndarray | torch.Tensor, pixels: float) -> float:
    """MD-Net Sep@n px for one image: 1 - share of keypoints that have a keypoint of a different
    detector set closer than ``pixels``. NaN with fewer than two sets."""
    k = torch.as_tensor(_np(keypoints, np.float32)).reshape(-1, 2)
    d = torch.as_tensor(_np(detector, np.int64)).reshape(-1)
    if k.shape[0] == 0 or int(d.unique().numel()) < 2:
        return math.nan
    dist = torch.cdist(k, k)
    dist[d[:, None] == d[None, :]] = math.inf  # same set (and self) never counts
    close = (dist.min(1).values < pixels).float().mean()
    return float(1.0 - close)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (or negative), NaN when any is NaN."""
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return math.nan
    if any(v <= 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def _nearest(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from every row of ``a`` (Nx2) to its nearest row of ``b`` (Mx2); inf if M = 0."""
    if a.shape[0] == 0:
        return torch.empty(0, dtype=a.dtype)
    if b.shape[0] == 0:
        return torch.full((a.shape[0],), math.inf, dtype=a.dtype)
    return torch.cdist(a, b).min(1).values


def _matched(
    f0: dict, f1: dict, per_set: bool, matches: np.ndarray | torch.Tensor | None, repeat: int
) -> tuple[np.ndarray, float]:
    """Mx2 match indices (ours, or the external ``matches``) and the fastest of ``repeat`` timed
    runs of our matcher in ms (0 for external matches)."""
    if matches is not None:
        return torch.as_tensor(_np(matches, np.int64)).reshape(-1, 2).cpu().numpy(), 0.0
    times = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        m, _ = match_features(f0, f1, per_set=per_set)
        times.append(time.perf_counter() - t)
    return m.cpu().numpy(), min(times) * 1e3


def _homography_metrics(
    p0: np.ndarray,
    p1: np.ndarray,
    H: np.ndarray,
    shape0: tuple[int, int],
    thresholds: Sequence[float],
    verify_threshold: float,
) -> dict[str, float]:
    """Corner error of the homography RANSAC fits to the matched points, its inliers, and the
    homography accuracy at each threshold."""
    H_est, inliers = verify(p0, p1, "homography", verify_threshold) if len(p0) else (None, [])
    err_c = corner_error(H_est, H, shape0[0], shape0[1])
    out = {"corner_error": err_c, "num_inliers": float(np.sum(inliers))}
    for thr in thresholds:
        out[f"homography_accuracy@{thr:g}px"] = float(err_c <= thr)
    return out


def evaluate_pair(
    feats0: dict,
    feats1: dict,
    H: np.ndarray | torch.Tensor,
    shape0: tuple[int, int],
    shape1: tuple[int, int],
    thresholds: Sequence[float] = (1, 3, 5),
    coverage_radius: float = 25,
    per_set: bool = False,
    epsilon: float = 3.0,
    sep_px: float = 3.0,
    valid0: np.ndarray | None = None,
    valid1: np.ndarray | None = None,
    matches: np.ndarray | torch.Tensor | None = None,
    verify_threshold: float = 3.0,
    match_repeat: int = 1,
) -> dict[str, float]:
    """All metrics of one pair; see the module docstring for the definitions.

    ``feats*``: dicts with ``keypoints`` Kx2 (x, y), ``descriptors`` KxD (L2-normalised), optional
    ``detector`` K (MD-Net sets), numpy or torch. ``shape*`` = (height, width). ``per_set``: match
    only within detector sets (MD-Net); otherwise full mutual nearest neighbours. ``valid*``:
    optional HxW masks of pixels that hold image content (generated pairs with black borders).
    ``matches``: Mx2 indices from an external matcher, used instead of matching here.
    ``match_repeat``: the matcher runs this many times and ``match_time_ms`` is the fastest run
    (a one-off millisecond timing on a shared CPU is mostly scheduling noise).
    """
    shape0 = (int(shape0[0]), int(shape0[1]))
    shape1 = (int(shape1[0]), int(shape1[1]))
    H = _np(H).reshape(3, 3)
    Hinv = np.linalg.inv(H)
    f0, f1 = _torch_feats(feats0), _torch_feats(feats1)
    k0 = f0["keypoints"].double().numpy()
    k1 = f1["keypoints"].double().numpy()
    w0 = warp_points(k0, H)  # image-0 keypoints seen in image 1
    w1 = warp_points(k1, Hinv)  # image-1 keypoints seen in image 0
    s0 = _in_valid(w0, shape1, valid1) & _in_valid(k0, shape0, valid0)
    s1 = _in_valid(w1, shape0, valid0) & _in_valid(k1, shape1, valid1)
    out: dict[str, float] = {
        "num_keypoints0": float(len(k0)),
        "num_keypoints1": float(len(k1)),
        "num_shared0": float(s0.sum()),
        "num_shared1": float(s1.sum()),
    }

    # Repeatability: both directions, shared keypoints only.
    d01 = _nearest(torch.from_numpy(w0[s0]), torch.from_numpy(k1[s1]))
    d10 = _nearest(torch.from_numpy(w1[s1]), torch.from_numpy(k0[s0]))
    n_shared = int(s0.sum() + s1.sum())
    out["repeatability"] = float(((d01 <= epsilon).sum() + (d10 <= epsilon).sum()) / n_shared) if n_shared else 0.0

    # Matching.
    m, out["match_time_ms"] = _matched(f0, f1, per_set, matches, match_repeat)
    out["num_matches"] = float(len(m))
    err = np.linalg.norm(w0[m[:, 0]] - k1[m[:, 1]], axis=1) if len(m) else np.zeros(0)
    for thr in thresholds:
        out[f"mma@{thr:g}px"] = float((err <= thr).mean()) if len(m) else 0.0
    correct = err <= epsilon
    precision = float(correct.mean()) if len(m) else 0.0
    out["precision"] = precision
    out["num_correct"] = float(correct.sum())
    mean_shared = 0.5 * n_shared
    out["matching_score"] = float(correct.sum() / mean_shared) if mean_shared else 0.0

    # Coverage of the shared area by correctly matched keypoints, both images.
    area0 = shared_mask(H, shape0, shape1, valid0, valid1)
    area1 = shared_mask(Hinv, shape1, shape0, valid1, valid0)
    c0 = coverage_fraction(k0[m[correct, 0]] if len(m) else np.zeros((0, 2)), area0, coverage_radius)
    c1 = coverage_fraction(k1[m[correct, 1]] if len(m) else np.zeros((0, 2)), area1, coverage_radius)
    out["coverage"] = 0.5 * (c0 + c1)
    out["harmonic_mean"] = harmonic_mean([precision, out["repeatability"], out["coverage"]])

    # Homography estimation from the matches.
    out.update(_homography_metrics(k0[m[:, 0]], k1[m[:, 1]], H, shape0, thresholds, verify_threshold))

    # MD-Net separability (NaN for single-set detectors).
    seps = [separability(f["keypoints"], f["detector"], sep_px) for f in (f0, f1)]
    out[f"sep@{sep_px:g}px"] = math.nan if any(math.isnan(s) for s in seps) else 0.5 * (seps[0] + seps[1])
    return out


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over pairs (NaN-aware; corner_error as a median: it can be inf;
    homography_accuracy@T is then the share of pairs whose corner error is below T)."""
    if not rows:
        return {}
    keys = list(rows[0])
    out = {}
    for k in keys:
        v = np.array([r.get(k, math.nan) for r in rows], dtype=np.float64)
        if k == "corner_error":
            out["corner_error_median"] = float(np.median(v))
        elif np.all(np.isnan(v)):
            out[k] = math.nan
        else:
            out[k] = float(np.nanmean(v))
    # GoodPoint 5.3 reports the harmonic mean of the dataset-level metrics, not a mean of
    # per-pair harmonic means.
    if {"precision", "repeatability", "coverage"} <= out.keys():
        out["harmonic_mean"] = harmonic_mean([out["precision"], out["repeatability"], out["coverage"]])
    # The product's acceptance figure (issue 12): repeatability, MMA and homography accuracy at
    # 3 px, the three things a front end must get right (coverage alone rewards spreading out).
    if {"repeatability", "mma@3px", "homography_accuracy@3px"} <= out.keys():
        out["hm_rep_mma_hacc@3px"] = harmonic_mean(
            [out["repeatability"], out["mma@3px"], out["homography_accuracy@3px"]]
        )
    out["num_pairs"] = float(len(rows))
    return out


def paired_bootstrap(
    rows_a: Sequence[dict[str, float]],
    rows_b: Sequence[dict[str, float]],
    key: str = "hm_rep_mma_hacc@3px",
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``summarize(rows_a)[key] - summarize(rows_b)[key]`` and its 95 % interval over the pairs
    drawn again with replacement, the same draw for both methods (they ran on the same pairs):
    whether a gap between two methods is larger than what the choice of pairs moves."""
    if len(rows_a) != len(rows_b) or not rows_a:
        raise ValueError("paired_bootstrap needs the same, non-empty list of pairs for both methods")
    rng = np.random.default_rng(seed)
    n = len(rows_a)
    diffs = []
    for _ in range(draws):  # a loop over draws; each summarises n pairs
        idx = rng.integers(0, n, n)
        diffs.append(summarize([rows_a[i] for i in idx])[key] - summarize([rows_b[i] for i in idx])[key])
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return summarize(rows_a)[key] - summarize(rows_b)[key], float(lo), float(hi)
