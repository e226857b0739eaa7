"""``goodpoint-export``: a model -> ONNX (opset <= 17, for TensorRT 8.x on Jetson), parity-checked.

The exported graph is ``graph.ExportGraph`` (network + NMS + borders + fixed top-k + descriptor
sampling). After writing the file the command runs it in onnxruntime on a real photo and compares
with torch: dense heatmap and descriptors max-abs difference and the keypoints; it exits non-zero
when they disagree.

``--int8`` writes the statically quantised graph instead (``backends/quantize.py``: QDQ,
per-channel weights, calibrated on training photos); its check is the reduced-precision one:
keypoint overlap within 1 px and descriptor cosine against torch fp32, with generous floors.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from goodpoint_ros.backends import quantize
from goodpoint_ros.backends.graph import OUTPUT_NAMES, ExportGraph, graph_keep
from goodpoint_ros.backends.parity import feature_parity
from goodpoint_ros.models import MODELS
from goodpoint_ros.models.checkpoint import load_model
from goodpoint_ros.models.features import extract_batch

log = logging.getLogger(__name__)

MAX_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5.x) parse up to opset 17; GridSample needs >= 16
MIN_OPSET = 16
TENSORRT_MAX_TOPK = 3840  # TensorRT 8.x ITopKLayer: K <= 3840
HEATMAP_TOL = 1e-4
DESCRIPTOR_TOL = 1e-3
KEYPOINT_AGREEMENT = 0.99  # at most 1% of keypoints may differ for reasons other than tied scores
TIE_TOL = 1e-5
INT8_MIN_OVERLAP = 0.6  # int8 vs torch fp32 on the reference photo (measured ~0.85-0.95, README)
INT8_MIN_COSINE = 0.95  # median descriptor cosine of the overlapping keypoints (measured > 0.99)


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    height: int = 240,
    width: int = 320,
    dynamic: bool = False,
    opset: int = MAX_OPSET,
) -> Path:
    """Write the fixed-top-k graph of ``model`` to ``path``; dynamic H/W axes if ``dynamic``.

    A dynamic graph needs H and W to be multiples of the model's ``pad_to`` at run time (the
    onnxruntime backend pads on the host).
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}] (GridSample needs 16, TensorRT 8.x takes 17)")
    # A CPU fp32 copy: the caller's model stays where it is; eval() because the exporter restores
    # the wrapper's own mode afterwards (a fresh wrapper is in training mode).
    graph = ExportGraph(copy.deepcopy(model).cpu().float()).eval()
    if dynamic:
        m = max(graph.pad_to, 8)
        height, width = (-(-v // m) * m for v in (height, width))
    if min(height, width) < 16:
        raise ValueError(f"input size {height}x{width} is too small to export")
    if graph.k > TENSORRT_MAX_TOPK:
        log.warning("K=%d per detector exceeds TensorRT 8's TopK limit (%d): fine for onnxruntime, not for trtexec",
                    graph.k, TENSORRT_MAX_TOPK)  # fmt: skip
    dummy = torch.rand(1, model.in_channels, height, width)
    axes = None
    if dynamic:
        axes = {"image": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch"} for n in OUTPUT_NAMES})
        axes["heatmap"] = {0: "batch", 2: "height", 3: "width"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # unique: processes may race
    os.close(fd)
    tmp = Path(tmp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about python ints: shapes are static on purpose
            torch.onnx.export(
                graph,
                (dummy,),
                str(tmp),
                dynamo=False,  # the TorchScript exporter: no onnxscript dependency, opset control
                opset_version=opset,
                input_names=["image"],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        tmp.replace(path)  # atomic: a killed export never leaves a half file in the cache
    finally:
        tmp.unlink(missing_ok=True)
    return path


def reference_image(height: int, width: int, channels: int) -> np.ndarray:
    """A real photo (scikit-image's astronaut) resized to HxW: random noise has no real maxima."""
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    return (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


def keypoint_keys(detector: np.ndarray, keypoints: np.ndarray) -> list[tuple[int, int, int]]:
    """(detector, x, y) integer keys of keypoints, for set comparisons."""
    xy = np.rint(keypoints).astype(np.int64)
    return list(zip(detector.astype(np.int64).tolist(), xy[:, 0].tolist(), xy[:, 1].tolist()))


def compare_keypoints(ref: dict, other: dict, heat: np.ndarray | None = None, radius: int = 0) -> tuple[float, int]:
    """(Jaccard agreement of the (detector, x, y) sets, mismatches NOT explained by ties).

    ``ref``/``other``: numpy ``keypoints`` Kx2, ``scores`` K, ``detector`` K. A point only one side
    kept is explained by a tie, which float noise (~1e-7) may break either way: its score ties
    with the last score that side kept for its detector (top-k order), or, given the reference
    heatmap ``heat`` (NxHxW) and the NMS ``radius``, another pixel of its NMS window ties with it
    (plateaus of untrained or barely trained heatmaps).
    """
    keys = [keypoint_keys(f["detector"], f["keypoints"]) for f in (ref, other)]
    sets = [set(k) for k in keys]
    agree = len(sets[0] & sets[1]) / max(len(sets[0] | sets[1]), 1)
    unexplained = 0
    for f, k, other_set in ((ref, keys[0], sets[1]), (other, keys[1], sets[0])):
        only = np.array([key not in other_set for key in k], dtype=bool)
        cut = np.zeros(len(k), dtype=np.float32)
        for d in np.unique(f["detector"]):
            sel = f["detector"] == d
            cut[sel] = f["scores"][sel].min()
        tied = f["scores"] <= cut + TIE_TOL
        if heat is not None and radius > 0 and only.any():
            tied |= _nms_tie(heat, np.asarray(k, dtype=np.int64).reshape(-1, 3), radius)
        unexplained += int((only & ~tied).sum())
    return agree, unexplained


def _nms_tie(heat: np.ndarray, keys: np.ndarray, radius: int) -> np.ndarray:
    """Per (detector, x, y): does another pixel of its NMS window score within TIE_TOL of it?"""
    off = np.arange(-radius, radius + 1)
    dy, dx = (v.ravel() for v in np.meshgrid(off, off, indexing="ij"))
    d = keys[:, :1]
    y = np.clip(keys[:, 2:3] + dy, 0, heat.shape[1] - 1)
    x = np.clip(keys[:, 1:2] + dx, 0, heat.shape[2] - 1)
    centre = heat[keys[:, 0], keys[:, 2], keys[:, 1]][:, None]
    near = np.abs(heat[d, y, x] - centre) <= TIE_TOL
    near &= (y != keys[:, 2:3]) | (x != keys[:, 1:2])
    return near.any(1)


def descriptor_diff(ref: dict, other: dict) -> float:
    """Max-abs descriptor difference over the keypoints both feature sets hold (numpy dicts)."""
    pos = {k: i for i, k in enumerate(keypoint_keys(other["detector"], other["keypoints"]))}
    pairs = [(pos[k], j) for j, k in enumerate(keypoint_keys(ref["detector"], ref["keypoints"])) if k in pos]
    if not pairs:
        return 0.0
    i_o, i_r = (np.array(v) for v in zip(*pairs))
    return float(np.abs(other["descriptors"][i_o] - ref["descriptors"][i_r]).max())


def check_parity(
    model: torch.nn.Module, onnx_path: str | Path, height: int, width: int, providers: list[str] | None = None
) -> dict:
    """Run the ONNX file and the torch extractor on the same photo; return differences and ``ok``."""
    import onnxruntime as ort

    image = reference_image(height, width, model.in_channels)
    sess = ort.InferenceSession(str(onnx_path), providers=providers or ["CPUExecutionProvider"])
    out = dict(zip(OUTPUT_NAMES, sess.run(None, {"image": image})))
    model = copy.deepcopy(model).cpu().float().eval()
    with torch.inference_mode():
        x = torch.from_numpy(image)
        dense = model(F.pad(x, (0, (-width) % model.pad_to, 0, (-height) % model.pad_to)))
        # The torch extractor's own path is the ground truth. Both sides compare ALL K candidates
        # (threshold off): the strictest check, and it works for untrained weights too.
        threshold = model.conf["detection_threshold"]
        model.set_detection(detection_threshold=-1.0)
        try:
            ref = extract_batch(model, x)[0]
        finally:
            model.set_detection(detection_threshold=threshold)
    heat_key = model.heatmap_key
    heat_diff = float(np.abs(out["heatmap"] - dense[heat_key].float().numpy()).max())
    keep = out["valid"][0]
    onnx_feats = {k: out[k][0][keep] for k in ("keypoints", "scores", "detector", "descriptors")}
    ref = {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in ref.items()}
    reference_heat = dense[heat_key][0].float().numpy()
    agree, unexplained = compare_keypoints(ref, onnx_feats, reference_heat, model.conf["nms_radius"])
    desc_diff = descriptor_diff(ref, onnx_feats)
    keys_o = keypoint_keys(onnx_feats["detector"], onnx_feats["keypoints"])
    keys_r = keypoint_keys(ref["detector"], ref["keypoints"])
    result = {
        "heatmap_max_abs": heat_diff,
        "descriptor_max_abs": desc_diff,
        "keypoints_onnx": len(keys_o),
        "keypoints_torch": len(keys_r),
        "keypoint_agreement": agree,
        "unexplained_mismatches": unexplained,
    }
    result["ok"] = bool(
        heat_diff <= HEATMAP_TOL
        and desc_diff <= DESCRIPTOR_TOL
        and unexplained <= (1 - KEYPOINT_AGREEMENT) * len(keys_r)
        and len(keys_r) > 0
    )
    return result


def check_int8_parity(model: torch.nn.Module, onnx_path: str | Path, height: int, width: int) -> dict:
    """Run a quantised graph and the torch fp32 extractor on the reference photo: ``parity.
    feature_parity`` numbers (overlap within 1 px, descriptor cosine) and ``ok``."""
    import onnxruntime as ort

    image = reference_image(height, width, model.in_channels)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = dict(zip(OUTPUT_NAMES, sess.run(None, {"image": image})))
    model = copy.deepcopy(model).cpu().float().eval()
    with torch.inference_mode():
        ref = extract_batch(model, torch.from_numpy(image))[0]
    keep = graph_keep(out, model.conf, height, width)
    result = feature_parity(ref, {k: out[k][0][keep] for k in ("keypoints", "descriptors", "detector")})
    result["ok"] = bool(result["overlap"] >= INT8_MIN_OVERLAP and result["cosine_median"] >= INT8_MIN_COSINE)
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="goodpoint-export", description=__doc__.splitlines()[0])
    p.add_argument("output", help="output file, e.g. goodpoint_small_320x240.onnx")
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--weights", default="default", help="'default' (shipped), 'random', a shipped name or a path")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="TensorRT: build an engine with trtexec")
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--dynamic", action="store_true", help="dynamic batch/height/width (multiples of 8)")
    p.add_argument("--max-keypoints", type=int, default=None, help="fixed K (MD-Net: K/N per detector)")
    p.add_argument("--nms-radius", type=int, default=None)
    p.add_argument("--remove-borders", type=int, default=None)
    p.add_argument("--opset", type=int, default=MAX_OPSET)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--int8", action="store_true", help="write the int8 graph (static QDQ quantisation, CPU)")
    p.add_argument(
        "--calibration",
        default=None,
        help="--int8: folder of TRAINING photos (default: data/photos/train of a checkout, "
        "$GOODPOINT_CALIBRATION, else scikit-image's training-split photos); never held-out ones",
    )
    p.add_argument("--calibration-count", type=int, default=None, help="--int8: photos used (default 32)")
    p.add_argument(
        "--int8-keep-float",
        default=None,
        help="--int8: convs kept fp32: 'first,last' (default), 'first', 'last' or 'none'",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    conf = {
        k: v
        for k, v in (
            ("max_keypoints", args.max_keypoints),
            ("nms_radius", args.nms_radius),
            ("remove_borders", args.remove_borders),
        )
        if v is not None
    }
    try:
        model = load_model(args.model, args.weights, conf=conf).eval()
        if args.int8:
            path = _export_int8(model, args)
        else:
            path = export_onnx(model, args.output, args.height, args.width, args.dynamic, args.opset)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        print(f"goodpoint-export: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}, {'dynamic' if args.dynamic else f'{args.height}x{args.width}'}"
        f"{', int8' if args.int8 else ''})"
    )
    if args.no_check:
        return 0
    return _check_int8(model, path, args) if args.int8 else _check_fp32(model, path, args)


def _check_int8(model: torch.nn.Module, path: Path, args: argparse.Namespace) -> int:
    """The int8 graph against torch fp32 at the export size: keypoint overlap and descriptor cosine."""
    h, w = (-(-v // 8) * 8 for v in (args.height, args.width)) if args.dynamic else (args.height, args.width)
    r = check_int8_parity(model, path, h, w)
    print(
        f"int8 vs torch fp32 {h}x{w}: keypoints within 1 px {r['overlap']:.3f} "
        f"(int8 {r['keypoints_other']}, fp32 {r['keypoints_ref']}), descriptor cosine median "
        f"{r['cosine_median']:.4f} p05 {r['cosine_p05']:.4f} -> {'OK' if r['ok'] else 'FAIL'}"
    )
    return 0 if r["ok"] else 1


def _check_fp32(model: torch.nn.Module, path: Path, args: argparse.Namespace) -> int:
    """The fp32 graph against torch at the export size (and 640x480 for a dynamic graph)."""
    sizes = [(args.height, args.width)]
    if args.dynamic:
        m = max(model.pad_to, 8)
        sizes = [(-(-args.height // m) * m, -(-args.width // m) * m), (480, 640)]
    ok = True
    for h, w in sizes:
        r = check_parity(model, path, h, w)
        ok &= r["ok"]
        print(
            f"parity {h}x{w}: heatmap max|d|={r['heatmap_max_abs']:.2e} descriptors max|d|={r['descriptor_max_abs']:.2e} "
            f"keypoints onnx={r['keypoints_onnx']} torch={r['keypoints_torch']} agreement={r['keypoint_agreement']:.4f} "
            f"(not explained by ties: {r['unexplained_mismatches']}) -> {'OK' if r['ok'] else 'FAIL'}"
        )
    return 0 if ok else 1


def _export_int8(model: torch.nn.Module, args: argparse.Namespace) -> Path:
    """The fp32 graph into a temporary folder, calibrated and quantised into ``args.output``."""
    keep = quantize.DEFAULT_KEEP_FLOAT if args.int8_keep_float is None else args.int8_keep_float
    if isinstance(keep, str):
        keep = () if keep.strip() == "none" else tuple(k.strip() for k in keep.split(",") if k.strip())
    count = args.calibration_count or quantize.DEFAULT_CALIBRATION_COUNT
    source = args.calibration or quantize.default_calibration_source()
    h, w = args.height, args.width
    if args.dynamic:
        h, w = (-(-v // 8) * 8 for v in (h, w))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", args.height, args.width, args.dynamic, args.opset)
        images = quantize.calibration_images(source, count, h, w, model.in_channels)
        print(f"calibrating on {len(images)} photos from {source}, fp32 convs: {', '.join(keep) or 'none'}")
        return quantize.quantize_int8(fp32, args.output, images, keep)


if __name__ == "__main__":
    sys.exit(main())
