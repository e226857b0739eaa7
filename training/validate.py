"""Periodic validation during training: repeatability and MMA on held-out homography pairs.

Goes through the shipped pipeline (``extract_batch`` + ``match_features``), so the number tracks
what the node will do. ``score`` is the harmonic mean of repeatability and MMA (GoodPoint 5.3).
When ``training/metrics.py`` (the evaluation module) provides ``evaluate_pair``, the
repeatability/MMA definitions there are used instead of the simple ones below.
"""

from __future__ import annotations

import torch

from goodpoint_ros.features import extract_batch
from goodpoint_ros.geometry import warp_points
from goodpoint_ros.matching import match_features


def _valid(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    h, w = mask.shape[-2:]
    xi, yi = points[:, 0].round().long(), points[:, 1].round().long()
    ok = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
    return ok & mask.view(h, w).bool()[yi.clamp(0, h - 1), xi.clamp(0, w - 1)]


def pair_metrics(f0: dict, f1: dict, H: torch.Tensor, mask0, mask1, threshold: float) -> dict[str, float]:
    """Repeatability (both directions, points seen by both views) and MMA at ``threshold`` px."""
    k0, k1 = f0["keypoints"].float(), f1["keypoints"].float()
    Hinv = torch.linalg.inv(H.double()).float()
    w0 = warp_points(k0, H)
    w1 = warp_points(k1, Hinv)
    s0, s1 = _valid(w0, mask1), _valid(w1, mask0)  # points whose other view sees them
    rep = 0.0
    if s0.any() and s1.any():
        d = torch.cdist(w0[s0], k1[s1])
        rep = float(((d.min(1).values < threshold).sum() + (d.min(0).values < threshold).sum()) / (s0.sum() + s1.sum()))
    matches, _ = match_features(f0, f1)
    mma = 0.0
    if len(matches):
        err = (w0[matches[:, 0]] - k1[matches[:, 1]]).norm(dim=-1)
        mma = float((err < threshold).float().mean())
    return {"repeatability": rep, "mma": mma, "matches": float(len(matches))}


@torch.inference_mode()
def validate(model, pairs: list[dict], conf: dict) -> dict[str, float]:
    """Mean metrics over ``pairs`` (items of ``PairDataset``); leaves the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    old = model.conf["max_keypoints"]
    model.set_detection(max_keypoints=int(conf.get("max_keypoints", 500)))
    thr = float(conf.get("threshold_px", 3.0))
    totals: dict[str, float] = {}
    try:
        for p in pairs:
            f0, f1 = extract_batch(model, [p["image0"].to(device), p["image1"].to(device)])
            m = pair_metrics(f0, f1, p["H"].to(device), p["mask0"].to(device), p["mask1"].to(device), thr)
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v
    finally:
        model.set_detection(max_keypoints=old)
    out = {k: v / max(len(pairs), 1) for k, v in totals.items()}
    r, a = out.get("repeatability", 0.0), out.get("mma", 0.0)
    out["score"] = 2 * r * a / (r + a) if r + a > 0 else 0.0
    return out
