"""Every decision ``launch/extractor.launch.py`` makes, as plain Python the test suite can run.

``launch``/``launch_ros`` are not installable from the registries this project reaches, so the
launch file stays thin (declare the arguments, call ``node_setup`` from an ``OpaqueFunction``, build
one ``Node``) and this ROS-free module decides:
- which launch arguments override the params file: only those given (non-empty);
- the remappings for each input mode (mono, rgbd with its depth topic, stereo with both cameras'
  images and infos; compressed input rides on the ``image`` remap, the node appends ``/compressed``);
- the Fast DDS profile rule, shared with the console scripts (``apply_fastdds_profile``);
- namespace, node name, use_sim_time and the params file (the shipped one unless given).

``NodeSetup.ros_args()`` gives the same decisions as a ``--ros-args`` command line, which is how
the tests (and anyone without ``ros2 launch``) start the node with them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goodpoint_ros.params import DEFAULTS, INPUT_MODES, TABLE, parse_text

PACKAGE = "goodpoint_ros"
EXECUTABLE = "extractor"
NODE_NAME = "goodpoint_extractor"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"

# Node parameters a launch argument may set; when the argument is empty the params file decides.
OVERRIDES = (
    "input_mode",
    "model",
    "weights",
    "device",
    "backend",
    "precision",
    "compressed",
    "qos",
    "odom_frame",
    "child_frame",
)


@dataclass(frozen=True)
class LaunchArgument:
    """One ``DeclareLaunchArgument``; an empty default means "not given"."""

    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("params_file", "", "node parameters (YAML); empty: the shipped config/extractor.yaml"),
    LaunchArgument("namespace", "", "namespace of the node, e.g. /robot1 (relative topic names resolve under it)"),
    LaunchArgument("node_name", NODE_NAME, "name of the node"),
    LaunchArgument("use_sim_time", "", "true | false; empty keeps the params file's value (default false)"),
    LaunchArgument("camera", "/camera", "camera namespace: <camera>/<image_topic>, <camera>/camera_info"),
    LaunchArgument("image_topic", "image_raw", "image topic inside the camera namespace (stereo: left/ and right/)"),
    LaunchArgument("depth_topic", "depth/image_raw", "rgbd: depth image topic inside the camera namespace"),
) + tuple(
    LaunchArgument(
        name,
        "",
        f"{TABLE[name].description}; empty keeps the params file's value (shipped default {DEFAULTS[name]!r})",
    )
    for name in OVERRIDES
)


@dataclass
class NodeSetup:
    """What the launch file hands to ``launch_ros.actions.Node``."""

    name: str
    namespace: str
    params_file: str
    overrides: dict[str, Any]
    remappings: list[tuple[str, str]]
    env: dict[str, str] = field(default_factory=dict)
    input_mode: str = "mono"

    @property
    def parameters(self) -> list[Any]:
        """``Node(parameters=...)``: the file first, then only the given arguments (later wins)."""
        return [self.params_file] + ([dict(self.overrides)] if self.overrides else [])

    def ros_args(self) -> list[str]:
        """The same node set-up as command-line arguments (``extractor --ros-args ...``)."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace}"]
        out += ["--params-file", self.params_file]
        for k, v in self.overrides.items():
            out += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        return out


def _share_file(*parts: str) -> Path | None:
    """A file of the installed package share (ament_index) or, from a source tree, of the repo."""
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory(PACKAGE), *parts)
        if p.is_file():
            return p
    except Exception:  # not installed through colcon/ament: fall back to the repository layout
        pass
    p = Path(__file__).resolve().parents[2].joinpath(*parts)
    return p if p.is_file() else None


def fastdds_profile_path() -> Path | None:
    """The shipped Fast DDS profile (32 MB shared-memory segment)."""
    return _share_file("config", "fastdds.xml")


def fastdds_env(env: Mapping[str, str], profile: Path | None = None) -> dict[str, str]:
    """The Fast DDS profile rule: the user's ``FASTDDS_DEFAULT_PROFILES_FILE`` if set and non-empty,
    else the shipped profile. Returns the variables to add (empty when nothing needs setting)."""
    if env.get(PROFILE_ENV):
        return {}
    profile = profile or fastdds_profile_path()
    return {PROFILE_ENV: str(profile)} if profile is not None else {}


def apply_fastdds_profile(env: MutableMapping[str, str] | None = None) -> str | None:
    """``fastdds_env`` applied to this process (before ``rclpy.init`` creates the participant).
    Returns the profile in effect."""
    env = os.environ if env is None else env
    env.update(fastdds_env(env))
    return env.get(PROFILE_ENV) or None


def _join(camera: str, topic: str) -> str:
    if topic.startswith("/") or not camera:
        return topic
    return f"{camera.rstrip('/')}/{topic}"


def remappings(
    input_mode: str, camera: str = "/camera", image_topic: str = "image_raw", depth_topic: str = "depth/image_raw"
) -> list[tuple[str, str]]:
    """The node's input names mapped onto the camera's topics for ``input_mode``; only the names
    that mode subscribes to. Compressed input needs no remap of its own: the node subscribes to
    ``<resolved image>/compressed`` (image_transport's naming)."""
    if input_mode == "mono":
        return [("image", _join(camera, image_topic)), ("camera_info", _join(camera, "camera_info"))]
    if input_mode == "rgbd":
        return remappings("mono", camera, image_topic) + [("depth", _join(camera, depth_topic))]
    if input_mode == "stereo":
        return [
            ("left/image", _join(camera, f"left/{image_topic}")),
            ("camera_info", _join(camera, "left/camera_info")),
            ("right/image", _join(camera, f"right/{image_topic}")),
            ("right/camera_info", _join(camera, "right/camera_info")),
        ]
    raise ValueError(f"input_mode: '{input_mode}' is not one of {', '.join(INPUT_MODES)}")


def shipped_params_file() -> str:
    p = _share_file("config", "extractor.yaml")
    if p is None:
        raise FileNotFoundError("the shipped config/extractor.yaml is missing from the install")
    return str(p)


def params_file_value(path: str, name: str, node: str = NODE_NAME, namespace: str = "") -> Any:
    """``name`` as the params file sets it for this node (None when the file leaves it unset).

    Looks at the keys rcl applies to the node: its fully qualified name, its bare name, and the
    ``/**`` wildcards; a key naming the node wins over a wildcard."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    fq = f"{namespace.rstrip('/')}/{node}" if namespace else f"/{node}"
    for key in (fq, fq.lstrip("/"), node, f"/**/{node}", "/**"):
        section = data.get(key)
        if isinstance(section, dict) and name in (section.get("ros__parameters") or {}):
            return section["ros__parameters"][name]
    return None


def _namespace(text: str) -> str:
    text = text.strip().rstrip("/")
    return "" if not text else (text if text.startswith("/") else "/" + text)


def node_setup(arguments: Mapping[str, str], env: Mapping[str, str] | None = None) -> NodeSetup:
    """The node for these launch arguments (strings, as ``context.launch_configurations`` holds
    them; missing or empty ones are "not given"). ValueError names a bad argument."""
    defaults = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    # launch configurations also hold a parent launch file's arguments: read only ours
    given = {k: str(v) for k, v in arguments.items() if k in defaults and v is not None and str(v).strip() != ""}
    arg = {**defaults, **given}
    params_file = given.get("params_file") or shipped_params_file()
    if not Path(params_file).is_file():
        raise ValueError(f"params_file: {params_file}: no such file")
    overrides = {name: parse_text(name, given[name]) for name in OVERRIDES if name in given}
    if "use_sim_time" in given:
        low = given["use_sim_time"].strip().lower()
        if low not in ("true", "false"):
            raise ValueError(f"use_sim_time: expects true or false, got '{given['use_sim_time']}'")
        overrides["use_sim_time"] = low == "true"
    namespace, name = _namespace(arg["namespace"]), arg["node_name"]
    mode = overrides.get("input_mode") or params_file_value(params_file, "input_mode", name, namespace)
    mode = str(mode or DEFAULTS["input_mode"])
    return NodeSetup(
        name=name,
        namespace=namespace,
        params_file=params_file,
        overrides=overrides,
        remappings=remappings(mode, arg["camera"], arg["image_topic"], arg["depth_topic"]),
        env=fastdds_env(os.environ if env is None else env),
        input_mode=mode,
    )
