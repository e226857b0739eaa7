"""Periodic validation during training on held-out homography pairs.

Goes through the shipped pipeline (``extract_batch``) and the evaluation module's metric
definitions (``training.metrics.evaluate_pair``: repeatability, MMA, matching score, coverage,
their harmonic mean, homography accuracy), so the numbers logged while training are the ones
``goodpoint-eval`` reports. ``score`` (used to pick ``best_model.pt``) is the harmonic mean of
precision, repeatability and coverage (GoodPoint 5.3).
"""

from __future__ import annotations

import torch

from goodpoint_ros.models.features import extract_batch

from .metrics import evaluate_pair, summarize

LOGGED = ("repeatability", "mma@1px", "mma@3px", "matching_score", "coverage", "harmonic_mean", "num_matches")


@torch.inference_mode()
def validate(model, pairs: list[dict], conf: dict) -> dict[str, float]:
    """Mean metrics over ``pairs`` (items of ``PairDataset``); leaves the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    old = {k: model.conf[k] for k in ("max_keypoints", "detection_threshold", "min_keypoints_per_mpx")}
    # the threshold alone (the paper's detection), whatever the run-time default, so that a run's
    # validation history stays comparable across releases
    model.set_detection(max_keypoints=int(conf.get("max_keypoints", 500)), min_keypoints_per_mpx=0)
    if conf.get("detection_threshold") is not None:  # e.g. MD-Net before its detector is trained
        model.set_detection(detection_threshold=float(conf["detection_threshold"]))
    per_set = int(model.conf.get("num_detectors", 1)) > 1
    thr = float(conf.get("threshold_px", 3.0))
    rows = []
    try:
        for p in pairs:
            f0, f1 = extract_batch(model, [p["image0"].to(device), p["image1"].to(device)])
            shape = tuple(p["image0"].shape[-2:])
            rows.append(
                evaluate_pair(
                    f0,
                    f1,
                    p["H"].double().numpy(),
                    shape,
                    shape,
                    per_set=per_set,
                    epsilon=thr,
                    valid0=p["mask0"][0].bool().numpy(),
                    valid1=p["mask1"][0].bool().numpy(),
                )
            )
    finally:
        model.set_detection(**old)
    means = summarize(rows)
    out = {k: float(means[k]) for k in LOGGED if k in means}
    out["score"] = float(means.get("harmonic_mean", 0.0))
    return out
