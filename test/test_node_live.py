"""The node under a real camera's load: 30 Hz, camera_info, every output subscribed, repeated trials.

Why this test exists: rclpy 9's ``MultiThreadedExecutor`` re-queued a ready callback in a busy loop
while it waited for a pool thread (rclpy issue #1452). With camera_info and every output
subscribed the node then fell to 1-2 Hz in about half of all 10-second trials (13-40 of 300
frames processed, up to 6.8 s between keypoints messages), while keypoints alone kept up. The
collapse is random, so one trial proves nothing: each trial here is a fresh node process, and
every trial must pass. ``GOODPOINT_LIVE_TRIALS`` sets the number (3 by default; the issue's figure
is 10, run with ``GOODPOINT_LIVE_TRIALS=10``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile  # noqa: E402

apply_fastdds_profile()

from probe import NodeProcess, Probe  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.ros.player import camera_sequence  # noqa: E402

DOMAIN = 83
SIZE = (320, 240)
RATE = 30.0
SECONDS = 10.0
TRIALS = int(os.environ.get("GOODPOINT_LIVE_TRIALS", "3"))
MIN_PROCESSED = 0.95  # share of published frames with a keypoints message
MAX_GAP_S = 0.5  # between consecutive keypoints messages while the camera runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    seq, _ = camera_sequence(sample_photo("astronaut"), int(RATE * SECONDS), SIZE, rate=RATE, motion=0.5)
    return seq


def one_trial(trial: int, frames: list[np.ndarray]) -> dict:
    """A fresh node (shipped default model, mono), a camera at 30 Hz with camera_info, and
    subscribers on keypoints, matches, tracks, odometry and /diagnostics."""
    domain = DOMAIN + trial % 8
    remaps = {"image": "/live/image", "camera_info": "/live/camera_info"}
    node = NodeProcess(domain, {"device": "cpu", "publish_debug_image": False}, remaps)
    probe = Probe(domain)
    try:
        probe.subscribe_all()
        probe.wait_ready(node)
        pub = probe.publisher("/live/image", best_effort=True)
        info_pub = probe.publisher("/live/camera_info", CameraInfo, best_effort=True)
        probe.wait_subscribed(pub)
        probe.wait_subscribed(info_pub)
        probe.spin(1.0)
        run = probe.play_camera(pub, info_pub, frames, RATE, 5_000 + 100 * trial)
        probe.spin(2.0)
        sent = {s for s, _ in run["sent"]}
        kp = [(t, (h.stamp.sec, h.stamp.nanosec)) for t, h, _ in probe.keypoints]
        kp = [(t, s) for t, s in kp if s in sent]
        times = np.array([t for t, _ in kp])
        gaps = np.diff(times) if len(times) > 1 else np.array([np.inf])
        return {
            "trial": trial,
            "processed": len({s for _, s in kp}),
            "sent": len(sent),
            "max_gap_s": float(gaps.max()),
            "matches": len(probe.matches),
            "tracks": len(probe.other["/goodpoint_extractor/tracks"]),
            "odometry": len(probe.other["/goodpoint_extractor/odometry"]),
            "diag": dict(probe.diagnostics[-1]) if probe.diagnostics else {},
        }
    finally:
        log = node.stop()
        probe.close()
        assert "Traceback" not in log, log[-3000:]


def test_keeps_up_at_30hz_with_every_output_subscribed(frames):
    rows = [one_trial(k, frames) for k in range(TRIALS)]
    for r in rows:
        print({k: v for k, v in r.items() if k != "diag"}, r["diag"])
    for r in rows:
        assert r["processed"] >= MIN_PROCESSED * r["sent"], r
        assert r["max_gap_s"] <= MAX_GAP_S, r
        # every output was produced for (nearly) every frame: the trial exercised them all
        assert min(r["matches"], r["tracks"], r["odometry"]) >= MIN_PROCESSED * r["sent"] - 2, r
        # and the odometry tracked the slowly moving camera (before 2026-12-07 mono VO failed on
        # 298 of 299 frames here: sub-pixel motion per frame failed OpenCV's cheirality range)
        assert int(r["diag"].get("vo_failures", r["sent"])) <= 0.02 * r["sent"], r["diag"]
