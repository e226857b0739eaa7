"""Drive and observe a running extractor node from another process (the node tests and bench/node.py).

``NodeProcess`` starts ``extractor`` in a subprocess on a chosen ROS domain; ``Probe`` is a plain
rclpy node in its own context that publishes images and records every output message with its
arrival time. Nothing here is mocked: it is what any ROS 2 user's process would do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2

from goodpoint_ros.io.cloud_layout import read_keypoints, read_matches


def seeded_weights(path: str | Path, model: str = "goodpoint_small", seed: int = 0) -> str:
    """A checkpoint of ``model`` with random weights from a fixed seed (deterministic tests/benches).

    Random-weight descriptor quality varies a lot with the seed; a fixed seed keeps node tests
    that check geometry and bookkeeping (not model quality) reproducible. The checkpoint's
    detection defaults keep every local maximum (threshold 0): an untrained softmax sits near the
    uniform 1/64, below the trained models' threshold.
    """
    import torch

    from goodpoint_ros.models import build_model
    from goodpoint_ros.models.checkpoint import save_weights

    torch.manual_seed(seed)
    save_weights(build_model(model), path, detection={"detection_threshold": 0.0})
    return str(path)


def node_memory_mb(node: NodeProcess) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of the node process, in MB."""
    out = {}
    with open(f"/proc/{node.proc.pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def extractor_command() -> list[str]:
    exe = Path(sys.executable).with_name("extractor")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "goodpoint_ros.ros.extractor_node"]


class NodeProcess:
    """The extractor node in a subprocess on ``domain_id`` with ``params`` and ``remaps``."""

    def __init__(self, domain_id: int, params: dict[str, Any], remaps: dict[str, str] | None = None, extra=()):
        cmd = extractor_command() + ["--ros-args"]
        for k, v in params.items():
            cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        for k, v in (remaps or {}).items():
            cmd += ["-r", f"{k}:={v}"]
        cmd += list(extra)
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        """Stop with SIGINT (like Ctrl-C) and return everything the node printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""


class Probe:
    """A test/bench node in a private context: publishes inputs, records outputs with arrival times."""

    def __init__(self, domain_id: int, prefix: str = "/goodpoint_extractor", parse: bool = True) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("goodpoint_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.prefix = prefix
        self.parse = parse  # False: record headers only (a long soak: parsing 1 MB clouds costs a core)
        self.keypoints: list[tuple[float, Any, dict]] = []
        self.matches: list[tuple[float, Any, dict]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.other: dict[str, list[tuple[float, Any]]] = {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(PointCloud2, f"{prefix}/keypoints", self._on_kp, reliable)
        self.node.create_subscription(PointCloud2, f"{prefix}/matches", self._on_matches, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)

    def _on_kp(self, msg: PointCloud2) -> None:
        self.keypoints.append((time.monotonic(), msg.header, read_keypoints(msg) if self.parse else None))

    def _on_matches(self, msg: PointCloud2) -> None:
        self.matches.append((time.monotonic(), msg.header, read_matches(msg) if self.parse else None))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "goodpoint_extractor" in st.name:  # values, plus the status level and message
                values = {kv.key: kv.value for kv in st.values}
                values["_level"], values["_message"] = int.from_bytes(bytes(st.level), "little"), st.message
                self.diagnostics.append(values)

    def diag(self, key: str) -> float:
        """The latest /diagnostics value of ``key`` (-1 before any)."""
        return float(self.diagnostics[-1][key]) if self.diagnostics else -1.0

    def wait_message(self, text: str, timeout: float = 10.0) -> dict[str, str]:
        """Until a /diagnostics status message contains ``text``; that status (AssertionError if none)."""
        start = len(self.diagnostics)
        ok = self.spin_until(lambda: any(text in d["_message"] for d in self.diagnostics[start:]), timeout)
        assert ok, f"no diagnostics message with {text!r}; last: {self.diagnostics[-1:]}"
        return next(d for d in self.diagnostics[start:] if text in d["_message"])

    def record(self, msg_type: Any, topic: str, parse: Callable[[Any], Any] = lambda m: m, qos=None) -> None:
        """Also record ``topic`` (parsed by ``parse``) into ``self.other[topic]``."""
        self.other[topic] = []
        self.node.create_subscription(
            msg_type,
            topic,
            lambda m: self.other[topic].append((time.monotonic(), parse(m))),
            qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
        )

    def publisher(self, topic: str, msg_type: Any = Image, best_effort: bool = True):
        qos = qos_profile_sensor_data if best_effort else QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        return self.node.create_publisher(msg_type, topic, qos)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.02, max(end - time.monotonic(), 0.0)))

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def wait_ready(self, node: NodeProcess, timeout: float = 90.0) -> None:
        """Block until the node publishes diagnostics (model loaded and warmed up) and sees us."""
        ok = self.spin_until(lambda: bool(self.diagnostics) or not node.alive(), timeout)
        if not ok or not node.alive():
            raise RuntimeError(f"extractor node did not come up:\n{node.stop()[-3000:]}")

    def wait_subscribed(self, pub, timeout: float = 10.0) -> None:
        if not self.spin_until(lambda: pub.get_subscription_count() > 0, timeout):
            raise RuntimeError(f"nobody subscribed to {pub.topic_name}")

    def subscribe_all(self) -> None:
        """Also subscribe to ``~/tracks`` and ``~/odometry`` (recorded in ``self.other``), so that
        every output of the node has a subscriber, as on a robot running a SLAM front end."""
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import PointCloud

        self.record(PointCloud, f"{self.prefix}/tracks", lambda m: m.header)
        self.record(Odometry, f"{self.prefix}/odometry", lambda m: m.header)

    def play_camera(self, pub, info_pub, frames, rate: float, base: int, info=None, stamps=None) -> dict:
        """Publish ``frames`` at ``rate`` Hz like a camera driver: each image with its camera_info
        (same stamp), on a wall-clock schedule that does not wait for the node. Returns the sent
        stamps (``stamps`` overrides them: a list of builtin_interfaces Time) and the send times."""
        from goodpoint_ros.ros.conversions import numpy_to_image
        from goodpoint_ros.ros.player import camera_info

        h, w = frames[0].shape[:2]
        info = info or camera_info(w, h)
        sent: list[tuple[tuple[int, int], float]] = []
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            msg = numpy_to_image(frame, "rgb8")
            msg.header.stamp = stamps[i] if stamps is not None else self.stamp(i, base)
            msg.header.frame_id = info.header.frame_id = "camera"
            info.header.stamp = msg.header.stamp
            pub.publish(msg)
            if info_pub is not None:
                info_pub.publish(info)
            sent.append(((msg.header.stamp.sec, msg.header.stamp.nanosec), time.monotonic()))
            self.spin(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
        return {"sent": sent}

    def stamp(self, i: int, base: int = 1_000):
        from builtin_interfaces.msg import Time

        ns = i * 33_333_333
        return Time(sec=base + ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
