"""MD-Net losses: hardest-in-batch triplet, peaky weighting, (dis)similarity, two-stage training."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F
from goodpoint_ros.training.losses_mdnet import (
    DEFAULT_CONF,
    dissimilarity_loss,
    grid_points,
    mdnet_loss,
    peaky_loss,
    similarity_loss,
    triplet_loss,
)
from goodpoint_ros.training.train import DEFAULTS, merge, train
from skimage import data

from goodpoint_ros.models import build_model
from goodpoint_ros.models.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


def test_dissimilarity_zero_for_disjoint_positive_for_overlapping():
    mask = torch.ones(1, 1, 16, 16)
    disjoint = torch.zeros(1, 2, 16, 16)
    disjoint[0, 0, :, :8] = 1.0
    disjoint[0, 1, :, 8:] = 1.0
    assert float(dissimilarity_loss(disjoint, mask)) == 0.0
    overlap = disjoint.clone()
    overlap[0, 1, :, 4:] = 1.0
    assert float(dissimilarity_loss(overlap, mask)) == pytest.approx(0.25)  # C(2,2)=1, columns 4-7 (4 of 16) shared
    four = torch.rand(2, 4, 8, 8)
    brute = sum(four[:, n] * four[:, m] for n in range(4) for m in range(n + 1, 4)).mean() * 6
    assert float(dissimilarity_loss(four, torch.ones(2, 1, 8, 8))) == pytest.approx(float(brute), rel=1e-5)


def brute_triplet(desc0, desc1, H, conf):
    """Loop reference: per anchor, the most similar negative of any image (same image: > 5 px)."""
    b, _, h, w = desc0.shape
    pts = grid_points(b, h, w, conf["grid_step"], "cpu")[0]
    losses = []
    for i in range(b):
        for a in pts:
            p = a + H[i, :2, 2]  # pure translations in this test
            if not (0 <= p[0] <= w - 1 and 0 <= p[1] <= h - 1):
                continue
            va = desc0[i, :, int(a[1]), int(a[0])]
            vp = desc1[i, :, int(p[1]), int(p[0])]
            best = -2.0
            for j in range(b):
                for q in pts:
                    if j == i and (q - p).norm() <= conf["negative_dist"]:
                        continue
                    best = max(best, float(va @ desc1[j, :, int(q[1]), int(q[0])]))
            losses.append(max(0.0, conf["margin"] - float(va @ vp) + best))
    return sum(losses) / len(losses)


def test_triplet_picks_the_hardest_negative():
    torch.manual_seed(0)
    b, c, h, w = 2, 8, 30, 30
    desc0 = F.normalize(torch.randn(b, c, h, w), dim=1)
    shift = torch.tensor([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]])  # grid-aligned translation
    desc1 = torch.roll(desc0, shifts=(0, 10), dims=(2, 3)).clone()
    H = shift.expand(b, 3, 3)
    mask = torch.ones(b, 1, h, w)
    conf = dict(DEFAULT_CONF)
    loss, extra = triplet_loss(desc0, desc1, H, mask, mask, conf)
    assert float(loss) == pytest.approx(brute_triplet(desc0, desc1, H, conf), rel=1e-5)
    # plant a negative identical to one anchor (in the other image): its hinge becomes exactly m
    desc1b = desc1.clone()
    desc1b[1, :, 25, 5] = desc0[0, :, 5, 5]
    loss_b, _ = triplet_loss(desc0, desc1b, H, mask, mask, conf)
    assert float(loss_b) == pytest.approx(brute_triplet(desc0, desc1b, H, conf), rel=1e-5)
    assert float(loss_b) > float(loss)


def test_peaky_weight_has_no_gradient_and_similarity_is_zero_when_aligned():
    feats = torch.randn(1, 8, 24, 24, requires_grad=True)
    heat = torch.rand(1, 2, 24, 24, requires_grad=True)
    mask = torch.ones(1, 1, 24, 24)
    peaky_loss(heat, feats, mask, DEFAULT_CONF).backward()
    assert feats.grad is None and heat.grad is not None and heat.grad.abs().sum() > 0
    H = torch.eye(3)[None]
    assert float(similarity_loss(heat.detach(), heat.detach().clone(), H, mask, mask)) == pytest.approx(0.0, abs=1e-12)
    # flat heatmaps are maximally "un-peaky": loss = mean W
    flat = peaky_loss(torch.full((1, 2, 24, 24), 0.5), feats.detach(), mask, DEFAULT_CONF)
    spiky = torch.zeros(1, 2, 24, 24)
    spiky[..., ::6, ::6] = 1.0
    assert float(peaky_loss(spiky, feats.detach(), mask, DEFAULT_CONF)) < float(flat)


def test_stages():
    model = build_model("mdnet_small").train()
    x = torch.rand(2, 3, 48, 48)
    out = model(x)
    o0 = {k: v[:1] for k, v in out.items()}
    o1 = {k: v[1:] for k, v in out.items()}
    H, m = torch.eye(3)[None], torch.ones(1, 1, 48, 48)
    l1, t1 = mdnet_loss(o0, o1, H, m, m, stage=1)
    assert set(t1) == {"loss", "triplet", "anchors", "triplet_acc"} and float(l1.detach()) == float(t1["triplet"])
    l2, t2 = mdnet_loss(o0, o1, H, m, m, stage=2)
    assert {"peaky", "sim", "dissim"} <= set(t2) and float(l2.detach()) > float(l1.detach())


@pytest.mark.slow
def test_two_stage_training_freezes_the_detector_in_stage_1(tmp_path: Path):
    root = tmp_path / "img"
    root.mkdir()
    for name in ("astronaut", "coffee"):
        cv2.imwrite(str(root / f"{name}.png"), cv2.resize(getattr(data, name)(), (160, 120))[..., ::-1])
    conf = merge(
        DEFAULTS,
        {
            "name": "md",
            "model": {"name": "mdnet_small"},
            "data": {"root": str(root), "crop": 48, "batch_size": 2, "num_workers": 0},
            "train": {"output_dir": str(tmp_path), "steps": 2, "stage2_step": 2, "optimizer": "adam", "lr": 1e-3},
        },
    )
    train(conf, progress=False)
    torch.manual_seed(conf["seed"])
    init = build_model("mdnet_small")
    stage1 = load_model("mdnet_small", tmp_path / "md" / "model.pt")
    assert torch.equal(stage1.detector.weight, init.detector.weight)  # stage 1: triplet only
    assert not torch.equal(stage1.backbone[0].weight, init.backbone[0].weight)
    result = train(merge(conf, {"train": {"steps": 3}}), progress=False)  # fresh run, step 3 is stage 2
    assert "dissim" in result["last"]
    joint = load_model("mdnet_small", tmp_path / "md" / "model.pt")
    assert not torch.equal(joint.detector.weight, init.detector.weight)
