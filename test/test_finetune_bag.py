"""From a bag to a node running retrained weights, in the three commands of docs/retraining.md:
``goodpoint-train --from-bag``, ``goodpoint-eval --bag``, ``extractor -p weights:=...``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rosbags")

import torch  # noqa: E402
from goodpoint_ros.training.train import main as train_main  # noqa: E402
from probe import NodeProcess, Probe  # noqa: E402
from test_training_data import write_bag  # noqa: E402

from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.models.checkpoint import load_model  # noqa: E402
from goodpoint_ros.ros.player import camera_sequence  # noqa: E402

pytestmark = pytest.mark.slow
DOMAIN = 93


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    frames, _ = camera_sequence(sample_photo("coffee"), 100, (160, 120), rate=10.0)
    path = tmp_path_factory.mktemp("bag") / "robot"
    write_bag(path, frames, "mcap")
    return path


def test_bag_to_node_in_three_commands(bag: Path, tmp_path: Path):
    out = tmp_path / "runs"
    args = ["--from-bag", str(bag), "--topic", "/camera/image_raw", "--steps", "4", "--no-progress"]
    assert train_main([*args, f"train.output_dir={out}", "train.threads=1", "data.batch_size=2"]) == 0
    run = out / "goodpoint_small_robot"
    card = (run / "model.md").read_text()
    assert "first 80% of its duration" in card and "Steps: 4" in card
    tuned, stock = load_model("goodpoint_small", run / "model.pt"), load_model("goodpoint_small", "default")
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, stock.state_dict()[k])]
    assert changed, "fine-tuning started from the shipped weights and changed them"

    ev = subprocess.run(
        [sys.executable, "-m", "goodpoint_ros.training.evaluate", "--bag", str(bag), "--pairs", "2",
         "--methods", "goodpoint_small", f"goodpoint_small:{run / 'model.pt'}", "--output-dir", str(tmp_path / "eval"), "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]

    node = NodeProcess(DOMAIN, {"weights": str(run / "model.pt"), "device": "cpu", "qos": "reliable"})
    probe = Probe(DOMAIN)
    try:
        probe.wait_ready(node)
        pub = probe.publisher("/image", best_effort=False)
        probe.wait_subscribed(pub)
        from goodpoint_ros.ros.conversions import numpy_to_image

        frames, _ = camera_sequence(sample_photo("coffee"), 3, (160, 120), rate=10.0)
        for frame in frames:
            pub.publish(numpy_to_image(frame, "rgb8"))
            probe.spin(0.5)
        assert probe.spin_until(lambda: len(probe.keypoints) >= 1, 30.0), node.stop()[-2000:]
        assert len(probe.keypoints[-1][2]["keypoints"]) > 0
    finally:
        node.stop()
        probe.close()


def test_a_bag_with_too_few_frames_is_refused_in_one_line(tmp_path: Path, capsys):
    frames, _ = camera_sequence(sample_photo("coffee"), 20, (160, 120))
    write_bag(tmp_path / "short", frames, "mcap")
    code = train_main(["--from-bag", str(tmp_path / "short"), "--steps", "2", f"train.output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "usable frames" in err[0] and "need at least 30" in err[0], err
    assert not (tmp_path / "goodpoint_small_short").exists()
    missing = train_main(["--from-bag", str(tmp_path / "short"), "--topic", "/nope"])
    assert missing == 2 and "no topic '/nope'" in capsys.readouterr().err
