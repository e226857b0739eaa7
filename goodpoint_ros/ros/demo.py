"""``goodpoint-demo`` (``make demo``): the extractor node on a live camera stream, in about 30 s.

Starts the ``extractor`` node and the ``player`` (a virtual camera moving over a real photo) as
two processes, listens to ``~/keypoints``, ``~/matches`` and ``/diagnostics`` like any ROS 2 user
would, prints live figures once a second and ends with a summary and a picture (``demo_picture``):
the tracks of >= 5 frames over the last frame beside the matches between two frames 0.5 s apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2

from goodpoint_ros.backends.classical import CLASSICAL
from goodpoint_ros.backends.extractor import numpy_to_features
from goodpoint_ros.io.cloud_layout import read_keypoints, read_matches
from goodpoint_ros.io.drawing import demo_picture
from goodpoint_ros.models import DEFAULT_MODEL
from goodpoint_ros.models.features import FEATURE_KEYS
from goodpoint_ros.node.launch_logic import apply_fastdds_profile
from goodpoint_ros.ros.conversions import decode_image
from goodpoint_ros.vo.pipeline import match_frames


def _console(name: str) -> list[str]:
    """The console script next to this interpreter (venv), else on PATH, else ``python -m``."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return [str(local)]
    found = shutil.which(name)
    return (
        [found]
        if found
        else [sys.executable, "-m", f"goodpoint_ros.ros.{'extractor_node' if name == 'extractor' else name}"]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Live demo: extractor node + virtual camera over a real photo.")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="goodpoint | goodpoint_small | mdnet | mdnet_small | orb")
    ap.add_argument(
        "--weights", default="default", help="default (the shipped weights; refused where none ship) | random | path"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--photo", default="astronaut", help="scikit-image photo the camera moves over")
    ap.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--duration", type=float, default=25.0, help="seconds of streaming")
    ap.add_argument("--max-keypoints", type=int, default=500)
    ap.add_argument("--out", default="out/demo_tracks.png", help="picture of the tracks and matches")
    ap.add_argument("--min-track", type=int, default=5, help="shortest track drawn, in frames")
    ap.add_argument("--pair-gap", type=float, default=0.5, help="seconds between the two matched frames drawn")
    return ap.parse_args(argv)


def pick_pair(stamps: list[int], with_image: set[int], gap: float) -> tuple[int, int] | None:
    """Indices into ``stamps`` (keypoints messages, oldest first) of the last frame whose image
    arrived and of the one nearest ``gap`` seconds before it; None without two such frames."""
    have = [i for i, s in enumerate(stamps) if s in with_image]
    if len(have) < 2:
        return None
    last = have[-1]
    first = min(have[:-1], key=lambda i: abs((stamps[last] - stamps[i]) / 1e9 - gap))
    return first, last


def picture(
    history: list[tuple[int, dict]], images: dict[int, Image], args: argparse.Namespace, text: list[str]
) -> tuple[np.ndarray, str] | None:
    """The demo picture from the received keypoints and camera images, and a line about its pair.

    The two frames are matched here with the node's default settings (``match_frames``): the node
    only matches consecutive frames, and half a second shows the motion better."""
    pair = pick_pair([s for s, _ in history], set(images), args.pair_gap)
    if pair is None:
        return None
    i, j = pair
    f0, f1 = history[i][1], history[j][1]
    m, _, inl = match_frames(
        numpy_to_features({k: f0[k] for k in FEATURE_KEYS}),
        numpy_to_features({k: f1[k] for k in FEATURE_KEYS}),
        f0["keypoints"],
        f1["keypoints"],
    )
    dt = (history[j][0] - history[i][0]) / 1e9
    line = f"{dt:.1f} s apart: {len(m)} matches, inlier ratio {inl.mean() if len(m) else 0:.2f}"
    im0, im1 = decode_image(images[history[i][0]]), decode_image(images[history[j][0]])
    tracks = [(f["keypoints"], f["track_ids"]) for _, f in history[: j + 1]]
    return demo_picture(
        im1,
        tracks,
        (im0, im1, f0["keypoints"], f1["keypoints"], m, inl),
        [*text, line],
        pair_title=f"matches {dt:.1f} s apart: inliers green, outliers red",
        min_length=args.min_track,
    ), line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = apply_fastdds_profile()  # before rclpy.init creates the participant
    env = dict(os.environ)
    ns = "/goodpoint_demo"
    node_cmd = _console("extractor") + [
        "--ros-args",
        "-p", f"model:={args.model}",
        "-p", f"weights:={args.weights}",
        "-p", f"device:={args.device}",
        "-p", f"max_keypoints:={args.max_keypoints}",
        "-r", f"image:={ns}/image",
        "-r", f"camera_info:={ns}/camera_info",
    ]  # fmt: skip
    player_cmd = _console("player") + [
        "--topic", f"{ns}/image", "--photo", args.photo, "--rate", str(args.rate),
        "--width", str(args.width), "--height", str(args.height),
        "--frames", str(int(args.duration * args.rate)),
    ]  # fmt: skip
    print(f"goodpoint demo: model={args.model} weights={args.weights} device={args.device}, Fast DDS profile {profile}")
    print(
        f"  camera: {args.width}x{args.height} at {args.rate:g} Hz over the '{args.photo}' photo for {args.duration:g} s"
    )
    procs: list[subprocess.Popen] = []
    rclpy.init()
    node = rclpy.create_node("goodpoint_demo_viewer")
    state = {"diag": {}, "kp": 0, "m": 0}
    kp_counts: deque[int] = deque(maxlen=1000)
    match_counts: deque[int] = deque(maxlen=1000)
    inlier_counts: deque[int] = deque(maxlen=1000)
    e2e: deque[float] = deque(maxlen=1000)
    history: deque[tuple[int, dict]] = deque(maxlen=30)  # (stamp ns, keypoints message as arrays)
    images: deque[tuple[int, Image]] = deque(maxlen=64)  # (stamp ns, camera image)
    arrivals: deque[float] = deque(maxlen=50)

    def on_kp(msg: PointCloud2) -> None:
        now = node.get_clock().now().nanoseconds
        k = read_keypoints(msg)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        kp_counts.append(len(k["keypoints"]))
        history.append((stamp, k))
        e2e.append((now - stamp) / 1e6)
        arrivals.append(time.monotonic())
        state["kp"] += 1

    def on_matches(msg: PointCloud2) -> None:
        m = read_matches(msg)
        match_counts.append(len(m["matches"]))
        inlier_counts.append(int(m["inliers"].sum()))
        state["m"] += 1

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "goodpoint_extractor" in st.name:
                state["diag"] = {kv.key: kv.value for kv in st.values}

    def on_image(msg: Image) -> None:
        images.append((msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, msg))

    node.create_subscription(PointCloud2, "/goodpoint_extractor/keypoints", on_kp, 10)
    node.create_subscription(PointCloud2, "/goodpoint_extractor/matches", on_matches, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    node.create_subscription(Image, f"{ns}/image", on_image, qos_profile_sensor_data)
    code = 0
    try:
        procs.append(subprocess.Popen(node_cmd, env=env))
        t0 = time.monotonic()
        print("  starting the extractor node (loading the model)...")
        while not state["diag"] and time.monotonic() - t0 < 90:
            rclpy.spin_once(node, timeout_sec=0.2)
            if procs[0].poll() is not None:
                print(f"error: the extractor node exited with code {procs[0].returncode}", file=sys.stderr)
                return 1
        if not state["diag"]:
            print("error: the extractor node did not come up within 90 s", file=sys.stderr)
            return 1
        print(f"  node up after {time.monotonic() - t0:.1f} s; starting the camera")
        procs.append(subprocess.Popen(player_cmd, env=env))
        t_start = time.monotonic()
        next_print = t_start + 1.0
        while time.monotonic() - t_start < args.duration + 3.0:
            rclpy.spin_once(node, timeout_sec=0.05)
            if time.monotonic() >= next_print:
                next_print += 1.0
                d = state["diag"]
                fps = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-6) if len(arrivals) > 2 else 0.0
                last = list(kp_counts)[-10:] or [0]
                lm, li = list(match_counts)[-10:] or [0], list(inlier_counts)[-10:] or [0]
                print(
                    f"  t={time.monotonic() - t_start:4.0f}s  {fps:5.1f} fps  keypoints {np.mean(last):6.0f}  "
                    f"matches {np.mean(lm):5.0f}  inliers {np.mean(li):5.0f}  "
                    f"latency {np.median(list(e2e)[-10:]) if e2e else 0:6.1f} ms  "
                    f"dropped {d.get('dropped', '0')}  model {d.get('extract_p50_ms', '?')} ms"
                )
            if procs[1].poll() is not None and time.monotonic() - t_start > args.duration:
                break
        for _ in range(20):  # collect what is still in flight
            rclpy.spin_once(node, timeout_sec=0.05)
    except KeyboardInterrupt:
        code = 130
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    d = state["diag"]
    m, i = np.asarray(match_counts), np.asarray(inlier_counts)
    lat = np.asarray(e2e)
    print("\nsummary")
    print(
        f"  keypoints messages {state['kp']}, matches messages {state['m']}, dropped by the node {d.get('dropped', '?')}"
    )
    if len(kp_counts):
        print(f"  keypoints/frame {np.mean(kp_counts):.0f}, matches/frame {m.mean() if len(m) else 0:.0f}, "
              f"inlier ratio {i.sum() / max(m.sum(), 1):.2f}")  # fmt: skip
        print(f"  end-to-end latency (camera stamp -> keypoints received) p50 {np.percentile(lat, 50):.1f} ms, "
              f"p95 {np.percentile(lat, 95):.1f} ms; model p50 {d.get('extract_p50_ms', '?')} ms")  # fmt: skip
    shown = None
    if history:
        fps = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-6) if len(arrivals) > 2 else 0.0
        weights = {"default": "shipped weights", "random": "random weights"}
        weights_label = "OpenCV" if args.model in CLASSICAL else weights.get(args.weights, Path(args.weights).name)
        text = [
            f"{args.model} ({weights_label}) on {d.get('device', args.device)}",
            f"camera {args.width}x{args.height} at {args.rate:g} Hz, {fps:.1f} fps processed",
            f"{np.mean(kp_counts):.0f} keypoints/frame, model {float(d.get('extract_p50_ms', 'nan')):.0f} ms/frame",
            f"frame to frame: {m.mean() if len(m) else 0:.0f} matches, inlier ratio {i.sum() / max(m.sum(), 1):.2f}",
        ]
        shown = picture(list(history), dict(images), args, text)
    if shown is not None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), shown[0])
        ids = np.concatenate([f["track_ids"] for _, f in history])
        _, counts = np.unique(ids, return_counts=True)
        print(f"  matches {shown[1]}")
        print(f"  tracks over the last {len(history)} frames: {int((counts >= args.min_track).sum())} of length "
              f">= {args.min_track}, longest {counts.max()}; picture: {out}")  # fmt: skip
    if args.weights == "random" and args.model not in CLASSICAL:
        print(f"  note: '{args.model}' ran with random weights (an untrained network): expect few matches")
    if state["kp"] == 0:
        print("error: no keypoints arrived", file=sys.stderr)
        code = code or 1
    node.destroy_node()
    rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
