"""Invalid start-up parameters end the ``extractor`` console script cleanly: exit 2, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

DOMAIN = "72"
pytestmark = pytest.mark.slow  # node processes


def extractor(*ros_args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("extractor")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "goodpoint_ros.ros.extractor_node"]
    env = dict(os.environ, ROS_DOMAIN_ID=DOMAIN, PYTHONWARNINGS="ignore")
    return subprocess.run(
        cmd + ["--ros-args", *ros_args, "-p", "warmup:=false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    (d / "empty.pt").write_bytes(b"")
    (d / "random.pt").write_bytes(os.urandom(4096))
    shipped = Path(__file__).resolve().parents[1] / "goodpoint_ros" / "weights" / "mdnet_small.pt"
    (d / "truncated.pt").write_bytes(shipped.read_bytes()[:20000])
    return d


@pytest.mark.parametrize(
    "args, parameter, words",
    [
        (["-p", "verification_method:=bogus"], "verification_method", "not one of"),
        (["-p", "model:=no_such_model"], "model", "no_such_model"),
        (["-p", "input_mode:=quad"], "input_mode", "not one of"),
        (["-p", "max_keypoints:=0"], "max_keypoints", "out of range"),
        (["-p", "sync_slop:=-1.0"], "sync_slop", "out of range"),
        (["-p", "qos:=fast"], "qos", "not one of"),
        (["-p", "detection_threshold:=abc"], "detection_threshold", "DOUBLE"),
        (["-p", "device:=cuda"], "device", "CUDA is not available"),
        (["-p", "precision:=int8"], "precision", "onnxruntime backend"),
        (["-p", "weights:=/no/such/file.pt"], "weights", "no such file"),
        (["-p", "weights:={d}/empty.pt"], "weights", "empty"),
        (["-p", "weights:={d}/random.pt"], "weights", "random.pt"),
        (["-p", "weights:={d}/truncated.pt"], "weights", "truncated.pt"),
    ],
)
def test_invalid_start_parameter_exits_2_with_one_line(args, parameter, words, bad_weights):
    if "device:=cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    out = extractor(*[a.format(d=bad_weights) for a in args])
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert f"parameter '{parameter}'" in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in out.stderr + out.stdout and "weights_only=False" not in out.stderr
