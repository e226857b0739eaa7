"""int8 for CPUs: onnxruntime static quantisation of the exported graph (QDQ, per-channel weights).

Only the network's trunk is quantised (Conv, ReLU/LeakyReLU, the encoder's MaxPool under the
``/model/`` scope of ``graph.ExportGraph``); softmax/sigmoid, NMS, top-k, sub-pixel refinement
and descriptor sampling stay fp32, as in the torch backend's reduced precisions. By default the
first conv (raw pixels in) and the last convs (the layers whose outputs leave the trunk: detector
logits and descriptors) stay fp32 too. Measured on the 50 held-out pairs (``goodpoint-eval
--photos data/photos/heldout --pairs 50 --max-side 320``, ``int8_keep_float=`` in the method spec):
with the last convs quantised mdnet_small's per-set harmonic mean fell 0.014-0.019 below fp32
(0.624) and its keypoint count rose from 749 to 991; kept fp32 it is within 0.004. goodpoint_small
is within 0.007 either way. The first conv made no measurable difference in quality or speed
(1-3 input channels), and keeping it fp32 gave the best 1-px keypoint overlap with fp32.

Activation ranges are calibrated on TRAINING photos only (``data/photos/train`` of a checkout,
``$GOODPOINT_CALIBRATION``, or scikit-image photos that the dataset puts in its training split),
never on the held-out photos that the evaluation uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from goodpoint_ros.io.image_files import read_image, sample_photo
from goodpoint_ros.models.features import prepare_image

log = logging.getLogger("goodpoint_ros.backends")

# Bump when the quantisation recipe changes: part of the cache key of quantised graphs.
QUANT_VERSION = 1
KEEP_FLOAT_CHOICES = ("first", "last")
DEFAULT_KEEP_FLOAT = ("first", "last")
DEFAULT_CALIBRATION_COUNT = 32
TRUNK_OPS = ("Conv", "Relu", "LeakyRelu", "MaxPool")
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".webp", ".bmp")
# scikit-image photos that scripts/build_dataset.py puts in the TRAINING split (data/photos/
# manifest.csv); hubble_deep_field is held out and is deliberately not here.
SKIMAGE_TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle_left", "motorcycle_right", "rocket", "camera")


def default_calibration_source() -> str:
    """``$GOODPOINT_CALIBRATION``, else the checkout's training photos (``data/photos_v2/train``,
    what ``scripts/build_dataset.py`` writes, or the older ``data/photos/train``), else ``skimage``."""
    env = os.environ.get("GOODPOINT_CALIBRATION")
    if env:
        return env
    data = Path(__file__).resolve().parents[2] / "data"
    found = [d for d in (data / "photos_v2" / "train", data / "photos" / "train") if d.is_dir()]
    return str(found[0]) if found else "skimage"


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover HxW (aspect kept), then centre-crop: real content at the graph's size."""
    h, w = image.shape[:2]
    s = max(height / h, width / w)
    size = (max(width, round(w * s)), max(height, round(h * s)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    y, x = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[y : y + height, x : x + width]


def calibration_images(source: str, count: int, height: int, width: int, channels: int) -> list[np.ndarray]:
    """Up to ``count`` 1xCxHxW float32 inputs from a photo folder (spread evenly over its sorted
    files) or from ``skimage`` (scikit-image's training-split photos)."""
    if source == "skimage":
        photos = [sample_photo(n) for n in SKIMAGE_TRAIN_PHOTOS[:count]]
    else:
        folder = Path(source)
        if "heldout" in folder.parts:
            raise ValueError(f"{folder}: calibrate on training photos, never on the held-out ones")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT) if folder.is_dir() else []
        if not files:
            raise ValueError(f"{folder}: no calibration photos ({', '.join(IMAGE_EXT)}) found")
        pick = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
        photos = [read_image(files[i]) for i in pick]
    return [prepare_image(_fit(p, height, width), channels).numpy()[None] for p in photos]


def trunk_nodes(model_proto, keep_float: Sequence[str]) -> tuple[list[str], list[str]]:
    """(nodes to quantise, convs kept fp32): the network trunk minus the first/last convs."""
    bad = set(keep_float) - set(KEEP_FLOAT_CHOICES)
    if bad:
        raise ValueError(f"keep_float takes {', '.join(KEEP_FLOAT_CHOICES)}, not {', '.join(sorted(bad))}")
    nodes = [n for n in model_proto.graph.node if n.name.startswith("/model/") and n.op_type in TRUNK_OPS]
    trunk = {n.name for n in nodes}
    consumers: dict[str, list] = {}
    for n in model_proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in nodes if n.op_type == "Conv"]
    keep: list[str] = []
    if "first" in keep_float and convs:
        keep.append(convs[0].name)
    if "last" in keep_float:
        for n in convs:  # its output (or its activation's) feeds a node outside the trunk
            users = consumers.get(n.output[0], [])
            users += [u for a in users if a.op_type in ("Relu", "LeakyRelu") for u in consumers.get(a.output[0], [])]
            if any(u.name not in trunk for u in users):
                keep.append(n.name)
    quantise = [n.name for n in nodes if n.name not in keep]
    return quantise, keep


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization warns through the root logger ("consider pre-processing"; the
    graph is already constant-folded with batch norm fused): keep those lines off the robot's log
    without letting ``logging.warning`` install a root handler as a side effect."""
    root = logging.getLogger()
    level, guard = root.level, logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(guard)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        if added:
            root.removeHandler(guard)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    images: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]],
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    ranges: str | Path | None = None,
) -> Path:
    """Write the QDQ int8 version of an exported graph (U8 activations, per-channel S8 weights,
    MinMax ranges over ``images``) to ``out_path``, atomically (processes may race on a cache).

    ``ranges``: a JSON file of calibrated activation ranges. When it exists it is used instead of
    calibrating (``images`` may then be a callable that is never called); otherwise the ranges
    found are saved there. Tensor names do not depend on the input size, so one calibration
    serves every size of a model (the onnxruntime backend exports one graph per size).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    ranges = Path(ranges) if ranges is not None else None
    hit = ranges is not None and ranges.is_file()
    if not hit and callable(images):
        images = images()

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(() if hit else images)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"image": x}

    if not hit and not images:
        raise ValueError("int8 calibration needs at least one photo")
    quantise, kept = trunk_nodes(onnx.load(str(fp32_path)), keep_float)
    log.info("int8: quantising %d trunk nodes, fp32 convs: %s", len(quantise), ", ".join(kept) or "none")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp)
    new_ranges = None if ranges is None or hit else ranges.with_name(f".{ranges.name}.{os.getpid()}.json")
    try:
        with _quiet_root_logger():  # the calibrator's augmented model goes to its own temp dir
            quantize_static(
                str(fp32_path),
                str(tmp),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=quantise,
                op_types_to_quantize=list(TRUNK_OPS),
                calibration_cache_path=str(ranges if hit else new_ranges) if ranges is not None else None,
            )
        tmp.replace(out)
        if new_ranges is not None and new_ranges.is_file():
            new_ranges.replace(ranges)
    finally:
        tmp.unlink(missing_ok=True)
        if new_ranges is not None:
            new_ranges.unlink(missing_ok=True)
    return out


def int8_key(source: str, count: int, keep_float: Sequence[str]) -> str:
    """A short digest of the calibration settings (part of the quantised graph's cache name)."""
    src = str(Path(source).resolve()) if source != "skimage" else source
    files: list[str] = []
    if Path(src).is_dir():
        files = sorted(p.name for p in Path(src).iterdir() if p.suffix.lower() in IMAGE_EXT)
    key = json.dumps([QUANT_VERSION, src, files, count, sorted(keep_float)])
    return hashlib.sha256(key.encode()).hexdigest()[:12]
