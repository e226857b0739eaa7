"""``goodpoint-eval``: our models and OpenCV ORB/AKAZE/SIFT through the same metric code.

Pairs come from an HPatches-layout folder (sequence folders holding 1.ppm..6.ppm and H_1_k; never
downloaded here) or are generated from a folder of held-out photos: a homography and photometric
noise drawn from a deterministic seed (``training.augment``, the training augmentation). Every
method gets the same keypoint budget; extraction time is measured per image after one warm-up.
MD-Net-like methods (several detector sets) are evaluated with per-set matching (the paper's) and
with full matching, and the matching time ratio and MMA difference are reported.

    goodpoint-eval --photos data/photos/heldout --pairs 20 \
        --methods goodpoint_small mdnet_small:runs/x/best.pt orb akaze sift --output-dir out/eval
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.backends.parity import feature_parity
from goodpoint_ros.io.image_codec import to_uint8
from goodpoint_ros.io.image_files import ImageReadError, parse_size, read_image
from goodpoint_ros.models.checkpoint import shipped_weights
from goodpoint_ros.registry import NETWORKS, OPENCV_FRONT_ENDS
from goodpoint_ros.vo.geometry import warp_image

from .augment import photometric, sample_homography, warp_mask
from .metrics import evaluate_pair, summarize

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".webp", ".bmp")


# Evaluation photos are local files, often wallpapers above 4K, downscaled by ``--max-side`` right
# after reading: read without a pixel limit (the node, CLI, training and bag tool keep theirs).
NO_PIXEL_LIMIT = None


class EvalError(RuntimeError):
    pass


@dataclass
class Pair:
    name: str
    image0: np.ndarray
    image1: np.ndarray
    H: np.ndarray  # image-0 pixels -> image-1 pixels
    valid1: np.ndarray | None = None  # pixels of image 1 that hold content (generated pairs)


# ----------------------------------------------------------------------------- pair sources


def _scale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Downscale so the longer side is at most ``max_side``; returns the image and the 3x3 scale."""
    s = 1.0 if not max_side else min(1.0, max_side / max(image.shape[:2]))
    if s >= 1.0:
        return image, np.eye(3)
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.diag([sx, sy, 1.0])


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover ``size`` (width, height) keeping the aspect ratio, then crop the centre: every
    pair at exactly a camera's resolution (e.g. 640x480), whatever the photo's shape."""
    w, h = size
    s = max(w / image.shape[1], h / image.shape[0])
    if abs(s - 1.0) > 1e-9:
        new = (max(w, round(image.shape[1] * s)), max(h, round(image.shape[0] * s)))
        image = cv2.resize(image, new, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w])


def hpatches_pairs(root: Path, max_side: int | None, subset: str = "all", limit: int | None = None) -> Iterator[Pair]:
    """Pairs (1, k), k = 2..6, of every sequence folder; i_*/v_* select illumination/viewpoint."""
    if not root.is_dir():
        raise EvalError(f"{root}: no such folder")
    seqs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "1.ppm").is_file())
    if subset != "all":
        seqs = [p for p in seqs if p.name.startswith(f"{subset}_")]
    if not seqs:
        raise EvalError(f"{root}: no HPatches sequence folders (with 1.ppm and H_1_k files) found")
    n = 0
    for seq in seqs:
        im0, S0 = _scale(to_uint8(read_image(seq / "1.ppm", NO_PIXEL_LIMIT)), max_side)
        for k in range(2, 7):
            hfile, ifile = seq / f"H_1_{k}", seq / f"{k}.ppm"
            if not (hfile.is_file() and ifile.is_file()):
                continue
            try:
                H = np.loadtxt(hfile, dtype=np.float64).reshape(3, 3)
            except ValueError as exc:
                raise EvalError(f"{hfile}: not a 3x3 homography ({exc})") from exc
            im1, S1 = _scale(to_uint8(read_image(ifile, NO_PIXEL_LIMIT)), max_side)
            yield Pair(f"{seq.name}/1-{k}", im0, im1, S1 @ H @ np.linalg.inv(S0))
            n += 1
            if limit and n >= limit:
                return


def generated_pairs(
    folder: Path,
    count: int,
    seed: int,
    max_side: int | None,
    noise: bool = True,
    size: tuple[int, int] | None = None,
) -> Iterator[Pair]:
    """``count`` pairs from the photos in ``folder`` (cycled in sorted order): image 1 is image 0
    warped by a random homography; both get independent photometric noise. Pair i depends only
    on (seed, i) and the photo, so results are reproducible. ``size`` (width, height) fits every
    photo to that resolution first (``_fit``) instead of ``max_side``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT) if folder.is_dir() else []
    if not files:
        raise EvalError(f"{folder}: no images ({', '.join(IMAGE_EXT)}) found")
    for i in range(count):
        path = files[i % len(files)]
        im0 = to_uint8(read_image(path, NO_PIXEL_LIMIT))
        im0 = _fit(im0, size) if size else _scale(im0, max_side)[0]
        h, w = im0.shape[:2]
        rng = np.random.default_rng([seed, i])
        H = sample_homography(h, w, rng)
        im1 = warp_image(im0, H, (w, h))
        valid1 = warp_mask((h, w), H, (w, h))
        if noise:
            im0, im1 = photometric(im0, rng), photometric(im1, rng)
        yield Pair(f"{path.name}#{i}", im0, im1, H, valid1)


# ----------------------------------------------------------------------------- methods


# Method options that are not detection parameters: how the model runs. int8_keep_float: the
# convs the int8 graph keeps in fp32, joined by "+" (first+last, first, last, none).
RUN_KEYS = ("precision", "backend", "int8_keep_float")


class Method:
    """One thing to evaluate: a model (``name[:weights]``) or an OpenCV detector."""

    def __init__(self, spec: str, budget: int, backend: str, device: str, threshold: float | None) -> None:
        head, *opts = spec.split(",")
        name, _, weights = head.partition(":")
        self.spec = spec
        detection: dict[str, float] = {}
        run: dict[str, str] = {}  # how the model runs: precision=..., backend=... (strings)
        for o in opts:  # detection parameters of one model: name[:weights],key=value,...
            key, eq, value = o.partition("=")
            if not eq:
                raise EvalError(f"'{spec}': expected key=value after the comma, got '{o}'")
            if key in RUN_KEYS:
                run[key] = value
                continue
            try:
                detection[key] = float(value) if "." in value or "e" in value else int(value)
            except ValueError as exc:
                raise EvalError(f"'{spec}': '{value}' is not a number") from exc
        self.name = name.lower()
        # What makes two specs the same features up to precision/backend (``parity_key``), and
        # whether this one is the fp32 torch reference the others are compared with.
        self.parity_key = (self.name, weights or "default", tuple(sorted(detection.items())))
        self.is_reference = False
        if self.name in OPENCV_FRONT_ENDS:
            if weights or opts:
                raise EvalError(f"'{spec}': OpenCV methods take no weights or options")
            self.impl = make_extractor(model=self.name, conf={"max_keypoints": budget})
        else:
            if self.name not in NETWORKS:
                raise EvalError(
                    f"unknown method '{name}' (models: {', '.join(NETWORKS)}; OpenCV: {', '.join(OPENCV_FRONT_ENDS)})"
                )
            # fp32 unless the spec says otherwise (precision=bf16 ...), so that figures do not depend
            # on the CPU's bf16 units; int8 exists only as onnxruntime's quantised graph.
            precision = run.get("precision", "fp32")
            backend = run.get("backend", "onnxruntime" if precision == "int8" else backend)
            self.is_reference = precision == "fp32" and backend == "torch"
            extra = {}
            if "int8_keep_float" in run:
                keep = run["int8_keep_float"]
                extra["int8_keep_float"] = () if keep == "none" else tuple(keep.split("+"))
            self.impl = make_extractor(backend, self.name, weights or "default", device, precision=precision, **extra)
            if threshold is not None:
                detection.setdefault("detection_threshold", threshold)
            try:
                self.impl.set_detection(**{"max_keypoints": budget, **detection})
            except KeyError as exc:
                raise EvalError(f"'{spec}': {exc.args[0]}") from exc
            if weights in ("random", "none"):  # "default" without shipped weights was refused above
                self.spec = spec.replace(head, f"{name} (random weights)")

    def extract(self, image: np.ndarray) -> tuple[dict, float]:
        """Features (numpy) and the wall time in ms (synchronised: results are on the host)."""
        t = time.perf_counter()
        feats = self.impl.extract_numpy(image)
        return feats, (time.perf_counter() - t) * 1e3


def evaluate(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # random-weight models are then the same from run to run
    methods = [Method(s, args.max_keypoints, args.backend, args.device, args.threshold) for s in args.methods]
    if args.hpatches:
        pairs = list(hpatches_pairs(Path(args.hpatches), args.max_side, args.subset, args.pairs))
    else:
        pairs = list(
            generated_pairs(Path(args.photos), args.pairs or 20, args.seed, args.max_side, not args.no_noise, args.size)
        )
    if not pairs:
        raise EvalError("no pairs to evaluate")
    results: dict[str, dict] = {}
    references: dict[tuple, tuple[str, list[dict]]] = {}  # parity_key -> (spec, features per image)
    for m in methods:
        m.extract(pairs[0].image0)  # warm-up (allocations, one-time kernels) out of the timing
        rows, per_set_rows, times, feats = [], [], [], []
        for p in pairs:
            f0, t0 = m.extract(p.image0)
            f1, t1 = m.extract(p.image1)
            times += [t0, t1]
            feats += [f0, f1]
            extract_threads = torch.get_num_threads()
            # Matching at --match-threads (default 1): on a loaded CPU every threaded torch op waits
            # for a worker to be scheduled, which swamps the cost of small products (bench/extract.py).
            torch.set_num_threads(args.match_threads)
            kw = {"thresholds": args.thresholds, "coverage_radius": args.coverage_radius, "epsilon": args.epsilon}
            kw["match_repeat"] = args.match_repeat
            shape0, shape1 = p.image0.shape[:2], p.image1.shape[:2]
            rows.append(evaluate_pair(f0, f1, p.H, shape0, shape1, per_set=False, valid1=p.valid1, **kw))
            multi = len(f0["detector"]) and max(int(f0["detector"].max()), int(f1["detector"].max(initial=0))) > 0
            if multi:
                per_set_rows.append(evaluate_pair(f0, f1, p.H, shape0, shape1, per_set=True, valid1=p.valid1, **kw))
            torch.set_num_threads(extract_threads)
        summ = summarize(rows)
        summ["extract_ms"] = float(np.median(times))
        label = m.spec
        if per_set_rows:
            ps = summarize(per_set_rows)
            ps["extract_ms"] = summ["extract_ms"]
            results[f"{label} [per-set]"] = ps
            label = f"{label} [full]"
            e = args.epsilon
            summ["per_set_match_time_ratio"] = summ["match_time_ms"] / max(ps["match_time_ms"], 1e-9)
            summ[f"per_set_mma@{e:g}px_minus_full"] = ps[f"mma@{e:g}px"] - summ[f"mma@{e:g}px"]
        if m.name not in OPENCV_FRONT_ENDS and m.is_reference and m.parity_key not in references:
            references[m.parity_key] = (label, feats)
        elif m.name not in OPENCV_FRONT_ENDS and m.parity_key in references:
            ref_label, ref_feats = references[m.parity_key]
            summ["parity"] = {"reference": ref_label, **mean_parity(ref_feats, feats)}
        results[label] = summ
        print(f"  {label}: {format_row(summ, args)}", flush=True)
    source = (
        f"hpatches:{args.hpatches} ({args.subset})" if args.hpatches else f"generated:{args.photos} seed {args.seed}"
    )
    return {
        "source": source,
        "num_pairs": len(pairs),
        "max_keypoints": args.max_keypoints,
        "max_side": args.max_side,
        "size": f"{args.size[0]}x{args.size[1]}" if getattr(args, "size", None) else None,
        "epsilon": args.epsilon,
        "coverage_radius": args.coverage_radius,
        "torch_threads": torch.get_num_threads(),
        "match_threads": args.match_threads,
        "methods": results,
    }


def mean_parity(ref: list[dict], other: list[dict]) -> dict[str, float]:
    """``parity.feature_parity`` per image, averaged: the share of keypoints within 1 px of the
    reference's and the descriptor cosine of those pairs (median, and the 5th percentile)."""
    per = [feature_parity(a, b) for a, b in zip(ref, other)]
    return {k: float(np.nanmean([p[k] for p in per])) for k in ("overlap", "cosine_median", "cosine_p05")}


# ----------------------------------------------------------------------------- reporting


def format_row(s: dict, args: argparse.Namespace) -> str:
    return (
        f"rep {s['repeatability']:.3f}, MMA@{args.epsilon:g} {s[f'mma@{args.epsilon:g}px']:.3f}, "
        f"cov {s['coverage']:.3f}, HM {s['harmonic_mean']:.3f}, {s['extract_ms']:.1f} ms/image"
    )


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(report: dict, thresholds: list[float]) -> str:
    t = thresholds
    head = ["method", "kpts", "rep."] + [f"MMA@{x:g}" for x in t] + ["MS", "cov.", "HM", "HM(rep,MMA,H)@3"]
    head += [f"H-acc@{x:g}" for x in t] + ["Sep@3", "match ms", "extract ms"]
    lines = [
        f"Source: {report['source']}, {report['num_pairs']} pairs, budget {report['max_keypoints']} keypoints, "
        f"{'size ' + report['size'] if report.get('size') else 'max side ' + str(report['max_side'])}, correct within {report['epsilon']:g} px, coverage r = "
        f"{report['coverage_radius']:g} px, {report['torch_threads']} torch threads "
        f"({report['match_threads']} while matching).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, s in report["methods"].items():
        kp = 0.5 * (s["num_keypoints0"] + s["num_keypoints1"])
        cells = [name, f"{kp:.0f}", _fmt(s["repeatability"])] + [_fmt(s[f"mma@{x:g}px"]) for x in t]
        cells += [_fmt(s["matching_score"]), _fmt(s["coverage"]), _fmt(s["harmonic_mean"])]
        cells += [_fmt(s.get("hm_rep_mma_hacc@3px", math.nan))]
        cells += [_fmt(s[f"homography_accuracy@{x:g}px"], 2) for x in t]
        cells += [_fmt(s.get("sep@3px")), _fmt(s["match_time_ms"], 2), _fmt(s["extract_ms"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    extra = [(n, s) for n, s in report["methods"].items() if "per_set_match_time_ratio" in s]
    if extra:
        lines += ["", "MD-Net per-set vs full matching (same keypoints):", ""]
        for n, s in extra:
            key = next(k for k in s if k.startswith("per_set_mma@"))
            lines.append(
                f"- {n}: full / per-set matching time = {s['per_set_match_time_ratio']:.2f}x, "
                f"{key.replace('_minus_full', '')} - full = {s[key]:+.3f}"
            )
    parity = [(n, s) for n, s in report["methods"].items() if "parity" in s]
    if parity:
        lines += ["", "Parity with the fp32 torch run of the same model and weights (same images):", ""]
        for n, s in parity:
            ref = report["methods"][s["parity"]["reference"]]
            d_hm = s.get("hm_rep_mma_hacc@3px", math.nan) - ref.get("hm_rep_mma_hacc@3px", math.nan)
            d_h = s["homography_accuracy@3px"] - ref["homography_accuracy@3px"]
            p = s["parity"]
            lines.append(
                f"- {n}: keypoints within 1 px {p['overlap']:.3f}, descriptor cosine median "
                f"{p['cosine_median']:.4f} (5th percentile {p['cosine_p05']:.4f}), HM(rep,MMA,H)@3 {d_hm:+.3f}, "
                f"H-acc@3 {d_h:+.2f}"
            )
    return "\n".join(lines) + "\n"


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="goodpoint-eval", description="Evaluate keypoint methods on homography pairs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hpatches", help="HPatches-layout folder (sequence folders with 1.ppm..6.ppm, H_1_k)")
    src.add_argument("--photos", help="folder of held-out photos: generated homography pairs")
    p.add_argument(
        "--methods",
        nargs="+",
        default=[*(n for n in NETWORKS if shipped_weights(n).is_file()), *OPENCV_FRONT_ENDS],  # trained + OpenCV
        help=f"model[:weights][,key=value...] ({', '.join(NETWORKS)}; weights: a path "
        "or 'random'; keys: detection parameters, e.g. mdnet_small,detection_threshold=0.5, and precision="
        "fp32|bf16|fp16|int8|auto (default fp32; int8 runs in onnxruntime), backend=torch|onnxruntime) "
        f"or {', '.join(OPENCV_FRONT_ENDS)}",
    )
    p.add_argument("--pairs", type=int, default=None, help="number of pairs (generated: default 20; HPatches: all)")
    p.add_argument("--subset", choices=("all", "i", "v"), default="all", help="HPatches: illumination/viewpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated homographies and noise")
    p.add_argument("--no-noise", action="store_true", help="generated pairs without photometric noise")
    p.add_argument("--max-side", type=int, default=640, help="downscale images to this longer side (0: never)")
    p.add_argument(
        "--size",
        type=parse_size,
        default=None,
        metavar="WxH",
        help="generated pairs: fit every photo to exactly this resolution (cover + centre crop), e.g. 640x480; "
        "overrides --max-side",
    )
    p.add_argument("--max-keypoints", type=int, default=1000, help="keypoint budget shared by all methods")
    p.add_argument("--threshold", type=float, default=None, help="override the detection threshold of our models")
    p.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 3.0, 5.0], help="MMA / H-accuracy px")
    p.add_argument("--epsilon", type=float, default=3.0, help="px for repeatability, precision, coverage")
    p.add_argument("--coverage-radius", type=float, default=25.0, help="coverage radius r in px (GoodPoint: 25)")
    p.add_argument("--backend", default="torch", help="inference backend of our models (make_extractor)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--match-threads", type=int, default=1, help="torch threads while matching (timed)")
    p.add_argument("--match-repeat", type=int, default=5, help="matching time: the fastest of this many runs")
    p.add_argument("--output-dir", default="out/eval", help="where results.json and results.md go")
    args = p.parse_args(argv)
    if (
        args.max_keypoints <= 0
        or (args.pairs is not None and args.pairs <= 0)
        or args.match_threads <= 0
        or args.match_repeat <= 0
    ):
        p.error("--max-keypoints, --pairs, --match-threads and --match-repeat must be positive")
    if args.epsilon not in args.thresholds:
        args.thresholds = sorted(set(args.thresholds) | {args.epsilon})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = evaluate(args)
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
        table = markdown(report, args.thresholds)
        (out / "results.md").write_text(table)
    except (EvalError, ImageReadError, OSError, ValueError, KeyError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"goodpoint-eval: error: {msg}", file=sys.stderr)
        return 2
    print(table, end="")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
