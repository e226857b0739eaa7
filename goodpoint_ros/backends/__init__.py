"""Every feature front end behind the one ``extractor.Extractor`` protocol.

``make_extractor`` is the single entry point used by the CLI, the node, the bag tool, the
evaluation and the benches:
- learned models (``models.MODELS``) run in a backend: ``torch`` (``backends.torch_backend``: CPU, or
  CUDA) or ``onnxruntime`` (aliases ``onnx``, ``ort``: the exported
  fixed-top-k graph, ``backends/onnx_backend.py``, CPU/CUDA/TensorRT execution providers);
- the classical OpenCV front ends (``classical.CLASSICAL``: orb, akaze, sift) need no weights and
  no backend (``classical.ClassicalExtractor``).
"""

from __future__ import annotations

from typing import Any

from goodpoint_ros.backends.classical import CLASSICAL, ClassicalExtractor
from goodpoint_ros.backends.extractor import Extractor
from goodpoint_ros.backends.onnx_backend import OnnxExtractor
from goodpoint_ros.backends.torch_backend import TorchExtractor
from goodpoint_ros.models import DEFAULT_MODEL, MODELS

BACKENDS = ("torch", "onnxruntime")
# Every name make_extractor takes as ``model``: the learned models' registry, then the OpenCV
# front ends. Command lines offer these, so a newly registered model or front end shows up there.
FRONT_ENDS: tuple[str, ...] = (*MODELS, *CLASSICAL)
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime"}


def make_extractor(
    backend: str = "torch",
    model: str = DEFAULT_MODEL,
    weights: str | None = "default",
    device: str = "auto",
    conf: dict | None = None,
    precision: str = "auto",
    **kwargs: Any,
) -> Extractor:
    """An extractor for ``model`` in ``backend``; an unavailable backend raises with the reason.

    ``model`` may also be a classical front end (``orb``, ``akaze``, ``sift``): it runs in
    OpenCV whatever ``backend`` says, takes no weights, and ignores backend-only keywords.

    onnxruntime keyword arguments: ``providers`` (e.g. ``["tensorrt", "cuda", "cpu"]``),
    ``cache`` (folder for exported graphs and TensorRT engines), ``dynamic``, ``num_threads``,
    ``opset``, ``spin`` (let ORT threads busy-wait between runs).

    ``precision``: auto | fp32 | bf16 | fp16 | int8 (``device.resolve_precision``: auto is bf16 on
    CPUs with AVX-512 BF16 or AMX in torch, fp16 on CUDA, else fp32; int8 is onnxruntime's
    statically quantised graph). Classical front ends ignore it.
    """
    if str(model).lower() in CLASSICAL:
        if weights not in (None, "default", "random"):
            raise ValueError(f"'{model}' is an OpenCV front end and takes no weights (got '{weights}')")
        budget = (conf or {}).get("max_keypoints", 1000)
        return ClassicalExtractor(str(model), budget, **kwargs)
    name = ALIASES.get(str(backend).lower(), str(backend).lower())
    if name == "torch":
        return TorchExtractor(model, weights, device, conf, precision=precision, **kwargs)
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401  (optional dependency: only this backend needs it)
        except ImportError as e:
            raise RuntimeError(f"backend 'onnxruntime' needs the onnxruntime package ({e})") from None
        return OnnxExtractor(model, weights, device, conf, precision=precision, **kwargs)
    raise ValueError(f"unknown backend '{backend}' (available: {', '.join(BACKENDS)})")
