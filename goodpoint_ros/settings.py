"""The one settings path: parameter values -> an extractor and a frame pipeline.

The node (its ROS parameters), ``goodpoint-bag`` and ``goodpoint-extract`` / ``goodpoint-match``
(command-line flags named after the same parameters) all build their front end and per-frame
pipeline here, from the names and defaults of ``params.TABLE``. So the same settings give the same
keypoints whichever tool runs them (``test_settings.py`` runs the node and the bag tool on the
same frames and compares). Importing this module does not import torch; ``build`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from goodpoint_ros import registry
from goodpoint_ros.errors import one_line
from goodpoint_ros.node.startup import (
    StartupError,
    backend_problem,
    device_problem,
    precision_problem,
    pyramid_problem,
    torch_problem,
    weights_problem,
)
from goodpoint_ros.params import DEFAULT_IF_NEGATIVE, DEFAULTS, TABLE, first_problem

# The parameters each part reads; a tool offers the flags of the parts it runs.
EXTRACTOR_KEYS = (
    "model", "weights", "backend", "device", "precision", "num_threads",
    "max_keypoints", "detection_threshold", "nms_radius", "subpixel_radius", "min_keypoints_per_mpx",
    "pyramid_min_size", "pyramid_levels_up",
)  # fmt: skip
MATCH_KEYS = ("match_ratio", "match_max_distance", "verification_method", "verification_threshold")
PIPELINE_KEYS = (
    "input_mode", "publish_tracks", "publish_odometry", "vo_min_inliers", "vo_ransac_px", "vo_min_parallax_px",
    *MATCH_KEYS,
)  # fmt: skip


def _values(p: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` from ``p``, the table's default where ``p`` has none, typed (an int given for a
    float parameter becomes a float) and checked against the table (``StartupError`` if not)."""
    out = {key: p.get(key, DEFAULTS[key]) for key in keys}
    for key, value in out.items():
        if TABLE[key].type is float and isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)
    bad = first_problem(out)
    if bad:
        raise StartupError(*bad)
    return out


class Frontend:
    """An extractor plus what a negative detection parameter restores: the model's own settings
    (its checkpoint's), read before any parameter touched them."""

    def __init__(self, extractor: Any) -> None:
        self.extractor = extractor
        conf = getattr(getattr(extractor, "model", None), "conf", {})
        self.model_detection = {k: conf[k] for k in DEFAULT_IF_NEGATIVE if k in conf}

    def apply(self, p: Mapping[str, Any]) -> None:
        """The detection parameters of ``p`` onto the extractor (at start, and when they change at
        run time); a negative value is the model's default, also after another value was set."""
        conf: dict[str, Any] = {"max_keypoints": int(p.get("max_keypoints", DEFAULTS["max_keypoints"]))}
        for key in DEFAULT_IF_NEGATIVE:
            value = TABLE[key].type(p.get(key, DEFAULTS[key]))
            conf[key] = value if value >= 0 else self.model_detection.get(key)
        keys = self.extractor.detection_keys
        self.extractor.set_detection(**{k: v for k, v in conf.items() if k in keys and v is not None})


@dataclass(frozen=True)
class ExtractorSettings:
    """The front end: which model, where it runs, and its detection parameters (``EXTRACTOR_KEYS``,
    checked, the table's default for any not given)."""

    values: dict[str, Any]

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> ExtractorSettings:
        """From parameter values (the node's, or a tool's flags); missing ones are the defaults.
        A bad value raises ``StartupError`` naming the parameter."""
        return cls(_values(p, EXTRACTOR_KEYS))

    def problems(self) -> tuple[str, str] | None:
        """(parameter, problem) of the first choice this machine cannot run, before anything loads."""
        v = self.values
        learned = registry.is_learned(v["model"])  # OpenCV front ends ignore backend, precision, device
        for name, problem in (
            ("backend", backend_problem(v["backend"]) if learned else None),
            ("precision", precision_problem(v["precision"], v["backend"]) if learned else None),
            ("device", device_problem(v["device"], v["backend"]) if learned else None),
            ("weights", weights_problem(v["weights"], registry.MODEL_NAMES)),
            ("pyramid_min_size", pyramid_problem(v["pyramid_min_size"], v["backend"]) if learned else None),
        ):
            if problem:
                return name, problem
        return None

    def build(self, spare_cores: int = 0) -> tuple[Frontend, str]:
        """The front end with these settings applied, and a note on the threads it was given.

        Sets the process-wide thread pools (torch intra-op, OpenCV) to ``num_threads`` (0: every
        core this process may use but ``spare_cores``; ``device.resolve_threads``). Every failure
        is one ``StartupError`` naming the parameter to blame (an old torch, a missing package,
        unreadable weights, a backend failure)."""
        problem = torch_problem()
        if problem:
            raise StartupError(None, problem)
        bad = self.problems()
        if bad:
            raise StartupError(*bad)
        import cv2
        import torch

        from goodpoint_ros.backends import make_extractor
        from goodpoint_ros.device import resolve_threads

        v = self.values
        threads, why = resolve_threads(int(v["num_threads"]), spare=spare_cores)
        torch.set_num_threads(threads)  # process-wide pools: the network's only
        cv2.setNumThreads(threads)
        onnx = registry.is_learned(v["model"]) and registry.backend(v["backend"]).name != "torch"
        try:
            extractor = make_extractor(
                v["backend"], v["model"], v["weights"], v["device"], None, precision=v["precision"],
                **({"num_threads": threads} if onnx else {}),
            )  # fmt: skip
        except Exception as e:  # unreadable weights, the other model's weights, a backend failure
            blame = "weights" if v["weights"] not in ("default", "random") else "model"
            blame = "backend" if blame == "model" and v["backend"] != "torch" else blame
            raise StartupError(blame, one_line(e)) from None
        frontend = Frontend(extractor)
        frontend.apply(v)
        return frontend, f"num_threads {v['num_threads']} -> {threads} ({why})"


def match_settings(p: Mapping[str, Any]) -> Any:
    """The frame-to-frame matching parameters (``pipeline.MatchSettings``; dynamic in the node)."""
    from goodpoint_ros.vo.pipeline import MatchSettings

    v = _values(p, MATCH_KEYS)
    return MatchSettings(
        float(v["match_ratio"]),
        float(v["match_max_distance"]),
        str(v["verification_method"]),
        float(v["verification_threshold"]),
    )


@dataclass(frozen=True)
class PipelineSettings:
    """The per-frame pipeline: input mode, what the odometry computes, and matching
    (``PIPELINE_KEYS``, checked, the table's default for any not given)."""

    values: dict[str, Any]

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> PipelineSettings:
        return cls(_values(p, PIPELINE_KEYS))

    def build(self, extractor: Any, extract_lock: Any = None) -> Any:
        """A ``FramePipeline`` for ``extractor`` with these settings."""
        from goodpoint_ros.vo.pipeline import FramePipeline

        v = self.values
        return FramePipeline(
            extractor, v["input_mode"], match_settings(v), v["publish_tracks"], v["publish_odometry"],
            v["vo_min_inliers"], v["vo_ransac_px"], v["vo_min_parallax_px"], extract_lock=extract_lock,
        )  # fmt: skip


def add_arguments(
    parser: argparse.ArgumentParser,
    keys: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """``--kebab-case`` flags for the parameters ``keys``, typed, with the table's choices, help and
    defaults (``defaults`` overrides a default for one tool; ``aliases`` adds older flag names)."""
    defaults, aliases = defaults or {}, aliases or {}
    for key in keys:
        spec = TABLE[key]
        default = defaults.get(key, spec.default)
        kwargs: dict[str, Any] = {"default": default, "dest": key}
        if spec.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = spec.type
        if spec.choices:
            kwargs["choices"] = spec.choices
        kwargs["help"] = spec.description + (" (default: %(default)s)" if default != "" else "")
        parser.add_argument("--" + key.replace("_", "-"), *aliases.get(key, ()), **kwargs)


def params_from_args(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    """The parameter values ``add_arguments`` parsed."""
    return {key: getattr(args, key) for key in keys}
