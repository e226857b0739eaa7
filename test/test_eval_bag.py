"""goodpoint-eval --bag: pairs and frame-to-frame tracking on the final held-out time range of a bag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from goodpoint_ros.training.evaluate import main

from goodpoint_ros.io.image_files import sample_photo
from goodpoint_ros.ros.player import camera_sequence

FRAMES, PERIOD_NS = 40, 10**8  # 4 s of a 10 Hz camera


def write_bag(path: Path, images: list[np.ndarray]) -> None:
    """An mcap bag: sensor_msgs/Image rgb8 on /camera/image_raw, frame i at bag time i * PERIOD_NS."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection("/camera/image_raw", Image.__msgtype__, typestore=ts)
        for i, im in enumerate(images):
            h, wd = im.shape[:2]
            msg = Image(
                header=Header(stamp=Time(sec=i // 10, nanosec=(i % 10) * PERIOD_NS), frame_id="cam"),
                height=h, width=wd, encoding="rgb8", is_bigendian=0, step=wd * 3,
                data=np.ascontiguousarray(im).reshape(-1),
            )  # fmt: skip
            w.write(cam, i * PERIOD_NS, ts.serialize_cdr(msg, Image.__msgtype__))


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    frames, _ = camera_sequence(sample_photo("astronaut"), FRAMES, (160, 120))
    path = tmp_path_factory.mktemp("bags") / "cam"
    write_bag(path, frames)
    return path


def test_bag_pairs_and_tracking_on_the_held_out_range(bag, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--bag", str(bag), "--holdout", "0.5", "--pairs", "4", "--threads", "1", "--output-dir", str(out)]
    assert main([*argv, "--methods", "orb", "goodpoint_small"]) == 0
    report = json.loads((out / "results.json").read_text())

    # Only the second half of the bag's duration: bag time in [0.5 * 3.9 s, 3.9 s] is frames 20..39.
    end = (FRAMES - 1) * PERIOD_NS
    held = [i for i in range(FRAMES) if i * PERIOD_NS >= 0.5 * end]
    assert len(held) == 20
    b = report["bag"]
    assert b["topic"] == "/camera/image_raw" and b["frames"] == len(held) and b["span"] == [0.5, 1.0]
    assert b["first_stamp_ns"] == held[0] * PERIOD_NS and b["last_stamp_ns"] == held[-1] * PERIOD_NS
    assert report["num_pairs"] == 4 and report["max_side"] is None  # frames at their own size

    # Homography-pair metrics, as with --photos.
    assert set(report["methods"]) == {"orb", "goodpoint_small"}
    for s in report["methods"].values():
        assert 0.0 < s["repeatability"] <= 1.0 and 0.0 <= s["mma@3px"] <= 1.0

    # Tracking over the held-out range, in time order, one entry per method.
    tracking = report["tracking"]["methods"]
    assert set(tracking) == {"orb", "goodpoint_small"}
    for t in tracking.values():
        assert t["frames"] == len(held) and t["matched_frames"] == len(held) - 1 and t["restarts"] == 0
        assert t["keypoints"] > 0 and t["matches"] > 0 and t["inliers"] > 0
        assert 0.0 < t["inlier_ratio"] <= 1.0
        assert t["track_length"] >= 1.0 and t["track_length_2plus"] >= 2.0 and t["tracks"] >= 1
        assert t["track_length_2plus"] <= len(held)
    table = (out / "results.md").read_text()
    assert "Tracking over the held-out range" in table and "| orb | 20 |" in table
    assert "track len (all ids)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--holdout", "0.01"], "usable frames"),  # 0.039 s held out: the last frame only
        (["--topic", "/nope"], "no topic '/nope'"),
    ],
)
def test_bag_refusals_are_one_line(bag, tmp_path, capsys, extra, needle):
    argv = ["--bag", str(bag), *extra, "--methods", "orb", "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("goodpoint-eval: error:") and needle in err
    assert not (tmp_path / "o").exists()


def test_holdout_outside_zero_one_is_a_usage_error(bag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--bag", str(bag), "--holdout", "1.5", "--methods", "orb"])
    assert exc.value.code == 2 and "--holdout" in capsys.readouterr().err
