"""goodpoint-eval --multiview: COLMAP reconstructions of a committed image set, its errors, and the
relative-pose accuracy arithmetic."""

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from goodpoint_ros.training.evaluate import main
from goodpoint_ros.training.multiview import (
    image_sets,
    pose_auc,
    quaternion_matrix,
    read_poses,
    relative_pose_errors,
)

SET = Path(__file__).resolve().parents[1] / "eval_sets" / "multiview" / "nineveh_panel17"  # a dev set


@pytest.fixture()
def six_images(tmp_path):
    """The first six photos of a dev set: neighbours with wide overlap, a few seconds of SfM."""
    d = tmp_path / "nineveh6"
    d.mkdir()
    for f in sorted(SET.glob("*.jpg"))[:6]:
        shutil.copy(f, d / f.name)
    return d


@pytest.mark.slow
def test_reconstructs_a_real_set(six_images, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--multiview", str(six_images), "--methods", "sift", "goodpoint_small", "--max-side", "640"]
    argv += ["--max-keypoints", "1024", "--seeds", "2", "--threads", "1", "--output-dir", str(out), "--keep-models"]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    s = report["sets"]["nineveh6"]
    assert s["images"] == 6 and s["reference_poses"] is None and report["seeds"] == [0, 1]
    for name in ("sift", "goodpoint_small"):
        r = s["methods"][name]
        # Measured here: both register 6/6 with every seed. Floors leave room for other CPUs.
        assert r["registered_min"] >= 4 and r["registered"] <= 6, (name, r)
        assert r["points3D"] > 200 and r["track_length"] > 2.0 and r["reprojection_error"] < 2.0, (name, r)
        assert len(r["runs"]) == 2 and 0 < r["keypoints"] <= 1024
        for seed, run in enumerate(r["runs"]):  # --keep-models: each run's map, as COLMAP reads it
            kept = out / "models" / "nineveh6" / name / f"seed{seed}"
            assert (kept / "database.db").is_file()
            assert pycolmap.Reconstruction(kept).num_reg_images() == run["registered"], (name, seed)
    table = (out / "results.md").read_text()
    assert "### nineveh6 (6 images" in table and "| sift |" in table
    assert "results.json" in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("goodpoint-eval: error:") and "\n" not in err, err
    return err


def test_missing_folder_and_empty_set_are_one_line(tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "eval"), "--methods", "sift"]
    assert main(["--multiview", str(tmp_path / "nowhere"), *out]) == 2
    assert "no such folder" in _one_error_line(capsys)
    empty = tmp_path / "empty"
    (empty / "scene").mkdir(parents=True)
    assert main(["--multiview", str(empty), *out]) == 2
    assert "no images" in _one_error_line(capsys)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(SET.glob("*.jpg"))[0], one)
    assert main(["--multiview", str(one), *out]) == 2
    assert "at least 2" in _one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error: a flag of another mode
        main(["--photos", str(SET), "--keep-models", *out])
    assert exit_info.value.code == 2 and "--keep-models applies to --multiview" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "results.json").exists()


def test_missing_pycolmap_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError
    assert main(["--multiview", str(SET), "--output-dir", str(tmp_path), "--methods", "sift"]) == 2
    assert "pip install pycolmap==" in _one_error_line(capsys)


def test_image_sets_one_or_many(tmp_path):
    assert image_sets(SET) == [("nineveh_panel17", SET)]
    root = tmp_path / "sets"
    for name in ("b", "a"):
        (root / name).mkdir(parents=True)
        shutil.copy(sorted(SET.glob("*.jpg"))[0], root / name)
    (root / "notes").mkdir()  # no images: not a set
    assert [n for n, _ in image_sets(root)] == ["a", "b"]


def _pose(axis: str, degrees: float, t) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rot = {"y": [[c, 0, s], [0, 1, 0], [-s, 0, c]], "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return np.array(rot), np.array(t, float)


def test_relative_pose_errors_and_auc():
    ref = {"a": _pose("y", 0, [0, 0, 0]), "b": _pose("y", 10, [1, 0, 0]), "c": _pose("y", 20, [2, 0, 1])}
    # The same cameras in another world frame and scale: no error.
    w, scale = _pose("z", 30, [0, 0, 0])[0], 3.0
    est = {n: (r @ w.T, scale * t) for n, (r, t) in ref.items()}
    assert np.allclose(relative_pose_errors(est, ref, ["a", "b", "c"]), 0.0, atol=1e-6)
    # b rotated 4 degrees more: pairs (a, b) and (b, c) are off by 4 degrees; c missing: inf.
    est["b"] = (_pose("y", 4, [0, 0, 0])[0] @ est["b"][0], est["b"][1])
    del est["c"]
    errors = relative_pose_errors(est, ref, ["a", "b", "c", "d"])
    assert len(errors) == 3 and math.isinf(errors[1]) and math.isinf(errors[2]) and errors[0] >= 4.0 - 1e-6
    assert pose_auc(np.zeros(4)) == pytest.approx([1.0, 1.0, 1.0])
    assert pose_auc(np.full(3, math.inf)) == pytest.approx([0.0, 0.0, 0.0])
    # Errors 0 and 10 degrees (SuperGlue's pose_auc): recall 1/2 at 0 rises linearly to 1 at 10, and
    # stays flat from the last error below a threshold up to it (so 1/2 all the way to 5).
    assert pose_auc(np.array([0.0, 10.0]), [5.0, 20.0]) == pytest.approx([0.5, 0.875])
    assert math.isnan(pose_auc(np.zeros(0))[0])


def test_poses_file(tmp_path):
    f = tmp_path / "poses.txt"
    f.write_text("# name qw qx qy qz tx ty tz\nx.jpg 1 0 0 0 1 2 3\ny.jpg 0.7071068 0 0.7071068 0 0 0 1\n")
    poses = read_poses(f)
    assert np.allclose(poses["x.jpg"][0], np.eye(3)) and np.allclose(poses["x.jpg"][1], [1, 2, 3])
    assert np.allclose(poses["y.jpg"][0], _pose("y", 90, [0, 0, 0])[0], atol=1e-6)
    assert np.allclose(quaternion_matrix([2, 0, 0, 0]), np.eye(3))
    f.write_text("x.jpg 1 0 0\n")
    with pytest.raises(RuntimeError, match="poses.txt:1"):
        read_poses(f)
