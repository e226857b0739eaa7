"""goodpoint-eval end to end on real photos: generated pairs, an HPatches-layout folder, CLI errors."""

import json

import cv2
import numpy as np
import pytest
from goodpoint_ros.training.evaluate import hpatches_pairs, main

from goodpoint_ros.io.image_files import sample_photo


@pytest.fixture()
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("astronaut", "coffee"):
        im = cv2.resize(sample_photo(name), (200, 150), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(d / f"{name}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return d


@pytest.mark.slow
def test_generated_pairs_end_to_end(photo_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    methods = ["goodpoint_small:random", "mdnet_small:random,detection_threshold=0.3", "orb"]
    argv = ["--photos", str(photo_dir), "--pairs", "2", "--max-keypoints", "300", "--output-dir", str(out)]
    assert main(argv + ["--methods", *methods]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["num_pairs"] == 2
    res = report["methods"]
    names = list(res)
    assert any(n.startswith("goodpoint_small (random weights)") for n in names)
    assert any(n.endswith("[per-set]") for n in names) and any(n.endswith("[full]") for n in names)
    # ORB on real photos under a mild homography: most matches are right and H is recovered.
    assert res["orb"]["mma@5px"] > 0.5
    assert res["orb"]["homography_accuracy@5px"] > 0.4
    assert 0 < res["orb"]["num_keypoints0"] <= 300
    full = next(v for k, v in res.items() if k.endswith("[full]"))
    assert "per_set_match_time_ratio" in full and 0.0 <= full["sep@3px"] <= 1.0
    table = (out / "results.md").read_text()
    assert "| orb |" in table and "MMA@3" in table
    assert "results.json" in capsys.readouterr().out
    # every method but the first against the first, on the same pairs (paired bootstrap)
    boot = report["bootstrap"]
    assert boot["reference"] == names[0] and set(boot["methods"]) == set(names[1:])
    for key in ("hm_rep_mma_hacc@3px", "mma@1px"):
        orb = boot["methods"]["orb"][key]
        diff = res["orb"][key] - res[names[0]][key]
        assert orb["difference"] == pytest.approx(diff) and orb["ci95"][0] <= orb["ci95"][1]
    hm = boot["methods"]["orb"]["hm_rep_mma_hacc@3px"]["difference"]
    assert f"- orb: HM(rep,MMA,H)@3 {hm:+.3f}" in table and f"MMA@1 {diff:+.3f}" in table


def test_hpatches_layout_reader(tmp_path):
    seq = tmp_path / "hp" / "v_astronaut"
    seq.mkdir(parents=True)
    im = cv2.cvtColor(sample_photo("astronaut")[::2, ::2], cv2.COLOR_RGB2BGR)  # 256x256
    cv2.imwrite(str(seq / "1.ppm"), im)
    H = np.array([[0.9, 0.05, 10.0], [-0.04, 0.95, 5.0], [1e-4, 0.0, 1.0]])
    h, w = im.shape[:2]
    cv2.imwrite(str(seq / "2.ppm"), cv2.warpPerspective(im, H, (w, h)))
    np.savetxt(seq / "H_1_2", H)
    pairs = list(hpatches_pairs(tmp_path / "hp", max_side=128))
    assert len(pairs) == 1 and pairs[0].image0.shape[:2] == (128, 128)
    # The homography follows the downscaling: S H S^-1 with S = diag(0.5, 0.5, 1).
    S = np.diag([0.5, 0.5, 1.0])
    assert np.allclose(pairs[0].H, S @ H @ np.linalg.inv(S))
    out = tmp_path / "eval"
    assert main(["--hpatches", str(tmp_path / "hp"), "--methods", "orb", "--output-dir", str(out)]) == 0
    orb = json.loads((out / "results.json").read_text())["methods"]["orb"]
    assert orb["homography_accuracy@3px"] == 1.0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--photos", "/nonexistent/folder", "--methods", "orb"], "no images"),
        (["--hpatches", "/nonexistent", "--methods", "orb"], "no such"),
        (["--methods", "nosuchmodel"], "unknown method"),
        (["--methods", "goodpoint_small,colour=3"], "colour"),
        (["--methods", "goodpoint_small:/nonexistent/weights.pt"], "weights.pt"),
    ],
)
def test_cli_errors_are_one_line(argv, needle, photo_dir, tmp_path, capsys):
    if "--photos" not in argv and "--hpatches" not in argv:
        argv = ["--photos", str(photo_dir), *argv]
    assert main([*argv, "--pairs", "1", "--output-dir", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.slow
def test_random_weight_runs_are_reproducible(photo_dir, tmp_path):
    results = []
    for run in ("a", "b"):
        out = tmp_path / run
        argv = ["--photos", str(photo_dir), "--pairs", "1", "--max-keypoints", "200", "--output-dir", str(out)]
        assert main([*argv, "--methods", "goodpoint_small:random"]) == 0
        (res,) = json.loads((out / "results.json").read_text())["methods"].values()
        results.append({k: v for k, v in res.items() if "_ms" not in k and "time" not in k})
    assert results[0] == results[1]


def test_pairs_at_camera_resolution(photo_dir):
    from goodpoint_ros.training.evaluate import homography_pairs, photo_sources

    pairs = list(homography_pairs(photo_sources(photo_dir), 3, seed=1, max_side=None, size=(320, 240)))
    assert [p.image0.shape[:2] for p in pairs] == [(240, 320)] * 3
    assert all(p.image1.shape == p.image0.shape for p in pairs)
    with pytest.raises(SystemExit):
        main(["--photos", str(photo_dir), "--size", "640by480"])


def test_zoomed_pairs_change_scale_both_ways(photo_dir):
    """--zoom: every warp's scale (sqrt of the Jacobian's determinant at the centre) lies in
    [1/HI, 1/LO] or [LO, HI]; without it the moderate warps stay near 1."""
    from goodpoint_ros.training.evaluate import homography_pairs, photo_sources
    from test_training_data import local_scale

    def scales(**kw) -> np.ndarray:
        pairs = homography_pairs(photo_sources(photo_dir), 12, seed=3, max_side=None, size=(320, 240), **kw)
        return np.array([local_scale(p.H, 160.0, 120.0) for p in pairs])

    moderate, zoomed = scales(), scales(zoom_factors=(1.5, 2.5))
    assert np.all((moderate > 0.8) & (moderate < 1.25))
    assert np.all(((zoomed > 1.3) & (zoomed < 2.9)) | ((zoomed > 1 / 2.9) & (zoomed < 1 / 1.3)))
    assert (zoomed > 1).any() and (zoomed < 1).any()
    with pytest.raises(SystemExit):
        main(["--photos", str(photo_dir), "--zoom", "0.5", "2"])


@pytest.mark.slow
def test_precision_runs_report_parity_with_the_fp32_run(photo_dir, tmp_path):
    """A model listed at fp32 (torch) and again at another precision: the second gets keypoint
    overlap and descriptor cosine against the first, on the same images, in the JSON and table."""
    out = tmp_path / "eval"
    methods = ["goodpoint_small", "goodpoint_small,precision=bf16", "mdnet_small", "mdnet_small,precision=bf16"]
    argv = ["--photos", str(photo_dir), "--pairs", "2", "--max-keypoints", "200", "--output-dir", str(out)]
    assert main(argv + ["--methods", *methods]) == 0
    res = json.loads((out / "results.json").read_text())["methods"]
    assert "parity" not in res["goodpoint_small"]
    for name, ref in (
        ("goodpoint_small,precision=bf16", "goodpoint_small"),
        ("mdnet_small,precision=bf16 [full]", "mdnet_small [full]"),
    ):
        p = res[name]["parity"]
        assert p["reference"] == ref
        # bf16 rounds the network (emulated where the CPU lacks it): most points stay put
        assert 0.5 < p["overlap"] <= 1.0 and 0.9 < p["cosine_median"] <= 1.0 + 1e-6
    assert "Parity with the fp32 torch run" in (out / "results.md").read_text()
