"""One settings path: the node and goodpoint-bag, given the same parameters and frames, publish
the same keypoints and matches, byte for byte (``settings.ExtractorSettings`` / ``PipelineSettings``
and ``cloud_layout.frame_records`` are the only way either builds them)."""

from __future__ import annotations

import pytest

pytest.importorskip("rosbags")

import numpy as np  # noqa: E402
from probe import NodeProcess, Probe  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from test_node_bag import _run, _write_bag  # noqa: E402

from goodpoint_ros.io.cloud_layout import read_keypoints, read_matches  # noqa: E402
from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.ros.player import camera_sequence  # noqa: E402

pytestmark = pytest.mark.slow
DOMAIN = 91
# Not the defaults: a tool that dropped any of these would give other keypoints or matches.
SETTINGS = {
    "model": "goodpoint_small",
    "weights": "default",
    "device": "cpu",
    "precision": "fp32",  # the same kernels in both processes, whatever this CPU has
    "num_threads": 1,
    "max_keypoints": 300,
    "detection_threshold": 0.01,
    "nms_radius": 2,
    "subpixel_radius": 1,
    "match_ratio": 0.9,
    "verification_method": "fundamental",
    "verification_threshold": 2.0,
}


def _bag_outputs(path) -> tuple[dict, dict]:
    kps, ms = {}, {}
    with AnyReader([path]) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            (kps if conn.topic.endswith("keypoints") else ms)[key] = (
                read_keypoints(msg) if conn.topic.endswith("keypoints") else read_matches(msg)
            )
    return kps, ms


def _node_outputs(frames, stamps) -> tuple[dict, dict]:
    from builtin_interfaces.msg import Time

    from goodpoint_ros.ros.conversions import numpy_to_image

    node = NodeProcess(DOMAIN, {**SETTINGS, "publish_odometry": False, "publish_tracks": False, "qos": "reliable"})
    probe = Probe(DOMAIN)
    try:
        probe.wait_ready(node)
        pub = probe.publisher("/image", best_effort=False)
        probe.wait_subscribed(pub)
        for frame, (sec, nsec) in zip(frames, stamps):  # one at a time: keep-latest drops nothing
            msg = numpy_to_image(frame, "rgb8")
            msg.header.stamp, msg.header.frame_id = Time(sec=sec, nanosec=nsec), "cam"
            pub.publish(msg)
            got = probe.spin_until(lambda s=(sec, nsec): any(
                (h.stamp.sec, h.stamp.nanosec) == s for _, h, _ in probe.keypoints), 60.0)  # fmt: skip
            assert got, f"no keypoints for {sec}.{nsec}:\n{node.stop()[-2000:]}"
        probe.spin(1.0)  # the last frame's matches
        key = lambda h: (h.stamp.sec, h.stamp.nanosec)  # noqa: E731
        return {key(h): k for _, h, k in probe.keypoints}, {key(h): m for _, h, m in probe.matches}
    finally:
        node.stop()
        probe.close()


def test_node_and_bag_tool_give_the_same_keypoints_and_matches_for_the_same_settings(tmp_path):
    frames, _ = camera_sequence(sample_photo("astronaut"), 5, (320, 240), rate=30.0, motion=0.5)
    stamps = _write_bag(tmp_path / "in", frames)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    out = _run(tmp_path / "in", tmp_path / "out", "--topic", "/camera/image_raw", *flags)
    assert out.returncode == 0, out.stderr
    bag_kps, bag_ms = _bag_outputs(tmp_path / "out")
    node_kps, node_ms = _node_outputs(frames, stamps)
    assert sorted(bag_kps) == sorted(node_kps) == sorted(stamps)
    assert sorted(bag_ms) == sorted(node_ms) == sorted(stamps[1:])
    for s in stamps:
        a, b = bag_kps[s], node_kps[s]
        assert 50 < len(a["keypoints"]) <= 300
        for field in ("keypoints", "scores", "descriptors", "track_ids"):
            np.testing.assert_array_equal(a[field], b[field], err_msg=f"{field} at {s}")
    for s in stamps[1:]:
        a, b = bag_ms[s], node_ms[s]
        assert len(a["matches"]) > 20
        for field in ("matches", "inliers", "distances"):
            np.testing.assert_array_equal(a[field], b[field], err_msg=f"{field} at {s}")


def test_pyramid_parameter_reaches_the_model_and_minus_one_restores_it():
    """pyramid_min_size: N > 0 runs the image pyramid, 0 one scale, -1 the model's own default;
    the onnxruntime backend (one-scale graph) is refused before anything loads."""
    from goodpoint_ros.settings import ExtractorSettings

    bad = ExtractorSettings.from_params({"backend": "onnxruntime", "pyramid_min_size": 256}).problems()
    assert bad is not None and bad[0] == "pyramid_min_size" and "torch" in bad[1]
    assert ExtractorSettings.from_params({"backend": "onnxruntime", "pyramid_min_size": 0}).problems() is None
    frontend, _ = ExtractorSettings.from_params(
        {"model": "goodpoint_small", "pyramid_min_size": 160, "num_threads": 1}
    ).build()
    model = frontend.extractor.model
    assert model.pyramid_scales(480, 640) == pytest.approx([1.0, 2**-0.5, 0.5, 2**-1.5])
    frontend.apply({"pyramid_min_size": 160, "pyramid_levels_up": 1})  # one level enlarged by sqrt(2)
    assert model.pyramid_scales(480, 640) == pytest.approx([2**0.5, 1.0, 2**-0.5, 0.5, 2**-1.5])
    assert model.pyramid_scales(480, 640)[1] == 1.0  # exactly: the input level runs without resizing
    frontend.apply({"pyramid_min_size": -1, "pyramid_levels_up": -1})
    assert model.pyramid_scales(480, 640) == [1.0]
