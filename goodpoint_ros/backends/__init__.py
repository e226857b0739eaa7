"""Every feature front end behind the one ``extractor.Extractor`` protocol.

``make_extractor`` is the single entry point used by the CLI, the node, the bag tool, the
evaluation and the benches. What exists comes from ``registry``: a network runs in a backend
(``registry.BACKENDS``: ``torch`` on CPU or CUDA, ``onnxruntime`` with the exported fixed-top-k graph
on CPU/CUDA/TensorRT); an OpenCV front end (``registry.OPENCV_FRONT_ENDS``) needs no weights and no
backend (``classical.py``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from goodpoint_ros import registry
from goodpoint_ros.backends.extractor import Extractor


def make_extractor(
    backend: str = registry.DEFAULT_BACKEND,
    model: str = registry.DEFAULT_MODEL,
    weights: str | None = "default",
    device: str = "auto",
    conf: dict | None = None,
    precision: str = "auto",
    **kwargs: Any,
) -> Extractor:
    """An extractor for ``model`` in ``backend``; an unavailable backend raises with the reason.

    ``model`` may also be an OpenCV front end (``orb``, ``akaze``, ``sift``): it runs in OpenCV
    whatever ``backend`` says, takes no weights, and ignores backend-only keywords. A ``model``
    the registry does not name is a network checkpoint path or an error from the backend.

    onnxruntime keyword arguments: ``providers`` (e.g. ``["tensorrt", "cuda", "cpu"]``),
    ``cache`` (folder for exported graphs and TensorRT engines), ``dynamic``, ``num_threads``,
    ``opset``, ``spin`` (let ORT threads busy-wait between runs).

    ``precision``: auto | fp32 | bf16 | fp16 | int8 (``device.resolve_precision``: auto is bf16 on
    CPUs with AVX-512 BF16 or AMX in torch, fp16 on CUDA, else fp32; int8 is onnxruntime's
    statically quantised graph). OpenCV front ends ignore it.
    """
    if not registry.is_learned(str(model)):
        if weights not in (None, "default", "random"):
            raise ValueError(f"'{model}' is an OpenCV front end and takes no weights (got '{weights}')")
        budget = (conf or {}).get("max_keypoints", 1000)
        return registry.front_end(str(model)).load()(budget, **kwargs)
    entry = registry.backend(str(backend))
    if entry.needs and importlib.util.find_spec(entry.needs) is None:
        raise RuntimeError(f"backend '{backend}' needs the {entry.needs} package (pip install {entry.needs})")
    return entry.load()(model, weights, device, conf, precision=precision, **kwargs)
