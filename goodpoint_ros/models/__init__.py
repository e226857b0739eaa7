"""Model registry: ``build_model(name, conf)``; the small variants are config presets."""

from __future__ import annotations

from goodpoint_ros import registry
from goodpoint_ros.models.base import BaseModel, merge_conf
from goodpoint_ros.models.goodpoint import GoodPoint
from goodpoint_ros.models.mdnet import MDNet

DEFAULT_MODEL = registry.DEFAULT_MODEL

# name -> (class, preset conf), the networks of ``registry.FRONT_ENDS``. A preset only changes
# widths; the code path is the same.
MODELS: dict[str, tuple[type[BaseModel], dict]] = {
    f.name: (f.load(), f.preset) for f in registry.FRONT_ENDS if f.kind == registry.NETWORK
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
