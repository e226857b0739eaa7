"""Probe: ``goodpoint-eval`` with repeatability counted over distinct positions.

Each image's keypoints (best score first) lose any point within 2 px of a better one before
repeatability is computed; matching, MMA and the homography use every point as before. A corner
kept on several pyramid levels (or at several SIFT orientations) then counts once. Same flags as
``goodpoint-eval``:

    .venv/bin/python docs/experiments/pyramid_merge/distinct.py --photos data/photos_v2/heldout \
        --pairs 50 --size 640x480 --threads 1 --methods goodpoint_small goodpoint_small,pyramid_min_size=160 sift akaze
"""

import sys

import numpy as np
import torch
from goodpoint_ros.training import evaluate, metrics

full_evaluate_pair = metrics.evaluate_pair


def distinct(feats: dict, pixels: float = 2.0) -> np.ndarray:
    """The keypoints (sorted best first) without those within ``pixels`` of a better one."""
    k = torch.as_tensor(np.asarray(feats["keypoints"]), dtype=torch.float64)
    earlier = torch.arange(len(k))[None, :] < torch.arange(len(k))[:, None]
    return k[~((torch.cdist(k, k) <= pixels) & earlier).any(1)].numpy()


def evaluate_pair(feats0, feats1, H, shape0, shape1, **kw) -> dict:
    out = full_evaluate_pair(feats0, feats1, H, shape0, shape1, **kw)
    H = metrics._np(H).reshape(3, 3)
    k0, k1 = distinct(feats0), distinct(feats1)
    w0, w1 = metrics.warp_points(k0, H), metrics.warp_points(k1, np.linalg.inv(H))
    v0, v1 = kw.get("valid0"), kw.get("valid1")
    s0 = metrics._in_valid(w0, shape1, v1) & metrics._in_valid(k0, shape0, v0)
    s1 = metrics._in_valid(w1, shape0, v0) & metrics._in_valid(k1, shape1, v1)
    d01 = metrics._nearest(torch.from_numpy(w0[s0]), torch.from_numpy(k1[s1]))
    d10 = metrics._nearest(torch.from_numpy(w1[s1]), torch.from_numpy(k0[s0]))
    shared = int(s0.sum() + s1.sum())
    out["repeatability"] = float(((d01 <= 3).sum() + (d10 <= 3).sum()) / shared) if shared else 0.0
    return out


if __name__ == "__main__":
    metrics.evaluate_pair = evaluate.evaluate_pair = evaluate_pair
    sys.exit(evaluate.main(sys.argv[1:]))
