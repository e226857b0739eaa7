"""The one table of names: every front end (network or OpenCV) and every inference backend.

Torch-free on purpose: the parameter table (``params.py``), the launch file, the node's start-up
checks, the command lines and the docs read it without importing a network. Everything that
offers a choice of model or backend derives it from here, so adding a front end is one new file
(the class) plus one line below; ``test_registry.py`` holds the table to the code.

    .venv/bin/python -m goodpoint_ros.registry     # the table as Markdown (docs/architecture.md)
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

NETWORK = "network"  # a learned model: weights, a backend, a device and a precision
OPENCV = "opencv"  # a weight-free OpenCV detector/descriptor, always on the CPU


@dataclass(frozen=True)
class FrontEnd:
    """One name ``model`` accepts. ``target`` is ``module:Class``: for a network the ``nn.Module``
    (built with ``preset`` merged over its ``default_conf``), for OpenCV the ``Extractor``."""

    name: str
    kind: str  # NETWORK | OPENCV
    target: str
    summary: str
    descriptor_dim: int  # floats per descriptor the front end publishes (binary ones unpacked to +-1 bits)
    preset: dict[str, Any] = field(default_factory=dict)  # network width preset (same code path)
    detector_sets: int = 1  # MD-Net: keypoints come in N sets, matched set against set

    @property
    def learned(self) -> bool:
        return self.kind == NETWORK

    def load(self) -> Any:
        """The class behind the name (imports torch and the module)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Backend:
    """An inference backend for the networks; ``needs`` is the optional Python package it imports."""

    name: str
    target: str  # module:Class of its Extractor
    summary: str
    precisions: tuple[str, ...]  # what it runs besides ``auto``
    aliases: tuple[str, ...] = ()
    needs: str | None = None
    gpu_only: tuple[str, ...] = ()  # precisions it runs only on a GPU provider

    @property
    def cpu_precisions(self) -> tuple[str, ...]:
        return tuple(p for p in self.precisions if p not in self.gpu_only)

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_SMALL_GOODPOINT = {"channels": [32, 32, 64, 64], "head_channels": 128, "descriptor_dim": 128}

FRONT_ENDS: tuple[FrontEnd, ...] = (
    FrontEnd(
        "goodpoint", NETWORK, "goodpoint_ros.models.goodpoint:GoodPoint",
        "GoodPoint at paper size (SuperPoint VGG encoder)", 256,
    ),
    FrontEnd(
        "goodpoint_small", NETWORK, "goodpoint_ros.models.goodpoint:GoodPoint",
        "GoodPoint at half width, real time on a CPU (the default)", 128, _SMALL_GOODPOINT,
    ),
    FrontEnd(
        "mdnet", NETWORK, "goodpoint_ros.models.mdnet:MDNet",
        "MD-Net at paper size: 2 complementary detectors", 128, detector_sets=2,
    ),
    FrontEnd(
        "mdnet_small", NETWORK, "goodpoint_ros.models.mdnet:MDNet",
        "MD-Net at half width", 64, {"channels": [16, 16, 32, 32, 64, 64, 64]}, detector_sets=2,
    ),
    FrontEnd("orb", OPENCV, "goodpoint_ros.backends.classical:ORB", "OpenCV ORB (binary, 256 bits)", 256),
    FrontEnd("akaze", OPENCV, "goodpoint_ros.backends.classical:AKAZE", "OpenCV AKAZE (binary MLDB, 486 bits in 61 bytes)", 488),
    FrontEnd("sift", OPENCV, "goodpoint_ros.backends.classical:SIFT", "OpenCV SIFT (L2-normalised)", 128),
)  # fmt: skip

BACKENDS: tuple[Backend, ...] = (
    Backend(
        "torch", "goodpoint_ros.backends.torch_backend:TorchExtractor",
        "PyTorch eager on CPU or CUDA", ("fp32", "bf16", "fp16"),
    ),
    Backend(
        "onnxruntime", "goodpoint_ros.backends.onnx_backend:OnnxExtractor",
        "exported fixed-top-k graph; CPU, CUDA or TensorRT (fp16) providers", ("fp32", "fp16", "int8"),
        aliases=("onnx", "ort"), needs="onnxruntime", gpu_only=("fp16",),
    ),
)  # fmt: skip

DEFAULT_MODEL = "goodpoint_small"  # trained, and real time on a CPU (README results)
DEFAULT_BACKEND = "torch"

BY_NAME: dict[str, FrontEnd] = {f.name: f for f in FRONT_ENDS}
NETWORKS: tuple[str, ...] = tuple(f.name for f in FRONT_ENDS if f.kind == NETWORK)
OPENCV_FRONT_ENDS: tuple[str, ...] = tuple(f.name for f in FRONT_ENDS if f.kind == OPENCV)
MODEL_NAMES: tuple[str, ...] = tuple(BY_NAME)
BACKEND_BY_NAME: dict[str, Backend] = {a: b for b in BACKENDS for a in (b.name, *b.aliases)}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKEND_BY_NAME)  # with aliases: what the parameter accepts
PRECISIONS: tuple[str, ...] = ("auto", *dict.fromkeys(p for b in BACKENDS for p in b.precisions))


def front_end(name: str) -> FrontEnd:
    """The entry for ``name`` (case-insensitive); KeyError names the choices."""
    entry = BY_NAME.get(str(name).lower())
    if entry is None:
        raise KeyError(
            f"unknown model '{name}' (networks: {', '.join(NETWORKS)}; OpenCV: {', '.join(OPENCV_FRONT_ENDS)})"
        )
    return entry


def is_learned(name: str) -> bool:
    """Whether ``name`` is a network (unknown names count as networks: their loader says why)."""
    entry = BY_NAME.get(str(name).lower())
    return entry is None or entry.learned


def backend(name: str) -> Backend:
    """The backend for ``name`` or one of its aliases; ValueError names the choices."""
    entry = BACKEND_BY_NAME.get(str(name).lower())
    if entry is None:
        raise ValueError(f"unknown backend '{name}' (available: {', '.join(b.name for b in BACKENDS)})")
    return entry


def model_choices_text() -> str:
    """The ``model`` parameter's description, from the table."""
    return f"network: {' | '.join(NETWORKS)}, or an OpenCV front end: {' | '.join(OPENCV_FRONT_ENDS)}"


def markdown() -> str:
    """The table as Markdown, for the docs."""
    rows = ["| model | kind | descriptor | detector sets | what |", "|---|---|---|---|---|"]
    rows += [f"| `{f.name}` | {f.kind} | {f.descriptor_dim} | {f.detector_sets} | {f.summary} |" for f in FRONT_ENDS]
    rows += ["", "| backend | aliases | precisions (besides auto) | needs | what |", "|---|---|---|---|---|"]
    rows += [
        f"| `{b.name}` | {', '.join(b.aliases) or '-'} | {', '.join(b.precisions)} | {b.needs or '-'} | {b.summary} |"
        for b in BACKENDS
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
