"""Hostile input against the real node: every fault class is counted where it belongs, the node
stays up, its memory does not grow, and it answers the next valid frame.

Two node processes (started together, one per input kind the faults need): A takes raw mono
images (wrong step, truncated data, unknown encoding, zero size, a raw image claiming too many
pixels, 32FC1 with NaN/inf/huge values), B takes compressed RGB-D (PNG decompression bombs, a
corrupt JPEG, a JPEG header claiming 60000x60000, depth with NaN, depth of the wrong encoding).
Inputs are reliable and sent one at a time, waiting for each outcome, so the counters are exact:
malformed messages are counted on arrival (``malformed``, also in ``decode_errors``), data that
only fails when decoded counts in ``decode_errors`` alone. Every message on a topic carries the
next 30 Hz stamp, so the stamp-gap loss count must close the books: published == received +
malformed + lost_stamp_gaps, whatever the load. Node A also checks that matching runs only while
someone subscribes to an output that needs it, and a third, stereo node that a stereo frame with
nobody wanting matches still goes out as keypoints, without errors.
"""

from __future__ import annotations

import array
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile  # noqa: E402

apply_fastdds_profile()  # before any participant exists in this process (collection time)

import cv2  # noqa: E402
from probe import NodeProcess, Probe, node_memory_mb  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, PointCloud2  # noqa: E402

from goodpoint_ros.io.image_codec import DEFAULT_MAX_PIXELS  # noqa: E402
from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.params import TABLE  # noqa: E402
from goodpoint_ros.ros.conversions import numpy_to_image  # noqa: E402

DOMAIN_A, DOMAIN_B = 66, 67
pytestmark = pytest.mark.slow  # node processes
SIZE = (160, 120)
COMMON = {
    "model": "goodpoint_small",
    "weights": "default",  # shipped: random weights detect nothing on these small frames
    "device": "cpu",
    "max_keypoints": 200,
    "qos": "reliable",
    "diagnostics_period": 0.25,
    "publish_debug_image": False,
}
WAIT = 30.0  # seconds for one outcome: generous, the CPU is shared


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A valid 8-bit gray PNG of side x side zeros, compressed by hand row by row (the test never
    holds the decoded image): 4000 -> ~16 KB, 16000 -> ~249 KB."""
    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


class Stream:
    """Consecutive 30 Hz stamps for every message on one topic, so a stamp gap is a real loss."""

    def __init__(self, probe: Probe, base: int) -> None:
        self.probe, self.base, self.i = probe, base, 0

    def next(self):
        stamp = self.probe.stamp(self.i, self.base)
        self.i += 1
        return stamp


# every message published ends in exactly one of these (the ones refused on arrival never enter the slot)
BOOKS = ("received", "malformed", "unsupported_encoding", "lost_stamp_gaps")


def _diag(probe: Probe, key: str) -> float:
    """The latest value of ``key``; ``refused`` = malformed + unsupported_encoding."""
    if key == "refused":
        return _diag(probe, "malformed") + _diag(probe, "unsupported_encoding")
    return float(probe.diagnostics[-1][key]) if probe.diagnostics else -1.0


def _wait_diag(probe: Probe, key: str, value: float) -> None:
    """Until /diagnostics reports ``key`` >= value (it is published every 0.25 s)."""
    ok = probe.spin_until(lambda: _diag(probe, key) >= value, WAIT)
    assert ok, f"{key} stayed at {_diag(probe, key)}, expected {value}: {probe.diagnostics[-1:]}"


def _key(stamp) -> tuple[int, int]:
    return (int(stamp.sec), int(stamp.nanosec))


def _answered(probe: Probe, stamp) -> bool:
    return probe.spin_until(lambda: any(_key(h.stamp) == _key(stamp) for _, h, _ in probe.keypoints), WAIT)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(sample_photo("astronaut"), SIZE, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def nodes():
    """Both nodes, started together (their start-up overlaps), and a probe for each."""
    a = NodeProcess(DOMAIN_A, COMMON, {"image": "/ha/image"})
    b = NodeProcess(
        DOMAIN_B, {**COMMON, "input_mode": "rgbd", "compressed": True}, {"image": "/hb/image", "depth": "/hb/depth"}
    )
    pa, pb = Probe(DOMAIN_A), Probe(DOMAIN_B)
    try:
        pa.wait_ready(a, timeout=180)
        pb.wait_ready(b, timeout=180)
        yield (a, pa), (b, pb)
    finally:
        for node, probe in ((a, pa), (b, pb)):
            out = node.stop()
            probe.close()
            print(out[-1500:])


def test_parameter_default_is_the_codec_default():
    assert TABLE["max_pixels"].default == DEFAULT_MAX_PIXELS


def test_raw_faults_counted_on_arrival_and_the_node_answers(nodes, photo):
    (node, probe), _ = nodes
    pub = probe.publisher("/ha/image", best_effort=False)
    probe.wait_subscribed(pub)
    stream = Stream(probe, 3_000)
    published = 0

    def send(msg) -> Image:
        nonlocal published
        msg.header.stamp = stream.next()
        pub.publish(msg)
        published += 1
        return msg

    first = send(numpy_to_image(photo, "rgb8"))
    assert _answered(probe, first.header.stamp), "no answer to the first valid frame"
    probe.spin(0.6)
    malformed0, decode0 = _diag(probe, "malformed"), _diag(probe, "decode_errors")
    unsupported0 = _diag(probe, "unsupported_encoding")
    received0 = _diag(probe, "received")

    faults = []
    m = numpy_to_image(photo, "rgb8")
    m.step = 7  # wrong step
    faults.append(m)
    m = numpy_to_image(photo, "rgb8")
    m.data = array.array("B", bytes(m.data)[:1000])  # truncated
    faults.append(m)
    m = numpy_to_image(photo, "rgb8")
    m.encoding = "yuv_unknown"  # well-formed, in an encoding nobody knows: its own counter
    faults.append(m)
    faults.append(Image(height=0, width=0, encoding="rgb8", step=0))  # zero size
    faults.append(Image(height=60000, width=60000, encoding="mono8", step=60000))  # claims 3.6 GP, holds nothing
    for k, msg in enumerate(faults, 1):
        send(msg)
        _wait_diag(probe, "refused", malformed0 + unsupported0 + k)  # one at a time: each counted on arrival
        ok = send(numpy_to_image(photo, "rgb8"))
        assert _answered(probe, ok.header.stamp), f"no answer after fault {k}"
    assert node.alive()
    _wait_diag(probe, "received", received0 + len(faults))
    d = probe.diagnostics[-1]
    assert float(d["malformed"]) - malformed0 == len(faults) - 1
    assert float(d["unsupported_encoding"]) - unsupported0 == 1
    assert float(d["decode_errors"]) - decode0 == len(faults)  # malformed ones are decode errors too
    assert float(d["dropped"]) == 0  # a malformed message never enters the slot

    # 32FC1: NaN, +-inf and values whose span exceeds float32 are handled, not NaN keypoints
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    hostile = gray.copy()
    hostile[:10] = np.nan
    hostile[10:20, :20] = np.inf
    hostile[20:30, :20] = -np.inf
    hostile[30, :5] = (3e38, -3e38, 1e30, -1e30, 3.4e38)
    msg = send(numpy_to_image(hostile, "32FC1"))
    assert _answered(probe, msg.header.stamp), "32FC1 with NaN/inf/huge values not answered"
    kp = next(k for _, h, k in probe.keypoints if _key(h.stamp) == _key(msg.header.stamp))
    assert len(kp["keypoints"]) > 0 and np.isfinite(kp["keypoints"]).all() and np.isfinite(kp["scores"]).all()
    # no finite pixel at all: well-formed, so it reaches the decoder, which refuses it
    decode1 = _diag(probe, "decode_errors")
    send(numpy_to_image(np.full(gray.shape, np.nan, np.float32), "32FC1"))
    _wait_diag(probe, "decode_errors", decode1 + 1)
    last = send(numpy_to_image(photo, "rgb8"))
    assert _answered(probe, last.header.stamp)
    assert node.alive()

    # the books close: every message published is received, malformed, or lost before the callback
    def closed() -> bool:
        d = probe.diagnostics[-1]
        return sum(float(d[k]) for k in BOOKS) >= published

    assert probe.spin_until(closed, WAIT), (published, probe.diagnostics[-1])
    d = probe.diagnostics[-1]
    assert sum(float(d[k]) for k in BOOKS) == published, (published, d)


def test_best_effort_burst_losses_are_accounted_for(nodes, photo):
    """A burst faster than the node's executor may lose frames before the callback; whatever is
    lost must show up in lost_stamp_gaps (exact: the stamps are exact 30 Hz multiples)."""
    (node, probe), _ = nodes
    pub = probe.publisher("/ha/image", best_effort=False)
    probe.wait_subscribed(pub)
    stream = Stream(probe, 4_000)  # a new base: stamps that leap ahead of the arrivals are a jump, not a loss
    probe.spin(0.6)
    before = {k: _diag(probe, k) for k in ("received", "malformed", "lost_stamp_gaps")}
    msgs = [numpy_to_image(np.roll(photo, i, axis=1), "rgb8") for i in range(80)]
    for i, msg in enumerate(msgs):  # 4 slow frames give the node the camera's period first
        msg.header.stamp = stream.next()
        pub.publish(msg)
        probe.spin(0.15 if i < 4 or i >= len(msgs) - 2 else 0.005)  # then ~200 Hz, then slow again
    assert _answered(probe, msgs[-1].header.stamp)

    def accounted() -> float:
        d = probe.diagnostics[-1]
        return sum(float(d[k]) - before[k] for k in before)

    probe.spin_until(lambda: accounted() >= len(msgs), WAIT)
    d = probe.diagnostics[-1]
    print({k: d[k] for k in ("received", "dropped", "lost_stamp_gaps", "lost_rmw_event", "lost_rmw_event_support")})
    assert accounted() == len(msgs), (before, d)
    assert node.alive()


def test_outputs_computed_only_while_subscribed(nodes, photo):
    (node, probe), _ = nodes
    pub = probe.publisher("/ha/image", best_effort=False)
    probe.wait_subscribed(pub)
    stream = Stream(probe, 6_000)
    for sub in [s for s in probe.node.subscriptions if s.topic_name.endswith("/matches")]:
        probe.node.destroy_subscription(sub)  # nobody listens to ~/matches, ~/tracks, ~/odometry now
    probe.spin(1.5)  # the node's graph sees the subscription go
    for i in range(3):
        msg = numpy_to_image(np.roll(photo, 2 * i, axis=1), "rgb8")
        msg.header.stamp = stream.next()
        pub.publish(msg)
        assert _answered(probe, msg.header.stamp)  # keypoints always
    probe.spin_until(lambda: probe.diagnostics[-1].get("output_matching", "").startswith("idle"), WAIT)
    d = probe.diagnostics[-1]
    assert d["output_matching"] == "idle (no subscribers)", d
    assert d["output_odometry"] == "idle (no subscribers)" and d["output_tracks"] == "idle (no subscribers)"

    probe.record(PointCloud2, "/goodpoint_extractor/matches")  # someone wants matches again
    probe.spin(1.5)
    for i in range(3, 6):
        msg = numpy_to_image(np.roll(photo, 2 * i, axis=1), "rgb8")
        msg.header.stamp = stream.next()
        pub.publish(msg)
        assert _answered(probe, msg.header.stamp)
    assert probe.spin_until(lambda: len(probe.other["/goodpoint_extractor/matches"]) >= 2, WAIT)
    probe.spin_until(lambda: probe.diagnostics[-1].get("output_matching") == "active", WAIT)
    assert probe.diagnostics[-1]["output_matching"] == "active"


def _rgbd_pair(probe, pubs, stream, jpeg: bytes, depth: np.ndarray):
    img_pub, depth_pub = pubs
    stamp = stream.next()
    c = CompressedImage(format="jpeg", data=array.array("B", jpeg))
    c.header.stamp = stamp
    d = numpy_to_image(depth, "16UC1" if depth.dtype == np.uint16 else "32FC1")
    d.header.stamp = stamp
    img_pub.publish(c)
    depth_pub.publish(d)
    return stamp


def test_compressed_bombs_corrupt_jpeg_and_bad_depth(nodes, photo):
    _, (node, probe) = nodes
    img_pub = probe.publisher("/hb/image/compressed", CompressedImage, best_effort=False)
    depth_pub = probe.publisher("/hb/depth", best_effort=False)
    probe.wait_subscribed(img_pub)
    probe.wait_subscribed(depth_pub)
    img_stream, depth_stream = Stream(probe, 3_000), Stream(probe, 3_000)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))[1].tobytes()
    depth_mm = np.full(photo.shape[:2], 1500, np.uint16)

    def valid(depth=depth_mm):
        stamp = _rgbd_pair(probe, (img_pub, depth_pub), img_stream, jpeg, depth)
        depth_stream.i = img_stream.i
        assert _answered(probe, stamp), "valid RGB-D frame not answered"

    for _ in range(3):  # warm: the model's working memory is in the peak before the bombs
        valid()
    probe.spin(0.6)
    mem0 = node_memory_mb(node)
    malformed0, decode0 = _diag(probe, "malformed"), _diag(probe, "decode_errors")

    bombs = [png_bomb(4000), png_bomb(16000)]
    assert len(bombs[0]) < 20_000 and len(bombs[1]) < 300_000
    sof = jpeg.find(b"\xff\xc0")
    huge = bytearray(jpeg)
    huge[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # the frame header claims 60000x60000
    for k, data in enumerate([*bombs, bytes(huge)], 1):
        c = CompressedImage(format="png" if data.startswith(b"\x89PNG") else "jpeg", data=array.array("B", data))
        c.header.stamp = img_stream.next()
        img_pub.publish(c)
        _wait_diag(probe, "malformed", malformed0 + k)
        valid()
    mem1 = node_memory_mb(node)
    print("node memory (MB) before/after the bombs:", mem0, mem1)
    assert mem1["VmHWM"] - mem0["VmHWM"] < 100 and mem1["VmRSS"] - mem0["VmRSS"] < 100, (mem0, mem1)

    # a corrupt JPEG (cut inside its scan) passes the header check and fails in the decoder
    cut = jpeg[: jpeg.find(b"\xff\xda") + 200]
    _rgbd_pair(probe, (img_pub, depth_pub), img_stream, cut, depth_mm)
    depth_stream.i = img_stream.i
    _wait_diag(probe, "decode_errors", decode0 + 4)
    valid()

    # depth in a colour encoding (unsupported for depth) and truncated depth (malformed): on arrival
    bad_depths = [numpy_to_image(photo, "rgb8"), numpy_to_image(depth_mm, "16UC1")]
    bad_depths[1].data = array.array("B", bytes(bad_depths[1].data)[:100])
    unsupported0 = _diag(probe, "unsupported_encoding")
    for d, key in zip(bad_depths, ("unsupported_encoding", "malformed")):
        d.header.stamp = depth_stream.next()
        before = _diag(probe, key)
        depth_pub.publish(d)
        _wait_diag(probe, key, before + 1)
    img_stream.i = depth_stream.i
    # depth with NaN, inf and negative values: unknown depth, the frame is still answered
    depth_m = np.full(photo.shape[:2], 1.5, np.float32)
    depth_m[:20] = np.nan
    depth_m[20:40] = np.inf
    depth_m[40:50] = -1.0
    valid(depth_m)
    assert node.alive()
    d = probe.diagnostics[-1]
    assert float(d["decode_errors"]) - decode0 == 4 + len(bad_depths), d
    assert float(d["malformed"]) - malformed0 == 3 + 1, d
    assert float(d["unsupported_encoding"]) - unsupported0 == 1, d


def test_stereo_with_nobody_wanting_matches_publishes_keypoints_only():
    """Stereo: with no subscriber to any output that needs matching, no left/right matching runs
    (none is published) and the frames still go out as keypoints, without errors."""
    from goodpoint_ros.io.image_files import sample_pair

    left, right = (cv2.resize(im, SIZE, interpolation=cv2.INTER_AREA) for im in sample_pair())
    node = NodeProcess(
        DOMAIN_B + 1,
        {**COMMON, "input_mode": "stereo"},
        {"left/image": "/hs/left/image", "right/image": "/hs/right/image"},
    )
    probe = Probe(DOMAIN_B + 1)
    try:
        probe.wait_ready(node, timeout=180)
        for sub in [s for s in probe.node.subscriptions if s.topic_name.endswith("/matches")]:
            probe.node.destroy_subscription(sub)
        pl, pr = (
            probe.publisher("/hs/left/image", best_effort=False),
            probe.publisher("/hs/right/image", best_effort=False),
        )
        probe.wait_subscribed(pl)
        probe.wait_subscribed(pr)
        probe.spin(1.5)
        for i in range(3):
            ml, mr = numpy_to_image(left, "rgb8"), numpy_to_image(right, "rgb8")
            ml.header.stamp = mr.header.stamp = probe.stamp(i)
            pl.publish(ml)
            pr.publish(mr)
            assert _answered(probe, ml.header.stamp)
        probe.spin_until(lambda: _diag(probe, "processed") >= 3, WAIT)
        probe.spin(0.6)
        d = probe.diagnostics[-1]
        assert d["output_matching"] == "idle (no subscribers)" and float(d["errors"]) == 0, d
    finally:
        node.stop()
        probe.close()
