"""Probe: re-localise the coarse pyramid levels' keypoints on a finer level's heatmap.

The per-level table of ``pyramid_merge/levels.py`` shows MMA@1 falling with the level's scale
(0.77 at the input scale, 0.53 at 0.5, 0.38 at 0.35) while MMA@3 stays above 0.86: the coarse
levels find the right corner but place it on a grid 2-3 px wide in the original image. This
probe replaces ``features.extract_batch`` with a copy that keeps every level's heatmap and, before
``merge_scales``, moves each point of a level below ``MIN_SCALE`` (descriptor unchanged) by the
sub-pixel step (``features.refine_keypoints``) on a finer level's heatmap:

- ``VARIANT=none``: nothing moves (the shipped path, reproduced).
- ``VARIANT=input``: one step on the input-scale (1.0) heatmap.
- ``VARIANT=cascade``: one step on each finer level in turn, down to the input scale.
- ``VARIANT=next``: one step on the next finer level only.
- ``VARIANT=own``: the level's own step, with a window of ``RADIUS`` instead of the shipped 2.

``RADIUS`` (default 2) is the window at the finer level; ``MAX_SHIFT`` (coarse-level pixels,
default inf) undoes a move longer than that. Same flags as ``goodpoint-eval``:

    VARIANT=cascade .venv/bin/python docs/experiments/subpixel/coarse_to_fine.py --photos data/photos_v2/train \
        --pairs 24 --seed 7 --size 640x480 --threads 1 --methods goodpoint_small,pyramid_min_size=160,pyramid_levels_up=1
"""

import os
import sys

import torch
from goodpoint_ros.training import evaluate

from goodpoint_ros.models import features

VARIANT = os.environ.get("VARIANT", "cascade")
RADIUS = int(os.environ.get("RADIUS", "2"))
MAX_SHIFT = float(os.environ.get("MAX_SHIFT", "inf"))
MIN_SCALE = float(os.environ.get("MIN_SCALE", "1.0"))


def relocalise(points: torch.Tensor, det: torch.Tensor, heat: torch.Tensor, shape, full_shape) -> torch.Tensor:
    """``points`` Kx2 in original pixels of one detector map set ``heat`` NxHxW (a level of
    ``shape`` HxW padded, the original padded ``full_shape``): the sub-pixel step there, back."""
    q = features.rescale_keypoints(points, full_shape, shape)
    out = q.clone()
    for d in range(heat.shape[0]):
        mine = det == d
        if mine.any():
            k = q[mine].round()[None, None]
            out[mine] = features.refine_keypoints(heat[d][None, None], k, RADIUS)[0, 0]
    return features.rescale_keypoints(out, shape, full_shape)


def extract_batch(model, images, precision="fp32"):
    batch, sizes = features.pad_to_multiple(images, model.pad_to)
    scales = model.pyramid_scales(int(sizes[:, 0].min()), int(sizes[:, 1].min()))
    if len(scales) == 1:
        return model.detect(features.run_network(model, batch, precision), sizes)
    per_scale, heats = [], []
    for s in scales:
        sb, ss = features.pyramid_level(batch, sizes, s, model.pad_to)
        dense = features.run_network(model, sb, precision)
        heats.append(dense[model.heatmap_key])
        shipped = model.conf["subpixel_radius"]
        if VARIANT == "own" and s < MIN_SCALE:
            model.conf["subpixel_radius"] = RADIUS
        feats = model.detect(dense, ss, budget_scale=1.0)
        model.conf["subpixel_radius"] = shipped
        if s != 1.0:
            for f in feats:
                f["keypoints"] = features.rescale_keypoints(f["keypoints"], sb.shape[-2:], batch.shape[-2:])
        per_scale.append(feats)
    full = batch.shape[-2:]
    base = scales.index(1.0)
    for i, s in enumerate(scales):
        if s >= MIN_SCALE or VARIANT in ("none", "own"):
            continue
        targets = {"input": [base], "next": [i - 1], "cascade": list(range(i - 1, base - 1, -1))}[VARIANT]
        for b, f in enumerate(per_scale[i]):
            start = f["keypoints"]
            k = start
            for j in targets:
                k = relocalise(k, f["detector"], heats[j][b], heats[j].shape[-2:], full)
            far = (k - start).norm(dim=1) > MAX_SHIFT / s
            f["keypoints"] = torch.where(far[:, None], start, k)
    return [model.merge_scales([p[i] for p in per_scale], int(sizes[i].prod()), scales) for i in range(len(sizes))]


if __name__ == "__main__":
    features.extract_batch = extract_batch
    import goodpoint_ros.backends.torch_backend as tb

    tb.extract_batch = extract_batch
    sys.exit(evaluate.main(sys.argv[1:]))
