"""build_dataset on a local folder of real photos: filters, duplicates, grouped split, manifest."""

import csv

import cv2
import numpy as np

from goodpoint_ros.images import sample_photo
from training.build_dataset import main


def _write(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)


def test_folder_build(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    names = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "gravel", "grass")
    for n in names:
        _write(src / f"{n}.png", sample_photo(n))
    _write(src / "copy_of_coffee.png", sample_photo("coffee"))  # exact duplicate
    _write(src / "coffee_small.jpg", cv2.resize(sample_photo("coffee"), (300, 200)))  # resized duplicate
    _write(src / "flat.png", np.full((300, 300, 3), 128, np.uint8))  # not a photo
    _write(src / "tiny.png", sample_photo("astronaut")[:100, :100])  # too small
    left, right = sample_photo("motorcycle_left"), sample_photo("motorcycle_right")
    _write(src / "scene_left.png", left)
    _write(src / "scene_right.png", right)
    out = tmp_path / "photos"
    argv = ["--packages", "--no-skimage", "--folders", str(src), "--out", str(out), "--max-side", "320"]
    assert main([*argv, "--min-heldout", "3"]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    kept = {r["source"].lstrip("/") for r in rows}
    assert "flat.png" not in kept and "tiny.png" not in kept
    assert len(kept & {"coffee.png", "copy_of_coffee.png", "coffee_small.jpg"}) == 1
    assert len(rows) == len(names) + 2
    splits = {r["split"] for r in rows}
    assert splits == {"train", "heldout"}
    assert sum(r["split"] == "heldout" for r in rows) >= 3
    # The stereo pair shares a group, hence a split.
    pair = [r for r in rows if r["source"].startswith("/scene_")]
    assert len(pair) == 2 and pair[0]["group"] == pair[1]["group"] and pair[0]["split"] == pair[1]["split"]
    for r in rows:
        im = cv2.imread(str(out / r["file"]), cv2.IMREAD_UNCHANGED)
        assert im is not None and max(im.shape[:2]) <= 320 and min(im.shape[:2]) >= 100
    # Reproducible: a second build gives the same manifest.
    first = (out / "manifest.csv").read_text()
    assert main([*argv, "--min-heldout", "3", "--clean"]) == 0
    assert (out / "manifest.csv").read_text() == first


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["--packages", "--no-skimage", "--folders", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such folder" in err
    assert main(["--packages", "--no-skimage", "--out", str(tmp_path)]) == 1
