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

    .venv/bin/python bench/node.py --soak [SECONDS] [--weights default] [--sizes 640x480 320x240]

``--soak`` runs the node as a robot does, for minutes: a camera at 30 Hz (rgb8, best effort) with
camera_info, and subscribers on keypoints, matches, tracks and odometry. Every ``--window`` (30 s)
it prints the node's RSS, the processed rate, latency p50/p95 and the longest gap between keypoints
messages; at the end the account of every published frame: received (processed + dropped by
keep-latest + failed), refused on arrival (malformed, unsupported_encoding) or lost before the
callback (stamp gaps), and the unaccounted remainder.

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

from goodpoint_ros.node.launch_logic import apply_fastdds_profile

apply_fastdds_profile()

from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.params import TABLE  # noqa: E402
from goodpoint_ros.ros.conversions import numpy_to_image  # noqa: E402
from goodpoint_ros.ros.player import camera_info, camera_sequence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the node harness is test code
from probe import NodeProcess, Probe, node_memory_mb  # noqa: E402


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


SOAK_KEYS = ("received", "processed", "dropped", "malformed", "unsupported_encoding", "decode_errors", "errors",
             "lost_stamp_gaps", "lost_rmw_event", "sync_dropped")  # fmt: skip


def soak(
    probe: Probe, node: NodeProcess, frames: list[np.ndarray], seconds: float, window: float, base: int, lead: float
) -> dict:
    """A camera at 30 Hz (image + camera_info, best effort) for ``lead`` + ``seconds``, every output
    subscribed; per ``window`` after the lead-in: node RSS, processed rate, latency. Then the
    account of every published frame, the lead-in's included."""
    from sensor_msgs.msg import CameraInfo

    h, w = frames[0].shape[:2]
    pub = probe.publisher("/bench/image", best_effort=True)
    info_pub = probe.publisher("/bench/camera_info", CameraInfo, best_effort=True)
    probe.wait_subscribed(pub)
    probe.wait_subscribed(info_pub)
    probe.spin(1.0)
    before = {k: _value(probe.diagnostics[-1], k) for k in SOAK_KEYS}
    info = camera_info(w, h)
    sent: dict[tuple[int, int], float] = {}
    windows, kp_seen, i = [], len(probe.keypoints), 0
    t0 = time.monotonic()
    next_report, leading = t0 + lead + window, lead > 0
    while time.monotonic() - t0 < lead + seconds:
        msg = numpy_to_image(frames[i % len(frames)], "rgb8")
        msg.header.stamp = info.header.stamp = probe.stamp(i, base)
        msg.header.frame_id = info.header.frame_id = "camera"
        pub.publish(msg)
        info_pub.publish(info)
        sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
        i += 1
        probe.spin(max(0.0, t0 + i / 30.0 - time.monotonic()))
        if leading and time.monotonic() >= t0 + lead:  # the first windows start now
            kp_seen, leading = len(probe.keypoints), False
        if time.monotonic() >= next_report:
            got = [(t, (hd.stamp.sec, hd.stamp.nanosec)) for t, hd, _ in probe.keypoints[kp_seen:]]
            kp_seen = len(probe.keypoints)
            lat = [(t - sent[s]) * 1e3 for t, s in got if s in sent]
            times = [t for t, s in got]
            windows.append({
                "t_s": round(time.monotonic() - t0 - lead), "rss_mb": round(node_memory_mb(node)["VmRSS"]),
                "processed_hz": round(len(got) / window, 1),
                "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else float("nan"),
                "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else float("nan"),
                "max_gap_s": round(float(np.diff(times).max()), 2) if len(times) > 1 else float("nan"),
                "extract_p50_ms": float(probe.diagnostics[-1].get("extract_p50_ms", "nan")),
                "overhead_p50_ms": float(probe.diagnostics[-1].get("overhead_p50_ms", "nan")),
            })  # fmt: skip
            print(windows[-1], flush=True)
            next_report += window
    probe.spin(3.0)
    after = {k: _value(probe.diagnostics[-1], k) for k in SOAK_KEYS}
    row: dict = {"published": i}
    for k in SOAK_KEYS:
        row[k] = after[k] - before[k] if isinstance(after[k], int) and isinstance(before[k], int) else "n/a"
    num = {k: v if isinstance(v, int) else 0 for k, v in row.items()}
    # every published frame: received (then processed, dropped, failed) or refused on arrival, or lost
    row["unaccounted"] = i - num["received"] - num["malformed"] - num["unsupported_encoding"] - num["lost_stamp_gaps"]
    row["unaccounted_pct"] = round(100.0 * row["unaccounted"] / max(i, 1), 2)
    rss = [wd["rss_mb"] for wd in windows]
    return {"windows": windows, "account": row, "rss_range_mb": (max(rss) - min(rss)) if rss else float("nan")}


def main_soak(args: argparse.Namespace) -> None:
    """``--soak SECONDS``: per size, a fresh node under a 30 Hz camera with every output subscribed."""
    from goodpoint_ros.device import cpu_model

    photo = sample_photo("astronaut")
    results = {}
    for k, size in enumerate(args.sizes):
        w, h = (int(v) for v in size.split("x"))
        remaps = {"image": "/bench/image", "camera_info": "/bench/camera_info"}
        node, probe = NodeProcess(args.domain + k, node_params(args), remaps), Probe(args.domain + k, parse=False)
        try:
            probe.subscribe_all()
            probe.wait_ready(node)
            frames, _ = camera_sequence(photo, 300, (w, h), rate=30.0, motion=0.5)
            results[size] = soak(probe, node, frames, args.soak, args.window, 40_000, args.lead_in)
        finally:
            node.stop()
            probe.close()
    print(f"\nsoak: model {args.model} ({args.weights} weights) on {args.device}, {cpu_model()}, 30 Hz rgb8 best "
          f"effort + camera_info, keypoints/matches/tracks/odometry subscribed, {args.lead_in:.0f} s lead-in")  # fmt: skip
    print("| size | seconds | processed Hz per window (min / median) | worst latency p95 (ms) | max gap (s) | "
          "RSS min-max (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for size, r in results.items():
        hz = [wd["processed_hz"] for wd in r["windows"]]
        rss = [wd["rss_mb"] for wd in r["windows"]]
        print(f"| {size} | {args.soak:.0f} | {min(hz)} / {float(np.median(hz)):.2f} | "
              f"{max(wd['latency_p95_ms'] for wd in r['windows'])} | {max(wd['max_gap_s'] for wd in r['windows'])} | "
              f"{min(rss)}-{max(rss)} |")  # fmt: skip
    print("\n| size | published | received | processed | dropped (keep-latest) | malformed | unsupported_encoding "
          "| decode_errors | errors | lost (stamp gaps) | lost (RMW event) | unaccounted |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, r in results.items():
        a = r["account"]
        print(f"| {size} | {a['published']} | " + " | ".join(str(a[k]) for k in SOAK_KEYS if k != "sync_dropped")
              + f" | {a['unaccounted']} ({a['unaccounted_pct']} %) |")  # fmt: skip
    out = Path(args.out).with_name(Path(args.out).stem + "_soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "device": args.device, "results": results}, indent=1))


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
    ap.add_argument("--soak", type=float, nargs="?", const=600.0, default=None, metavar="SECONDS",
                    help="the soak run instead: a 30 Hz camera with camera_info, every output subscribed, for "
                    "SECONDS (default 600) per size; RSS, rate and latency per --window, then the account")  # fmt: skip
    ap.add_argument("--window", type=float, default=30.0, help="soak: seconds per reported window")
    ap.add_argument("--lead-in", type=float, default=10.0, help="soak: seconds of camera before the first window "
                    "(the first frames of a size build oneDNN's kernels for it)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0, help="the node's num_threads (0: its default)")
    ap.add_argument("--min-keypoints-per-mpx", type=float, default=TABLE["min_keypoints_per_mpx"].default,
                    help="the node's fill density (default: the node's; -1: the model's, 0: the threshold alone)")  # fmt: skip
    ap.add_argument("--pyramid-min-size", type=int, default=TABLE["pyramid_min_size"].default,
                    help="the node's image pyramid (default: the node's, one scale; e.g. 160)")  # fmt: skip
    args = ap.parse_args()
    if args.soak is not None:
        return main_soak(args)
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


def node_params(args: argparse.Namespace) -> dict:
    """The node's parameters under every run of this bench: the flags' front end, no debug image."""
    return {"model": args.model, "weights": args.weights, "device": args.device,
            "max_keypoints": 1000, "publish_debug_image": False, "num_threads": args.threads,
            "min_keypoints_per_mpx": args.min_keypoints_per_mpx, "pyramid_min_size": args.pyramid_min_size}  # fmt: skip


def start_node(args: argparse.Namespace, domain: int) -> tuple[NodeProcess, Probe]:
    """The node under test in its own process on ``domain`` (input /bench/image), and a probe."""
    return NodeProcess(domain, node_params(args), {"image": "/bench/image"}), Probe(domain)


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
