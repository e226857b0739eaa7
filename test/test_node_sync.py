"""Stereo and RGB-D pairing: the project's approximate-time synchroniser, alone and inside the node."""

from __future__ import annotations

import numpy as np
import pytest

from goodpoint_ros.node.sync import ApproxTimeSync

MS = 1_000_000


def test_pairs_within_slop_and_counts_what_never_pairs():
    out = []
    sync = ApproxTimeSync(2, 0.010, out.append)
    for i in range(10):
        t = i * 33 * MS
        sync.add(0, t, ("L", t))
        if i != 4:  # the right image of frame 4 is lost
            sync.add(1, t + 3 * MS, ("R", t + 3 * MS))
    assert [(a[1], b[1]) for a, b in out] == [(i * 33 * MS, i * 33 * MS + 3 * MS) for i in range(10) if i != 4]
    assert sync.dropped == [1, 0] and sync.emitted == 9


def test_far_apart_stamps_never_pair_and_queues_stay_bounded():
    out = []
    sync = ApproxTimeSync(2, 0.005, out.append, queue_size=4)
    for i in range(20):
        sync.add(0, i * 100 * MS, i)
        sync.add(1, i * 100 * MS + 50 * MS, i)  # always 50 ms apart: never within 5 ms
    assert out == []
    assert all(len(q) <= 4 for q in sync.queues)
    assert sum(sync.dropped) >= 30


def test_time_going_backwards_restarts_an_input():
    out = []
    sync = ApproxTimeSync(2, 0.01, out.append)
    sync.add(0, 10 * MS, "a")
    sync.add(0, 5 * MS, "b")  # bag loop
    sync.add(1, 5 * MS, "c")
    assert out == [["b", "c"]] and sync.dropped[0] == 1


def test_three_inputs():
    out = []
    sync = ApproxTimeSync(3, 0.004, out.append)
    for i in range(5):
        for k in range(3):
            sync.add(k, i * 33 * MS + k * MS, (i, k))
    assert [[x[0] for x in group] for group in out] == [[i] * 3 for i in range(5)]


pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile  # noqa: E402

apply_fastdds_profile()

import cv2  # noqa: E402
from probe import NodeProcess, Probe, seeded_weights  # noqa: E402

from goodpoint_ros.io.cloud_layout import read_keypoints, read_matches  # noqa: E402
from goodpoint_ros.io.image_files import sample_pair, sample_photo  # noqa: E402
from goodpoint_ros.ros.conversions import numpy_to_image  # noqa: E402

DOMAIN = 63


def _spin_until_processed(probe, count, timeout=20):
    ok = probe.spin_until(lambda: bool(probe.diagnostics) and int(probe.diagnostics[-1]["processed"]) >= count, timeout)
    probe.spin(1.2)
    return ok


@pytest.mark.slow
def test_stereo_node_pairs_left_right_and_matches_across(tmp_path):
    left, right = (cv2.resize(im, (160, 120), interpolation=cv2.INTER_AREA) for im in sample_pair())
    from sensor_msgs.msg import PointCloud2

    node = NodeProcess(
        DOMAIN,
        {
            "model": "goodpoint_small",
            "weights": seeded_weights(tmp_path / "w.pt"),
            "device": "cpu",
            "input_mode": "stereo",
            "qos": "reliable",
            "match_ratio": 1.0,  # plain mutual nearest neighbours: random weights fail most ratio tests
        },
        {"left/image": "/stereo/left/image", "right/image": "/stereo/right/image"},
    )
    probe = Probe(DOMAIN)
    try:
        probe.record(PointCloud2, "/goodpoint_extractor/right/keypoints", read_keypoints)
        probe.record(PointCloud2, "/goodpoint_extractor/stereo_matches", read_matches)
        probe.wait_ready(node)
        pl = probe.publisher("/stereo/left/image", best_effort=False)
        pr = probe.publisher("/stereo/right/image", best_effort=False)
        probe.wait_subscribed(pl)
        probe.wait_subscribed(pr)
        sent = []
        for i in range(6):
            ml, mr = numpy_to_image(left, "rgb8"), numpy_to_image(right, "rgb8")
            ml.header.stamp = probe.stamp(3 * i)
            mr.header.stamp = probe.stamp(3 * i)
            mr.header.stamp.nanosec += 4 * MS  # 4 ms later: within the default 20 ms slop
            if i == 2:  # a right image that arrives alone: never paired
                mr.header.stamp.nanosec += 40 * MS
            pl.publish(ml)
            pr.publish(mr)
            sent.append(
                ((ml.header.stamp.sec, ml.header.stamp.nanosec), (mr.header.stamp.sec, mr.header.stamp.nanosec))
            )
            probe.spin(0.5)
        assert _spin_until_processed(probe, 5)
        d = probe.diagnostics[-1]
        assert int(d["sync_dropped"]) >= 2  # frame 2's left and right both went unpaired
        pairs = dict(sent[:2] + sent[3:])
        lefts = [(h.stamp.sec, h.stamp.nanosec) for _, h, _ in probe.keypoints]
        rights = [h for _, h in probe.other["/goodpoint_extractor/right/keypoints"]]
        stereo = [m for _, m in probe.other["/goodpoint_extractor/stereo_matches"]]
        assert set(lefts) <= set(pairs) and len(lefts) == int(d["processed"]) >= 3
        assert len(rights) == len(lefts) == len(stereo)
        for lstamp, m in zip(lefts, stereo):
            if len(m["matches"]):
                assert m["prev_stamp"] == pairs[lstamp]  # which right image these matches join
        n = sum(len(m["matches"]) for m in stereo)
        assert n > 0
    finally:
        node.stop()
        probe.close()


@pytest.mark.slow
def test_rgbd_node_attaches_depth_in_metres():
    rgb = cv2.resize(sample_photo("coffee"), (160, 120), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:120, 0:160]
    depth_mm = (1000 + 5 * xs + 2 * ys).astype(np.uint16)  # a tilted plane, known at every pixel
    depth_mm[:10] = 0  # unknown depth at the top
    node = NodeProcess(
        DOMAIN + 1,
        {"model": "goodpoint_small", "weights": "default", "device": "cpu", "input_mode": "rgbd", "qos": "reliable"},
        {"image": "/rgbd/image", "depth": "/rgbd/depth"},
    )
    probe = Probe(DOMAIN + 1)
    try:
        probe.wait_ready(node)
        pi = probe.publisher("/rgbd/image", best_effort=False)
        pd = probe.publisher("/rgbd/depth", best_effort=False)
        probe.wait_subscribed(pi)
        probe.wait_subscribed(pd)
        for i in range(3):
            mi, md = numpy_to_image(rgb, "rgb8"), numpy_to_image(depth_mm, "16UC1")
            mi.header.stamp = md.header.stamp = probe.stamp(i)
            pi.publish(mi)
            pd.publish(md)
            probe.spin(0.5)
        assert _spin_until_processed(probe, 3)
        k = probe.keypoints[-1][2]
        assert "depth" in k and len(k["depth"]) == len(k["keypoints"]) > 0
        x, y = np.round(k["keypoints"]).astype(int).T
        expected = (1000 + 5 * x + 2 * y) / 1000.0
        known = y >= 10
        np.testing.assert_allclose(k["depth"][known], expected[known], rtol=1e-5)
        assert np.isnan(k["depth"][~known]).all()
    finally:
        node.stop()
        probe.close()


@pytest.mark.slow
def test_compressed_input_mode():
    from goodpoint_ros.ros.conversions import numpy_to_compressed

    rgb = cv2.resize(sample_photo("rocket"), (160, 120), interpolation=cv2.INTER_AREA)
    node = NodeProcess(
        DOMAIN + 2,
        {"model": "goodpoint_small", "weights": "default", "device": "cpu", "compressed": True, "qos": "reliable"},
        {"image": "/cam/image_raw"},
    )
    probe = Probe(DOMAIN + 2)
    try:
        from sensor_msgs.msg import CompressedImage

        probe.wait_ready(node)
        pub = probe.publisher("/cam/image_raw/compressed", CompressedImage, best_effort=False)
        probe.wait_subscribed(pub)
        stamps = []
        for i, fmt in enumerate(["jpeg", "png", "jpeg"]):
            msg = numpy_to_compressed(np.roll(rgb, i, axis=1), fmt)
            msg.header.stamp = probe.stamp(i)
            pub.publish(msg)
            stamps.append((msg.header.stamp.sec, msg.header.stamp.nanosec))
            probe.spin(0.5)
        assert _spin_until_processed(probe, 3)
        got = [(h.stamp.sec, h.stamp.nanosec) for _, h, _ in probe.keypoints]
        assert got == stamps and all(len(k["keypoints"]) > 0 for _, _, k in probe.keypoints)
    finally:
        node.stop()
        probe.close()
