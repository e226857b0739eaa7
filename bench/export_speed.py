"""CPU real-time check: torch vs onnxruntime end to end, and torch's post-processing share.

    .venv/bin/python bench/export_speed.py [--models goodpoint_small,mdnet_small] [--sizes 320x240]
        [--threads 2] [--runs 10] [--backends torch,onnxruntime] [--json out.json]

End to end = numpy image in, numpy features out (prepare, network, NMS, borders, top-k,
descriptor sampling), threshold 0 so the full keypoint budget is filled. The machine may be
shared: the load average is printed before and after; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from timing import time_backend, time_torch_stages  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="goodpoint_small,mdnet_small")
    p.add_argument("--backends", default="torch,onnxruntime")
    p.add_argument("--sizes", nargs="+", default=["320x240"], help="WIDTHxHEIGHT")
    p.add_argument("--stage-size", default="640x480", help="size for the torch stage split ('' to skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--max-keypoints", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    rows, stages = [], []
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()}, threads: {args.threads})")
    for size in args.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        for model in models:
            for backend in args.backends.split(","):
                r = time_backend(
                    backend, model, h, w, args.runs, threads=args.threads, max_keypoints=args.max_keypoints
                )
                rows.append(r)
                print(f"{model:16s} {backend:12s} {r['size']:8s} median {r['ms_median']:7.1f} ms  min {r['ms_min']:7.1f} ms  "
                      f"{r['fps']:5.1f} fps  cpu {r['cpu_ms']:7.1f} ms/frame  ({r['keypoints']} kpts)", flush=True)  # fmt: skip
    if args.stage_size:
        w, h = (int(v) for v in args.stage_size.lower().split("x"))
        for model in models:
            s = time_torch_stages(model, h, w, max(3, args.runs // 2), args.threads, args.max_keypoints)
            stages.append(s)
            print(f"{model:16s} torch stages {s['size']}: prepare {s['prepare_ms']:.1f} ms, network {s['network_ms']:.1f} ms, "
                  f"post {s['post_ms']:.1f} ms = {100 * s['post_share']:.1f}% of network", flush=True)  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"end_to_end": rows, "torch_stages": stages}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
