"""Start-up checks (ROS-free): one line each, naming the problem; torch's unsafe advice never repeated."""

from __future__ import annotations

from goodpoint_ros.errors import one_line
from goodpoint_ros.node.startup import (
    StartupError,
    backend_problem,
    device_problem,
    precision_problem,
    weights_problem,
)


def test_one_line_keeps_the_first_line_and_drops_torchs_weights_only_advice():
    err = RuntimeError(
        "w.pt: not a readable checkpoint (UnpicklingError: Weights only load failed. This file can still be "
        "loaded, to do so you have two options\n(1) Re-running `torch.load` with `weights_only` set to `False`"
    )
    text = one_line(err)
    assert "\n" not in text and "weights_only` set to `False" not in text and "can still be loaded" not in text
    assert text.startswith("w.pt: not a readable checkpoint")
    assert one_line(ValueError("")) == "ValueError" and len(one_line("x" * 1000)) == 300


def test_startup_error_names_the_parameter():
    assert str(StartupError("device", "no CUDA")) == "parameter 'device': no CUDA"
    assert str(StartupError(None, "PyTorch is too old")) == "PyTorch is too old"


def test_weights_problems(tmp_path):
    assert weights_problem("default") is None and weights_problem("mdnet_small", ("mdnet_small",)) is None
    assert "no such file" in weights_problem(str(tmp_path / "missing.pt"))
    assert "not a file" in weights_problem(str(tmp_path))
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty" in weights_problem(str(tmp_path / "empty.pt"))
    (tmp_path / "w.pt").write_bytes(b"x")
    assert weights_problem(str(tmp_path / "w.pt")) is None


def test_device_and_backend_problems():
    import importlib.util

    import torch

    assert device_problem("cpu") is None and device_problem("auto") is None
    assert device_problem("cuda", backend="onnxruntime") is None  # onnxruntime falls back itself
    if not torch.cuda.is_available():
        assert "CUDA is not available" in device_problem("cuda:0")
    assert backend_problem("torch") is None
    assert (backend_problem("onnx") is None) == (importlib.util.find_spec("onnxruntime") is not None)


def test_int8_is_refused_for_the_torch_backend_only():
    assert "onnxruntime" in precision_problem("int8", "torch")
    assert precision_problem("int8", "onnxruntime") is None and precision_problem("bf16", "torch") is None
