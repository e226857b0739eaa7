"""Models declare what the pipeline and training need; nothing recognises a model by type or name.

A new model is a BaseModel subclass in ``models.MODELS`` that declares ``heatmap_key``,
``descriptor_stride`` (and a pyramid if it has one) and registers a training task; these tests
check the shipped models' declarations against their outputs and that a model unknown to the
code (a subclass under a new name) goes through inference, export and training unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch
from goodpoint_ros.training.train import DEFAULTS, TASKS, GoodPointTask, MDNetTask, make_task, merge

from goodpoint_ros.backends.graph import ExportGraph
from goodpoint_ros.models import MODELS, BaseModel, GoodPoint, build_model
from goodpoint_ros.models.base import fold_batchnorm
from goodpoint_ros.models.features import extract_batch, run_network
from goodpoint_ros.models.fusion import ConvAct, MaxPool2x2, fuse_for_cpu


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declarations_match_the_dense_outputs(name):
    model = build_model(name).eval()
    image = torch.rand(1, model.in_channels, 64, 96)
    with torch.inference_mode():
        dense = model(image)
    heat, desc = dense[model.heatmap_key], dense["descriptors"]
    assert heat.shape[-2:] == (64, 96)  # full resolution, one channel per detector
    assert desc.shape[-2:] == (64 // model.descriptor_stride, 96 // model.descriptor_stride)
    assert model.pyramid_scales(64, 96)[0] == 1.0


class Renamed(GoodPoint):
    """A model the code has never heard of: a new name, GoodPoint's outputs and task."""

    name = "renamed"


@pytest.fixture
def renamed(monkeypatch):
    monkeypatch.setitem(MODELS, "renamed_tiny", (Renamed, {"channels": [8, 8, 16, 16], "head_channels": 16}))
    return "renamed_tiny"


def test_a_new_model_extracts_and_exports_through_its_declarations(renamed):
    model = build_model(renamed).eval()
    model.set_detection(detection_threshold=0.0)
    image = torch.rand(1, 48, 64)
    with torch.inference_mode():
        feats = extract_batch(model, [image])[0]
        kpts, scores, desc, _, valid, heat = ExportGraph(model)(image[None])
    assert len(feats["keypoints"]) > 0 and heat.shape == (1, 1, 48, 64)
    assert desc.shape[-1] == model.conf["descriptor_dim"] and valid.any()


def test_base_model_defaults_are_one_scale():
    model = BaseModel()
    assert model.pyramid_scales(480, 640) == [1.0]
    level = {"keypoints": torch.zeros(3, 2)}
    assert model.merge_scales([level], 640 * 480, [1.0]) is level


def test_training_tasks_come_from_the_registry(renamed):
    assert TASKS[GoodPoint] is GoodPointTask and MDNetTask in TASKS.values()
    for name in MODELS:
        task = make_task(merge(DEFAULTS, {"model": {"name": name}}))
        assert task.channels == build_model(name).in_channels
    assert isinstance(make_task(merge(DEFAULTS, {"model": {"name": renamed}})), GoodPointTask)  # inherited


def test_a_model_without_a_task_is_refused_by_name(monkeypatch):
    class Untrainable(BaseModel):
        name = "untrainable"

    monkeypatch.setitem(MODELS, "untrainable", (Untrainable, {}))
    with pytest.raises(KeyError, match="no training task registered for model 'untrainable'"):
        make_task(merge(DEFAULTS, {"model": {"name": "untrainable"}}))


@pytest.mark.parametrize("name", ["goodpoint_small", "mdnet_small"])
def test_folding_batchnorm_keeps_the_dense_outputs(name):
    """The torch backend folds BatchNorm into the convolutions for inference: same outputs in
    fp32 (up to rounding), no BatchNorm left, and a model in training mode is refused."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    for m in model.modules():  # non-trivial statistics, as trained weights have
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, model.in_channels, 64, 96)
    with torch.inference_mode():
        ref = model(x)
        folded = fold_batchnorm(copy.deepcopy(model))
        out = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for key, value in ref.items():
        torch.testing.assert_close(out[key], value, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="eval"):
        fold_batchnorm(build_model(name).train())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cpu_fusion_keeps_the_outputs(name):
    """``fuse_for_cpu`` (conv+activation in one oneDNN call, strided-max pooling) leaves no
    separate activation or max-pool behind and computes what the folded model computes: in fp32
    up to rounding, in bf16 within bf16's own noise; with grad enabled the plain path runs."""
    torch.manual_seed(0)
    model = fold_batchnorm(build_model(name).eval())
    fused = fuse_for_cpu(copy.deepcopy(model))
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert len([m for m in fused.modules() if isinstance(m, ConvAct)]) == len(acts) > 0  # every one fused
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in fused.modules())
    x = torch.rand(1, model.in_channels, 64, 96)
    with torch.inference_mode():
        ref, out = model(x), fused(x)
        for key, value in ref.items():
            torch.testing.assert_close(out[key], value, rtol=1e-4, atol=1e-5)
        ref16, out16 = run_network(model, x, "bf16"), run_network(fused, x, "bf16")
    cos = torch.nn.functional.cosine_similarity(out16["descriptors"], ref16["descriptors"], dim=1)
    assert float(cos.min()) > 0.99
    with torch.no_grad(), torch.enable_grad():
        plain = fused(x)  # grad on: the fused kernel is skipped, the plain conv + activation run
    for key, value in ref.items():
        torch.testing.assert_close(plain[key].detach(), value, rtol=1e-4, atol=1e-5)


def test_strided_max_pool_equals_max_pool2d():
    x = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(MaxPool2x2()(x), torch.nn.functional.max_pool2d(x, 2), rtol=0, atol=0)
    odd = torch.randn(1, 2, 7, 9)  # odd sizes fall back to max_pool2d's flooring
    torch.testing.assert_close(MaxPool2x2()(odd), torch.nn.functional.max_pool2d(odd, 2), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="eval"):
        fuse_for_cpu(build_model("goodpoint_small").train())
