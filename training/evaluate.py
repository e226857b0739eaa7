"""``goodpoint-eval``: our models and OpenCV ORB/AKAZE/SIFT through the same metric code.

Pairs come from an HPatches-layout folder (sequence folders holding 1.ppm..6.ppm and H_1_k; never
downloaded here) or are generated from a folder of held-out photos: a homography and photometric
noise drawn from a deterministic seed (``training.augment``, the training augmentation). Every
method gets the same keypoint budget; extraction time is measured per image after one warm-up.
MD-Net-like methods (several detector sets) are evaluated with per-set matching (the paper's) and
with full matching, and the matching time ratio and MMA difference are reported.

``--bag`` evaluates in-domain, on the final ``--holdout`` fraction of a ROS 2 bag's duration (the
time range fine-tuning, which reads the bag's first 1 - holdout, never saw): the same generated
pairs, made from the held-out frames instead of photos, and frame-to-frame tracking over that range
in time order through the node's own per-frame pipeline (``vo.pipeline.FramePipeline``).

    goodpoint-eval --photos data/photos/heldout --pairs 20 \
        --methods goodpoint_small mdnet_small:runs/x/best.pt orb akaze sift --output-dir out/eval
    goodpoint-eval --bag data/bags/lab --holdout 0.2 --methods goodpoint_small:runs/x/best.pt orb
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
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
from goodpoint_ros.vo.pipeline import FramePipeline

from .augment import photometric, sample_homography, warp_mask, zoom
from .metrics import evaluate_pair, paired_bootstrap, summarize

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".webp", ".bmp")


# Evaluation photos are local files, often wallpapers above 4K, downscaled by ``--max-side`` right
# after reading: read without a pixel limit (the node, CLI, training and bag tool keep theirs).
NO_PIXEL_LIMIT = None

# --bag: the fewest held-out frames evaluated (two: one frame-to-frame match for the tracking figures).
MIN_BAG_FRAMES = 2


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


def _prepare(image: np.ndarray, max_side: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """An image at the evaluated resolution: fitted to ``size`` or downscaled to ``max_side``."""
    return _fit(image, size) if size else _scale(image, max_side)[0]


# One image a generated pair can start from: its name and how to read it (uint8, RGB or gray).
Source = tuple[str, Callable[[], np.ndarray]]


def homography_pairs(
    sources: Sequence[Source],
    count: int,
    seed: int,
    max_side: int | None,
    noise: bool = True,
    size: tuple[int, int] | None = None,
    zoom_factors: tuple[float, float] | None = None,
) -> Iterator[Pair]:
    """``count`` pairs from ``sources`` (cycled in order): image 1 is image 0 warped by a random
    homography; both get independent photometric noise. Pair i depends only on (seed, i) and the
    image, so results are reproducible. ``size`` (width, height) fits every image to that
    resolution first (``_fit``) instead of ``max_side``. ``zoom_factors`` (lo, hi) adds a zoom in
    or out by a factor in that range to every warp (``augment.zoom``)."""
    for i in range(count):
        name, load = sources[i % len(sources)]
        im0 = _prepare(load(), max_side, size)
        h, w = im0.shape[:2]
        rng = np.random.default_rng([seed, i])
        H = sample_homography(h, w, rng)
        if zoom_factors:
            H = zoom(H, h, w, rng, zoom_factors)
        im1 = warp_image(im0, H, (w, h))
        valid1 = warp_mask((h, w), H, (w, h))
        if noise:
            im0, im1 = photometric(im0, rng), photometric(im1, rng)
        yield Pair(f"{name}#{i}", im0, im1, H, valid1)


def _read_photo(path: Path) -> np.ndarray:
    return to_uint8(read_image(path, NO_PIXEL_LIMIT))


def photo_sources(folder: Path) -> list[Source]:
    """The photos in ``folder``, in sorted order, as ``homography_pairs`` sources."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT) if folder.is_dir() else []
    if not files:
        raise EvalError(f"{folder}: no images ({', '.join(IMAGE_EXT)}) found")
    return [(p.name, partial(_read_photo, p)) for p in files]


class HeldOutFrames:
    """The frames of one image topic of a bag whose bag time lies in its final ``holdout``
    fraction (``datasets.BagFrames`` with ``span = (1 - holdout, 1)``), in time order.

    ``stride`` keeps every n-th frame of that range and ``max_frames`` (None: all) caps the count,
    counted from the start of the range. Fewer than ``MIN_BAG_FRAMES`` frames is an ``EvalError``."""

    def __init__(
        self, path: str | Path, topic: str | None, holdout: float, stride: int = 1, max_frames: int | None = None
    ) -> None:
        from .datasets import BagFrames  # a DataError (a RuntimeError) is main's one-line error

        self.holdout, self.span = holdout, (1.0 - holdout, 1.0)
        try:
            self.frames = BagFrames(
                path, topic, stride=stride, max_frames=max_frames, span=self.span, min_frames=MIN_BAG_FRAMES
            )
        except ImportError as exc:  # BagFrames imports rosbags when it opens the bag
            raise EvalError(f"--bag needs the rosbags package ({exc})") from exc
        self.path, self.topic = Path(path), self.frames.topic
        self.stamps = list(self.frames.stamps)  # bag time (ns) of each frame

    def __len__(self) -> int:
        return len(self.stamps)

    def load(self, index: int) -> np.ndarray:
        return self.frames.load(index)

    def name(self, index: int) -> str:
        return f"{self.topic}@{self.stamps[index] * 1e-9:.3f}s"

    def pair_sources(self, count: int) -> list[Source]:
        """Sources for ``count`` generated pairs: every frame (cycled) when there are no more
        frames than pairs, else ``count`` frames evenly spread over the held-out range."""
        n = len(self)
        picks = range(n) if count >= n else np.linspace(0, n - 1, count).round().astype(int).tolist()
        return [(self.name(i), partial(self.load, i)) for i in picks]

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "topic": self.topic,
            "holdout": self.holdout,
            "span": list(self.span),
            "frames": len(self),
            "first_stamp_ns": self.stamps[0],
            "last_stamp_ns": self.stamps[-1],
            "skipped": self.frames.skipped,
        }


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


def track(
    method: Method, frames: HeldOutFrames, max_side: int | None, size: tuple[int, int] | None
) -> dict[str, float]:
    """The held-out frames, in time order, through the node's per-frame pipeline with ``method``'s
    extractor (mono, default ``MatchSettings``: ratio test, RANSAC verification; no VINS tracks,
    no odometry). Per frame matched with its predecessor: matches, inliers, inliers / matches (0
    for a frame without matches: tracking lost). Track length: the number of frames a track id
    lasts (ids continue only through consecutive inlier matches and are never reused, so these
    are consecutive frames): the mean over all ids (a keypoint never matched is a track of 1),
    over the ids that lasted 2 frames or more, and over the ids that ended within the range
    (absent from its last frame)."""
    pipe = FramePipeline(method.impl, "mono", tracks=False, odometry=False)
    kpts, matches, inliers, ratios, ids, times = [], [], [], [], [], []
    restarts = 0
    for i, ns in enumerate(frames.stamps):
        image = _prepare(frames.load(i), max_side, size)
        t = time.perf_counter()
        r = pipe.step([image], (ns // 10**9, ns % 10**9))
        times.append((time.perf_counter() - t) * 1e3)
        restarts += int(r.restarted)
        kpts.append(len(r.keypoints))
        ids.append(np.asarray(r.track_ids))
        if r.previous_keypoints is not None:
            m, k = len(r.matches), int(np.count_nonzero(r.inliers))
            matches.append(m)
            inliers.append(k)
            ratios.append(k / m if m else 0.0)
    track_ids, lengths = np.unique(np.concatenate(ids), return_counts=True)
    ended = ~np.isin(track_ids, ids[-1])  # not in the last frame: the track ended within the range

    def mean(x) -> float:
        return float(np.mean(x)) if len(x) else math.nan

    return {
        "frames": len(frames.stamps),
        "matched_frames": len(matches),
        "restarts": restarts,
        "keypoints": mean(kpts),
        "matches": mean(matches),
        "inliers": mean(inliers),
        "inlier_ratio": mean(ratios),
        "tracks": int(len(track_ids)),
        "track_length": mean(lengths),
        "track_length_2plus": mean(lengths[lengths >= 2]),
        "track_length_ended": mean(lengths[ended]),
        "step_ms": float(np.median(times)),
    }


def build_methods(args: argparse.Namespace, specs: Sequence[str]) -> list[Method]:
    """The ``Method`` of every spec, after setting torch's threads and seed (random-weight models
    are then the same from run to run)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return [Method(s, args.max_keypoints, args.backend, args.device, args.threshold) for s in specs]


def evaluate(args: argparse.Namespace) -> dict:
    methods = build_methods(args, args.methods)
    bag = None
    if args.hpatches:
        pairs = list(hpatches_pairs(Path(args.hpatches), args.max_side, args.subset, args.pairs))
    elif args.bag:
        bag = HeldOutFrames(args.bag, args.topic, args.holdout, args.stride, args.max_frames or None)
        count = args.pairs or 20
        pairs = list(
            homography_pairs(
                bag.pair_sources(count), count, args.seed, args.max_side, not args.no_noise, args.size, args.zoom
            )
        )
    else:
        pairs = list(
            homography_pairs(
                photo_sources(Path(args.photos)),
                args.pairs or 20,
                args.seed,
                args.max_side,
                not args.no_noise,
                args.size,
                args.zoom,
            )
        )
    if not pairs:
        raise EvalError("no pairs to evaluate")
    results: dict[str, dict] = {}
    tracking: dict[str, dict] = {}  # --bag: method spec -> track()
    references: dict[tuple, tuple[str, list[dict]]] = {}  # parity_key -> (spec, features per image)
    pair_rows: dict[str, list[dict]] = {}  # label -> per-pair metrics (the paired bootstrap)
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
            pair_rows[f"{label} [per-set]"] = per_set_rows
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
        pair_rows[label] = rows
        print(f"  {label}: {format_row(summ, args)}", flush=True)
        if bag is not None:
            tracking[m.spec] = track(m, bag, args.max_side, args.size)
            print(f"  {m.spec}: tracking {format_tracking(tracking[m.spec])}", flush=True)
    if args.hpatches:
        source = f"hpatches:{args.hpatches} ({args.subset})"
    elif bag is not None:
        held = f"held-out {bag.span[0]:g}..1 of its duration ({len(bag)} frames)"
        source = f"bag:{args.bag} {bag.topic}, {held}, seed {args.seed}"
    else:
        source = f"generated:{args.photos} seed {args.seed}"
    report = {
        "source": source,
        "num_pairs": len(pairs),
        "max_keypoints": args.max_keypoints,
        "max_side": args.max_side,
        "size": f"{args.size[0]}x{args.size[1]}" if getattr(args, "size", None) else None,
        "zoom": list(args.zoom) if getattr(args, "zoom", None) else None,
        "epsilon": args.epsilon,
        "coverage_radius": args.coverage_radius,
        "torch_threads": torch.get_num_threads(),
        "match_threads": args.match_threads,
        "methods": results,
    }
    if len(pair_rows) > 1:
        report["bootstrap"] = bootstrap_against_first(pair_rows)
    if bag is not None:
        report["bag"] = bag.describe()
        report["tracking"] = {
            "pipeline": "vo.pipeline.FramePipeline mono, default MatchSettings, no VINS tracks/odometry",
            "track_length": "frames a track id lasts, mean over all ids (track_length), over ids lasting >= 2 "
            "frames (track_length_2plus) and over ids that ended within the range (track_length_ended)",
            "inlier_ratio": "mean over frames matched with their predecessor of inliers/matches (0 without matches)",
            "methods": tracking,
        }
    return report


# The paired bootstrap's metrics: the headline figure, and the 1-px precision SIFT leads on.
BOOTSTRAP_KEYS = {"hm_rep_mma_hacc@3px": "HM(rep,MMA,H)@3", "mma@1px": "MMA@1"}


def bootstrap_against_first(pair_rows: dict[str, list[dict]], draws: int = 2000) -> dict:
    """Each method's ``BOOTSTRAP_KEYS`` minus the first method's, with the 95 % paired-bootstrap
    interval over pairs (``metrics.paired_bootstrap``): a gap inside it is the pairs' noise."""
    (first, ref), *others = pair_rows.items()
    out = {"reference": first, "draws": draws, "methods": {}}
    for label, rows in others:
        out["methods"][label] = {}
        for key in BOOTSTRAP_KEYS:
            diff, lo, hi = paired_bootstrap(rows, ref, key, draws)
            out["methods"][label][key] = {"difference": diff, "ci95": [lo, hi]}
    return out


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


def format_tracking(t: dict) -> str:
    return (
        f"{t['keypoints']:.0f} kpts, {t['matches']:.0f} matches, inlier ratio {t['inlier_ratio']:.3f}, "
        f"track length {t['track_length']:.2f}, {t['step_ms']:.1f} ms/frame"
    )


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _zoom(report: dict) -> str:
    z = report.get("zoom")
    return f", every warp zoomed in or out by {z[0]:g}-{z[1]:g}x" if z else ""


def markdown(report: dict, thresholds: list[float]) -> str:
    t = thresholds
    head = ["method", "kpts", "rep."] + [f"MMA@{x:g}" for x in t] + ["MS", "cov.", "HM", "HM(rep,MMA,H)@3"]
    head += [f"H-acc@{x:g}" for x in t] + ["Sep@3", "match ms", "extract ms"]
    lines = [
        f"Source: {report['source']}, {report['num_pairs']} pairs, budget {report['max_keypoints']} keypoints, "
        f"{_resolution(report)}{_zoom(report)}, correct within {report['epsilon']:g} px, coverage r = "
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
    if "bootstrap" in report:
        b = report["bootstrap"]
        lines += ["", f"Minus {b['reference']}'s, with the 95 % interval of a paired bootstrap "
                  f"over the pairs ({b['draws']} draws):", ""]  # fmt: skip
        for n, per_key in b["methods"].items():
            gaps = [
                f"{BOOTSTRAP_KEYS[k]} {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                for k, d in per_key.items()
            ]
            lines.append(f"- {n}: " + ", ".join(gaps))
    if "tracking" in report:
        lines += ["", *tracking_markdown(report)]
    return "\n".join(lines) + "\n"


def _resolution(report: dict) -> str:
    if report.get("size"):
        return "size " + report["size"]
    return f"max side {report['max_side']}" if report.get("max_side") else "frames at their own size"


def tracking_markdown(report: dict) -> list[str]:
    """The second table of ``--bag``: frame-to-frame tracking over the held-out range."""
    b = report["bag"]
    seconds = (b["last_stamp_ns"] - b["first_stamp_ns"]) * 1e-9
    lines = [
        f"Tracking over the held-out range: {b['frames']} frames of {b['topic']} ({seconds:.1f} s, the last "
        f"{b['holdout']:g} of the bag's duration) in time order through the node's FramePipeline (mono, default "
        "matching and RANSAC verification). Matches, inliers and inlier ratio (inliers / matches, 0 for a frame "
        "without matches): mean over the frames matched with their predecessor. Track length: frames a track id "
        "lasts, mean over all ids (a keypoint never matched counts 1) and over the ids lasting 2 frames or more.",
        "",
        "| method | frames | kpts | matches | inliers | inlier ratio | tracks | track len (all ids) "
        "| track len (ids >= 2 frames) | ms/frame |",
        "|" + "---|" * 10,
    ]
    for name, t in report["tracking"]["methods"].items():
        cells = [name, str(t["frames"]), _fmt(t["keypoints"], 0), _fmt(t["matches"], 1), _fmt(t["inliers"], 1)]
        cells += [_fmt(t["inlier_ratio"]), str(t["tracks"]), _fmt(t["track_length"], 2)]
        cells += [_fmt(t["track_length_2plus"], 2), _fmt(t["step_ms"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="goodpoint-eval", description="Evaluate keypoint methods on homography pairs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hpatches", help="HPatches-layout folder (sequence folders with 1.ppm..6.ppm, H_1_k)")
    src.add_argument("--photos", help="folder of held-out photos: generated homography pairs")
    src.add_argument(
        "--bag",
        help="ROS 2 bag (sqlite3/mcap): generated pairs from, and frame-to-frame tracking over, the frames in the "
        "final --holdout of its duration",
    )
    src.add_argument(
        "--multiview",
        help="a folder of photos of one scene, or of such folders: COLMAP reconstructions from each method's "
        "features (needs pycolmap; methods may include colmap_sift, COLMAP's own SIFT)",
    )
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
    p.add_argument("--topic", default=None, help="--bag: image topic (default: the only one, or the one with most)")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="--bag: evaluate on this final fraction of the bag's duration (fine-tuning reads the first 1 - holdout)",
    )
    p.add_argument("--stride", type=int, default=1, help="--bag: keep every n-th held-out frame")
    p.add_argument("--max-frames", type=int, default=0, help="--bag: at most this many held-out frames (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated homographies and noise")
    p.add_argument("--seeds", type=int, default=3, help="--multiview: COLMAP runs (seeds --seed..) per set and method")
    p.add_argument(
        "--keep-models",
        action="store_true",
        help="--multiview: keep each run's COLMAP database and largest model (binary, opens in COLMAP) under "
        "OUTPUT_DIR/models/SET/METHOD/seedN",
    )
    p.add_argument("--no-noise", action="store_true", help="generated pairs without photometric noise")
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="downscale images to this longer side (0: never; default 640, --bag and --multiview: images at their "
        "own size)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=None,
        metavar="WxH",
        help="generated pairs and --bag: fit every image to exactly this resolution (cover + centre crop), "
        "e.g. 640x480; overrides --max-side",
    )
    p.add_argument(
        "--zoom",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="generated pairs: add a zoom in or out by a factor in [LO, HI] (e.g. 1.5 2.5) to every warp",
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
        or args.seeds <= 0
    ):
        p.error("--max-keypoints, --pairs, --match-threads, --match-repeat and --seeds must be positive")
    if not 0.0 < args.holdout < 1.0:
        p.error("--holdout must lie between 0 and 1 (a fraction of the bag's duration)")
    if args.stride <= 0 or args.max_frames < 0:
        p.error("--stride must be positive and --max-frames at least 0")
    if not args.bag and args.topic:
        p.error("--topic applies to --bag only")
    if args.keep_models and not args.multiview:
        p.error("--keep-models applies to --multiview")
    if args.zoom and (args.hpatches or args.multiview or not 1.0 <= args.zoom[0] <= args.zoom[1]):
        p.error("--zoom applies to generated pairs (--photos, --bag) and needs 1 <= LO <= HI")
    if args.max_side is None:
        args.max_side = None if args.bag or args.multiview else 640
    if args.epsilon not in args.thresholds:
        args.thresholds = sorted(set(args.thresholds) | {args.epsilon})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.multiview:
            from . import multiview  # pycolmap, an optional dependency, is imported there only

            report = multiview.evaluate_multiview(args)
            table = multiview.markdown(report)
        else:
            report = evaluate(args)
            table = markdown(report, args.thresholds)
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
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
