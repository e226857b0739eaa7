"""Sub-pixel refinement probe: goodpoint-eval with ``features.refine_keypoints`` replaced.

    SEED=0 METHOD=goodpoint_small .venv/bin/python docs/experiments/subpixel/probe.py VARIANT [PHOTOS]

VARIANT: before (the plain score-weighted mean), sq, floor, floor_sq (what ships now), para.
Training photos only (default ``data/photos_v2/train``): never tune on the held-out set.
"""

from __future__ import annotations

import os
import sys

import torch

import goodpoint_ros.models.features as feat


def window(scores: torch.Tensor, keypoints: torch.Tensor, radius: int):
    """Scores of the (2r+1)^2 window around each keypoint (0 outside the map) and the offsets."""
    vals, inside, offsets = feat.window_scores(scores, keypoints, radius)
    return torch.where(inside, vals.clamp_min(0), torch.zeros_like(vals)), offsets.float()


def weighted_mean(keypoints: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    total = weights.sum(-1, keepdim=True)
    shift = (weights[..., None] * offsets).sum(-2) / total.clamp_min(1e-12)
    return keypoints + torch.where(total > 0, shift, torch.zeros_like(shift))


def variant(name: str):
    def refine(scores: torch.Tensor, keypoints: torch.Tensor, radius: int) -> torch.Tensor:
        if radius <= 0:
            return keypoints
        if name == "para":  # 1-D parabolas through the log scores of the 3x3 window
            v, _ = window(scores, keypoints, 1)
            logs = torch.log(v.clamp_min(1e-6))
            c = logs[..., 4]

            def fit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                den = a - 2 * c + b
                return torch.where(den < -1e-6, 0.5 * (a - b) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)

            return keypoints + torch.stack([fit(logs[..., 3], logs[..., 5]), fit(logs[..., 1], logs[..., 7])], -1)
        v, off = window(scores, keypoints, radius)
        if name in ("floor", "floor_sq"):
            v = (v - v.amin(-1, keepdim=True)).clamp_min(0)
        if name in ("sq", "floor_sq"):
            v = v**2
        return weighted_mean(keypoints, v, off)

    return refine


if __name__ == "__main__":
    from goodpoint_ros.training.evaluate import main

    name = sys.argv[1]
    feat.refine_keypoints = variant(name)
    photos = sys.argv[2] if len(sys.argv) > 2 else "data/photos_v2/train"
    seed = os.environ.get("SEED", "0")
    method = os.environ.get("METHOD", "goodpoint_small")
    sys.exit(
        main(
            [
                "--photos",
                photos,
                "--pairs",
                "50",
                "--seed",
                seed,
                "--size",
                "640x480",
                "--threads",
                "1",
                "--methods",
                method,
                "--output-dir",
                f"runs/subpixel_{method}_{name}_seed{seed}",
            ]
        )  # fmt: skip
    )
