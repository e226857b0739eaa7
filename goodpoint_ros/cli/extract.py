"""``goodpoint-extract IMAGE... -o OUT.npz``: keypoints and descriptors of image files, ROS-free.

``python -m goodpoint_ros.cli.extract`` runs it where the console script is not installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from goodpoint_ros.cli.common import add_front_end_args, build_front_end, run
from goodpoint_ros.io.image_files import read_image
from goodpoint_ros.models.features import to_numpy


def _extract(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="goodpoint-extract", description="Extract keypoints and descriptors to .npz")
    add_front_end_args(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--output", "-o", required=True, help="output .npz")
    args = p.parse_args(argv)
    images = [read_image(path, args.max_pixels) for path in args.images]  # fail before loading the model
    ex = build_front_end(args)
    arrays = {}
    for i, image in enumerate(images):
        f = to_numpy(ex.extract(image))
        for key in ("keypoints", "scores", "descriptors", "detector"):
            arrays[f"{key}_{i}"] = f[key]
        print(f"{args.images[i]}: {len(f['keypoints'])} keypoints")
    np.savez(args.output, **arrays)
    print(f"wrote {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_extract, argv)


if __name__ == "__main__":
    sys.exit(main())
