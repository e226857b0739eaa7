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

    .venv/bin/python bench/node.py --accounting [--load 2] [--seconds 20] [--sizes 640x480]

``--accounting`` instead checks that every frame is accounted for: a 30 Hz best-effort stream
(plus every ``--malformed-every``-th message malformed: a wrong step), every message with the next
30 Hz stamp, then prints published vs received, lost before the callback (stamp gaps; the RMW's
message-lost event), dropped by the keep-latest slot, malformed and decode errors, and the closing
balance (published - received - malformed - lost) as a share of published. ``--load N`` runs N busy
processes for the length of each run (each ends by itself), on top of whatever else the machine
runs. It works against an older node too (keys it does not publish print as n/a): run it with
``PYTHONPATH=<checkout of the old commit>`` to measure before a change.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from goodpoint_ros.launch_logic import apply_fastdds_profile

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


def _busy(seconds: float) -> None:
    """One CPU-bound process that stops by itself after ``seconds``."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x = (x * 31 + 7) % 1_000_003


def start_load(n: int, seconds: float) -> list[multiprocessing.Process]:
    """``n`` busy processes for ``seconds`` (bounded: they end on their own, daemons besides)."""
    procs = [multiprocessing.Process(target=_busy, args=(seconds,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def _value(d: dict, key: str) -> int | str:
    return int(float(d[key])) if key in d and d[key].replace(".", "", 1).isdigit() else "n/a"


def account(probe: Probe, pub, frames: list[np.ndarray], rate: float, base: int, malformed_every: int) -> dict:
    """Publish ``frames`` at ``rate`` (consecutive stamps), every ``malformed_every``-th message
    malformed; a few slow frames first (the node learns the camera's period) and last (the last
    gap is seen). Returns the node's counters (differences over this run) and the balance."""
    probe.spin(1.0)
    before = dict(probe.diagnostics[-1])
    sent = malformed = 0
    t0 = time.monotonic()
    lead = tail = 5
    n = len(frames) + lead + tail
    for i in range(n):
        msg = numpy_to_image(frames[min(max(i - lead, 0), len(frames) - 1)], "rgb8")
        if malformed_every and lead <= i < n - tail and i % malformed_every == 0:
            msg.step = 7  # wrong step: the node must count it as malformed, never as dropped
            malformed += 1
        msg.header.stamp = probe.stamp(i, base)
        pub.publish(msg)
        sent += 1
        slow = i < lead or i >= n - tail
        probe.spin(0.2 if slow else max(0.0, t0 + lead * 0.2 + (i - lead + 1) / rate - time.monotonic()))
    probe.spin(3.0)
    after = probe.diagnostics[-1]
    keys = ("received", "lost_stamp_gaps", "lost_rmw_event", "dropped", "malformed", "decode_errors", "processed")
    row: dict = {"published": sent, "malformed_sent": malformed}
    for k in keys:
        a, b = _value(after, k), _value(before, k)
        row[k] = a - b if isinstance(a, int) and isinstance(b, int) else "n/a"
    got = row["received"] + (row["malformed"] if isinstance(row["malformed"], int) else 0)
    lost = row["lost_stamp_gaps"] if isinstance(row["lost_stamp_gaps"], int) else 0
    row["unaccounted"] = sent - got - lost
    row["unaccounted_pct"] = round(100.0 * row["unaccounted"] / sent, 2)
    row["lost_rmw_event_support"] = after.get("lost_rmw_event_support", "n/a")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="goodpoint_small")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the 30 Hz throughput run")
    ap.add_argument("--out", default="out/bench_node.json")
    ap.add_argument("--domain", type=int, default=71, help="ROS_DOMAIN_ID of the first size (+1 per size)")
    ap.add_argument("--accounting", action="store_true", help="the frame-accounting run instead (see above)")
    ap.add_argument("--load", type=int, default=0, help="busy processes during each run (bounded, end by themselves)")
    ap.add_argument(
        "--malformed-every", type=int, default=10, help="accounting: every k-th message malformed (0: none)"
    )
    args = ap.parse_args()
    if args.accounting:
        return main_accounting(args)

    rows = []
    photo = sample_photo("astronaut")
    for k, size in enumerate(args.sizes):
        w, h = (int(v) for v in size.split("x"))
        node, probe = start_node(args, args.domain + k)
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


def start_node(args: argparse.Namespace, domain: int) -> tuple[NodeProcess, Probe]:
    """The node under test in its own process on ``domain`` (input /bench/image), and a probe."""
    params = {"model": args.model, "weights": args.weights, "device": args.device,
              "max_keypoints": 1000, "publish_debug_image": False}  # fmt: skip
    return NodeProcess(domain, params, {"image": "/bench/image"}), Probe(domain)


def main_accounting(args: argparse.Namespace) -> None:
    """Published vs received + lost before the callback (+ malformed), per size."""
    rows = []
    photo = sample_photo("astronaut")
    for k, size in enumerate(args.sizes):
        w, h = (int(v) for v in size.split("x"))
        node, probe = start_node(args, args.domain + k)
        load: list = []
        try:
            probe.wait_ready(node)
            pub = probe.publisher("/bench/image", best_effort=True)
            probe.wait_subscribed(pub)
            frames, _ = camera_sequence(photo, int(30 * args.seconds), (w, h), rate=30.0, motion=0.5)
            load = start_load(args.load, args.seconds + 8.0)
            row = {"size": size, "load": args.load, **account(probe, pub, frames, 30.0, 30_000, args.malformed_every)}
            rows.append(row)
            print(row, flush=True)
        finally:
            for p in load:
                p.join(timeout=15)
            node.stop()
            probe.close()
    print(f"\nmodel {args.model} ({args.weights} weights) on {args.device}; {args.load} extra busy processes")
    print(
        "| size | load | published | received | lost (stamp gaps) | lost (RMW event) | dropped | malformed "
        "(sent / counted) | decode errors | processed | unaccounted |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['load']} | {r['published']} | {r['received']} | {r['lost_stamp_gaps']} | "
              f"{r['lost_rmw_event']} ({r['lost_rmw_event_support']}) | {r['dropped']} | {r['malformed_sent']} / "
              f"{r['malformed']} | {r['decode_errors']} | {r['processed']} | {r['unaccounted']} "
              f"({r['unaccounted_pct']} %) |")  # fmt: skip
    out = Path(args.out).with_name(Path(args.out).stem + "_accounting.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "device": args.device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
