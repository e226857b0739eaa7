"""How much a stride-8 detector's keypoints stick to its 8x8 cell grid, on held-out pairs.

    .venv/bin/python bench/grid_snap.py [--weights PATH] [--subpixel-radius 0]

GoodPoint's head scores the 64 pixels of each 8x8 cell with one softmax. A model that has not
learned sub-cell positions puts its peaks on cell borders (x mod 8 in {7, 0}); an equivariant
detector spreads them evenly (2/8 = 25 % on those two columns). Prints that fraction, the
histogram of x mod 8, and the median reprojection error of the mutual-nearest-neighbour matches
within 6 px, on the same generated pairs as ``goodpoint-eval``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from goodpoint_ros.training.evaluate import homography_pairs, photo_sources  # noqa: E402

from goodpoint_ros.backends import make_extractor  # noqa: E402
from goodpoint_ros.vo.geometry import warp_points  # noqa: E402
from goodpoint_ros.vo.matching import match_mnn  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="goodpoint_small")
    p.add_argument("--weights", default="default")
    p.add_argument("--photos", default="data/photos/heldout")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--max-side", type=int, default=320)
    p.add_argument("--subpixel-radius", type=int, default=0, help="0: the integer heatmap peaks")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ex = make_extractor(model=args.model, weights=args.weights)
    ex.set_detection(max_keypoints=1000, subpixel_radius=args.subpixel_radius)
    cols, errors = [], []
    for pair in homography_pairs(photo_sources(Path(args.photos)), args.pairs, 0, args.max_side):
        f0, f1 = ex.extract(pair.image0), ex.extract(pair.image1)
        m, _ = match_mnn(f0["descriptors"], f1["descriptors"])
        k0, k1 = f0["keypoints"].double(), f1["keypoints"].double()
        err = (warp_points(k0, torch.as_tensor(pair.H, dtype=torch.float64))[m[:, 0]] - k1[m[:, 1]]).norm(dim=1)
        errors.append(err[err < 6].numpy())
        cols.append(np.floor(k0[:, 0].numpy()).astype(int) % 8)
    hist = np.bincount(np.concatenate(cols), minlength=8)
    on_border = (hist[0] + hist[7]) / hist.sum()
    print(f"{args.model} ({args.weights}), subpixel_radius {args.subpixel_radius}, {args.pairs} pairs")
    print(f"x mod 8 histogram: {hist.tolist()}; on cell borders (7, 0): {on_border:.0%} (uniform: 25%)")
    print(f"median reprojection error of MNN matches within 6 px: {np.median(np.concatenate(errors)):.2f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
