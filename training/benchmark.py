"""Training speed per experiment config: a few optimiser steps, batch and crop as configured.

    python -m goodpoint_ros.training.benchmark training/configs/goodpoint_small.yaml training/configs/mdnet.yaml --steps 3

Prints wall seconds per step, process CPU seconds per step, and steps/hour (wall), in fp32 and
bf16, each with NCHW and with channels_last (NHWC, ``train.channels_last``, what training uses). On a shared
machine the CPU time is the steadier figure: ``3600 / (cpu_s / threads)`` is what an idle machine
with that many cores would reach.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from goodpoint_ros.device import keep_freed_memory

from .datasets import PairDataset
from .train import build_model_and_optimizer, load_config, make_task


class _Photos:
    """Real photos bundled with scikit-image, as a data source (no data set needed)."""

    skipped = 0

    def __init__(self) -> None:
        from skimage import data

        self.images = [getattr(data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket")]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> np.ndarray:
        return self.images[i]


def bench(path: str, steps: int, overrides: list[str]) -> dict[str, float]:
    conf = load_config(path, overrides)
    task = make_task(conf)
    d = conf["data"]
    ds = PairDataset(_Photos(), d["crop"], task.channels, 0, d["noise"], d["homography"])
    batches = [
        torch.utils.data.default_collate([ds[s * d["batch_size"] + j] for j in range(d["batch_size"])])
        for s in range(steps + 1)
    ]
    torch.manual_seed(0)
    model, opt, sched = build_model_and_optimizer(conf, None, torch.device("cpu"))
    stage_step = int(conf["train"].get("stage2_step", 0))
    walls, cpus = [], []
    for i, batch in enumerate(batches):
        w, c = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(conf["train"]["autocast_bf16"])):
            loss, _ = task.loss(model, batch, stage_step)  # the (costlier) joint stage for MD-Net
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if i:  # the first step warms up allocators and kernels
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"wall_s": wall, "cpu_s": cpu, "steps_per_hour": 3600.0 / wall, "batch": d["batch_size"], "crop": d["crop"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides for every config")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as train() does on a CPU
    print(f"torch threads {torch.get_num_threads()}")
    print("| config | batch x crop | bf16 | channels_last | wall s/step | CPU s/step | steps/hour |")
    print("|---|---|---|---|---|---|---|")
    for path in args.configs:
        for bf16 in (False, True):
            for nhwc in (False, True):  # train.channels_last: the layout training uses, and the one it replaced
                flags = [f"train.autocast_bf16={str(bf16).lower()}", f"train.channels_last={str(nhwc).lower()}"]
                r = bench(path, args.steps, [*args.set, *flags])
                print(
                    f"| {path.rsplit('/', 1)[-1]} | {r['batch']} x {r['crop']} | {'yes' if bf16 else 'no'} | "
                    f"{'yes' if nhwc else 'no'} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['steps_per_hour']:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
