"""The extractor node in its own process, driven over real DDS by this test process.

One node (goodpoint_small, random weights, 160x120 frames so it keeps up on 2 shared cores) serves
every test in this module; a second one checks overload behaviour with a deliberately slow model.
"""

from __future__ import annotations

import array
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile  # noqa: E402
from goodpoint_ros.params import PARAMS  # noqa: E402

apply_fastdds_profile()  # before any participant exists in this process (collection time)

import cv2  # noqa: E402
import yaml  # noqa: E402
from probe import NodeProcess, Probe, seeded_weights  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.ros.conversions import image_to_numpy, numpy_to_image  # noqa: E402
from goodpoint_ros.ros.player import camera_sequence, frame_to_frame  # noqa: E402
from goodpoint_ros.vo.geometry import warp_points  # noqa: E402

DOMAIN = 61
pytestmark = pytest.mark.slow  # node processes
N_FRAMES = 50
SIZE = (160, 120)


@pytest.fixture(scope="module")
def sequence():
    # a slow camera motion so consecutive processed frames overlap well even after drops
    return camera_sequence(sample_photo("astronaut"), N_FRAMES, SIZE, rate=30.0, motion=0.5)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Shipped goodpoint_small weights when they exist; else random weights from a fixed seed.

    Random-weight descriptor quality varies a lot with the seed (some seeds give almost no
    mutual matches between near-identical frames); a fixed seed keeps this pipeline test
    deterministic. It checks the node's geometry and bookkeeping, not the model's quality.
    """
    from goodpoint_ros.models.checkpoint import shipped_weights

    if shipped_weights("goodpoint_small").is_file():
        return "default"
    return seeded_weights(tmp_path_factory.mktemp("weights") / "goodpoint_small_seed0.pt")


@pytest.fixture(scope="module")
def running(weights):
    node = NodeProcess(
        DOMAIN,
        {"model": "goodpoint_small", "weights": weights, "device": "cpu", "max_keypoints": 300, "qos": "reliable"},
        {"image": "/cam/image"},
    )
    probe = Probe(DOMAIN)
    try:
        probe.wait_ready(node)
        yield node, probe
    finally:
        out = node.stop()
        probe.close()
        print(out[-2000:])


def _publish_sequence(probe, pub, frames, rate=30.0, stamp_base=1_000):
    stamps = []
    period = 1.0 / rate
    t0 = time.monotonic()
    for i, frame in enumerate(frames):
        msg = numpy_to_image(frame, "rgb8")
        msg.header.stamp = probe.stamp(i, stamp_base)
        msg.header.frame_id = "cam"
        pub.publish(msg)
        stamps.append((msg.header.stamp.sec, msg.header.stamp.nanosec))
        probe.spin(max(0.0, t0 + (i + 1) * period - time.monotonic()))
    return stamps


def _latest_diag(probe, key):
    return int(float(probe.diagnostics[-1][key]))


def test_every_output_arrives_with_input_stamp_fields_and_valid_matches(running, sequence):
    node, probe = running
    frames, hs = sequence
    pub = probe.publisher("/cam/image", best_effort=False)
    probe.wait_subscribed(pub)
    stamps = _publish_sequence(probe, pub, frames)
    index = {s: i for i, s in enumerate(stamps)}
    n_diag = len(probe.diagnostics)
    assert probe.spin_until(lambda: len(probe.diagnostics) > n_diag + 1, 10)
    # a diagnostics message may predate the last frames' callbacks on a loaded CPU: wait for it
    arrived = lambda: _latest_diag(probe, "received") + _latest_diag(probe, "lost_stamp_gaps")  # noqa: E731
    probe.spin_until(lambda: arrived() >= N_FRAMES, 10)
    done = lambda: _latest_diag(probe, "processed") + _latest_diag(probe, "dropped")  # noqa: E731
    probe.spin_until(lambda: done() >= _latest_diag(probe, "received"), 10)  # the last frame may be in the model
    probe.spin(0.5)
    processed, dropped = _latest_diag(probe, "processed"), _latest_diag(probe, "dropped")
    received, lost = _latest_diag(probe, "received"), _latest_diag(probe, "lost_stamp_gaps")
    # Reliable input still keeps only the last 10 messages per side (KEEP_LAST): a CI machine
    # that stalls the node for a third of a second loses a frame, which must then be counted.
    assert received + lost == N_FRAMES and lost <= 3, (received, lost)
    assert processed + dropped == received
    assert processed >= N_FRAMES // 4, f"only {processed} processed"
    kps = [(h, k) for _, h, k in probe.keypoints if (h.stamp.sec, h.stamp.nanosec) in index]
    assert len(kps) == processed  # every published keypoints message arrived
    order = [index[(h.stamp.sec, h.stamp.nanosec)] for h, _ in kps]
    assert order == sorted(order) and len(set(order)) == len(order)
    for h, k in kps:
        assert h.frame_id == "cam"
        assert 0 < len(k["keypoints"]) <= 300
        assert k["descriptors"].shape == (len(k["keypoints"]), 128)
        np.testing.assert_allclose(np.linalg.norm(k["descriptors"], axis=1), 1.0, atol=1e-4)
        assert (k["keypoints"][:, 0] >= 0).all() and (k["keypoints"][:, 0] < SIZE[0]).all()
        assert (k["keypoints"][:, 1] >= 0).all() and (k["keypoints"][:, 1] < SIZE[1]).all()
        assert (k["track_ids"] > 0).all() and len(np.unique(k["track_ids"])) == len(k["track_ids"])

    by_stamp = {(h.stamp.sec, h.stamp.nanosec): k for h, k in kps}
    ms = [(h, m) for _, h, m in probe.matches if (h.stamp.sec, h.stamp.nanosec) in index]
    assert len(ms) == processed - 1  # one per processed frame after the first
    errors, inherited, total_inliers = [], 0, 0
    for h, m in ms:
        cur_key = (h.stamp.sec, h.stamp.nanosec)
        if not len(m["matches"]):
            continue
        prev = by_stamp[m["prev_stamp"]]  # the stamp tells exactly which frame it joins
        cur = by_stamp[cur_key]
        assert index[m["prev_stamp"]] < index[cur_key]
        i0, i1 = m["matches"][:, 0], m["matches"][:, 1]
        assert (i0 < len(prev["keypoints"])).all() and (i1 < len(cur["keypoints"])).all()
        np.testing.assert_array_equal(m["pts0"], prev["keypoints"][i0])
        np.testing.assert_array_equal(m["pts1"], cur["keypoints"][i1])
        inl = m["inliers"]
        total_inliers += int(inl.sum())
        inherited += int((cur["track_ids"][i1[inl]] == prev["track_ids"][i0[inl]]).sum())
        H = frame_to_frame(hs[index[m["prev_stamp"]]], hs[index[cur_key]])
        errors.append(np.linalg.norm(warp_points(m["pts0"][inl].astype(np.float64), H) - m["pts1"][inl], axis=1))
    assert inherited == total_inliers  # every inlier continues its track
    err = np.concatenate(errors) if errors else np.zeros(0)
    print(
        f"processed {processed}/{N_FRAMES}, {len(err)} inliers, median error {np.median(err) if len(err) else -1:.2f} px"
    )
    # random weights still match identical-looking content; verified matches must follow the true motion
    assert len(err) >= 20, f"only {len(err)} inlier matches over the sequence"
    assert np.median(err) < 3.0 and (err < 6.0).mean() > 0.8, (np.median(err), (err < 6.0).mean())


def test_malformed_messages_never_stop_the_node(running, sequence):
    node, probe = running
    frames, _ = sequence
    pub = probe.publisher("/cam/image", best_effort=False)
    probe.wait_subscribed(pub)
    probe.spin(1.2)
    before = _latest_diag(probe, "decode_errors")
    good = numpy_to_image(frames[0], "rgb8")
    bad = []
    m = numpy_to_image(frames[0], "rgb8")
    m.step = 7  # wrong step
    bad.append(m)
    m = numpy_to_image(frames[0], "rgb8")
    m.encoding = "yuv_unknown"
    bad.append(m)
    bad.append(Image(height=0, width=0, encoding="rgb8", step=0))  # zero size
    m = numpy_to_image(frames[0], "rgb8")
    m.data = array.array("B", bytes(good.data)[:1000])  # truncated
    bad.append(m)
    for i, msg in enumerate(bad):
        msg.header.stamp = probe.stamp(i, 5_000)
        pub.publish(msg)
        probe.spin(0.4)  # one at a time, so the keep-latest slot does not drop them before decoding
    good.header.stamp = probe.stamp(10, 5_000)
    n = len(probe.keypoints)
    pub.publish(good)
    assert probe.spin_until(lambda: len(probe.keypoints) > n, 10), "node stopped answering after malformed input"
    assert node.alive()
    n_diag = len(probe.diagnostics)
    assert probe.spin_until(lambda: len(probe.diagnostics) > n_diag + 1, 5)
    assert _latest_diag(probe, "decode_errors") - before == len(bad)


def test_parameters_change_at_run_time(running, sequence):
    node, probe = running
    frames, _ = sequence
    client = probe.node.create_client(SetParameters, "/goodpoint_extractor/set_parameters")
    assert client.wait_for_service(timeout_sec=10)

    def set_param(name, value, ptype):
        field = {ParameterType.PARAMETER_INTEGER: "integer_value", ParameterType.PARAMETER_STRING: "string_value"}
        val = ParameterValue(type=ptype, **{field[ptype]: value})
        fut = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=val)]))
        assert probe.spin_until(fut.done, 10)
        return fut.result().results[0]

    assert set_param("max_keypoints", 40, ParameterType.PARAMETER_INTEGER).successful
    assert not set_param("model", "mdnet", ParameterType.PARAMETER_STRING).successful  # fixed at start
    assert not set_param("verification_method", "magic", ParameterType.PARAMETER_STRING).successful
    pub = probe.publisher("/cam/image", best_effort=False)
    probe.wait_subscribed(pub)
    n = len(probe.keypoints)
    msg = numpy_to_image(frames[3], "rgb8")
    msg.header.stamp = probe.stamp(0, 7_000)
    pub.publish(msg)
    assert probe.spin_until(lambda: len(probe.keypoints) > n, 10)
    assert 0 < len(probe.keypoints[-1][2]["keypoints"]) <= 40
    assert set_param("max_keypoints", 300, ParameterType.PARAMETER_INTEGER).successful


def test_debug_image_only_while_subscribed(running, sequence):
    node, probe = running
    frames, _ = sequence
    probe.record(Image, "/goodpoint_extractor/debug_image", image_to_numpy)
    pub = probe.publisher("/cam/image", best_effort=False)
    probe.wait_subscribed(pub)
    probe.spin(1.0)  # let the node see the new subscriber
    for i in range(3):
        msg = numpy_to_image(frames[i * 5], "rgb8")
        msg.header.stamp = probe.stamp(i, 8_000)
        pub.publish(msg)
        probe.spin(0.3)
    assert probe.spin_until(lambda: len(probe.other["/goodpoint_extractor/debug_image"]) >= 1, 10)
    img = probe.other["/goodpoint_extractor/debug_image"][-1][1]
    assert img.shape == (SIZE[1], SIZE[0], 3) and img.dtype == np.uint8


def test_params_file_lists_every_parameter():
    from pathlib import Path

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "extractor.yaml").read_text())
    values = conf["/**"]["ros__parameters"]
    assert set(values) == {prm.name for prm in PARAMS}
    for prm in PARAMS:
        assert type(values[prm.name]) is type(prm.default) and values[prm.name] == prm.default, prm.name


LISTENER = """
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
n = rclpy.create_node("listener")
got = []
n.create_subscription(Image, "/big/image", lambda m: got.append(len(m.data)), qos_profile_sensor_data)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    rclpy.spin_once(n, timeout_sec=0.05)
print(len(got), flush=True)
"""


def test_640x480_rgb8_best_effort_arrives_without_loss_under_the_shipped_profile():
    """900 KB samples are above Fast DDS's default 512 KB shared-memory segment: without the
    shipped profile most are lost between processes (measured here: 33/60); with it, none."""
    import os
    import subprocess
    import sys

    domain = DOMAIN + 2
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    listener = subprocess.Popen([sys.executable, "-c", LISTENER, "12"], env=env, stdout=subprocess.PIPE, text=True)
    probe = Probe(domain)
    try:
        assert listener.stdout.readline().strip() == "ready"
        pub = probe.publisher("/big/image", best_effort=True)
        probe.wait_subscribed(pub)
        probe.spin(0.5)
        photo = cv2.resize(sample_photo("coffee"), (640, 480), interpolation=cv2.INTER_AREA)
        _publish_sequence(probe, pub, [np.roll(photo, 2 * i, axis=1) for i in range(60)], rate=30.0)
        out, _ = listener.communicate(timeout=30)
        assert int(out.split()[-1]) == 60, out
    finally:
        if listener.poll() is None:
            listener.kill()
        probe.close()


def test_slow_model_drops_frames_counts_them_and_keeps_latency_bounded():
    """The full-size model cannot keep up with 640x480 at 30 Hz on this CPU: the keep-latest slot
    drops frames (counted), never builds a queue, so latency stays within a few extractions."""
    domain = DOMAIN + 1
    node = NodeProcess(
        domain,
        {"model": "goodpoint", "weights": "random", "device": "cpu", "max_keypoints": 500},
        {"image": "/cam/image"},
    )
    probe = Probe(domain)
    try:
        probe.wait_ready(node)
        pub = probe.publisher("/cam/image", best_effort=True)
        probe.wait_subscribed(pub)
        probe.spin(0.5)
        photo = cv2.resize(sample_photo("coffee"), (640, 480), interpolation=cv2.INTER_AREA)
        n = 60
        frames = [np.roll(photo, 2 * i, axis=1) for i in range(n)]
        _publish_sequence(probe, pub, frames, rate=30.0, stamp_base=9_000)

        def drained():  # the last frame in the slot has been processed
            d = probe.diagnostics[-1]
            return int(d["processed"]) + int(d["dropped"]) == int(d["received"]) and int(d["processed"]) >= 2

        assert probe.spin_until(drained, 30), probe.diagnostics[-1]
        probe.spin(0.5)
        d = probe.diagnostics[-1]
        received, processed, dropped = (int(d[k]) for k in ("received", "processed", "dropped"))
        # best effort under a CPU saturated by the model itself: a few frames may be lost from the
        # reader's 5-deep sensor_data history before the executor runs; those never reach the slot
        assert received >= 0.8 * n, d
        assert processed + dropped == received and dropped > 0 and processed >= 2
        extract_ms = float(d["extract_p50_ms"])
        # keep-latest: a frame waits at most one extraction before its own, never a queue (a queue
        # of this 60-frame burst would reach seconds). The p95 allows scheduling spikes: node,
        # publisher and DDS share 2 cores, and once extraction got fast (82 ms p50) a 440 ms p95
        # broke the old 3x + 150 ms bound in 1 fresh-clone run of 4.
        assert float(d["latency_p50_ms"]) < 2.0 * extract_ms + 150.0, d
        assert float(d["latency_p95_ms"]) < 3.0 * extract_ms + 500.0, d
        assert len(probe.keypoints) == processed
    finally:
        node.stop()
        probe.close()
