"""train.autocast_bf16: auto follows the CPU's bf16 units; explicit values are honoured; typos refused.
train.channels_last: the same step as NCHW, only faster."""

from __future__ import annotations

import pytest
import torch
from goodpoint_ros.training.benchmark import _Photos
from goodpoint_ros.training.datasets import PairDataset
from goodpoint_ros.training.train import build_model_and_optimizer, load_config, make_task, use_bf16

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


@pytest.mark.parametrize("model", ["goodpoint_small", "mdnet_small"])
def test_a_channels_last_step_is_the_nchw_step(model: str) -> None:
    """Same weights, same batch, fp32: the outputs, the loss and the gradients match the NCHW
    layout's up to rounding. The gradients are those of a smooth function of the outputs: the
    losses pick points and hardest negatives, and a rounding tie may flip a pick."""
    out = {}
    for nhwc in (False, True):
        conf = load_config(None, [f"model.name={model}", f"train.channels_last={str(nhwc).lower()}", "data.crop=64"])
        task = make_task(conf)
        ds = PairDataset(_Photos(), 64, task.channels, 0, True, conf["data"]["homography"])
        torch.manual_seed(0)
        batch = torch.utils.data.default_collate([ds[0], ds[1]])
        net, _, _ = build_model_and_optimizer(conf, None, CPU)
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is nhwc
        torch.manual_seed(1)  # the losses draw random negatives
        loss = float(task.loss(net, batch, 0)[0].detach())
        dense = net(batch["image0"])
        sum(v.square().mean() for v in dense.values()).backward()
        grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
        out[nhwc] = (loss, {k: v.detach() for k, v in dense.items()}, grads)
    (l0, d0, g0), (l1, d1, g1) = out[False], out[True]
    assert l1 == pytest.approx(l0, rel=1e-3)
    for a, b, tol in ((d0, d1, 1e-4), (g0, g1, 1e-3)):  # a batch norm's bias gradient sums with cancellation
        assert a.keys() == b.keys() and a
        for k in a:
            assert float((b[k] - a[k]).norm()) <= tol * float(a[k].norm()) + 1e-8, k
