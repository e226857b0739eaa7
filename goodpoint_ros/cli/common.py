"""What ``goodpoint-extract`` and ``goodpoint-match`` share: the front-end flags (the node's
parameter names, through ``settings``) and one error line instead of a traceback.

Errors (unreadable image, image above ``--max-pixels``, bad weights, unknown model) print one
line on stderr and exit with status 2 (argparse's usage errors use 2 as well).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from goodpoint_ros.io.image_files import ImageReadError
from goodpoint_ros.models.checkpoint import CheckpointError
from goodpoint_ros.node.startup import pyramid_problem
from goodpoint_ros.settings import EXTRACTOR_KEYS, ExtractorSettings, add_arguments, params_from_args

FRONT_END_FLAGS = (*EXTRACTOR_KEYS, "max_pixels")


# Features for matching pairs and offline mapping: the model's own detection (the threshold alone
# for the shipped models), not the node's odometry fill, and the model's offline image pyramid
# (``offline_conf``: goodpoint from sqrt(2) x the image down to a 160-px short side, mdnet from the
# image down), which the node cannot afford at 30 Hz. ``--pyramid-min-size 0``: one scale, what
# the onnxruntime backend runs (it gets one scale unless asked for the pyramid).
OFFLINE_DEFAULTS = {"min_keypoints_per_mpx": -1.0}


def add_front_end_args(parser: argparse.ArgumentParser) -> None:
    """The node's front-end parameters as flags (``--threshold`` is ``--detection-threshold``)."""
    add_arguments(parser, FRONT_END_FLAGS, OFFLINE_DEFAULTS, aliases={"detection_threshold": ["--threshold"]})


def build_front_end(args: argparse.Namespace) -> Any:
    """The extractor these flags describe, built the way the node builds it; pyramid flags left at
    the model's default (-1) take the model's ``offline_conf`` where the backend runs a pyramid."""
    params = params_from_args(args, EXTRACTOR_KEYS)
    frontend, _ = ExtractorSettings.from_params(params).build()
    offline = getattr(getattr(frontend.extractor, "model", None), "offline_conf", {})
    if offline and not pyramid_problem(offline["pyramid_min_size"], params["backend"]):
        frontend.apply({**params, **{k: v for k, v in offline.items() if params[k] < 0}})
    return frontend.extractor


def run(command: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run ``command`` and turn any expected failure into one line on stderr and exit code 2."""
    try:
        return command(argv)
    except (ImageReadError, CheckpointError, KeyError, ValueError, RuntimeError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
