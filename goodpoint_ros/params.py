"""The node's parameter table: one entry per parameter, the single source of every default.

ROS-free on purpose: the node declares its typed parameters from it (``ros/extractor_node.py``),
``config/extractor.yaml`` is generated from it (``python -m goodpoint_ros.params --write``; a test
fails when the checked-in file differs), the launch logic parses launch arguments with it and the
bag tool takes its argparse defaults from it. Change a default here and nowhere else.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goodpoint_ros import registry  # torch-free: the names of models, backends and precisions

VERIFY_METHODS = ("homography", "fundamental", "essential", "none")
INPUT_MODES = ("mono", "stereo", "rgbd")
QOS_CHOICES = ("auto", "sensor_data", "reliable")


@dataclass(frozen=True)
class Param:
    """One node parameter. ``dynamic`` ones change at run time; the others are read once at start
    (declared read-only, so ``ros2 param set`` refuses them with the reason)."""

    name: str
    default: bool | int | float | str
    description: str
    dynamic: bool = False
    min: int | float | None = None
    max: int | float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # free-form strings with a shape (device), matched in full
    doc: str = ""  # longer comment for config/extractor.yaml (defaults to the description)

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def read_only(self) -> bool:
        return not self.dynamic

    def constraints(self) -> str:
        """Human-readable constraints (``ParameterDescriptor.additional_constraints``)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.pattern:
            return f"matches {self.pattern}"
        if self.min is not None or self.max is not None:
            return f"{self.min if self.min is not None else '-inf'} .. {self.max if self.max is not None else 'inf'}"
        return ""

    def check(self, value: Any) -> str | None:
        """The problem with ``value`` for this parameter, or None when it is valid."""
        want = self.type
        # bool is an int subclass: refuse True for an int parameter, accept an int for a float one
        if want is bool and not isinstance(value, bool):
            return f"expects a bool, got {value!r}"
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expects an integer, got {value!r}"
        if want is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"expects a number, got {value!r}"
        if want is str and not isinstance(value, str):
            return f"expects a string, got {value!r}"
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            return f"{value!r} is out of range [{self.min}, {self.max}]"
        if self.choices and value not in self.choices:
            return f"'{value}' is not one of {', '.join(self.choices)}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"'{value}' does not match {self.pattern}"
        return None


PARAMS: tuple[Param, ...] = (
    Param(
        "model",
        registry.DEFAULT_MODEL,
        registry.model_choices_text(),
        choices=registry.MODEL_NAMES,
        doc=f"Network: {' | '.join(registry.NETWORKS)} (the small ones are CPU-friendly),\n"
        f"or an OpenCV front end, weight-free baselines: {' | '.join(registry.OPENCV_FRONT_ENDS)} "
        "(weights/backend/device ignored).",
    ),
    Param(
        "weights",
        "default",
        "default (the shipped weights; refused if none ship) | random | a .pt path",
        doc="default = the weights shipped for `model` (refused in one line if none ship),\n"
        "random, a shipped model name, or a path to a goodpoint_ros checkpoint (.pt, loaded as data only).",
    ),
    Param(
        "backend",
        "torch",
        "inference backend: "
        + " | ".join(b.name + (f" (aliases {', '.join(b.aliases)})" if b.aliases else "") for b in registry.BACKENDS),
        choices=registry.BACKEND_NAMES,
    ),
    Param(
        "device",
        "auto",
        "auto (CUDA if present, else CPU) | cpu | cuda | cuda:N | tensorrt (onnxruntime only)",
        pattern=r"auto|cpu|cuda(:\d+)?|tensorrt",
    ),
    Param(
        "precision",
        "auto",
        "inference precision: auto (the backend's choice) | " + " | ".join(registry.PRECISIONS[1:]),
        choices=registry.PRECISIONS,
    ),
    Param(
        "num_threads",
        0,
        "CPU threads of the network (torch intra-op, onnxruntime, OpenCV); 0 = every core but one in the node, every core offline",
        min=0,
        max=1024,
        doc="CPU threads of the network (torch's intra-op pool, onnxruntime's session, OpenCV); 0 = every\n"
        "core this process may use but one, left to the node's output stage (goodpoint-bag: every core).\n"
        "On a 2-core Intel Xeon, 30 Hz, every output subscribed: one thread processed 30.0 Hz at 320x240\n"
        "and 16.1 Hz at 640x480, two 27.9 and 13.4 Hz (bench/node.py --soak 40 --threads 1|2).",
    ),
    Param("max_keypoints", 1000, "keypoints per image, best scores first", dynamic=True, min=1, max=100_000),
    Param(
        "detection_threshold",
        -1.0,
        "detection score threshold; a negative value is the model's default",
        dynamic=True,
        min=-1.0,
        max=1.0,
    ),
    Param(
        "nms_radius",
        -1,
        "non-maximum suppression radius in pixels; a negative value is the model's default",
        dynamic=True,
        min=-1,
        max=64,
    ),
    Param(
        "subpixel_radius",
        -1,
        "sub-pixel refinement window radius, 0 = off; a negative value is the model's default",
        dynamic=True,
        min=-1,
        max=16,
        doc="Sub-pixel refinement: keypoints move to the score-weighted mean of the (2r+1)^2 window\n"
        "around each heatmap peak; 0 turns it off, a negative value is the model's default.",
    ),
    Param(
        "min_keypoints_per_mpx",
        4000.0,
        "adaptive threshold: at least this many keypoints per megapixel, the best below "
        "detection_threshold filling up; 0 = the threshold alone; a negative value is the model's default",
        dynamic=True,
        min=-1.0,
        max=1e6,
        doc="Adaptive threshold: when fewer than this many keypoints per megapixel of the image pass\n"
        "detection_threshold, the best of the others (NMS maxima, by score) fill up to it, within\n"
        "max_keypoints, so that odometry and a SLAM back-end get points on weakly textured frames:\n"
        "4000 gives 308 at 320x240 and the 1000 budget at 640x480 (monocular VO in bench/vo.py: ATE\n"
        "0.143 vs 0.153 m, neither failing a step), and the metric odometry takes its poses from\n"
        "the points above the threshold (RGB-D ATE 0.025 vs 0.031 m). On by default in the node and\n"
        "goodpoint-bag, which feed odometry and tracks; the offline tools keep the model's default\n"
        "(the threshold alone), which matches homography pairs and COLMAP better (docs/results.md).\n"
        "0 = the threshold alone (the paper's); a negative value is the model's default (0).",
    ),
    Param(
        "pyramid_min_size",
        -1,
        "image pyramid: sqrt(2) levels down to this short side in pixels, 0 = one scale; "
        "a negative value is the model's default",
        min=-1,
        max=4096,
        doc="Multi-scale extraction (the MD-Net paper's, for both models): the network also runs on the\n"
        "image scaled by 1/sqrt(2), 1/2, ... while the short side stays at least this many pixels; the\n"
        "levels' keypoints are merged by score within max_keypoints, a corner found on two levels kept on\n"
        "both (each level's descriptor matches a view zoomed to that scale). 0 = one scale; a negative\n"
        "value is the model's default (one scale; goodpoint-extract and goodpoint-match: 160). Torch\n"
        "backend only; costs up to ~2x the network.",
    ),
    Param(
        "pyramid_levels_up",
        -1,
        "image pyramid: levels above the input scale, each sqrt(2) larger (finer keypoint positions; "
        "only with pyramid_min_size > 0); a negative value is the model's default",
        min=-1,
        max=4,
        doc="Image pyramid levels above the input scale: 1 also runs the network on the image enlarged by\n"
        "sqrt(2), as SIFT doubles its first octave, so points found there are placed 1.4x more finely\n"
        "(training photos, 640x480: MMA@1 0.59 -> 0.73) at about twice the pyramid's time; they rank by\n"
        "score only where a neighbouring level finds them too (the enlarged image interpolates). Only with\n"
        "pyramid_min_size > 0. 0 = none; a negative value is the model's default (0). goodpoint-extract\n"
        "and goodpoint-match take the model's offline setting: 1 for goodpoint, 0 for mdnet.",
    ),
    Param(
        "input_mode",
        "mono",
        "mono (image) | stereo (left/image + right/image) | rgbd (image + depth, 16UC1 mm or 32FC1 m)",
        choices=INPUT_MODES,
    ),
    Param("compressed", False, "subscribe to <image topic>/compressed (sensor_msgs/CompressedImage, jpeg or png)"),
    Param(
        "qos",
        "auto",
        "image subscription QoS: auto (match the camera's publisher) | sensor_data (best effort) | reliable",
        choices=QOS_CHOICES,
        doc="Image subscription QoS: auto (matches the publisher found on the topic: reliable only when every\n"
        "publisher is reliable, else best effort, which receives from both) | sensor_data (best effort) |\n"
        "reliable. qos_overrides.<topic>.subscription.* parameters override it.",
    ),
    Param(
        "sync_slop", 0.02, "stereo / rgbd: largest stamp difference (seconds) between the two images", min=0.0, max=5.0
    ),
    Param(
        "sync_queue_size",
        10,
        "stereo / rgbd: messages kept per input while waiting for a partner (older ones dropped and counted)",
        min=1,
        max=1000,
    ),
    Param(
        "match_ratio",
        0.95,
        "Lowe ratio test on descriptor distances for frame-to-frame matches; 1 disables it",
        dynamic=True,
        min=0.0,
        max=1.0,
    ),
    Param(
        "match_max_distance",
        0.0,
        "largest descriptor distance (L2 of unit vectors, 0..2) of a match; 0 disables it",
        dynamic=True,
        min=0.0,
        max=2.0,
    ),
    Param(
        "verification_method",
        "homography",
        "geometric verification of matches: homography | fundamental | essential (needs camera_info) | none",
        dynamic=True,
        choices=VERIFY_METHODS,
    ),
    Param("verification_threshold", 3.0, "RANSAC inlier threshold in pixels", dynamic=True, min=0.1, max=100.0),
    Param(
        "publish_debug_image",
        True,
        "publish ~/debug_image (keypoints coloured by track, inlier motion in green); built only while subscribed",
        dynamic=True,
    ),
    Param(
        "max_pixels",
        10_000_000,
        "largest image (width*height) decoded, checked from the message or file header first; 0 = no limit",
        min=0,
        max=1_000_000_000,
        doc="Largest image (width*height) accepted, checked from the raw message's size or the compressed\n"
        "file's header on arrival, before anything is decoded (decompression bombs); bigger frames are\n"
        "counted as malformed. Default 10 MP: 4K UHD/DCI and 3840x2400 pass, 5K is refused. 0 = no limit.",
    ),
    Param("warmup", True, "run the model twice at start so the first real frame is not slow"),
    Param(
        "diagnostics_period",
        1.0,
        "seconds between /diagnostics messages (rates, drops, latency p50/p95, model, device)",
        min=0.05,
        max=3600.0,
    ),
    Param(
        "diagnostics_window",
        5.0,
        "seconds of history behind the /diagnostics latency percentiles and rates",
        min=0.5,
        max=3600.0,
        doc="Seconds of history behind the /diagnostics latency and extraction percentiles and the rates:\n"
        "a time window, so a change of input size or load shows within it (not after N frames).",
    ),
    Param(
        "publish_tracks",
        True,
        "publish ~/tracks (VINS-Fusion PointCloud layout); needs camera_info",
        doc="Publish ~/tracks: sensor_msgs/PointCloud in VINS-Fusion's feature-tracker layout (points =\n"
        "undistorted normalised coordinates from camera_info K/D; channels id, camera_id, u, v,\n"
        "velocity_x, velocity_y). Needs camera_info; stereo adds each verified right observation (camera_id 1).",
    ),
    Param(
        "publish_odometry",
        True,
        "publish ~/odometry (nav_msgs/Odometry) from the input mode's visual odometry; needs camera_info",
        doc="Publish ~/odometry (nav_msgs/Odometry) from the input mode: mono = essential matrix with\n"
        "parallax keyframes (up to scale), rgbd = PnP on depth, stereo = triangulation + PnP (needs\n"
        "right/camera_info for the baseline). Needs camera_info. Tracking loss holds the pose and resets\n"
        "the reference (counted in /diagnostics: tracking, vo_resets, track_length_mean/max).",
    ),
    Param("odom_frame", "odom", "header.frame_id of ~/odometry (the optical frame of the first processed frame)"),
    Param("child_frame", "camera", "child_frame_id of ~/odometry (the camera's optical frame)"),
    Param(
        "vo_min_inliers",
        12,
        "odometry: fewer RANSAC inliers than this is a tracking loss (pose held, reference reset)",
        min=5,
        max=100_000,
    ),
    Param(
        "vo_ransac_px",
        2.0,
        "odometry: RANSAC reprojection threshold in pixels (PnP, essential matrix)",
        min=0.1,
        max=100.0,
    ),
    Param(
        "vo_min_parallax_px",
        10.0,
        "mono odometry: median rotation-compensated parallax in pixels that makes a new keyframe",
        min=0.0,
        max=10_000.0,
    ),
)

TABLE: dict[str, Param] = {p.name: p for p in PARAMS}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMS}
DYNAMIC: frozenset[str] = frozenset(p.name for p in PARAMS if p.dynamic)
# Parameters whose negative value means "the model's default" (its checkpoint's detection
# settings), at start and when set at run time: derived from their descriptions, the one statement.
DEFAULT_IF_NEGATIVE: tuple[str, ...] = tuple(
    p.name for p in PARAMS if "a negative value is the model's default" in p.description
)


def check(name: str, value: Any) -> str | None:
    """The problem with ``name := value``, or None; unknown names are a problem too."""
    if name not in TABLE:
        return f"unknown parameter (known: {', '.join(TABLE)})"
    return TABLE[name].check(value)


def first_problem(values: dict[str, Any]) -> tuple[str, str] | None:
    """(name, problem) of the first invalid value in ``values`` (table order), or None."""
    for p in PARAMS:
        if p.name in values:
            problem = p.check(values[p.name])
            if problem:
                return p.name, problem
    return None


def parse_text(name: str, text: str) -> Any:
    """A launch argument / command-line string as the parameter's type; ValueError says why not."""
    p = TABLE.get(name)
    if p is None:
        raise ValueError(f"'{name}': unknown parameter")
    want = p.type
    try:
        if want is bool:
            low = text.strip().lower()
            if low not in ("true", "false"):
                raise ValueError
            value: Any = low == "true"
        elif want is int:
            value = int(text)
        elif want is float:
            value = float(text)
        else:
            value = text
    except ValueError:
        raise ValueError(f"'{name}': expects a {want.__name__}, got '{text}'") from None
    problem = p.check(value)
    if problem:
        raise ValueError(f"'{name}': {problem}")
    return value


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def render_yaml() -> str:
    """``config/extractor.yaml``: every parameter with its comment, constraints and default."""
    lines = [
        "# goodpoint_extractor parameters, generated from goodpoint_ros/params.py (the one table):",
        "#   python -m goodpoint_ros.params --write config/extractor.yaml",
        "# Load with `--ros-args --params-file config/extractor.yaml` or through",
        "# launch/extractor.launch.py (params_file:=...). Values marked (run-time) can be changed while",
        "# the node runs (`ros2 param set /goodpoint_extractor max_keypoints 500`); the others are",
        "# read-only, read once at start.",
        "/**:",
        "  ros__parameters:",
    ]
    for p in PARAMS:
        body = (p.doc or p.description + ".").split("\n")
        tail = "; ".join(x for x in ("run-time" if p.dynamic else "read-only", p.constraints()) if x)
        lines += [f"    # {line}" for line in body] + [f"    #   ({tail})"]
        lines.append(f"    {p.name}: {_yaml_scalar(p.default)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write or check ``config/extractor.yaml`` against the table."""
    ap = argparse.ArgumentParser(prog="python -m goodpoint_ros.params", description=main.__doc__)
    ap.add_argument("--write", metavar="YAML", help="write the generated params file here")
    ap.add_argument("--check", metavar="YAML", help="exit 1 if this params file differs from the table")
    a = ap.parse_args(argv)
    text = render_yaml()
    if a.write:
        Path(a.write).write_text(text)
    elif a.check:
        if Path(a.check).read_text() != text:
            print(f"{a.check} differs from goodpoint_ros/params.py; regenerate it with --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
