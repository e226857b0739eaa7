"""train.autocast_bf16: auto follows the CPU's bf16 units; explicit values are honoured; typos refused."""

from __future__ import annotations

import pytest
import torch
from goodpoint_ros.training.train import use_bf16

from goodpoint_ros.device import CPU_FLAGS_ENV

CPU = torch.device("cpu")


@pytest.mark.parametrize(("flags", "expected"), [("avx512_bf16 avx2", True), ("amx_bf16", True), ("avx2 fma", False)])
def test_auto_follows_the_cpu_flags(monkeypatch, flags: str, expected: bool) -> None:
    monkeypatch.setenv(CPU_FLAGS_ENV, flags)  # the documented override of /proc/cpuinfo
    assert use_bf16("auto", CPU) is expected


@pytest.mark.parametrize(("setting", "expected"), [(True, True), (False, False), ("true", True), ("false", False)])
def test_explicit_settings_win(monkeypatch, setting, expected: bool) -> None:
    monkeypatch.setenv(CPU_FLAGS_ENV, "")
    assert use_bf16(setting, CPU) is expected


def test_a_typo_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, true or false"):
        use_bf16("yes please", CPU)
