"""ROS-free command-line tools: ``goodpoint-extract`` and ``goodpoint-match``.

Errors (unreadable image, image above ``--max-pixels``, bad weights, unknown model) print one
line on stderr and exit with status 2 (argparse's usage errors use 2 as well).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from goodpoint_ros.backends import FRONT_ENDS, make_extractor
from goodpoint_ros.backends.classical import CLASSICAL
from goodpoint_ros.device import PRECISIONS
from goodpoint_ros.io.drawing import draw_matches
from goodpoint_ros.io.image_codec import DEFAULT_MAX_PIXELS
from goodpoint_ros.io.image_files import ImageReadError, read_image, sample_pair
from goodpoint_ros.models import DEFAULT_MODEL, MODELS
from goodpoint_ros.models.checkpoint import CheckpointError
from goodpoint_ros.models.features import to_numpy
from goodpoint_ros.vo.geometry import METHODS, verify
from goodpoint_ros.vo.matching import match_features


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        choices=FRONT_ENDS,
        help=f"a learned model ({', '.join(MODELS)}) or an OpenCV front end ({', '.join(CLASSICAL)}; no weights)",
    )
    p.add_argument("--weights", default="default", help="'default' (shipped), 'random', a shipped name or a path")
    p.add_argument("--max-keypoints", type=int, default=None, help="keypoint budget per image")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--backend", default="torch", help="inference backend (torch, onnxruntime)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="network precision: auto (bf16 on CPUs with AVX-512 BF16/AMX in torch, fp16 on CUDA, else "
        "fp32), fp32, bf16, fp16, int8 (onnxruntime backend)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images whose header declares more pixels, before decoding (0: no limit; "
        "default %(default)s, a little above 4K)",
    )


def _extractor(args: argparse.Namespace):
    conf = {}
    if args.max_keypoints is not None:
        conf["max_keypoints"] = args.max_keypoints
    if args.threshold is not None:
        conf["detection_threshold"] = args.threshold
    return make_extractor(args.backend, args.model, args.weights, args.device, conf, precision=args.precision)


def _run(fn, argv) -> int:
    """Run ``fn`` and turn any expected failure into one line on stderr and exit code 2."""
    try:
        return fn(argv)
    except (ImageReadError, CheckpointError, KeyError, ValueError, RuntimeError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2


def _extract(argv) -> int:
    p = argparse.ArgumentParser(prog="goodpoint-extract", description="Extract keypoints and descriptors to .npz")
    _add_model_args(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--output", "-o", required=True, help="output .npz")
    args = p.parse_args(argv)
    images = [read_image(path, args.max_pixels) for path in args.images]  # fail before loading the model
    ex = _extractor(args)
    arrays = {}
    for i, image in enumerate(images):
        f = to_numpy(ex.extract(image))
        arrays[f"keypoints_{i}"] = f["keypoints"]
        arrays[f"scores_{i}"] = f["scores"]
        arrays[f"descriptors_{i}"] = f["descriptors"]
        arrays[f"detector_{i}"] = f["detector"]
        print(f"{args.images[i]}: {len(f['keypoints'])} keypoints")
    np.savez(args.output, **arrays)
    print(f"wrote {args.output}")
    return 0


def _match(argv) -> int:
    p = argparse.ArgumentParser(
        prog="goodpoint-match",
        description="Extract and match two images; without images, uses a real stereo pair shipped offline.",
    )
    _add_model_args(p)
    p.add_argument("images", nargs="*", help="two image files (default: the bundled motorcycle stereo pair)")
    p.add_argument("--output", "-o", default="matches.png", help="picture of the matches")
    p.add_argument("--ratio", type=float, default=None, help="ratio test (e.g. 0.9)")
    p.add_argument("--verify", default="fundamental", choices=METHODS[:2], help="geometric model")
    p.add_argument("--ransac-threshold", type=float, default=2.0, help="pixels")
    args = p.parse_args(argv)
    if len(args.images) not in (0, 2):
        p.error("give two images, or none for the bundled pair")
    im0, im1 = (read_image(x, args.max_pixels) for x in args.images) if args.images else sample_pair()
    t0 = time.perf_counter()
    ex = _extractor(args)
    t_load = time.perf_counter() - t0
    ex.extract(im0)  # warm-up: first call pays allocation and kernel selection
    t0 = time.perf_counter()
    f0, f1 = ex.extract(im0), ex.extract(im1)
    t_extract = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    matches, _ = match_features(f0, f1, ratio=args.ratio)
    t_match = time.perf_counter() - t0
    n0, n1 = to_numpy(f0), to_numpy(f1)
    m = matches.cpu().numpy()
    t0 = time.perf_counter()
    _, inliers = verify(n0["keypoints"][m[:, 0]], n1["keypoints"][m[:, 1]], args.verify, args.ransac_threshold)
    t_verify = time.perf_counter() - t0
    print(f"model        {ex.name} ({args.weights}) on {ex.device}, {getattr(ex, 'precision', 'fp32')}")
    print(f"keypoints    {len(n0['keypoints'])} / {len(n1['keypoints'])}")
    print(f"matches      {len(m)}")
    print(f"inliers      {int(inliers.sum())} ({inliers.mean() * 100 if len(m) else 0:.1f}%, {args.verify})")
    print(f"time         load {t_load * 1e3:.0f} ms | extract {t_extract * 1e3:.1f} ms/image | "
          f"match {t_match * 1e3:.1f} ms | verify {t_verify * 1e3:.1f} ms")  # fmt: skip
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), draw_matches(im0, im1, n0["keypoints"], n1["keypoints"], m, inliers))
    print(f"wrote        {out}")
    return 0


def extract_main(argv: list[str] | None = None) -> int:
    return _run(_extract, argv)


def match_main(argv: list[str] | None = None) -> int:
    return _run(_match, argv)


if __name__ == "__main__":
    sys.exit(match_main())
