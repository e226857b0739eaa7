"""Node benchmark: throughput and end-to-end latency of the extractor node, and its overhead.

    .venv/bin/python bench/node.py [--model goodpoint_small] [--sizes 320x240 640x480]

The node runs in its own process; this process publishes real frames (rgb8, best effort, the
shipped Fast DDS profile) and times the keypoints coming back. Per size:
- throughput: 30 Hz for a few seconds; keypoints messages per second (frames beyond that are
  dropped by the node's keep-latest slot, as designed).
- latency: frames spaced well apart (no queueing), time from publish to keypoints received
  (both DDS hops included); node overhead = per frame, the node's time from receiving the image
  to publishing its outputs minus the model's extraction time (decoding, matching, RANSAC,
  track ids, message building), p50 as reported on /diagnostics. A fresh node per size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from goodpoint_ros.ros.extractor_node import apply_fastdds_profile

apply_fastdds_profile()

from goodpoint_ros.images import sample_photo  # noqa: E402
from goodpoint_ros.ros.conversions import numpy_to_image  # noqa: E402
from goodpoint_ros.ros.player import camera_sequence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the node harness is test code
from probe import NodeProcess, Probe  # noqa: E402


def measure(probe: Probe, pub, frames: list[np.ndarray], rate: float, base: int) -> dict:
    sent: dict[tuple[int, int], float] = {}
    start_kp = len(probe.keypoints)
    t0 = time.monotonic()
    for i, f in enumerate(frames):
        msg = numpy_to_image(f, "rgb8")
        msg.header.stamp = probe.stamp(i, base)
        sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
        pub.publish(msg)
        probe.spin(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    probe.spin(3.0)
    got = [(t, (h.stamp.sec, h.stamp.nanosec)) for t, h, _ in probe.keypoints[start_kp:]]
    got = [(t, s) for t, s in got if s in sent]
    lat = np.array([(t - sent[s]) * 1e3 for t, s in got])
    span = got[-1][0] - got[0][0] if len(got) > 1 else float("nan")
    return {"sent": len(frames), "returned": len(got), "rate_hz": (len(got) - 1) / span if len(got) > 1 else 0.0,
            "latency_ms": lat}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="goodpoint_small")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the 30 Hz throughput run")
    ap.add_argument("--out", default="out/bench_node.json")
    ap.add_argument("--domain", type=int, default=71, help="ROS_DOMAIN_ID of the first size (+1 per size)")
    args = ap.parse_args()

    rows = []
    photo = sample_photo("astronaut")
    for k, size in enumerate(args.sizes):
        w, h = (int(v) for v in size.split("x"))
        node = NodeProcess(args.domain + k, {"model": args.model, "weights": args.weights, "device": args.device,
                                             "max_keypoints": 1000, "publish_debug_image": False},
                           {"image": "/bench/image"})  # fmt: skip
        probe = Probe(args.domain + k)
        try:
            probe.wait_ready(node)
            pub = probe.publisher("/bench/image", best_effort=True)
            probe.wait_subscribed(pub)
            probe.spin(1.0)
            frames, _ = camera_sequence(photo, int(30 * args.seconds), (w, h), rate=30.0, motion=0.5)
            thr = measure(probe, pub, frames, 30.0, 10_000)
            probe.spin(1.5)
            spaced = max(3.0 * float(probe.diagnostics[-1]["extract_p50_ms"]) / 1e3, 0.15)
            lat = measure(probe, pub, frames[:15], 1.0 / spaced, 20_000)
            probe.spin(1.5)
            d = probe.diagnostics[-1]
            rows.append({
                "size": size, "throughput_hz": round(thr["rate_hz"], 2), "returned_at_30hz": f"{thr['returned']}/{thr['sent']}",
                "latency_p50_ms": round(float(np.percentile(lat["latency_ms"], 50)), 1),
                "latency_p95_ms": round(float(np.percentile(lat["latency_ms"], 95)), 1),
                "extract_p50_ms": round(float(d["extract_p50_ms"]), 1),
                "node_overhead_p50_ms": round(float(d["overhead_p50_ms"]), 1),
                "spaced_returned": f"{lat['returned']}/{lat['sent']}",
            })  # fmt: skip
            print(rows[-1], flush=True)
        finally:
            node.stop()
            probe.close()
    print(f"\nmodel {args.model} ({args.weights} weights) on {args.device}; node in its own process, rgb8 best effort")
    print("| size | throughput (Hz, 30 Hz input) | latency p50 / p95 (ms) | extraction p50 (ms) | node overhead (ms) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['throughput_hz']} | {r['latency_p50_ms']} / {r['latency_p95_ms']} | "
              f"{r['extract_p50_ms']} | {r['node_overhead_p50_ms']} |")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "device": args.device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
