"""goodpoint-bag: a real bag written with rosbags goes in, an mcap bag with the node's layouts comes out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.rosbag2 import Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from goodpoint_ros.io.cloud_layout import read_keypoints, read_matches  # noqa: E402
from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.ros.player import camera_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # goodpoint-bag processes


def _write_bag(path: Path, frames, topic="/camera/image_raw", bad_at=None):
    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    stamps = []
    with Writer(path, version=8) as w:  # sqlite3, like a default `ros2 bag record` on Humble/Jazzy
        conn = w.add_connection(topic, Image.__msgtype__, typestore=store)
        for i, f in enumerate(frames):
            ns = 1_700_000_000_000_000_000 + i * 100_000_000
            stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
            data = np.ascontiguousarray(f).reshape(-1)
            step = f.shape[1] * 3
            if i == bad_at:
                data = data[:100]  # truncated frame
            msg = Image(Header(stamp, "cam"), f.shape[0], f.shape[1], "rgb8", 0, step, data)
            w.write(conn, ns, store.serialize_cdr(msg, Image.__msgtype__))
            stamps.append((stamp.sec, stamp.nanosec))
    return stamps


def _run(*args):
    exe = Path(sys.executable).with_name("goodpoint-bag")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "goodpoint_ros.cli.bag"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_bag_tool_writes_keypoints_and_matches(tmp_path):
    frames, _ = camera_sequence(sample_photo("astronaut"), 6, (160, 120), rate=30.0, motion=0.5)
    stamps = _write_bag(tmp_path / "in", frames, bad_at=3)
    out = _run(tmp_path / "in", tmp_path / "out", "--topic", "/camera/image_raw", "--model", "goodpoint_small",
               "--weights", "default", "--device", "cpu", "--max-keypoints", "200")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "1 undecodable" in out.stdout and "truncated" not in out.stdout
    assert list((tmp_path / "out").glob("*.mcap"))
    with AnyReader([tmp_path / "out"]) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert set(topics) == {"/goodpoint_extractor/keypoints", "/goodpoint_extractor/matches"}
        kps, ms = {}, []
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            if conn.topic.endswith("keypoints"):
                kps[key] = read_keypoints(msg)
            else:
                ms.append((key, read_matches(msg)))
    good = [s for i, s in enumerate(stamps) if i != 3]
    assert sorted(kps) == good  # every decodable frame, with its own stamp
    for k in kps.values():
        assert 0 < len(k["keypoints"]) <= 200 and k["descriptors"].shape[1] == 128
    assert [key for key, _ in ms] == good[1:]
    for key, m in ms:
        if len(m["matches"]):
            prev = kps[m["prev_stamp"]]
            assert good.index(m["prev_stamp"]) == good.index(key) - 1
            np.testing.assert_array_equal(m["pts0"], prev["keypoints"][m["matches"][:, 0]])
            np.testing.assert_array_equal(m["pts1"], kps[key]["keypoints"][m["matches"][:, 1]])


def test_bag_tool_errors_are_one_clear_line(tmp_path):
    frames, _ = camera_sequence(sample_photo("astronaut"), 1, (64, 48))
    _write_bag(tmp_path / "in", frames)
    out = _run(tmp_path / "in", tmp_path / "out", "--topic", "/nope", "--weights", "random")
    assert out.returncode == 2 and "no topic '/nope'" in out.stderr and "Traceback" not in out.stderr
    out = _run(tmp_path / "missing", tmp_path / "out2", "--topic", "/x")
    assert out.returncode == 2 and "no such bag" in out.stderr
