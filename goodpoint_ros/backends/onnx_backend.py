"""onnxruntime backend: the exported fixed-top-k graph behind the ``extractor.Extractor`` protocol.

On first use for an input size the model is exported to a cache folder
(``$GOODPOINT_CACHE`` or ``~/.cache/goodpoint_ros/onnx``) under a hash of the weights, the graph
settings and the size; later runs (and other processes) reuse the file. Execution providers come
from a list (TensorRT, CUDA, CPU); a missing one falls back with one log line. TensorRT engines
are cached on disk next to the ONNX files (ORT's ``trt_engine_cache_*`` options), so a robot
builds them once, not at every start.

Precision: fp32 graphs everywhere; fp16 is TensorRT's (``trt_fp16_enable``); int8 is the
statically quantised QDQ graph (``backends/quantize.py``), made on first use from the cached fp32
graph and cached beside it. onnxruntime's CPU provider has no fast bf16 kernels, so ``auto`` is
fp32 on CPU here (bf16 is the torch backend's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goodpoint_ros.backends.export import MAX_OPSET, export_onnx
from goodpoint_ros.backends.graph import GRAPH_VERSION, graph_keep
from goodpoint_ros.backends.quantize import (
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_KEEP_FLOAT,
    KEEP_FLOAT_CHOICES,
    calibration_images,
    default_calibration_source,
    int8_key,
    quantize_int8,
)
from goodpoint_ros.device import resolve_precision
from goodpoint_ros.models.checkpoint import load_model
from goodpoint_ros.models.features import prepare_image, to_numpy

log = logging.getLogger("goodpoint_ros.backends")

# Detection keys baked into the graph (changing them re-exports); the threshold is post-filtered.
GRAPH_KEYS = ("max_keypoints", "nms_radius", "remove_borders")
OUTPUTS = ("keypoints", "scores", "descriptors", "detector", "valid")
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def cache_dir() -> Path:
    """Where exported graphs and TensorRT engines live (``$GOODPOINT_CACHE`` overrides)."""
    root = os.environ.get("GOODPOINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "goodpoint_ros"
    )
    return Path(root) / "onnx"


def default_providers(device: str) -> tuple[list[str], bool]:
    """Provider preference for a device string, and whether the user asked for it explicitly."""
    if device in ("auto", "", None):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], False
    kind = str(device).split(":")[0]
    if kind == "cpu":
        return ["CPUExecutionProvider"], True
    if kind == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], True
    if kind in ("tensorrt", "trt"):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], True
    raise ValueError(f"unknown device '{device}' for onnxruntime (use auto, cpu, cuda[:i] or tensorrt[:i])")


def resolve_providers(
    device: str = "auto",
    providers: Sequence[str] | None = None,
    engine_cache: Path | None = None,
) -> list[tuple[str, dict]]:
    """The (provider, options) list for a session: requested providers that this onnxruntime
    build has, in order, always ending with CPU. Missing requested ones: one warning line."""
    import onnxruntime as ort

    explicit = providers is not None
    wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers] if explicit else None
    if wanted is None:
        wanted, explicit = default_providers(device)
    if "CPUExecutionProvider" not in wanted:
        wanted = [*wanted, "CPUExecutionProvider"]
    available = ort.get_available_providers()
    chosen = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if missing and explicit:
        log.warning(
            "onnxruntime: %s not available in this build (have %s); using %s",
            ", ".join(missing),
            ", ".join(available),
            ", ".join(chosen),
        )
    index = int(str(device).split(":")[1]) if ":" in str(device) else 0
    out = []
    for p in chosen:
        opts: dict[str, Any] = {}
        if p == "TensorrtExecutionProvider":
            opts = {"device_id": index}  # trt_fp16_enable: set from the chosen precision
            if engine_cache is not None:
                engine_cache.mkdir(parents=True, exist_ok=True)
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache))
        elif p == "CUDAExecutionProvider":
            opts = {"device_id": index}
        out.append((p, opts))
    return out


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of everything that changes the exported graph's numbers."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model.name, "conf": model.arch_conf}, sort_keys=True, default=str).encode())
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class OnnxExtractor:
    """``Extractor``-compatible features from an exported graph run by onnxruntime.

    Outputs are CPU torch tensors (``device`` is cpu even when a GPU provider runs the graph).
    ``set_detection(detection_threshold=...)`` is a post-filter; other detection keys change the
    graph and re-export on the next frame (a cache hit when that configuration was seen before).
    With ``dynamic=True`` one graph serves every size: images are zero-padded to a multiple of 8
    and points in the padding's border are filtered out afterwards, so the top-k budget may
    differ slightly from the torch extractor for sizes that are not multiples of 8.
    """

    def __init__(
        self,
        model: str = "goodpoint",
        weights: str | None = "default",
        device: str = "auto",
        conf: dict | None = None,
        providers: Sequence[str] | None = None,
        cache: str | Path | None = None,
        dynamic: bool = False,
        num_threads: int = 0,
        opset: int = MAX_OPSET,
        spin: bool = False,
        precision: str = "auto",
        calibration: str | None = None,
        calibration_count: int = DEFAULT_CALIBRATION_COUNT,
        int8_keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    ) -> None:
        """``precision``: auto | fp32 | fp16 (TensorRT) | int8 (``calibration``: a folder of
        training photos, default ``quantize.default_calibration_source``)."""
        import onnxruntime as ort  # optional dependency: only this backend needs it

        self.model = load_model(model, weights, conf=conf).eval()
        if self.model.conf.get("pyramid_min_size", 0) > 0:
            raise ValueError("the onnxruntime backend does not run the multi-scale pyramid; use backend 'torch'")
        self.cache = Path(cache) if cache is not None else cache_dir()
        self.providers = resolve_providers(device, providers, self.cache / "trt_engines")
        self.precision = self._choose_precision(precision, self.providers[0][0])
        for name, opts in self.providers:
            if name == "TensorrtExecutionProvider":
                opts["trt_fp16_enable"] = self.precision == "fp16"
        self.calibration = calibration or default_calibration_source()
        self.calibration_count = calibration_count
        self.int8_keep_float = tuple(int8_keep_float)
        if not set(self.int8_keep_float) <= set(KEEP_FLOAT_CHOICES):
            raise ValueError(f"int8_keep_float takes {', '.join(KEEP_FLOAT_CHOICES)}, got {self.int8_keep_float}")
        self.dynamic = dynamic
        self.opset = opset
        self.options = ort.SessionOptions()
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs by default: on a robot's few cores the spinning threads
        # would steal the CPU that the rest of the ROS graph (and torch) need.
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if num_threads > 0:
            self.options.intra_op_num_threads = num_threads
            self.options.inter_op_num_threads = 1
        self._digest = weights_digest(self.model)
        self._sessions: dict[tuple, Any] = {}
        self.device = torch.device("cpu")

    @staticmethod
    def _choose_precision(precision: str, provider: str) -> str:
        """auto: fp16 when TensorRT (the first ``provider``) runs the graph, else fp32 (one log
        line); bf16 and fp16 without TensorRT are refused with the reason."""
        kind = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda"}.get(provider, "cpu")
        if str(precision).lower() == "auto" and kind == "cuda":
            chosen, why = "fp32", "CUDA provider runs the fp32 graph (fp16 is TensorRT's)"
        else:
            chosen, why = resolve_precision(precision, kind, "onnxruntime")
        if str(precision).lower() == "auto":
            logging.getLogger("goodpoint_ros.precision").info("precision auto -> %s (%s)", chosen, why)
        if chosen == "bf16":
            raise ValueError(
                "precision bf16: onnxruntime's CPU provider has no fast bf16 kernels; "
                "use backend torch for bf16, or precision int8 here"
            )
        if chosen == "fp16" and kind != "tensorrt":
            raise ValueError("precision fp16 in onnxruntime needs the TensorRT provider (device tensorrt)")
        return chosen

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def active_providers(self) -> list[str]:
        return [p for p, _ in self.providers]

    @property
    def detection_keys(self) -> tuple[str, ...]:
        return self.model.detection_keys

    @property
    def confident_score(self) -> float:
        return self.model.confident_score

    def set_detection(self, **kwargs: Any) -> None:
        if kwargs.get("pyramid_min_size", 0) > 0:
            raise ValueError("the onnxruntime backend does not run the multi-scale pyramid; use backend 'torch'")
        before = {k: self.model.conf[k] for k in GRAPH_KEYS if k in self.model.conf}
        self.model.set_detection(**kwargs)  # validates the keys
        if any(self.model.conf[k] != v for k, v in before.items()):
            self._sessions.clear()  # the graph changed: re-export (or reuse the cached file) lazily

    def onnx_path(self, height: int, width: int) -> Path:
        """The cache file for the current weights, graph settings and input size."""
        graph = {k: self.model.conf[k] for k in GRAPH_KEYS if k in self.model.conf}
        size = "dynamic" if self.dynamic else f"{height}x{width}"
        key = json.dumps([self._digest, graph, size, self.opset, GRAPH_VERSION], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache / f"{self.model.name}_{size}_{digest}.onnx"

    def int8_path(self, height: int, width: int) -> Path:
        """The cache file of the quantised graph: the fp32 file's name + calibration settings."""
        fp32 = self.onnx_path(height, width)
        key = int8_key(self.calibration, self.calibration_count, self.int8_keep_float)
        return fp32.with_name(f"{fp32.stem}_int8_{key}.onnx")

    def int8_ranges_path(self, height: int, width: int) -> Path:
        """Calibrated activation ranges, shared by the input sizes of these weights and settings.

        Tensor names do not depend on the size, except the first conv's input: the graph input
        itself, or a Pad's output for sizes that are not multiples of ``pad_to`` (padded inside
        fixed-size graphs), so those two kinds of size keep separate ranges.
        """
        graph = {k: self.model.conf[k] for k in GRAPH_KEYS if k in self.model.conf}
        key = json.dumps([self._digest, graph, self.opset, GRAPH_VERSION], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        calib = int8_key(self.calibration, self.calibration_count, self.int8_keep_float)
        m = self.model.pad_to
        padded = "_padded" if not self.dynamic and (height % m or width % m) else ""
        return self.cache / f"{self.model.name}_{digest}_int8_{calib}{padded}_ranges.json"

    def session(self, height: int, width: int):
        """The onnxruntime session for an input size, exporting (and quantising) on first use."""
        import onnxruntime as ort

        key = ("dynamic",) if self.dynamic else (height, width)
        if key not in self._sessions:
            path = self.onnx_path(height, width)
            if not path.is_file() and not (self.precision == "int8" and self.int8_path(height, width).is_file()):
                log.info("exporting %s for %s to %s", self.model.name, key, path)
                export_onnx(self.model, path, height, width, self.dynamic, self.opset)
            if self.precision == "int8":
                fp32, path = path, self.int8_path(height, width)
                if not path.is_file():
                    ranges = self.int8_ranges_path(height, width)
                    if not ranges.is_file():
                        log.info("int8: calibrating %s on %s (%d photos)", self.model.name, self.calibration,
                                 self.calibration_count)  # fmt: skip
                    c, n = self.model.in_channels, self.calibration_count

                    def images() -> list[np.ndarray]:
                        return calibration_images(self.calibration, n, height, width, c)

                    quantize_int8(fp32, path, images, self.int8_keep_float, ranges)
            self._sessions[key] = ort.InferenceSession(
                str(path), self.options, providers=[p for p, _ in self.providers],
                provider_options=[o for _, o in self.providers],
            )  # fmt: skip
        return self._sessions[key]

    def extract(self, image: Any) -> dict[str, torch.Tensor]:
        """Features of one image as CPU tensors, sorted by score (as ``Extractor.extract``)."""
        x = prepare_image(image, self.model.in_channels, "cpu").numpy()[None]
        h, w = x.shape[-2:]
        if self.dynamic:
            m = max(self.model.pad_to, 8)
            x = np.pad(x, ((0, 0), (0, 0), (0, (-h) % m), (0, (-w) % m)))
        out = dict(zip(OUTPUTS, self.session(*x.shape[-2:]).run(list(OUTPUTS), {"image": x})))
        kpts, scores = out["keypoints"][0], out["scores"][0]
        keep = graph_keep(out, self.model.conf, h, w)
        if self.dynamic and x.shape[-2:] != (h, w):
            r = self.model.conf["remove_borders"]
            keep &= (kpts[:, 0] < w - r) & (kpts[:, 1] < h - r)
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-scores[idx], kind="stable")]  # merge MD-Net's per-detector groups by score
        return {
            "keypoints": torch.from_numpy(kpts[idx]),
            "scores": torch.from_numpy(scores[idx]),
            "descriptors": torch.from_numpy(out["descriptors"][0][idx]),
            "detector": torch.from_numpy(out["detector"][0][idx].astype(np.uint8)),
        }

    def extract_many(self, images: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        return [self.extract(im) for im in images]

    def extract_numpy(self, image: Any) -> dict[str, np.ndarray]:
        return to_numpy(self.extract(image))
