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
from goodpoint_ros.training.losses_goodpoint import (
    detected_subpixel_loss,
    goodpoint_loss,
    heatmap_loss,
    keypoint_targets,
    subpixel_loss,
)
from goodpoint_ros.training.train import load_config, merge, train
from skimage import data

from goodpoint_ros.models import build_model
from goodpoint_ros.models.checkpoint import load_model

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


def test_heatmap_loss_without_blur_punishes_a_one_pixel_offset_more():
    """``loss.blur=false`` (the side-by-side probe) compares raw heatmaps: still 0 when aligned,
    and a single peak one pixel off costs more than through Eq. 4's tent blur."""
    heat = torch.zeros(1, 1, 32, 32)
    heat[..., 16, 16] = 1.0
    off = torch.roll(heat, shifts=1, dims=3)
    H = torch.eye(3)[None]
    mask = torch.ones(1, 1, 32, 32)
    assert float(heatmap_loss(heat, heat.clone(), H, mask, mask, blur=False)) == pytest.approx(0.0, abs=1e-10)
    raw = float(heatmap_loss(heat, off, H, mask, mask, blur=False))
    blurred = float(heatmap_loss(heat, off, H, mask, mask, blur=True))
    assert raw > 2 * blurred > 0


def test_heatmap_power_weighs_the_weak_maxima():
    """``loss.heatmap_power`` < 1 compares P^power: aligned maps still cost 0, and a weak maximum
    (P = 1e-3, the fill's kind of point) one pixel off costs a much larger share of what a strong
    one costs than on P itself; the gradient stays finite where P is 0."""
    H, mask = torch.eye(3)[None], torch.ones(1, 1, 32, 32)

    def cost(value: float, power: float) -> float:
        heat = torch.zeros(1, 1, 32, 32)
        heat[..., 16, 16] = value
        return float(heatmap_loss(heat, torch.roll(heat, 1, dims=3), H, mask, mask, blur=False, power=power))

    assert float(heatmap_loss(torch.rand(1, 1, 32, 32).pow(3), torch.zeros(1, 1, 32, 32), H, mask, mask, power=0.5)) > 0
    weak_share = {p: cost(1e-3, p) / cost(1.0, p) for p in (1.0, 0.5)}
    assert weak_share[1.0] == pytest.approx(1e-6, rel=1e-3) and weak_share[0.5] > 500 * weak_share[1.0]
    heat = torch.zeros(1, 1, 32, 32, requires_grad=True)
    heatmap_loss(heat, torch.rand(1, 1, 32, 32), H, mask, mask, power=0.5).backward()
    assert torch.isfinite(heat.grad).all()


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


def blob(center: tuple[float, float], size: int = 48) -> torch.Tensor:
    """A 1x1xSxS Gaussian score peak (sigma 1 px) at a sub-pixel ``center`` (x, y)."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return torch.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / 2.0)[None, None]


def test_subpixel_loss_measures_where_the_refined_peaks_disagree():
    """L_sub is ~0 when the second peak sits exactly where H carries the first (a sub-pixel peak,
    an integer shift), grows with a sub-pixel disagreement, and its gradient moves the peak back."""
    H = torch.tensor([[1.0, 0, 5], [0, 1, 2], [0, 0, 1]])[None]
    t = {"K": torch.tensor([[[20.0, 30.0]]]), "K_h_nn": torch.tensor([[[25.0, 32.0]]]),
         "good": torch.ones(1, 1, dtype=torch.bool)}  # fmt: skip
    heat0 = blob((20.3, 29.8))
    assert subpixel_loss(heat0, blob((25.3, 31.8)), t, H, 2) < 0.01
    heat1 = blob((25.9, 31.8)).requires_grad_(True)
    loss = subpixel_loss(heat0, heat1, t, H, 2)
    assert loss > 0.3
    loss.backward()
    # descending the gradient raises the scores on the peak's left (toward 25.3) and lowers its right
    assert heat1.grad[0, 0, 32, 24] < 0 < heat1.grad[0, 0, 32, 27]
    assert torch.isfinite(heat1.grad).all()


def test_detected_subpixel_loss_reaches_weak_points():
    """Over the detections, L_sub also trains a weak peak no target pair would hold: a faint
    second peak 0.6 px off where H carries it raises the loss, and the gradient moves it back."""
    H = torch.tensor([[1.0, 0, 5], [0, 1, 2], [0, 0, 1]])[None]
    conf = {"subpixel_radius": 2, "subpixel_density": 2000.0, "subpixel_nms": 4}  # k = 5 at 48x48
    m = torch.ones(1, 1, 48, 48, dtype=torch.bool)
    heat0 = blob((20.3, 29.8)) + 0.05 * blob((10.0, 12.0))
    aligned = blob((25.3, 31.8)) + 0.05 * blob((15.0, 14.0))
    assert detected_subpixel_loss(heat0, aligned, H, m, m, conf) < 0.01
    heat1 = (blob((25.3, 31.8)) + 0.05 * blob((15.6, 14.0))).requires_grad_(True)
    loss = detected_subpixel_loss(heat0, heat1, H, m, m, conf)
    assert loss > 0.05
    loss.backward()
    assert heat1.grad[0, 0, 14, 14] < 0 < heat1.grad[0, 0, 14, 17]  # toward x = 15.0
    # the agreeing-pairs term does not see the weak peak at all
    t = {"K": torch.tensor([[[20.0, 30.0]]]), "K_h_nn": torch.tensor([[[25.0, 32.0]]]),
         "good": torch.ones(1, 1, dtype=torch.bool)}  # fmt: skip
    assert subpixel_loss(heat0, heat1, t, H, 2) < 0.01


def test_goodpoint_loss_with_the_subpixel_term():
    model = build_model("goodpoint_small").train()
    torch.manual_seed(0)
    out = model(torch.rand(4, 1, 64, 64))
    o0, o1 = {k: v[:2] for k, v in out.items()}, {k: v[2:] for k, v in out.items()}
    H = torch.tensor([[1.0, 0, 3], [0, 1, 1], [0, 0, 1]]).expand(2, 3, 3)
    m = torch.ones(2, 1, 64, 64)
    loss, terms = goodpoint_loss(o0, o1, H, m, m, {"lambda_sub": 1.0})
    loss.backward()
    assert (
        torch.isfinite(loss)
        and torch.isfinite(terms["subpixel"])
        and "subpixel" not in goodpoint_loss(o0, o1, H, m, m)[1]
    )
    out = model(torch.rand(4, 1, 64, 64))
    o0, o1 = {k: v[:2] for k, v in out.items()}, {k: v[2:] for k, v in out.items()}
    loss, terms = goodpoint_loss(o0, o1, H, m, m, {"lambda_sub": 1.0, "subpixel_density": 4000.0})
    loss.backward()
    assert torch.isfinite(loss) and terms["subpixel"] > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


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


@pytest.mark.slow
def test_training_step_overfits_one_repeated_batch(photos: Path):
    """A property that holds on any CPU (the float kernels, AMX/AVX-512, only move the numbers a
    little): 30 steps of the training task and optimiser on one repeated batch of real-photo pairs
    must cut its loss by far more than float noise or a broken gradient/optimiser could (measured
    on an AMD EPYC: 0.19-0.45x after 25 steps for three model seeds; a step that does not learn
    stays at 1x)."""
    from goodpoint_ros.training.datasets import ImageFolder, PairDataset
    from goodpoint_ros.training.train import make_optimizer, make_task

    conf = small_conf(Path("unused"), photos)
    task = make_task(conf)
    ds = PairDataset(ImageFolder(photos), crop=64, channels=1, seed=99)
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    torch.manual_seed(0)
    model = build_model("goodpoint_small").train()
    opt, _ = make_optimizer(model, conf)
    losses = []
    for step in range(30):
        torch.manual_seed(123)  # L_random draws random pairs: the same draw every step
        loss, _ = task.loss(model, batch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses


@pytest.mark.slow
def test_short_run_logs_validates_and_moves_the_weights(tmp_path: Path, photos: Path):
    """The loop itself: 20 logged steps at the configured lr, validation at 10 and 20, finite
    losses, loadable model.pt / best_model.pt whose weights moved away from the seeded init (the
    loss value after 20 steps is not compared: it depends on the CPU's float kernels)."""
    conf = merge(small_conf(tmp_path, photos, steps=20), {"eval": {"every": 10, "pairs": 2, "crop": 64}})
    result = train(conf, progress=False)
    rows = list(csv.DictReader(open(result["run_dir"] / "log.csv")))
    train_rows = [r for r in rows if r["train/loss"]]
    assert len(train_rows) == 20 and float(train_rows[-1]["train/lr"]) == pytest.approx(5e-4)
    assert all(np.isfinite(float(r["train/loss"])) for r in train_rows)
    val_rows = [r for r in rows if r.get("val/score")]
    assert [int(r["step"]) for r in val_rows] == [10, 20] and 0 <= float(val_rows[-1]["val/repeatability"]) <= 1
    best = torch.load(result["run_dir"] / "best_model.pt", weights_only=True)  # the better validation's weights
    scores = {int(r["step"]): float(r["val/score"]) for r in val_rows}
    assert best["score"] == max(scores.values()) == scores[best["step"]]
    load_model("goodpoint_small", result["run_dir"] / "best_model.pt")  # raises if it does not load
    torch.manual_seed(int(conf["seed"]))
    init = build_model("goodpoint_small").state_dict()
    trained = load_model("goodpoint_small", result["run_dir"] / "model.pt").state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert len(moved) >= 0.9 * sum(v.is_floating_point() for v in init.values()), moved


@pytest.mark.slow
def test_run_folder_cleanup_model_pt_follows_checkpoint_and_modes(tmp_path: Path, photos: Path):
    """A kill during a checkpoint write leaves temporaries; a kill between checkpoint.pt and
    model.pt leaves model.pt a save behind. Starting the run again removes the first and repairs
    the second; files get the usual mode (umask), not mkstemp's 0600."""
    from goodpoint_ros.models.checkpoint import CheckpointError, read_checkpoint, save_weights

    old = os.umask(0o022)
    try:
        conf = small_conf(tmp_path, photos, steps=2, checkpoint_every=1)
        train(conf, progress=False)
    finally:
        os.umask(old)
    run = tmp_path / "t"
    for name in ("checkpoint.pt", "model.pt", "config.yaml", "log.csv"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name
    assert read_checkpoint(run / "model.pt")["step"] == 2
    stale = [".checkpoint.pt.tmp-4242-0a1b2c3d", ".checkpoint.pt.k2j4_x9a", ".model.pt.tmp-1-ff00ff00"]
    for name in stale:
        (run / name).write_bytes(b"half a checkpoint")
    (run / "notes.pt.txt").write_text("not ours")
    save_weights(build_model("goodpoint_small"), run / "model.pt", step=1, run="t")  # one save behind
    ckpt = read_checkpoint(run / "checkpoint.pt", training=True)
    with pytest.raises(CheckpointError, match="a weights file, not a training checkpoint"):
        read_checkpoint(run / "model.pt", training=True)
    train(conf, resume=ckpt, progress=False)  # nothing left to train: only the start-up repairs
    assert not any((run / name).exists() for name in stale) and (run / "notes.pt.txt").exists()
    weights = read_checkpoint(run / "model.pt")
    assert weights["step"] == ckpt["step"] == 2
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in weights["state_dict"].items())


def read_losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader(open(run_dir / "log.csv"))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


STEPS = 24


def run_args(photos: Path, tmp: Path, name: str, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "goodpoint_ros.training.train", "--config", str(REPO / "training/configs/goodpoint_small.yaml"),
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
@pytest.mark.slow
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
        [sys.executable, "-m", "goodpoint_ros.training.train", "--resume", str(tmp_path / "cut"), "--no-progress"],
        cwd=REPO, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = reference_run, read_losses(tmp_path / "cut")
    assert sorted(b) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):
        assert b[s] == pytest.approx(a[s], rel=1e-4, abs=1e-5), (s, a[s], b[s])


@pytest.mark.slow
def test_resume_with_a_new_learning_rate_uses_it(tmp_path: Path, photos: Path):
    """Continuing a run at a new ``train.lr`` (a fine-tune from a committed state) must train at
    that rate: the scheduler's saved state used to carry the old one over silently."""
    from goodpoint_ros.models.checkpoint import read_checkpoint

    base = [f"data.root={photos}", "data.crop=64", "data.batch_size=2", "data.num_workers=0", "eval.every=0",
            "train.log_every=1", f"train.output_dir={tmp_path}", "name=lr", "train.decay_start=2"]  # fmt: skip
    train(load_config(REPO / "training/configs/goodpoint_small.yaml", [*base, "train.steps=2"]), progress=False)
    resume = read_checkpoint(tmp_path / "lr" / "checkpoint.pt", training=True)
    conf = merge(resume["config"], {"train": {"steps": 4, "lr": 1e-5}})
    train(conf, resume, progress=False)
    rows = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(open(tmp_path / "lr" / "log.csv"))}
    assert rows[1] == pytest.approx(5e-4)
    assert rows[3] < 1e-5 and rows[4] < rows[3]  # the new rate, decaying as configured


@pytest.mark.slow
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


def test_overrides_read_exponents_as_numbers():
    """train.lr=1e-4 is a float (PyYAML alone, YAML 1.1, returned the string '1e-4' and the
    optimiser failed on it); strings and lists stay as YAML reads them."""
    conf = load_config(None, ["train.lr=1e-4", "name=run1e5", "data.homography.zoom=[1.0,2.0]", "loss.lambda_h=1.6E+4"])
    assert conf["train"]["lr"] == pytest.approx(1e-4) and conf["name"] == "run1e5"
    assert conf["data"]["homography"]["zoom"] == [1.0, 2.0] and conf["loss"]["lambda_h"] == 16000.0


@pytest.mark.slow
def test_bad_config_key_is_one_clear_error(tmp_path: Path):
    with pytest.raises(KeyError, match="train.stepz"):
        load_config(None, ["train.stepz=3"])
    res = subprocess.run(
        [sys.executable, "-m", "goodpoint_ros.training.train", "--config", str(REPO / "training/configs/goodpoint_small.yaml"),
         f"data.root={tmp_path / 'missing'}", f"train.output_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not any(tmp_path.iterdir())  # no half-made run directory


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path: Path, photos: Path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29617",
        "-m", "goodpoint_ros.training.train", "--config", str(REPO / "training/configs/goodpoint_small.yaml"), "--no-progress",
        f"data.root={photos}", "data.crop=64", "data.batch_size=2", "data.num_workers=0", "train.steps=3",
        "train.log_every=1", "eval.every=0", f"train.output_dir={tmp_path}", "name=ddp", "train.threads=1",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(read_losses(tmp_path / "ddp")) == [1, 2, 3]  # one writer: rank 0
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"] == 3
