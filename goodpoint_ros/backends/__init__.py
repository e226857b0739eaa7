"""Inference backends behind one interface (``extract``, ``extract_many``, ``set_detection``).

``make_extractor`` is the single entry point used by the CLI, the node and the benches.
"""

from __future__ import annotations

from typing import Any

from goodpoint_ros.features import Extractor

BACKENDS = ("torch",)


def make_extractor(
    backend: str = "torch",
    model: str = "goodpoint",
    weights: str | None = "default",
    device: str = "auto",
    conf: dict | None = None,
    **kwargs: Any,
):
    """An extractor for ``backend``; an unavailable backend raises with the reason."""
    if backend == "torch":
        return Extractor(model, weights, device, conf, **kwargs)
    raise ValueError(f"unknown backend '{backend}' (available: {', '.join(BACKENDS)})")
