"""``goodpoint-match [A B]``: extract and match two images and draw the matches, ROS-free.

Without images it matches a real stereo pair shipped offline. The front end and the matching
take the node's parameters as flags (``settings``), so a result here carries over to the node.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2

from goodpoint_ros.cli.common import add_front_end_args, build_front_end, run
from goodpoint_ros.io.drawing import draw_matches
from goodpoint_ros.io.image_files import read_image, sample_pair
from goodpoint_ros.models.features import to_numpy
from goodpoint_ros.settings import MATCH_KEYS, add_arguments, match_settings, params_from_args
from goodpoint_ros.vo.geometry import verify
from goodpoint_ros.vo.matching import match_features


def _match(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="goodpoint-match",
        description="Extract and match two images; without images, uses a real stereo pair shipped offline.",
    )
    add_front_end_args(p)
    p.add_argument("images", nargs="*", help="two image files (default: the bundled motorcycle stereo pair)")
    p.add_argument("--output", "-o", default="matches.png", help="picture of the matches")
    # The node's matching parameters and defaults, except the geometric model: two photos of a 3-D
    # scene from different places fit a fundamental matrix; a homography (the node's default, for
    # consecutive frames of one camera) fits only a plane or a pure rotation.
    add_arguments(
        p,
        MATCH_KEYS,
        defaults={"verification_method": "fundamental"},
        aliases={
            "match_ratio": ["--ratio"],
            "verification_method": ["--verify"],
            "verification_threshold": ["--ransac-threshold"],
        },
    )
    args = p.parse_args(argv)
    if len(args.images) not in (0, 2):
        p.error("give two images, or none for the bundled pair")
    im0, im1 = (read_image(x, args.max_pixels) for x in args.images) if args.images else sample_pair()
    t0 = time.perf_counter()
    ex = build_front_end(args)
    t_load = time.perf_counter() - t0
    ex.extract(im0)  # warm-up: first call pays allocation and kernel selection
    t0 = time.perf_counter()
    f0, f1 = ex.extract(im0), ex.extract(im1)
    t_extract = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    ms = match_settings(params_from_args(args, MATCH_KEYS))
    matches, _ = match_features(
        f0, f1, ratio=ms.ratio if ms.ratio < 1 else None, max_distance=ms.max_distance if ms.max_distance > 0 else None
    )
    t_match = time.perf_counter() - t0
    n0, n1 = to_numpy(f0), to_numpy(f1)
    m = matches.cpu().numpy()
    t0 = time.perf_counter()
    _, inliers = verify(n0["keypoints"][m[:, 0]], n1["keypoints"][m[:, 1]], ms.method, ms.threshold)
    t_verify = time.perf_counter() - t0
    print(f"model        {ex.name} ({args.weights}) on {ex.device}, {getattr(ex, 'precision', 'fp32')}")
    print(f"keypoints    {len(n0['keypoints'])} / {len(n1['keypoints'])}")
    print(f"matches      {len(m)}")
    print(f"inliers      {int(inliers.sum())} ({inliers.mean() * 100 if len(m) else 0:.1f}%, {ms.method})")
    print(f"time         load {t_load * 1e3:.0f} ms | extract {t_extract * 1e3:.1f} ms/image | "
          f"match {t_match * 1e3:.1f} ms | verify {t_verify * 1e3:.1f} ms")  # fmt: skip
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), draw_matches(im0, im1, n0["keypoints"], n1["keypoints"], m, inliers))
    print(f"wrote        {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_match, argv)


if __name__ == "__main__":
    sys.exit(main())
