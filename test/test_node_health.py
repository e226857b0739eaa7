"""The node never gives wrong output silently: each way a real camera setup goes wrong either gets
correct output or a WARN on /diagnostics with a log line that says why.

Two nodes in their own processes, driven by a probe over real DDS:
- mono (the shipped default model): zero and repeated header stamps, a camera_info for another
  resolution, a change of resolution, driver encodings (YUYV, UYVY, NV12) and an unknown one, and
  a burst of 4K frames (the model falls behind: WARN; memory returns near its baseline after).
- RGB-D (the ORB front end: the pairing is under test, not the model): depth stamped 40 ms from
  its colour frame, depth missing, depth with another aspect ratio.
Every check here failed on the code before this test (9ac14a0): the stamps gave no matches and an
identity pose, the rest passed without a word.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile  # noqa: E402

apply_fastdds_profile()

from builtin_interfaces.msg import Time  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from probe import NodeProcess, Probe, node_memory_mb  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from synthetic import render_sequence  # noqa: E402

from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.ros.conversions import numpy_to_image  # noqa: E402
from goodpoint_ros.ros.player import camera_info, camera_sequence  # noqa: E402

DOMAIN_MONO, DOMAIN_RGBD = 91, 92
SIZE = (320, 240)
WAIT = 30.0
DIAG = {"diagnostics_period": 0.25, "diagnostics_window": 1.5, "device": "cpu", "publish_debug_image": False}
pytestmark = pytest.mark.slow


class Camera:
    """Publishes frames with camera_info like a driver, in lock step (each frame waits for its
    keypoints), so the assertions see every frame."""

    def __init__(self, probe: Probe, topic: str) -> None:
        self.probe = probe
        self.pub = probe.publisher(f"{topic}/image", best_effort=False)
        self.info = probe.publisher(f"{topic}/camera_info", CameraInfo, best_effort=False)
        probe.wait_subscribed(self.pub)
        probe.wait_subscribed(self.info)
        self.n = 0

    def send(self, msg: Image, stamp: Time, info: CameraInfo | None = None, wait: bool = True) -> None:
        before = len(self.probe.keypoints)
        msg.header.stamp, msg.header.frame_id = stamp, "camera"
        if info is not None:
            info.header = msg.header
            self.info.publish(info)
            self.probe.spin(0.02)
        self.pub.publish(msg)
        self.n += 1
        if wait:
            ok = self.probe.spin_until(lambda: len(self.probe.keypoints) > before, WAIT)
            assert ok, f"no keypoints for frame {self.n}: {self.probe.diagnostics[-1:]}"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    seq, _ = camera_sequence(sample_photo("astronaut"), 40, SIZE, rate=10.0, motion=1.0)
    return seq


@pytest.fixture(scope="module")
def mono():
    node = NodeProcess(DOMAIN_MONO, DIAG, {"image": "/hm/image", "camera_info": "/hm/camera_info"})
    probe = Probe(DOMAIN_MONO)
    probe.record(Odometry, "/goodpoint_extractor/odometry", lambda m: m)
    log: list[str] = []
    try:
        probe.wait_ready(node, timeout=180)
        yield node, probe, Camera(probe, "/hm"), log
    finally:
        log.append(node.stop())
        probe.close()


def _matches_since(probe: Probe, start: int) -> int:
    return len(probe.matches) - start


def test_zero_stamps_still_match_and_move_and_warn(mono):
    node, probe, cam, _ = mono
    room = render_sequence(15, *SIZE, amplitude=0.3)  # real 3D motion: mono odometry moves
    info = camera_info(*SIZE)
    info.k = room.K.ravel().tolist()
    m0, o0 = len(probe.matches), len(probe.other["/goodpoint_extractor/odometry"])
    for f in room.frames:
        cam.send(numpy_to_image(f.rgb, "rgb8"), Time(), info)
    probe.spin(0.5)
    assert _matches_since(probe, m0) == 14, "every frame after the first is matched in arrival order"
    d = probe.wait_message("header stamps are zero")
    assert d["_level"] == 1
    odom = [m for _, m in probe.other["/goodpoint_extractor/odometry"][o0:]]
    assert odom, "odometry published"
    q = odom[-1].pose.pose.orientation
    p = odom[-1].pose.pose.position
    assert abs(q.w) < 0.99999 or np.hypot(p.x, p.y) + abs(p.z) > 1e-6, "odometry stuck at identity"


def test_repeated_stamps_match_every_frame(mono, frames):
    node, probe, cam, _ = mono
    probe.spin(0.5)
    m0 = len(probe.matches)
    for i, f in enumerate(frames[15:31]):
        cam.send(numpy_to_image(f, "rgb8"), probe.stamp(i // 2, 7_000), camera_info(*SIZE))
    probe.spin(0.5)
    assert _matches_since(probe, m0) == 16, "each frame matched, the repeats included"
    probe.wait_message("header stamps are repeated")


def test_camera_info_for_another_size_is_scaled_or_refused_with_a_warning(mono, frames):
    node, probe, cam, _ = mono
    before = len(probe.other["/goodpoint_extractor/odometry"])
    for i, f in enumerate(frames[:6]):
        cam.send(numpy_to_image(f, "rgb8"), probe.stamp(i, 8_000), camera_info(160, 120))
    d = probe.wait_message("camera_info is 160x120 but the image is 320x240: K scaled by 2")
    assert d["_level"] == 1
    probe.spin(0.5)  # the scaled K tracks: let these frames' odometry arrive before counting
    o0 = len(probe.other["/goodpoint_extractor/odometry"])
    assert o0 > before, "odometry from the scaled K"
    for i, f in enumerate(frames[6:12], 6):
        cam.send(numpy_to_image(f, "rgb8"), probe.stamp(i, 8_000), camera_info(320, 180))
    probe.wait_message("camera_info is 320x180 but the image is 320x240 (another aspect ratio): K not used")
    probe.spin(0.5)
    assert len(probe.other["/goodpoint_extractor/odometry"]) == o0, "no odometry from a K of unknown crop"


def test_resolution_change_restarts_instead_of_matching_across_sizes(mono, frames):
    node, probe, cam, _ = mono
    for i, f in enumerate(frames[:4]):
        cam.send(numpy_to_image(f, "rgb8"), probe.stamp(i, 9_000), camera_info(*SIZE))
    big = cv2.resize(frames[4], (640, 480))
    probe.spin(0.5)  # the last matches message may follow its keypoints
    m0 = len(probe.matches)
    cam.send(numpy_to_image(big, "rgb8"), probe.stamp(4, 9_000), camera_info(640, 480))
    probe.spin(0.5)
    assert len(probe.matches) == m0, "the first frame of the new size has no previous frame"
    probe.wait_message("image size changed 320x240 -> 640x480: tracks restarted")
    cam.send(numpy_to_image(cv2.resize(frames[5], (640, 480)), "rgb8"), probe.stamp(5, 9_000), camera_info(640, 480))
    probe.spin(0.5)
    assert len(probe.matches) == m0 + 1


def _yuyv(rgb: np.ndarray, uyvy: bool) -> Image:
    h, w = rgb.shape[:2]
    code = cv2.COLOR_RGB2YUV_UYVY if uyvy else cv2.COLOR_RGB2YUV_YUY2
    data = cv2.cvtColor(rgb, code)
    return Image(height=h, width=w, encoding="yuv422" if uyvy else "yuv422_yuy2", step=2 * w, data=data.tobytes())


def _nv(rgb: np.ndarray, nv21: bool) -> Image:
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    u = i420[h : h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4 :].reshape(h // 2, w // 2)
    uv = np.stack([v, u] if nv21 else [u, v], axis=-1).reshape(h // 2, w)
    data = np.concatenate([i420[:h], uv]).tobytes()
    return Image(height=h, width=w, encoding="nv21" if nv21 else "nv12", step=w, data=data)


def test_driver_encodings_decode_and_an_unknown_one_is_named_once(mono, frames):
    node, probe, cam, log = mono
    for i, msg in enumerate(
        [_yuyv(frames[0], False), _yuyv(frames[1], True), _nv(frames[2], False), _nv(frames[3], True)]
    ):
        cam.send(msg, probe.stamp(i, 10_000), camera_info(*SIZE))
    n = len(probe.keypoints[-1][2]["keypoints"])
    assert n > 50, f"{n} keypoints from an NV21 frame"
    probe.spin(0.6)
    malformed, unsupported = probe.diag("malformed"), probe.diag("unsupported_encoding")
    for i in range(3):
        msg = numpy_to_image(frames[i], "rgb8")
        msg.encoding = "yuv420_10bit_unknown"
        cam.send(msg, probe.stamp(4 + i, 10_000), wait=False)
    probe.spin_until(lambda: probe.diag("unsupported_encoding") >= unsupported + 3, WAIT)
    assert probe.diag("unsupported_encoding") == unsupported + 3
    assert probe.diag("malformed") == malformed, "an unknown encoding is not a malformed message"
    probe.wait_message("yuv420_10bit_unknown")


def test_4k_burst_warns_that_the_model_falls_behind_and_memory_comes_back(mono, frames):
    node, probe, cam, _ = mono
    vga = [numpy_to_image(cv2.resize(f, (640, 480)), "rgb8") for f in frames[:10]]
    k = 0
    for _ in range(3):  # settle at 640x480
        for msg in vga:
            cam.send(msg, probe.stamp(k, 11_000), camera_info(640, 480))
            k += 1
    base = node_memory_mb(node)["VmRSS"]
    big = numpy_to_image(cv2.resize(frames[0], (3840, 2160)), "rgb8")
    t0, sent = time.monotonic(), 0
    while time.monotonic() - t0 < 3.0:  # a 4K camera at 30 Hz: the model cannot keep up
        cam.send(big, probe.stamp(k, 11_000), wait=False)
        k, sent = k + 1, sent + 1
        probe.spin(max(0.0, t0 + sent / 30.0 - time.monotonic()))
    d = probe.wait_message("keep-latest drops the rest", timeout=15)
    assert d["_level"] == 1
    probe.spin(3.0)  # the last 4K frame finishes
    for _ in range(3):
        for msg in vga:
            cam.send(msg, probe.stamp(k, 11_000), camera_info(640, 480))
            k += 1
    after = node_memory_mb(node)["VmRSS"]
    print(f"RSS {base:.0f} MB before the 4K burst, {after:.0f} MB after")
    # measured: 430 -> 541 MB (before this change: 442 -> 1313 MB, still 1289 MB 30 s later). What
    # stays is the DDS reader's history, reallocated to the 25 MB samples (5 deep), not the model's,
    # plus heap fragmentation: +56 to +205 MB over 8 runs on a 2-core Xeon (2026-12-07; +205 once in
    # a full suite run), so the bar sits at 300 MB, well under the +870 MB of the leak it guards.
    assert after - base < 300, (base, after)


@pytest.fixture(scope="module")
def rgbd():
    params = {**DIAG, "input_mode": "rgbd", "model": "orb"}
    remaps = {"image": "/hd/image", "depth": "/hd/depth", "camera_info": "/hd/camera_info"}
    node = NodeProcess(DOMAIN_RGBD, params, remaps)
    probe = Probe(DOMAIN_RGBD)
    try:
        probe.wait_ready(node, timeout=180)
        image = probe.publisher("/hd/image", best_effort=False)
        depth = probe.publisher("/hd/depth", best_effort=False)
        info = probe.publisher("/hd/camera_info", CameraInfo, best_effort=False)
        for pub in (image, depth, info):
            probe.wait_subscribed(pub)
        yield node, probe, image, depth, info
    finally:
        node.stop()
        probe.close()


def _play_rgbd(probe, image, depth, frames, base, depth_offset_ns=0, depth_size=SIZE, with_depth=True):
    """10 Hz colour with depth stamped ``depth_offset_ns`` from it (None: no depth at all)."""
    dm = np.full(depth_size[::-1], 2000, np.uint16)
    t0 = time.monotonic()
    for i, f in enumerate(frames):
        ns = base * 1_000_000_000 + i * 100_000_000
        img = numpy_to_image(f, "rgb8")
        img.header.stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        image.publish(img)
        if with_depth:
            d = numpy_to_image(dm, "16UC1")
            dns = ns + depth_offset_ns
            d.header.stamp = Time(sec=dns // 1_000_000_000, nanosec=dns % 1_000_000_000)
            depth.publish(d)
        probe.spin(max(0.0, t0 + (i + 1) * 0.1 - time.monotonic()))


def test_rgbd_pairing_problems_are_named(rgbd, frames):
    node, probe, image, depth, _ = rgbd
    _play_rgbd(probe, image, depth, frames[:10], 100)
    assert probe.spin_until(lambda: probe.diag("processed") >= 8, WAIT), probe.diagnostics[-1:]
    kp0 = len(probe.keypoints)
    _play_rgbd(probe, image, depth, frames[10:30], 200, depth_offset_ns=-40_000_000)
    d = probe.wait_message("no depth within sync_slop 0.020 s of its image; nearest -0.040 s")
    assert d["_level"] == 1
    assert len(probe.keypoints) - kp0 <= 1, "nothing pairs 40 ms apart with a 20 ms slop"
    _play_rgbd(probe, image, depth, frames[:30], 300, with_depth=False)
    probe.wait_message("no depth to pair with the image (none for")


def test_depth_of_another_aspect_ratio_is_not_used(rgbd, frames):
    node, probe, image, depth, _ = rgbd
    _play_rgbd(probe, image, depth, frames[:10], 400, depth_size=(320, 180))
    d = probe.wait_message("depth is 320x180 but the image is 320x240 (another aspect ratio): depth not used")
    assert d["_level"] == 1
