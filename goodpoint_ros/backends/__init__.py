"""Inference backends behind one interface (``extract``, ``extract_many``, ``set_detection``).

``make_extractor`` is the single entry point used by the CLI, the node and the benches:
- ``torch``: ``features.Extractor`` (CPU, or CUDA with fp16 autocast);
- ``onnxruntime`` (aliases ``onnx``, ``ort``): the exported fixed-top-k graph
  (``backends/onnx_backend.py``), CPU/CUDA/TensorRT execution providers.
"""

from __future__ import annotations

from typing import Any

from goodpoint_ros.features import Extractor
from goodpoint_ros.models import DEFAULT_MODEL

BACKENDS = ("torch", "onnxruntime")
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime"}


def make_extractor(
    backend: str = "torch",
    model: str = DEFAULT_MODEL,
    weights: str | None = "default",
    device: str = "auto",
    conf: dict | None = None,
    **kwargs: Any,
):
    """An extractor for ``backend``; an unavailable backend raises with the reason.

    onnxruntime keyword arguments: ``providers`` (e.g. ``["tensorrt", "cuda", "cpu"]``),
    ``cache`` (folder for exported graphs and TensorRT engines), ``dynamic``, ``num_threads``,
    ``fp16`` (TensorRT), ``opset``, ``spin`` (let ORT threads busy-wait between runs).
    """
    name = ALIASES.get(str(backend).lower(), str(backend).lower())
    if name == "torch":
        return Extractor(model, weights, device, conf, **kwargs)
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"backend 'onnxruntime' needs the onnxruntime package ({e})") from None
        from goodpoint_ros.backends.onnx_backend import OnnxExtractor

        return OnnxExtractor(model, weights, device, conf, **kwargs)
    raise ValueError(f"unknown backend '{backend}' (available: {', '.join(BACKENDS)})")
