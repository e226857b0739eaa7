"""build_dataset on local folders and fake unpacked packages of real photos (no network): filters,
duplicates, the grouped hash split, the leave-source-out split, the deny-list, licences, the notice."""

import csv
import subprocess
from pathlib import Path

import build_dataset
import cv2
import numpy as np
import pytest
from build_dataset import DENYLIST, HELDOUT_SOURCES, jpeg_streams, main, split_by_source

from goodpoint_ros.io.image_files import sample_photo


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
    argv = ["--packages", "--pypi", "--no-skimage", "--folders", str(src), "--out", str(out), "--max-side", "320"]
    argv += ["--split", "hash"]
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
    none = ["--packages", "--pypi", "--no-skimage"]
    assert main([*none, "--folders", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such folder" in err
    assert main([*none, "--out", str(tmp_path)]) == 1


def _folder(root, names):
    root.mkdir(parents=True)
    for n in names:
        _write(root / f"{n}.png", sample_photo(n))
    return root


def test_leave_source_out_split_holds_out_whole_sources(tmp_path):
    assert split_by_source(["a", "b", "a", "c", "b"], ["b"]) == {1, 4}
    assert split_by_source(["a", "a"], []) == set()
    assert {"mate-backgrounds", "palapeli-data"}.isdisjoint(HELDOUT_SOURCES)
    a = _folder(tmp_path / "a", ("astronaut", "coffee", "rocket"))
    b = _folder(tmp_path / "b", ("chelsea", "brick"))
    out = tmp_path / "photos"
    base = ["--packages", "--pypi", "--no-skimage", "--folders", str(a), str(b), "--out", str(out)]
    assert main([*base, "--heldout-sources", "folder:b"]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert {(r["package"], r["split"]) for r in rows} == {("folder:a", "train"), ("folder:b", "heldout")}
    assert sorted(p.name for p in (out / "heldout").iterdir()) == sorted(
        Path(r["file"]).name for r in rows if r["split"] == "heldout"
    )
    # Nothing from the held-out sources (or everything) is an error, not a silent empty split.
    assert main([*base, "--heldout-sources", "folder:nothing"]) == 1
    assert main([*base, "--heldout-sources", "folder:a", "folder:b"]) == 1


def test_denied_packages_are_refused_before_any_download(tmp_path, monkeypatch, capsys):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"subprocess called: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    none = ["--packages", "--pypi", "--no-skimage", "--out", str(tmp_path / "o")]
    for argv in (
        ["--packages", "mate-backgrounds"],
        ["--pypi", "vismatch"],
        ["--pypi", "image-matching-models"],
        ["--packages", "opencv-doc", "palapeli-data"],
        ["--folders", str(tmp_path / "palapeli-data")],
        ["--heldout-sources", "mate-backgrounds"],
    ):
        assert main([*none, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "independent test set" in err
    assert DENYLIST == {"mate-backgrounds", "palapeli-data", "image-matching-models", "vismatch"}
    assert not DENYLIST & {s.name for s in build_dataset.SOURCES}
    with pytest.raises(build_dataset.DatasetError):
        build_dataset.unpack_package("mate-backgrounds", tmp_path)
    with pytest.raises(build_dataset.DatasetError):
        build_dataset.unpack_pypi(build_dataset.Source("vismatch", kind="pypi"), tmp_path)


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: photos/special/*.png
       data/coffee.png
Copyright: 2021 Someone Else
License: CC0-1.0

License: GPL-2+
 text
"""


def _fake_deb(cache, name, version, photos):
    """An already unpacked 'Debian package' in the builder's cache: no apt-get, no dpkg -x."""
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    (cache / "debs" / f"{name}_{version.replace(':', '%3a')}_all.deb").write_bytes(b"")
    root = cache / "unpacked" / name
    for rel, photo in photos.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _write(root / rel, sample_photo(photo))
    (root / "usr/share/doc" / name).mkdir(parents=True)
    (root / "usr/share/doc" / name / "copyright").write_text(COPYRIGHT)
    (root / ".done").touch()


def test_licences_and_notice_from_fake_packages(tmp_path):
    cache = tmp_path / "cache"
    _fake_deb(
        cache,
        "gp-fake-train",
        "1:2.0-1",
        {
            "usr/share/fake/photos/special/astronaut.png": "astronaut",
            "usr/share/fake/coffee.png": "coffee",
            "usr/share/fake/rocket.png": "rocket",
        },
    )
    _fake_deb(cache, "gp-fake-held", "0.5-2", {"usr/share/held/chelsea.png": "chelsea"})
    out, notice = tmp_path / "photos", tmp_path / "TRAINING_DATA.md"
    argv = ["--packages", "gp-fake-train", "gp-fake-held", "--pypi", "--no-skimage", "--cache", str(cache)]
    argv += ["--out", str(out), "--heldout-sources", "gp-fake-held", "--notice", str(notice)]
    assert main(argv) == 0
    rows = {Path(r["source"]).name: r for r in csv.DictReader(open(out / "manifest.csv"))}
    assert set(rows) == {"astronaut.png", "coffee.png", "rocket.png", "chelsea.png"}
    # DEP-5: the last matching paragraph wins; a pattern without wildcards matches by file name.
    assert rows["astronaut.png"]["licence"] == "CC0-1.0" and rows["coffee.png"]["licence"] == "CC0-1.0"
    assert rows["rocket.png"]["licence"] == "GPL-2+" and rows["chelsea.png"]["licence"] == "GPL-2+"
    assert rows["chelsea.png"]["split"] == "heldout" and rows["rocket.png"]["split"] == "train"
    for r in rows.values():
        assert {"file", "split", "package", "source", "licence", "width", "height"} <= set(r)
        assert (int(r["width"]), int(r["height"])) == cv2.imread(str(out / r["file"])).shape[1::-1]
    text = notice.read_text()
    assert "| gp-fake-train | deb | 1:2.0-1 | CC0-1.0 (2); GPL-2+ (1) | 3 | 0 |" in text
    assert "| gp-fake-held (held-out source) | deb | 0.5-2 | GPL-2+ (1) | 0 | 1 |" in text
    assert "271-photo" in text and "mate-backgrounds" in text


def test_jpeg_streams_are_carved_out_of_a_container():
    a = cv2.imencode(".jpg", sample_photo("coffee"))[1].tobytes()
    b = cv2.imencode(".jpg", cv2.resize(sample_photo("astronaut"), (96, 64)))[1].tobytes()
    blob = b"\x1e\xe7\x0f\x42header" + a + b"\x00junk\xff" + b + b"tail"
    found = jpeg_streams(blob)
    assert [(w, h) for _, w, h, _ in found] == [(600, 400), (96, 64)]
    assert found[0][3] == a and found[1][3] == b
