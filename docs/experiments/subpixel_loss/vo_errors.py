"""Probe: how far each MNN match of the rendered room lands from where the ground truth puts it,
split by the score rank of its weaker point (the filled budget's points rank last).

    .venv/bin/python docs/experiments/subpixel_loss/vo_errors.py goodpoint_small orb \
        goodpoint_small:runs/gps_dense_sub/model.pt,min_keypoints_per_mpx=4000

The first 40 frames of ``bench/vo.py``'s room at 320x240 with the same sensor noise (sigma 2, seed
0); the error is the distance between the match in frame i+1 and frame i's keypoint carried there
by its true depth and the true relative pose (pixels where the room has no depth are skipped).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from synthetic import render_sequence  # noqa: E402
from vo import feature_fn, match, noisy  # noqa: E402

BINS = ((0, 100), (100, 200), (200, 400), (400, 1000))


def rank(scores: np.ndarray) -> np.ndarray:
    """0 for the best-scored point, 1 for the next, ..."""
    return np.argsort(np.argsort(-scores))


def true_errors(seq, feats: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth error (px) and weaker-point rank of every match between consecutive frames."""
    errs, ranks = [], []
    K, Kinv = seq.K, np.linalg.inv(seq.K)
    h, w = seq.frames[0].depth.shape
    for i in range(len(feats) - 1):
        f0, f1 = feats[i], feats[i + 1]
        m = match(f0, f1, None)
        kp0, kp1 = f0["keypoints"][m[:, 0]], f1["keypoints"][m[:, 1]]
        u = np.clip(np.round(kp0[:, 0]).astype(int), 0, w - 1)
        v = np.clip(np.round(kp0[:, 1]).astype(int), 0, h - 1)
        z = seq.frames[i].depth[v, u]
        X = Kinv @ np.c_[kp0, np.ones(len(kp0))].T * z
        T = np.linalg.inv(seq.frames[i + 1].pose) @ seq.frames[i].pose
        p = K @ (T[:3, :3] @ X + T[:3, 3:])
        e = np.linalg.norm((p[:2] / p[2]).T - kp1, axis=1)
        r = np.maximum(rank(f0["scores"])[m[:, 0]], rank(f1["scores"])[m[:, 1]])
        errs.append(e[z > 0])
        ranks.append(r[z > 0])
    return np.concatenate(errs), np.concatenate(ranks)


def main() -> None:
    torch.set_num_threads(1)
    seq = render_sequence(40, 320, 240)
    rng = np.random.default_rng(0)
    frames = [noisy(f.rgb, 2.0, rng) for f in seq.frames]
    print("| features | score rank | matches | median error (px) | < 1 px | < 2 px | > 5 px |")
    print("|---|---|---|---|---|---|---|")
    for spec in sys.argv[1:]:
        fn = feature_fn(spec, "cpu", 1000)
        e, r = true_errors(seq, [fn(im) for im in frames])
        for lo, hi in BINS:
            s = (r >= lo) & (r < hi)
            if s.any():
                print(f"| {spec} | {lo}-{hi} | {s.sum()} | {np.median(e[s]):.2f} | {np.mean(e[s] < 1):.2f} | "
                      f"{np.mean(e[s] < 2):.2f} | {np.mean(e[s] > 5):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
