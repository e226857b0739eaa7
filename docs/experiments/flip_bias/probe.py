"""Constant keypoint offset of a detector, by the flip test.

    SIZE=640x480 .venv/bin/python docs/experiments/flip_bias/probe.py goodpoint_small|mdnet_small|sift|orb

A detector whose positions are p_true + d on every image reports, on the mirrored image mapped
back, p_true - d: the mean difference between the two (points paired within 1.5 px) is 2d.
Training photos only (the first 12 of data/photos_v2/train), grey, resized to SIZE.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.models import MODELS


def main() -> None:
    torch.set_num_threads(1)
    name = sys.argv[1] if len(sys.argv) > 1 else "goodpoint_small"
    ex = make_extractor(model=name, precision="fp32") if name in MODELS else make_extractor(model=name)
    w, h = (int(v) for v in os.environ.get("SIZE", "640x480").split("x"))
    files = sorted(Path("data/photos_v2/train").glob("*.jpg"))[:12]
    diffs: dict[str, list[np.ndarray]] = {"horizontal": [], "vertical": []}
    for f in files:
        im = cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (w, h), interpolation=cv2.INTER_AREA)
        a = ex.extract_numpy(im)["keypoints"]
        for axis in diffs:
            flipped = np.ascontiguousarray(im[:, ::-1] if axis == "horizontal" else im[::-1, :])
            b = ex.extract_numpy(flipped)["keypoints"].copy()
            if axis == "horizontal":
                b[:, 0] = w - 1 - b[:, 0]
            else:
                b[:, 1] = h - 1 - b[:, 1]
            d = np.linalg.norm(a[:, None] - b[None], axis=-1)
            j = d.argmin(1)
            ok = d[np.arange(len(a)), j] < 1.5
            diffs[axis].append(a[ok] - b[j[ok]])
    for axis, parts in diffs.items():
        r = np.concatenate(parts)
        print(f"{name} {axis} flip: {len(r)} pairs, offset d = mean/2 {r.mean(0) / 2}, median/2 {np.median(r, 0) / 2}")


if __name__ == "__main__":
    main()
