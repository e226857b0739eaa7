"""Probe: ``goodpoint-eval`` with each pyramid level's share of the budget and repeatability.

Tags every level's keypoints before ``merge_scales`` (level 0 = the largest scale) and reports,
per level, how many of image 0's kept points come from it, how many of those repeat in image 1
(within 3 px, counted as ``goodpoint-eval`` counts repeatability), their median score, and the
MNN matches they make with MMA@1 / MMA@3 (where 1-px precision is lost). Same flags as
``goodpoint-eval``:

    .venv/bin/python docs/experiments/pyramid_merge/levels.py --photos data/photos_v2/train --pairs 24 \
        --seed 7 --size 640x480 --threads 1 --methods goodpoint_small,pyramid_min_size=160,pyramid_levels_up=1 \
        --output-dir out/levels
"""

import json
import sys

import numpy as np
import torch
from goodpoint_ros.training import evaluate, metrics

from goodpoint_ros.models import features
from goodpoint_ros.models.base import BaseModel

LEVELS = 8
features.FEATURE_KEYS = (*features.FEATURE_KEYS, "level")  # carried through to the numpy features
merge_scales, evaluate_pair = BaseModel.merge_scales, metrics.evaluate_pair


def tagged_merge(self, feats, area, scales):
    feats = [{**f, "level": torch.full_like(f["scores"], i, dtype=torch.int64)} for i, f in enumerate(feats)]
    return merge_scales(self, feats, area, scales)


def per_level(feats0, feats1, H, shape0, shape1, **kw) -> dict:
    out = evaluate_pair(feats0, feats1, H, shape0, shape1, **kw)
    if "level" not in feats0:
        return out
    H = metrics._np(H).reshape(3, 3)
    k0, k1 = (np.asarray(f["keypoints"], dtype=np.float64) for f in (feats0, feats1))
    w0, w1 = metrics.warp_points(k0, H), metrics.warp_points(k1, np.linalg.inv(H))
    v0, v1 = kw.get("valid0"), kw.get("valid1")
    s0 = metrics._in_valid(w0, shape1, v1) & metrics._in_valid(k0, shape0, v0)
    s1 = metrics._in_valid(w1, shape0, v0) & metrics._in_valid(k1, shape1, v1)
    d = metrics._nearest(torch.from_numpy(w0), torch.from_numpy(k1[s1])).numpy()
    level, scores = np.asarray(feats0["level"]), np.asarray(feats0["scores"])
    m, _ = metrics.match_features(metrics._torch_feats(feats0), metrics._torch_feats(feats1))
    m = m.cpu().numpy()
    err = np.linalg.norm(w0[m[:, 0]] - k1[m[:, 1]], axis=1)
    for i in range(LEVELS):
        mine = level == i
        ours = mine[m[:, 0]]
        out[f"level{i}_matches"] = float(ours.sum())
        out[f"level{i}_mma1"] = float((err[ours] <= 1).mean()) if ours.any() else float("nan")
        out[f"level{i}_mma3"] = float((err[ours] <= 3).mean()) if ours.any() else float("nan")
        out[f"level{i}_points"] = float(mine.sum())
        out[f"level{i}_rep"] = float((d[mine & s0] <= 3).mean()) if (mine & s0).any() else float("nan")
        out[f"level{i}_score"] = float(np.median(scores[mine])) if mine.any() else float("nan")
    return out


if __name__ == "__main__":
    BaseModel.merge_scales = tagged_merge
    metrics.evaluate_pair = evaluate.evaluate_pair = per_level
    rc = evaluate.main(sys.argv[1:])
    out = sys.argv[sys.argv.index("--output-dir") + 1] if "--output-dir" in sys.argv else "out/eval"
    for name, s in json.load(open(f"{out}/results.json"))["methods"].items():
        print(name)
        for i in range(LEVELS):
            if s.get(f"level{i}_points"):
                print(f"  level {i}: {s[f'level{i}_points']:.0f} points, repeatability "
                      f"{s[f'level{i}_rep']:.3f}, median score {s[f'level{i}_score']:.3f}, "
                      f"{s[f'level{i}_matches']:.0f} matches, MMA@1 {s[f'level{i}_mma1']:.3f}, "
                      f"MMA@3 {s[f'level{i}_mma3']:.3f}")  # fmt: skip
    sys.exit(rc)
