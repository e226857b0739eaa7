"""The launch file's decisions (goodpoint_ros.node.launch_logic) for every input mode, the Fast DDS profile
rule it shares with the console scripts, and the launch file's shape (parsed, not run: launch_ros is
not installable here)."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from goodpoint_ros.node.launch_logic import (
    LAUNCH_ARGUMENTS,
    NODE_NAME,
    OVERRIDES,
    PROFILE_ENV,
    apply_fastdds_profile,
    fastdds_env,
    fastdds_profile_path,
    node_setup,
    params_file_value,
    remappings,
    shipped_params_file,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "extractor.launch.py"


def test_profile_sets_a_32mb_shared_memory_segment():
    path = fastdds_profile_path()
    assert path is not None and path.name == "fastdds.xml"
    root = ET.parse(path).getroot()
    ns = {"d": root.tag.split("}")[0].strip("{")}
    sizes = [int(e.text) for e in root.iterfind(".//d:transport_descriptor/d:segment_size", ns)]
    assert sizes == [32 * 1024 * 1024]
    assert root.find(".//d:participant", ns).get("is_default_profile") == "true"


def test_profile_only_applied_when_user_has_none():
    env = {}
    assert apply_fastdds_profile(env) == str(fastdds_profile_path()) and env[PROFILE_ENV]
    mine = {PROFILE_ENV: "/etc/my_profile.xml"}
    assert apply_fastdds_profile(mine) == "/etc/my_profile.xml" and mine[PROFILE_ENV] == "/etc/my_profile.xml"
    empty = {PROFILE_ENV: ""}  # set but empty counts as unset
    assert apply_fastdds_profile(empty) == str(fastdds_profile_path())


def test_launch_and_console_scripts_share_the_profile_rule():
    for env in ({}, {PROFILE_ENV: "/etc/mine.xml"}, {PROFILE_ENV: ""}):
        launched = node_setup({}, env).env  # what the launch file adds to the node's environment
        applied = dict(env)
        apply_fastdds_profile(applied)  # what extractor/player/goodpoint-demo do to themselves
        assert {**env, **launched} == applied
    assert fastdds_env({}, Path("/x/fastdds.xml")) == {PROFILE_ENV: "/x/fastdds.xml"}


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("mono", {"image": "/cam/image_raw", "camera_info": "/cam/camera_info"}),
        (
            "rgbd",
            {"image": "/cam/image_raw", "camera_info": "/cam/camera_info", "depth": "/cam/depth/image_raw"},
        ),
        (
            "stereo",
            {
                "left/image": "/cam/left/image_raw",
                "camera_info": "/cam/left/camera_info",
                "right/image": "/cam/right/image_raw",
                "right/camera_info": "/cam/right/camera_info",
            },
        ),
    ],
)
def test_remappings_per_input_mode(mode, expected):
    assert dict(remappings(mode, "/cam")) == expected
    # the mode can come from the launch argument or, when that is not given, from the params file
    assert dict(node_setup({"camera": "/cam", "input_mode": mode}, {}).remappings) == expected


def test_remappings_follow_camera_image_and_depth_topics():
    r = dict(remappings("rgbd", "/d435", "color/image_raw", "/d435/aligned_depth_to_color/image_raw"))
    assert r == {
        "image": "/d435/color/image_raw",
        "camera_info": "/d435/camera_info",
        "depth": "/d435/aligned_depth_to_color/image_raw",  # absolute: not joined to the camera
    }
    assert dict(remappings("mono", "camera")) == {"image": "camera/image_raw", "camera_info": "camera/camera_info"}
    with pytest.raises(ValueError, match="input_mode"):
        remappings("quad")


def test_compressed_input_rides_on_the_image_remap():
    s = node_setup({"camera": "/cam", "compressed": "true"}, {})
    assert s.overrides == {"compressed": True}
    assert dict(s.remappings)["image"] == "/cam/image_raw"  # the node subscribes to /cam/image_raw/compressed


def test_only_given_arguments_override_the_params_file(tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text(
        yaml.safe_dump(
            {"/**": {"ros__parameters": {"model": "mdnet_small", "input_mode": "rgbd", "max_keypoints": 500}}}
        )
    )
    s = node_setup({"params_file": str(mine), "namespace": "/robot1"}, {})
    assert s.parameters == [str(mine)]  # nothing given: the file decides everything
    assert s.namespace == "/robot1" and s.name == NODE_NAME
    assert s.input_mode == "rgbd" and "depth" in dict(s.remappings)  # mode read from my.yaml
    s = node_setup({"params_file": str(mine), "model": "orb", "device": "", "use_sim_time": "true"}, {})
    assert s.parameters == [str(mine), {"model": "orb", "use_sim_time": True}]  # empty device: not given


def test_every_override_argument_is_parsed_and_checked_by_the_table():
    names = {a.name for a in LAUNCH_ARGUMENTS}
    assert set(OVERRIDES) <= names and {"params_file", "namespace", "use_sim_time", "camera"} <= names
    for bad in ({"model": "bogus"}, {"compressed": "maybe"}, {"use_sim_time": "sometimes"}):
        with pytest.raises(ValueError):
            node_setup(bad, {})
    with pytest.raises(ValueError, match="params_file"):
        node_setup({"params_file": "/no/such.yaml"}, {})
    # a parent launch file's own arguments share the launch configurations: ignored, not refused
    assert node_setup({"robot_model": "x", "model": "orb"}, {}).overrides == {"model": "orb"}


def test_shipped_params_file_is_the_default_and_sets_the_mode():
    s = node_setup({}, {})
    assert s.params_file == shipped_params_file() and s.namespace == "" and s.overrides == {}
    assert params_file_value(s.params_file, "input_mode") == "mono" and s.input_mode == "mono"


def test_params_file_value_prefers_the_node_key_over_the_wildcard(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"input_mode": "mono"}},
                "/robot1/goodpoint_extractor": {"ros__parameters": {"input_mode": "stereo"}},
            }
        )
    )
    assert params_file_value(str(f), "input_mode", namespace="/robot1") == "stereo"
    assert params_file_value(str(f), "input_mode") == "mono"
    assert params_file_value(str(f), "model") is None


def test_ros_args_carry_the_same_decisions():
    s = node_setup({"namespace": "robot1", "camera": "/cam", "model": "orb"}, {})
    args = s.ros_args()
    assert args[0] == "--ros-args" and "__ns:=/robot1" in args and "model:=orb" in args
    assert "image:=/cam/image_raw" in args and args[args.index("--params-file") + 1] == s.params_file


def _calls(tree: ast.AST) -> set[str]:
    return {c.func.id for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}


def test_launch_file_is_thin_and_calls_only_the_launch_logic():
    tree = ast.parse(LAUNCH.read_text(), str(LAUNCH))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"launch", "launch.actions", "launch_ros.actions", "goodpoint_ros.node.launch_logic"}, modules
    assert "environ" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    build = funcs.pop("generate_launch_description")
    # building the description decides nothing: arguments from the table, then one OpaqueFunction
    assert _calls(build) <= {"LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction"}
    assert "LAUNCH_ARGUMENTS" in {n.id for n in ast.walk(build) if isinstance(n, ast.Name)}
    (opaque,) = funcs.values()  # the launch-time function: node_setup's result into one Node
    assert _calls(opaque) <= {"node_setup", "Node", "getattr"} and "node_setup" in _calls(opaque)
