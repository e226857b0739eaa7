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
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2

from goodpoint_ros.backends.extractor import numpy_to_features
from goodpoint_ros.io.cloud_layout import read_keypoints, read_matches, stamp_ns, stamp_of
from goodpoint_ros.io.drawing import demo_picture
from goodpoint_ros.models.features import FEATURE_KEYS
from goodpoint_ros.node.launch_logic import apply_fastdds_profile
from goodpoint_ros.registry import DEFAULT_MODEL, MODEL_NAMES, is_learned, model_choices_text
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
    ap.add_argument("--model", default=DEFAULT_MODEL, choices=MODEL_NAMES, help=model_choices_text())
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


def _commands(args: argparse.Namespace, ns: str) -> tuple[list[str], list[str]]:
    """The extractor node's and the player's command lines, both on the camera topics under ``ns``."""
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
    return node_cmd, player_cmd


class _Viewer:
    """Listens to the node's outputs like any ROS 2 user and keeps the recent figures, frames and images."""

    def __init__(self, node: Node, ns: str) -> None:
        self.node = node
        self.diag: dict[str, str] = {}  # the extractor's last diagnostics
        self.n_keypoints = 0  # keypoints messages received
        self.n_matches = 0  # matches messages received
        self.kp_counts: deque[int] = deque(maxlen=1000)
        self.match_counts: deque[int] = deque(maxlen=1000)
        self.inlier_counts: deque[int] = deque(maxlen=1000)
        self.e2e: deque[float] = deque(maxlen=1000)  # camera stamp -> keypoints received, ms
        self.history: deque[tuple[int, dict]] = deque(maxlen=30)  # (stamp ns, keypoints message as arrays)
        self.images: deque[tuple[int, Image]] = deque(maxlen=64)  # (stamp ns, camera image)
        self.arrivals: deque[float] = deque(maxlen=50)
        node.create_subscription(PointCloud2, "/goodpoint_extractor/keypoints", self.on_keypoints, 10)
        node.create_subscription(PointCloud2, "/goodpoint_extractor/matches", self.on_matches, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        node.create_subscription(Image, f"{ns}/image", self.on_image, qos_profile_sensor_data)

    def on_keypoints(self, msg: PointCloud2) -> None:
        now = self.node.get_clock().now().nanoseconds
        k = read_keypoints(msg)
        stamp = stamp_ns(stamp_of(msg.header))
        self.kp_counts.append(len(k["keypoints"]))
        self.history.append((stamp, k))
        self.e2e.append((now - stamp) / 1e6)
        self.arrivals.append(time.monotonic())
        self.n_keypoints += 1

    def on_matches(self, msg: PointCloud2) -> None:
        m = read_matches(msg)
        self.match_counts.append(len(m["matches"]))
        self.inlier_counts.append(int(m["inliers"].sum()))
        self.n_matches += 1

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "goodpoint_extractor" in st.name:
                self.diag = {kv.key: kv.value for kv in st.values}

    def on_image(self, msg: Image) -> None:
        self.images.append((stamp_ns(stamp_of(msg.header)), msg))

    def fps(self) -> float:
        """Keypoints messages per second over the last ones received (0 before three arrived)."""
        a = self.arrivals
        return (len(a) - 1) / max(a[-1] - a[0], 1e-6) if len(a) > 2 else 0.0


def _wait_for_node(viewer: _Viewer, proc: subprocess.Popen) -> bool:
    """Spin until the node publishes diagnostics (its model is loaded); False, said why, if it never does."""
    t0 = time.monotonic()
    print("  starting the extractor node (loading the model)...")
    while not viewer.diag and time.monotonic() - t0 < 90:
        rclpy.spin_once(viewer.node, timeout_sec=0.2)
        if proc.poll() is not None:
            print(f"error: the extractor node exited with code {proc.returncode}", file=sys.stderr)
            return False
    if not viewer.diag:
        print("error: the extractor node did not come up within 90 s", file=sys.stderr)
        return False
    print(f"  node up after {time.monotonic() - t0:.1f} s; starting the camera")
    return True


def _live_line(viewer: _Viewer, t_start: float) -> str:
    """One second's figures: rate, keypoints, matches and inliers of the last 10 frames, latency, drops."""
    d = viewer.diag
    fps = viewer.fps()
    last = list(viewer.kp_counts)[-10:] or [0]
    lm, li = list(viewer.match_counts)[-10:] or [0], list(viewer.inlier_counts)[-10:] or [0]
    return (
        f"  t={time.monotonic() - t_start:4.0f}s  {fps:5.1f} fps  keypoints {np.mean(last):6.0f}  "
        f"matches {np.mean(lm):5.0f}  inliers {np.mean(li):5.0f}  "
        f"latency {np.median(list(viewer.e2e)[-10:]) if viewer.e2e else 0:6.1f} ms  "
        f"dropped {d.get('dropped', '0')}  model {d.get('extract_p50_ms', '?')} ms"
    )


def _stream(viewer: _Viewer, player: subprocess.Popen, duration: float) -> None:
    """Spin while the camera streams, printing live figures once a second; then collect the stragglers."""
    t_start = time.monotonic()
    next_print = t_start + 1.0
    while time.monotonic() - t_start < duration + 3.0:
        rclpy.spin_once(viewer.node, timeout_sec=0.05)
        if time.monotonic() >= next_print:
            next_print += 1.0
            print(_live_line(viewer, t_start))
        if player.poll() is not None and time.monotonic() - t_start > duration:
            break
    for _ in range(20):  # collect what is still in flight
        rclpy.spin_once(viewer.node, timeout_sec=0.05)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT to what still runs, newest first (as Ctrl-C would); kill what has not exited 10 s later."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _print_summary(viewer: _Viewer) -> None:
    """The run's totals: messages, drops, keypoints and matches per frame, latency percentiles."""
    d = viewer.diag
    m, i = np.asarray(viewer.match_counts), np.asarray(viewer.inlier_counts)
    lat = np.asarray(viewer.e2e)
    print("\nsummary")
    print(
        f"  keypoints messages {viewer.n_keypoints}, matches messages {viewer.n_matches}, "
        f"dropped by the node {d.get('dropped', '?')}"
    )
    if len(viewer.kp_counts):
        print(f"  keypoints/frame {np.mean(viewer.kp_counts):.0f}, matches/frame {m.mean() if len(m) else 0:.0f}, "
              f"inlier ratio {i.sum() / max(m.sum(), 1):.2f}")  # fmt: skip
        print(f"  end-to-end latency (camera stamp -> keypoints received) p50 {np.percentile(lat, 50):.1f} ms, "
              f"p95 {np.percentile(lat, 95):.1f} ms; model p50 {d.get('extract_p50_ms', '?')} ms")  # fmt: skip


def _caption(viewer: _Viewer, args: argparse.Namespace) -> list[str]:
    """The picture's text: front end and weights, camera and rate, and the run's figures."""
    d = viewer.diag
    m, i = np.asarray(viewer.match_counts), np.asarray(viewer.inlier_counts)
    weights = {"default": "shipped weights", "random": "random weights"}
    weights_label = "OpenCV" if not is_learned(args.model) else weights.get(args.weights, Path(args.weights).name)
    return [
        f"{args.model} ({weights_label}) on {d.get('device', args.device)}",
        f"camera {args.width}x{args.height} at {args.rate:g} Hz, {viewer.fps():.1f} fps processed",
        f"{np.mean(viewer.kp_counts):.0f} keypoints/frame, model {float(d.get('extract_p50_ms', 'nan')):.0f} ms/frame",
        f"frame to frame: {m.mean() if len(m) else 0:.0f} matches, inlier ratio {i.sum() / max(m.sum(), 1):.2f}",
    ]


def _save_picture(viewer: _Viewer, args: argparse.Namespace) -> None:
    """Write the demo picture to ``--out`` (when two frames with images arrived) and print its figures."""
    if not viewer.history:
        return
    shown = picture(list(viewer.history), dict(viewer.images), args, _caption(viewer, args))
    if shown is None:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), shown[0])
    ids = np.concatenate([f["track_ids"] for _, f in viewer.history])
    _, counts = np.unique(ids, return_counts=True)
    counts = counts if len(counts) else np.zeros(1, int)  # no keypoints at all (random weights)
    print(f"  matches {shown[1]}")
    print(f"  tracks over the last {len(viewer.history)} frames: {int((counts >= args.min_track).sum())} of length "
          f">= {args.min_track}, longest {counts.max()}; picture: {out}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = apply_fastdds_profile()  # before rclpy.init creates the participant
    env = dict(os.environ)
    ns = "/goodpoint_demo"
    node_cmd, player_cmd = _commands(args, ns)
    print(f"goodpoint demo: model={args.model} weights={args.weights} device={args.device}, Fast DDS profile {profile}")
    print(
        f"  camera: {args.width}x{args.height} at {args.rate:g} Hz over the '{args.photo}' photo for {args.duration:g} s"
    )
    procs: list[subprocess.Popen] = []
    rclpy.init()
    viewer = _Viewer(rclpy.create_node("goodpoint_demo_viewer"), ns)
    code = 0
    try:
        procs.append(subprocess.Popen(node_cmd, env=env))
        if not _wait_for_node(viewer, procs[0]):
            return 1
        procs.append(subprocess.Popen(player_cmd, env=env))
        _stream(viewer, procs[1], args.duration)
    except KeyboardInterrupt:
        code = 130
    finally:
        _stop(procs)
    _print_summary(viewer)
    _save_picture(viewer, args)
    if args.weights == "random" and is_learned(args.model):
        print(f"  note: '{args.model}' ran with random weights (an untrained network): expect few matches")
    if viewer.n_keypoints == 0:
        print("error: no keypoints arrived", file=sys.stderr)
        code = code or 1
    viewer.node.destroy_node()
    rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
