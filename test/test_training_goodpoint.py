"""GoodPoint losses and the training loop: hand-made targets, real photos, resume, bags, DDP."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from goodpoint_ros.checkpoint import load_model
from goodpoint_ros.models import build_model
from training.losses_goodpoint import goodpoint_loss, heatmap_loss, keypoint_targets
from training.train import load_config, merge, train

REPO = Path(__file__).resolve().parents[1]


def test_identical_aligned_heatmaps_give_zero_heatmap_loss():
    torch.manual_seed(0)
    heat = torch.rand(2, 1, 32, 48)
    H = torch.eye(3).expand(2, 3, 3)
    mask = torch.ones(2, 1, 32, 48)
    assert float(heatmap_loss(heat, heat.clone(), H, mask, mask)) == pytest.approx(0.0, abs=1e-10)
    assert float(heatmap_loss(heat, torch.rand(2, 1, 32, 48), H, mask, mask)) > 1e-3
    # a translation: P_h = P shifted, warped back it is aligned again (away from the borders)
    shift = torch.tensor([[1.0, 0, 3], [0, 1, 2], [0, 0, 1]]).expand(2, 3, 3)
    heat1 = torch.roll(heat, shifts=(2, 3), dims=(2, 3))
    assert float(heatmap_loss(heat, heat1, shift, mask, mask)) == pytest.approx(0.0, abs=1e-10)


def test_targets_on_a_hand_made_pair():
    """Peaks in I and the same peaks moved by H in I_h: the targets are exactly those peaks;
    a point projected out of the image and a point whose descriptor disagrees are dropped."""
    g = torch.Generator().manual_seed(0)
    h = w = 64
    dx, dy = 5, 3
    H = torch.tensor([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])[None]
    heat0 = torch.rand(1, 1, h, w, generator=g) * 0.01
    peaks = [(10, 12), (40, 8), (20, 45), (62, 60), (44, 40)]  # (x, y); (62, 60) leaves I_h
    for x, y in peaks:
        heat0[0, 0, y, x] = 1.0
    heat1 = torch.roll(heat0, shifts=(dy, dx), dims=(2, 3))
    desc0 = F.normalize(torch.randn(1, 16, h, w, generator=g), dim=1)  # full-resolution descriptors
    desc1 = torch.roll(desc0, shifts=(dy, dx), dims=(2, 3)).clone()
    desc1[0, :, 40 + dy, 44 + dx] = -desc0[0, :, 40, 44]  # this correspondence's descriptor is wrong
    mask = torch.ones(1, 1, h, w)
    t = keypoint_targets(heat0, heat1, desc0, desc1, H, mask, mask)
    good = t["good"][0]
    got0 = {tuple(p) for p in t["target0"][0][good].round().int().tolist()}
    got1 = {tuple(p) for p in t["target1"][0][good].round().int().tolist()}
    assert got0 == {(10, 12), (40, 8), (20, 45)}
    assert got1 == {(15, 15), (45, 11), (25, 48)}
    assert torch.allclose(t["target1"][0][good], t["target0"][0][good] + torch.tensor([dx, dy]).float())


def test_goodpoint_loss_backward():
    model = build_model("goodpoint_small").train()
    torch.manual_seed(0)
    x = torch.rand(4, 1, 64, 64)
    out = model(x)
    o0 = {k: v[:2] for k, v in out.items()}
    o1 = {k: v[2:] for k, v in out.items()}
    H = torch.eye(3).expand(2, 3, 3)
    loss, terms = goodpoint_loss(o0, o1, H, torch.ones(2, 1, 64, 64), torch.ones(2, 1, 64, 64))
    loss.backward()
    assert torch.isfinite(loss) and set(terms) >= {"keypoints", "heatmaps", "gt", "wrong", "random"}
    assert all(p.grad is not None for p in model.parameters())


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        cv2.imwrite(str(root / f"{name}.png"), getattr(data, name)()[..., ::-1])
    return root


def small_conf(tmp: Path, photos: Path, **train: object) -> dict:
    conf = load_config(REPO / "training/configs/goodpoint_small.yaml", [])
    return merge(
        conf,
        {
            "name": "t",
            "data": {"root": str(photos), "crop": 64, "batch_size": 4, "num_workers": 0},
            "train": {
                "output_dir": str(tmp),
                "log_every": 1,
                "checkpoint_every": 1000,
                "decay_start": 10**9,
                "threads": 1,
                **train,
            },  # fmt: skip
            "eval": {"every": 0},
        },
    )


def fixed_loss(model, batch) -> float:
    torch.manual_seed(123)  # L_random draws random pairs
    with torch.no_grad():
        b = batch["image0"].shape[0]
        out = model(torch.cat([batch["image0"], batch["image1"]]))
        loss, _ = goodpoint_loss(
            {k: v[:b] for k, v in out.items()},
            {k: v[b:] for k, v in out.items()},
            batch["H"],
            batch["mask0"],
            batch["mask1"],
        )
    return float(loss)


def test_short_run_on_real_photos_lowers_the_loss(tmp_path: Path, photos: Path):
    from training.datasets import ImageFolder, PairDataset

    ds = PairDataset(ImageFolder(photos), crop=64, channels=1, seed=99)
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    torch.manual_seed(0)
    before = fixed_loss(build_model("goodpoint_small").train(), batch)
    conf = merge(small_conf(tmp_path, photos, steps=20), {"eval": {"every": 10, "pairs": 2, "crop": 64}})
    result = train(conf, progress=False)
    model = load_model("goodpoint_small", result["run_dir"] / "model.pt").train()
    after = fixed_loss(model, batch)
    assert after < before, (before, after)
    rows = list(csv.DictReader(open(result["run_dir"] / "log.csv")))
    train_rows = [r for r in rows if r["train/loss"]]
    assert len(train_rows) == 20 and float(train_rows[-1]["train/lr"]) == pytest.approx(5e-4)
    val_rows = [r for r in rows if r.get("val/score")]
    assert [int(r["step"]) for r in val_rows] == [10, 20] and 0 <= float(val_rows[-1]["val/repeatability"]) <= 1
    assert load_model("goodpoint_small", result["run_dir"] / "best_model.pt") is not None


def read_losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader(open(run_dir / "log.csv"))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


STEPS = 24


def run_args(photos: Path, tmp: Path, name: str, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "training.train", "--config", str(REPO / "training/configs/goodpoint_small.yaml"),
        "--no-progress", f"data.root={photos}", "data.crop=64", "data.batch_size=2", f"data.num_workers={workers}",
        "train.log_every=1", "train.checkpoint_every=1000", "eval.every=0", f"train.steps={STEPS}",
        "train.threads=1", f"name={name}", f"train.output_dir={tmp}",
    ]  # fmt: skip


ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, photos: Path) -> dict[int, float]:
    tmp = tmp_path_factory.mktemp("ref")
    ref = subprocess.run(run_args(photos, tmp, "ref", 0), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return read_losses(tmp / "ref")


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c-group", "worker-killed"])
def test_stop_then_resume_continues_exactly(tmp_path: Path, photos: Path, reference_run, how: str):
    """Stop a run (SIGTERM to the trainer; Ctrl-C to its whole process group, loader worker
    included; or a crash: its loader worker SIGKILLed), resume it, and compare every later step's
    loss with an uninterrupted seeded run."""
    workers = 0 if how == "sigterm" else 1
    proc = subprocess.Popen(run_args(photos, tmp_path, "cut", workers), cwd=REPO, env=ENV, start_new_session=True)
    log = tmp_path / "cut" / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.02)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "ctrl-c-group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "the loader worker should be running"
        os.kill(int(children[0]), signal.SIGKILL)
    assert proc.wait(60) == (0 if how != "worker-killed" else 1)
    stopped = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= stopped < STEPS, stopped
    res = subprocess.run(
        [sys.executable, "-m", "training.train", "--resume", str(tmp_path / "cut"), "--no-progress"],
        cwd=REPO, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = reference_run, read_losses(tmp_path / "cut")
    assert sorted(b) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):
        assert b[s] == pytest.approx(a[s], rel=1e-4, abs=1e-5), (s, a[s], b[s])


def test_training_on_a_ros2_bag(tmp_path: Path):
    from test_training_data import write_bag

    frames = [cv2.resize(getattr(data, n)(), (128, 96)) for n in ("astronaut", "coffee", "chelsea")]
    write_bag(tmp_path / "bag", frames, "mcap")
    conf = load_config(
        REPO / "training/configs/goodpoint_bag.yaml",
        [f"data.sources.0.path={tmp_path / 'bag'}", "data.sources.0.stride=1", "data.crop=64", "data.batch_size=2",
         f"train.output_dir={tmp_path}", "name=bag", "train.steps=3", "eval.every=0", "data.num_workers=0"],
    )  # fmt: skip
    assert conf["data"]["sources"][0]["type"] == "bag" and conf["data"]["sources"][0]["max_frames"] == 2000
    result = train(conf, progress=False)
    assert result["step"] == 3 and np.isfinite(result["last"]["loss"])
    assert (tmp_path / "bag" / "model.pt").is_file()


def test_bad_config_key_is_one_clear_error(tmp_path: Path):
    with pytest.raises(KeyError, match="train.stepz"):
        load_config(None, ["train.stepz=3"])
    res = subprocess.run(
        [sys.executable, "-m", "training.train", "--config", str(REPO / "training/configs/goodpoint_small.yaml"),
         f"data.root={tmp_path / 'missing'}", f"train.output_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not any(tmp_path.iterdir())  # no half-made run directory


def test_ddp_two_processes_gloo(tmp_path: Path, photos: Path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29617",
        "-m", "training.train", "--config", str(REPO / "training/configs/goodpoint_small.yaml"), "--no-progress",
        f"data.root={photos}", "data.crop=64", "data.batch_size=2", "data.num_workers=0", "train.steps=3",
        "train.log_every=1", "eval.every=0", f"train.output_dir={tmp_path}", "name=ddp", "train.threads=1",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(read_losses(tmp_path / "ddp")) == [1, 2, 3]  # one writer: rank 0
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"] == 3
