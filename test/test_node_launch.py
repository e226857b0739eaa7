"""Launch file and Fast DDS profile: the profile is valid and applied before the participant exists."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.ros.extractor_node import PROFILE_ENV, apply_fastdds_profile, fastdds_profile_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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


def test_node_rejects_bad_parameters_with_a_clear_error():
    exe = Path(sys.executable).with_name("extractor")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "goodpoint_ros.ros.extractor_node"]
    env = dict(os.environ, ROS_DOMAIN_ID="65")
    out = subprocess.run(
        cmd + ["--ros-args", "-p", "model:=no_such_model", "-p", "warmup:=false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "no_such_model" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_launch_file_loads_under_launch_ros():
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here; runs on a ROS 2 install")
    import importlib.util

    from launch_ros.actions import Node

    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("extractor_launch", ROOT / "launch" / "extractor.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    names = {getattr(e, "name", None) for e in ld.entities}
    assert {"model", "weights", "device", "camera", "params_file"} <= names
    assert any(isinstance(e, Node) for e in ld.entities)


def test_launch_file_is_valid_python_naming_the_extractor():
    source = (ROOT / "launch" / "extractor.launch.py").read_text()
    compile(source, "extractor.launch.py", "exec")
    assert 'executable="extractor"' in source and "generate_launch_description" in source
