"""Model registry: ``build_model(name, conf)``; the small variants are config presets."""

from __future__ import annotations

from goodpoint_ros.models.base import BaseModel, merge_conf
from goodpoint_ros.models.goodpoint import GoodPoint
from goodpoint_ros.models.mdnet import MDNet

# The model the node, the CLI and the demo use unless told otherwise: the trained one that runs
# in real time on a CPU (see the README results).
DEFAULT_MODEL = "goodpoint_small"

# name -> (class, preset conf). A preset only changes widths; the code path is the same.
MODELS: dict[str, tuple[type[BaseModel], dict]] = {
    "goodpoint": (GoodPoint, {}),
    "goodpoint_small": (GoodPoint, {"channels": [32, 32, 64, 64], "head_channels": 128, "descriptor_dim": 128}),
    "mdnet": (MDNet, {}),
    "mdnet_small": (MDNet, {"channels": [16, 16, 32, 32, 64, 64, 64]}),
}


def build_model(name: str, conf: dict | None = None) -> BaseModel:
    """A freshly initialised model; ``conf`` overrides the preset of ``name``."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    cls, preset = MODELS[name]
    model = cls(merge_conf(merge_conf(cls.default_conf, preset), conf))
    model.name = name
    return model


__all__ = ["DEFAULT_MODEL", "BaseModel", "GoodPoint", "MDNet", "MODELS", "build_model", "merge_conf"]
