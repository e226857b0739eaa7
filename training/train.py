"""Train GoodPoint or MD-Net without labels: one YAML per experiment, ``key=value`` overrides.

    python -m goodpoint_ros.training.train --config training/configs/goodpoint_coco.yaml data.root=/data/coco/train2017
    python -m goodpoint_ros.training.train --config training/configs/goodpoint_small.yaml train.steps=200 train.name=try
    python -m goodpoint_ros.training.train --resume runs/goodpoint_coco               # continue exactly where it stopped
    goodpoint-train --config goodpoint_small train.steps=200            # installed: a shipped config by name
    torchrun --nproc_per_node=2 -m goodpoint_ros.training.train --config ...          # DDP (gloo on CPU, NCCL on GPU)

A run directory ``<train.output_dir>/<name>`` holds ``config.yaml``, ``checkpoint.pt`` (model,
optimiser, scheduler, step, config, RNG states; written atomically), ``model.pt`` (weights only,
loadable with ``goodpoint_ros.models.checkpoint.load_model(name, path)`` and the node's ``--weights``),
``best_model.pt`` (best validation score) and ``log.csv`` (or TensorBoard events when installed).
SIGINT/SIGTERM finish the current step, save, and exit with status 0.

``model.pt`` is written from the same tensors and step as ``checkpoint.pt``, right after it; a run
that starts or resumes rewrites it if a kill fell between the two, and removes the temporaries a
kill during a write left behind (``.checkpoint.pt.tmp-*``). Files get the usual mode (umask).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import yaml

from goodpoint_ros.device import bf16_hardware, keep_freed_memory, resolve_device
from goodpoint_ros.io.image_codec import DEFAULT_MAX_PIXELS
from goodpoint_ros.models import DEFAULT_MODEL, MODELS, BaseModel, GoodPoint, MDNet, build_model
from goodpoint_ros.models.checkpoint import (
    TRAIN_FORMAT,
    CheckpointError,
    atomic_torch_save,
    load_model,
    read_checkpoint,
    remove_temporaries,
    save_weights,
    saved_state,
    weights_dict,
)

from . import finetune, losses_goodpoint, losses_mdnet
from .datasets import DataError, PairDataset, StepSampler, build_source
from .datasets import main as data_main
from .validate import validate

# The experiment YAMLs; they ship with the package (goodpoint_ros/training/configs when installed).
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "data": {
        "root": None,  # one image folder (e.g. COCO train2017); and/or:
        "sources": [],  # [{type: images, root}, {type: bag, path, topic, stride, max_frames}]
        "crop": 256,
        "crop_scale": None,  # [lo, hi]: a crop covers lo..hi of the photo's short side (log-uniform), then resized
        "batch_size": 8,
        "num_workers": 1,
        "min_size": 64,
        "max_pixels": DEFAULT_MAX_PIXELS,  # frames whose header declares more are skipped before decoding
        "noise": True,
        "homography": {"shift": 14, "perspective": 85, "rotation": 0.08},
        # recordings (bags) only: this fraction of pairs are two real frames 1..pair_gap kept frames
        # apart, aligned by a homography (training/frame_pairs.py), instead of one frame warped twice
        "frame_pairs": 0.0,
        "pair_gap": 3,
    },
    # init: weights to start from, for fine-tuning: "default" (the shipped weights of model.name),
    # a shipped model name, or a checkpoint path; null trains from scratch. A resume ignores it.
    "model": {"name": "goodpoint", "conf": {}, "init": None},
    "loss": {},  # per-model loss settings (see losses_goodpoint.DEFAULT_CONF / losses_mdnet.DEFAULT_CONF)
    "train": {
        "output_dir": "runs",
        "steps": 20000,
        "optimizer": "adamw",  # adamw (GoodPoint) or adam (MD-Net)
        "lr": 5e-4,
        "weight_decay": 0.01,
        "decay_start": 0.44,  # constant lr, then exponential decay (GoodPoint: 8 of 18 epochs); fraction or step
        "decay_final": 0.1,  # lr factor reached at the last step
        "stage2_step": 0,  # MD-Net: steps of stage 1 (triplet only) before the joint stage 2
        "grad_clip": 0.0,
        "autocast_bf16": "auto",  # auto: bf16 where the hardware has it (see use_bf16), else fp32; or true/false
        # NHWC weights and activations: oneDNN's convolutions then skip the layout reorders that took
        # ~30 % of a CPU step (paper-size goodpoint, bf16, one thread: 3.56 -> 1.88 s/step, benchmark.py;
        # docs/training.md)
        "channels_last": True,
        "device": "auto",
        "threads": 0,
        "log_every": 10,
        "checkpoint_every": 200,
        "checkpoint_minutes": 10.0,  # also save when this much time passed since the last save
        "keep_every": 0,  # also keep checkpoint_<step>.pt every n steps (0: never)
    },
    "eval": {
        "every": 0,  # validate every n steps on held-out pairs (0: never)
        "pairs": 16,  # the last `pairs` frames of the data are held out of training
        "crop": 256,
        "max_keypoints": 500,
        "threshold_px": 3.0,
        "detection_threshold": None,  # None: the model's own
    },
}

OPEN_KEYS = {("model", "conf"), ("loss",), ("data", "homography")}  # free-form blocks checked elsewhere


# ---------------------------------------------------------------- configuration


def merge(base: dict, new: dict, path: tuple[str, ...] = ()) -> dict:
    """Recursively merge ``new`` into a copy of ``base``; unknown keys are an error (typos)."""
    out = copy.deepcopy(base)
    for k, v in (new or {}).items():
        here = (*path, k)
        if k not in out and path not in OPEN_KEYS and not any(path[: len(o)] == o for o in OPEN_KEYS):
            raise KeyError(f"unknown config key '{'.'.join(here)}' (known: {', '.join(sorted(out))})")
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = merge(out[k], v, here)
        elif isinstance(out.get(k), list) and isinstance(v, dict) and all(str(i).isdigit() for i in v):
            items = list(out[k])  # data.sources.0.path=... edits one element of a list
            for i, sub in v.items():
                i = int(i)
                if i >= len(items):
                    raise KeyError(f"'{'.'.join(here)}' has no element {i} (it has {len(items)})")
                items[i] = {**items[i], **sub} if isinstance(items[i], dict) and isinstance(sub, dict) else sub
            out[k] = items
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_overrides(items: list[str]) -> dict:
    """``a.b=1 c=[1,2]`` -> nested dict; values are parsed as YAML (numbers, bools, lists, null)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override '{item}' is not key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _yaml_value(value) if value != "" else None
    return out


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_value(text: str) -> Any:
    """YAML's value, except that ``1e-4`` is a float: PyYAML follows YAML 1.1, where an exponent
    needs a dot (``1.0e-4``), and would hand ``train.lr=1e-4`` on as a string."""
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()) else value


def config_path(path: str | Path) -> Path:
    """``path`` when it is a file, else the shipped config of that name (``goodpoint_small`` or
    ``goodpoint_small.yaml``): installed, the configs sit inside the package, not under the cwd."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = CONFIGS_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"no config file '{path}' (shipped configs: {known})")


def load_config(path: str | Path | None, overrides: list[str], base: dict | None = None) -> dict:
    conf = copy.deepcopy(base) if base is not None else copy.deepcopy(DEFAULTS)
    if path:
        with open(config_path(path)) as f:
            conf = merge(conf, yaml.safe_load(f) or {})
    return merge(conf, parse_overrides(overrides))


# ---------------------------------------------------------------- tasks (model + loss)


class Task(Protocol):
    """What training needs beside the model: its input channels and its loss on a batch of pairs."""

    channels: int
    # DDP: parameters that a step may leave without a gradient (MD-Net's detector in stage 1)
    unused_parameters: bool

    def __init__(self, conf: dict) -> None: ...

    def loss(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]: ...


# model class -> its training task. A model registers its task here (``@register_task(Model)``),
# so make_task never recognises a model by its name; a subclass inherits its base's task.
TASKS: dict[type[BaseModel], type[Task]] = {}


def register_task(model_class: type[BaseModel]):
    """Class decorator: ``cls`` trains every model of ``model_class`` (and its subclasses)."""

    def add(cls: type[Task]) -> type[Task]:
        TASKS[model_class] = cls
        return cls

    return add


def forward_pair(model: torch.nn.Module, batch: dict) -> tuple[dict, dict]:
    """Both views through the network in one batch (one forward, batch norm sees both views),
    split back into the outputs of view 0 and view 1."""
    b = batch["image0"].shape[0]
    out = model(torch.cat([batch["image0"], batch["image1"]]))
    return {k: v[:b] for k, v in out.items()}, {k: v[b:] for k, v in out.items()}


@register_task(GoodPoint)
class GoodPointTask:
    """GoodPoint: gray images, Eq. 1 loss."""

    channels = 1
    unused_parameters = False

    def __init__(self, conf: dict) -> None:
        self.loss_conf = merge(losses_goodpoint.DEFAULT_CONF, conf["loss"], ("loss",))

    def loss(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        out0, out1 = forward_pair(model, batch)
        return losses_goodpoint.goodpoint_loss(out0, out1, batch["H"], batch["mask0"], batch["mask1"], self.loss_conf)


@register_task(MDNet)
class MDNetTask:
    """MD-Net: RGB images; stage 1 (triplet only) until ``train.stage2_step``, then joint."""

    channels = 3
    unused_parameters = True  # stage 1 leaves the detector head without gradients

    def __init__(self, conf: dict) -> None:
        self.loss_conf = merge(losses_mdnet.DEFAULT_CONF, conf["loss"], ("loss",))
        self.stage2_step = int(conf["train"]["stage2_step"])

    def loss(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        out0, out1 = forward_pair(model, batch)
        stage = 2 if step >= self.stage2_step else 1
        return losses_mdnet.mdnet_loss(out0, out1, batch["H"], batch["mask0"], batch["mask1"], stage, self.loss_conf)


def make_task(conf: dict) -> Task:
    """The registered task of ``model.name``'s class (or of its nearest registered base class)."""
    name = conf["model"]["name"]
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    cls = MODELS[name][0]
    task = next((TASKS[c] for c in cls.__mro__ if c in TASKS), None)
    if task is None:
        trainable = ", ".join(n for n, (c, _) in MODELS.items() if any(b in TASKS for b in c.__mro__))
        raise KeyError(f"no training task registered for model '{name}' ({cls.__name__}); trainable: {trainable}")
    return task(conf)


# ---------------------------------------------------------------- optimisation


def use_bf16(setting: bool | str, device: torch.device, log: bool = False) -> bool:
    """``train.autocast_bf16``: true/false, or ``auto``: bf16 autocast on a CPU with AVX-512 BF16
    or AMX (CPU time per step, 1 thread, ``python -m goodpoint_ros.training.benchmark``: goodpoint_small 1.46 ->
    0.88 s and mdnet_small 2.37 -> 1.25 s on a Zen 4 EPYC; about 2x on an AMX Xeon; fp32 master
    weights and optimiser) and on CUDA GPUs that support it; fp32 elsewhere."""
    if isinstance(setting, str) and setting.lower() == "auto":
        if device.type == "cuda":
            on, why = torch.cuda.is_bf16_supported(), "CUDA device"
        else:
            units = bf16_hardware()
            on, why = bool(units), f"CPU flags {', '.join(units)}" if units else "CPU without avx512_bf16/amx_bf16"
        if log:
            print(f"train.autocast_bf16 auto -> {'bf16' if on else 'fp32'} ({why})", file=sys.stderr)
        return on
    if isinstance(setting, str):
        if setting.lower() not in ("true", "false"):
            raise ValueError(f"train.autocast_bf16 must be auto, true or false, got '{setting}'")
        return setting.lower() == "true"
    return bool(setting)


def lr_factor(step: int, conf: dict) -> float:
    """Constant, then exponential decay to ``decay_final`` at the last step (GoodPoint section 5)."""
    total = max(int(conf["steps"]), 1)
    start = conf["decay_start"]
    start = int(start * total) if isinstance(start, float) and start <= 1.0 else int(start)
    if step < start or total <= start:
        return 1.0
    return float(conf["decay_final"]) ** ((step - start) / (total - start))


def make_optimizer(model: torch.nn.Module, conf: dict):
    t = conf["train"]
    if t["optimizer"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    elif t["optimizer"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=t["lr"])
    else:
        raise ValueError(f"unknown optimizer '{t['optimizer']}' (adamw or adam)")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    return opt, sched


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# ---------------------------------------------------------------- logging


class Logger:
    """TensorBoard when importable, else an appended CSV (``log.csv``) in the run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir))
        except Exception:  # tensorboard not installed: CSV only
            pass
        self.path = run_dir / "log.csv"
        self.fields: list[str] | None = None
        if self.path.exists():
            with open(self.path) as f:
                self.fields = next(csv.reader(f), None)

    def log(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        row = {"step": step, "time": round(time.time(), 3), **{f"{prefix}/{k}": float(v) for k, v in values.items()}}
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "time"):
                    self.tb.add_scalar(k, v, step)
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        new = [k for k in row if k not in self.fields]
        if new:  # a new column (e.g. validation): rewrite the header, keep the rows
            self.fields += new
            with open(self.path) as f:
                rows = list(csv.reader(f))[1:]
            with open(self.path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(self.fields)
                w.writerows(rows)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------- the run


class Stop:
    """SIGINT/SIGTERM set a flag; the loop saves and exits after the current step.

    Inside ``step()`` (forward, backward, optimiser, step counter, log row) nothing may raise: an
    exception there would leave the weights updated but the step not counted (or batch-norm
    statistics moved, or the row of a saved step unlogged), and the checkpoint saved on the way
    out would no longer resume exactly.
    So a second Ctrl-C, and the DataLoader's SIGCHLD handler (which raises in the main thread when
    a worker died, wherever it is), are held until the step is complete."""

    def __init__(self) -> None:
        self.flag = False
        self.busy = False
        self.abort = False
        self.held: list = []
        self.old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread
                pass

    def handle(self, signum, frame) -> None:
        if self.flag and signum == signal.SIGINT:  # second Ctrl-C: give up (after this step)
            if self.busy:
                self.abort = True
                return
            raise KeyboardInterrupt
        self.flag = True

    @contextlib.contextmanager
    def step(self):
        loader_handler = signal.getsignal(signal.SIGCHLD) if self.old else None
        if callable(loader_handler):
            signal.signal(signal.SIGCHLD, lambda signum, frame: self.held.append(loader_handler))
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
            if callable(loader_handler):
                signal.signal(signal.SIGCHLD, loader_handler)

    def deliver(self) -> None:
        """Between steps (after the last one was logged and saved): act on what ``step`` held."""
        held, self.held = self.held, []
        for handler in held[:1]:
            handler(signal.SIGCHLD, None)  # raises if a loader worker died
        if self.abort:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)


def setup_distributed(conf: dict) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(conf["train"]["device"])
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def build_data(conf: dict, channels: int, start_step: int, rank: int, world: int):
    """Training loader from ``start_step`` on, and the held-out validation pairs (or None)."""
    d, t, e = conf["data"], conf["train"], conf["eval"]
    source = build_source(d)
    held = None
    if e["every"] and e["pairs"]:
        n_val = int(e["pairs"])
        if len(source) > 2 * n_val:  # hold out the last frames: never seen in training
            held = _Slice(source, len(source) - n_val, len(source))
            source = _Slice(source, 0, len(source) - n_val)
        else:
            held = source  # too few frames to hold any out: validate on other warps of the same
    ds = PairDataset(
        source, d["crop"], channels, conf["seed"], d["noise"], d["homography"],
        frame_pairs=d["frame_pairs"], pair_gap=d["pair_gap"],
    )  # fmt: skip
    sampler = StepSampler(int(d["batch_size"]), start_step, int(t["steps"]), rank, world)
    workers = int(d["num_workers"])
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=int(d["batch_size"]),
        sampler=sampler,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(int(conf["seed"])),  # leaves the global RNG alone
        worker_init_fn=_quiet_worker,
    )
    val = None
    if held is not None:
        vds = PairDataset(held, e["crop"], channels, conf["seed"] + 1000, noise=True, homography=d["homography"])
        val = [vds[i] for i in range(int(e["pairs"]))]
    return ds, loader, val


def _quiet_worker(_: int) -> None:
    """Loader workers ignore Ctrl-C/SIGTERM sent to the whole process group: the main process
    finishes its step, saves, and shuts them down (a worker dying first would look like a crash)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Slice:
    """Frames ``start..stop`` of a source."""

    def __init__(self, source, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def skipped(self) -> int:
        return self.source.skipped

    def load(self, index: int):
        return self.source.load(self.start + index)

    def neighbour(self, index: int, gap: int) -> int | None:
        find = getattr(self.source, "neighbour", None)
        j = find(self.start + index, gap) if find else None
        return j - self.start if j is not None and j < self.stop else None


def save_checkpoint(
    run_dir: Path, model, opt, sched, step: int, conf: dict, best: float | None, rng: dict | None = None
) -> None:
    state = {
        "format": TRAIN_FORMAT,
        "model": model.name,
        "conf": model.arch_conf,
        "state_dict": saved_state(model.state_dict()),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": step,
        "config": conf,
        "rng": rng if rng is not None else rng_state(),
        "best": best,
    }
    atomic_torch_save(state, run_dir / "checkpoint.pt")
    keep = int(conf["train"]["keep_every"])
    if keep and step % keep == 0:
        atomic_torch_save(state, run_dir / f"checkpoint_{step:07d}.pt")
    write_model_file(run_dir, state)


def write_model_file(run_dir: Path, state: dict) -> None:
    """``model.pt`` from the very tensors (and step) of a training checkpoint dict. It is written
    right after ``checkpoint.pt``; a kill between the two is repaired by ``sync_model_file``."""
    weights = weights_dict(state["model"], state["conf"], state["state_dict"], step=state["step"])
    atomic_torch_save({**weights, "run": state["config"]["name"]}, run_dir / "model.pt")


def sync_model_file(run_dir: Path, ckpt: dict | None) -> bool:
    """Rewrite ``model.pt`` from ``ckpt`` (the run's checkpoint.pt) when it is missing or holds
    another step, so it never lags the checkpoint; True when it was rewritten."""
    if ckpt is None:
        return False
    path = run_dir / "model.pt"
    try:
        step = torch.load(path, map_location="cpu", weights_only=True).get("step") if path.is_file() else None
    except Exception:  # unreadable: rewrite it
        step = None
    if step == ckpt["step"]:
        return False
    write_model_file(run_dir, ckpt)
    return True


def _prepare_run_dir(run_dir: Path, conf: dict, resume: dict | None) -> None:
    """Create the run directory, repair what a kill left there, and record the run's config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = remove_temporaries(run_dir)  # left by a kill during a checkpoint write
    if stale:
        print(f"removed {len(stale)} unfinished checkpoint temporaries from {run_dir}", file=sys.stderr)
    sync_model_file(run_dir, resume)  # a kill between checkpoint.pt and model.pt: catch up
    with open(run_dir / "config.yaml", "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)


def _seed_rngs(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random`` alike, so a run repeats from its config."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_model_and_optimizer(
    conf: dict, resume: dict | None, device: torch.device
) -> tuple[BaseModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The model on ``device`` in train mode with its optimiser and scheduler, resumed when given."""
    model = build_model(conf["model"]["name"], conf["model"]["conf"])
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
    elif conf["model"].get("init"):  # fine-tuning: the trained weights (and their architecture)
        model = load_model(conf["model"]["name"], conf["model"]["init"])
    model.to(device).train()
    if conf["train"]["channels_last"]:  # the input follows: a convolution with NHWC weights returns NHWC
        model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, conf)  # after .to(device): state tensors follow the params
    if resume is not None:
        _resume_optimizer(opt, sched, resume, conf)
    return model, opt, sched


def _resume_optimizer(
    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, resume: dict, conf: dict
) -> None:
    """Optimiser and scheduler state from ``resume``, at the rate of this config's ``train.lr``."""
    opt.load_state_dict(resume["optimizer"])
    sched.load_state_dict(resume["scheduler"])
    # The scheduler's state carries the lr it started with; a ``train.lr`` override on resume
    # (to continue at a new rate) must win over it, and an unchanged config resumes as before.
    sched.base_lrs = [float(conf["train"]["lr"])] * len(opt.param_groups)
    step = int(resume["step"])
    for group, lr in zip(opt.param_groups, sched.base_lrs):
        group["lr"] = lr * lr_factor(step, conf["train"])


def _wrap_ddp(model: BaseModel, task: Task, device: torch.device, world: int) -> torch.nn.Module:
    """What the loss runs through: ``model`` itself, or its DDP wrapper when several processes train."""
    if world <= 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=task.unused_parameters,
    )


def _progress_bar(conf: dict, step: int) -> Any:
    """A tqdm bar over ``train.steps`` from ``step`` on (tqdm is imported only when one is shown)."""
    from tqdm import tqdm

    return tqdm(total=int(conf["train"]["steps"]), initial=step, dynamic_ncols=True, desc=conf["name"])


@dataclass
class _Run:
    """What the step loop works with, and its progress: the save on failure reads the same fields."""

    conf: dict
    run_dir: Path
    main: bool  # rank 0: logs, validates and saves
    world: int
    device: torch.device
    task: Task
    model: BaseModel
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    val: list[dict] | None
    logger: Logger | None
    stop: Stop
    bar: Any
    autocast: bool
    step: int
    best: float | None
    last_saved: int
    last: dict[str, float] = field(default_factory=dict)  # loss terms of the last step
    sums: dict[str, float] = field(default_factory=dict)  # summed since the last log line
    n_sum: int = 0
    t_last: float = field(default_factory=time.time)
    t_saved: float = field(default_factory=time.time)
    rng_before: dict | None = None  # RNG state at the start of an unfinished step


def _run_steps(run: _Run, loader: torch.utils.data.DataLoader, resume: dict | None) -> None:
    """The loop: train, log, validate and checkpoint until ``train.steps`` or a stop signal."""
    it = iter(loader)
    if resume is not None:  # last: nothing may draw from the RNGs between here and the step
        set_rng_state(resume["rng"])
    while run.step < int(run.conf["train"]["steps"]):
        run.stop.deliver()
        batch = next(it)
        run.rng_before = rng_state()  # a crash inside the step saves the state it started from
        with run.stop.step():  # signals wait until the step is whole (see Stop)
            terms = _optimise(run, batch)
            run.step += 1
            run.rng_before = None  # the step is complete: a later failure saves the current RNG state
            _record(run, terms)  # inside: a worker's death may not cost the logged row of a saved step
        _validate_if_due(run)
        if _checkpoint_if_due(run):
            break


def _optimise(run: _Run, batch: dict) -> dict:
    """Forward, backward and one optimiser and scheduler step on ``batch``; the loss terms."""
    t = run.conf["train"]
    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.autocast):
        loss, terms = run.task.loss(run.net, batch, run.step)
    if not torch.isfinite(loss):
        terms_now = {k: float(v) for k, v in terms.items()}
        raise FloatingPointError(f"non-finite loss at step {run.step}: {terms_now}")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if t["grad_clip"]:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(t["grad_clip"]))
    run.opt.step()
    run.sched.step()
    return terms


def _record(run: _Run, terms: dict) -> None:
    """Show the step's loss terms on the bar, and log their mean every ``train.log_every`` steps."""
    t = run.conf["train"]
    run.last = {k: float(v) for k, v in terms.items()}
    for k, v in run.last.items():
        run.sums[k] = run.sums.get(k, 0.0) + v
    run.n_sum += 1
    if run.bar is not None:
        run.bar.update(1)
        run.bar.set_postfix({k: f"{v:.3g}" for k, v in run.last.items()}, refresh=False)
    if run.main and (run.step % int(t["log_every"]) == 0 or run.step == int(t["steps"])):
        now = time.time()
        avg = {k: v / run.n_sum for k, v in run.sums.items()}
        avg["lr"] = run.opt.param_groups[0]["lr"]
        avg["sec_per_step"] = (now - run.t_last) / run.n_sum
        run.logger.log(run.step, avg)
        run.sums, run.n_sum, run.t_last = {}, 0, now


def _validate_if_due(run: _Run) -> None:
    """Every ``eval.every`` steps: score the held-out pairs, log, and keep the best weights."""
    e = run.conf["eval"]
    if run.val is not None and e["every"] and run.step % int(e["every"]) == 0 and run.main:
        scores = validate(run.model, run.val, e)
        run.logger.log(run.step, scores, prefix="val")
        if run.best is None or scores["score"] > run.best:
            run.best = scores["score"]
            save_weights(run.model, run.run_dir / "best_model.pt", step=run.step, run=run.conf["name"], score=run.best)
        run.model.train()


def _agree_to_stop(run: _Run) -> bool:
    """Whether a stop signal arrived, on any rank: every rank stops at the same step."""
    stopping = run.stop.flag
    if run.world > 1:
        flag = torch.tensor([float(stopping)], device=run.device)
        dist.all_reduce(flag)
        stopping = bool(flag.item() > 0)
    return stopping


def _checkpoint_if_due(run: _Run) -> bool:
    """Save when a checkpoint is due (steps or minutes) or the run stops; True when it stops."""
    t = run.conf["train"]
    stopping = _agree_to_stop(run)
    due = run.step % int(t["checkpoint_every"]) == 0 or run.step == int(t["steps"])
    due |= bool(t["checkpoint_minutes"]) and time.time() - run.t_saved > 60.0 * float(t["checkpoint_minutes"])
    if run.main and (stopping or due):
        save_checkpoint(run.run_dir, run.model, run.opt, run.sched, run.step, run.conf, run.best)
        run.last_saved, run.t_saved = run.step, time.time()
    if stopping and run.main:
        print(f"\nstopped at step {run.step}; checkpoint saved in {run.run_dir}", file=sys.stderr)
    return stopping


def _save_before_failing(run: _Run) -> None:
    """Keep the steps done before a crash or a second Ctrl-C, from the RNG state they left."""
    # Twice: a signal handler that raises (the DataLoader's SIGCHLD one, when a worker died)
    # can fire inside the first attempt; a failed write leaves no temporary behind.
    for _ in range(2):
        try:
            save_checkpoint(run.run_dir, run.model, run.opt, run.sched, run.step, run.conf, run.best, run.rng_before)
            print(f"\nsaved step {run.step} in {run.run_dir} before failing", file=sys.stderr)
            break
        except Exception:
            continue


def _close(run: _Run, threads_before: int, ds: PairDataset) -> None:
    """However the run ended: restore signals and threads, close the outputs, leave the process group."""
    run.stop.restore()
    torch.set_num_threads(threads_before)
    if run.bar is not None:
        run.bar.close()
    if run.logger is not None:
        run.logger.close()
    skipped = getattr(ds.source, "skipped", 0)
    if run.main and skipped:
        print(f"{skipped} unusable frames were skipped (in the main process)", file=sys.stderr)
    if run.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def train(conf: dict, resume: dict | None = None, progress: bool = True) -> dict:
    """Run (or continue) training; returns {"step", "last" (terms of the last step), "run_dir"}."""
    rank, world, device = setup_distributed(conf)
    t = conf["train"]
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        keep_freed_memory()  # goodpoint_small bf16 0.59 -> 0.40 s/step (python -m goodpoint_ros.training.benchmark)
    if t["threads"]:
        torch.set_num_threads(int(t["threads"]))
    run_dir = Path(t["output_dir"]) / conf["name"]
    main = rank == 0
    task = make_task(conf)
    ds, loader, val = build_data(conf, task.channels, int(resume["step"]) if resume else 0, rank, world)
    if main:  # only once the data is known to be usable: a typo leaves no empty run behind
        _prepare_run_dir(run_dir, conf, resume)
    _seed_rngs(int(conf["seed"]) + rank)
    model, opt, sched = build_model_and_optimizer(conf, resume, device)
    step, best = (int(resume["step"]), resume.get("best")) if resume is not None else (0, None)
    run = _Run(  # Stop() installs the signal handlers; _close restores them
        conf=conf,
        run_dir=run_dir,
        main=main,
        world=world,
        device=device,
        task=task,
        model=model,
        net=_wrap_ddp(model, task, device, world),
        opt=opt,
        sched=sched,
        val=val,
        logger=Logger(run_dir) if main else None,
        stop=Stop(),
        bar=_progress_bar(conf, step) if progress and main else None,
        autocast=use_bf16(t["autocast_bf16"], device, log=main),
        step=step,
        best=best,
        last_saved=step,
    )
    try:
        _run_steps(run, loader, resume)
    except BaseException:
        if main and run.step != run.last_saved:  # crashed or killed by a second Ctrl-C: keep what was done
            _save_before_failing(run)
        raise
    finally:
        _close(run, threads_before, ds)
    return {"step": run.step, "last": run.last, "run_dir": run_dir}


def _bag_config(args: argparse.Namespace) -> dict:
    """``--from-bag``: the init model's own config, turned into a fine-tune on the bag, then the
    command line's overrides (``finetune.py``)."""
    if not 0.0 < args.holdout < 1.0:
        raise ValueError(f"--holdout {args.holdout}: a fraction between 0 and 1")
    change = finetune.bag_config(args.from_bag, args.topic, args.init, args.holdout, args.steps, args.stride)
    conf = merge(load_config(finetune.config_name(change["model"]["name"]), []), change)
    conf["train"]["lr"] = float(conf["train"]["lr"]) * finetune.LR_FACTOR
    return merge(conf, parse_overrides(args.overrides))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Train GoodPoint / MD-Net without labels.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: dotted keys, YAML values, e.g. data.root=/data/coco train.steps=1000 data.batch_size=4",
    )
    ap.add_argument("--config", help="experiment YAML: a path, or the name of a shipped one (training/configs/*.yaml)")
    ap.add_argument("--resume", metavar="RUN_DIR_OR_CHECKPOINT", help="continue a run exactly (config from the run)")
    ap.add_argument("--list-topics", metavar="BAG", help="print a ROS 2 bag's topics and exit")
    bag = ap.add_argument_group("fine-tuning on a bag (training/finetune.py)")
    bag.add_argument("--from-bag", metavar="BAG", help="fine-tune a shipped model on this ROS 2 bag's frames")
    bag.add_argument("--topic", help="its image topic (default: the only or busiest one)")
    bag.add_argument("--init", default=DEFAULT_MODEL, help="shipped model to start from, or a weights path")
    bag.add_argument("--holdout", type=float, default=0.2, help="final fraction of the bag never trained on")
    bag.add_argument("--steps", type=int, default=1000, help="fine-tuning steps (default 1000)")
    bag.add_argument("--stride", type=int, default=2, help="keep every n-th frame (default 2)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs only)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    try:
        if args.list_topics:
            return data_main(["--list-topics", args.list_topics])
        resume = None
        if args.resume:
            path = Path(args.resume)
            path = path / "checkpoint.pt" if path.is_dir() else path
            resume = read_checkpoint(path, training=True)
            base = merge(DEFAULTS, resume["config"])
            conf = load_config(args.config, args.overrides, base=base)
        elif args.from_bag:
            conf = _bag_config(args)
        elif args.config:
            conf = load_config(args.config, args.overrides)
        else:
            ap.error("give --config, --from-bag or --resume")
        result = train(conf, resume, progress=not args.no_progress)
        if args.from_bag and int(os.environ.get("RANK", "0")) == 0:
            print(f"model card: {finetune.write_card(Path(result['run_dir']), conf, result)}")
    except (DataError, CheckpointError, KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = ", ".join(f"{k} {v:.4g}" for k, v in result["last"].items())
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"step {result['step']}: {last}\nrun: {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
