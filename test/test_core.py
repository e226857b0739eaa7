"""Core library behaviour: detection post-processing, matching, checkpoints, CLI contract."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goodpoint_ros.backends.torch_backend import TorchExtractor
from goodpoint_ros.models import build_model
from goodpoint_ros.models.checkpoint import CheckpointError, load_model, read_checkpoint, save_weights
from goodpoint_ros.models.features import (
    extract_batch,
    nms_mask,
    pad_to_multiple,
    prepare_image,
    refine_keypoints,
)
from goodpoint_ros.vo.matching import _mutual_nn, match_mnn, match_per_set


def test_peak_in_odd_sized_image_is_reported_at_its_pixel():
    """A single peak in a padded odd-sized image comes back at its exact (x, y)."""
    model = build_model("goodpoint_small", {"max_keypoints": 10, "detection_threshold": 0.5}).eval()
    h, w = 61, 83  # padded to 64 x 88
    batch, sizes = pad_to_multiple([torch.zeros(1, h, w)], 8)
    heat = torch.zeros(1, 1, *batch.shape[-2:])
    heat[0, 0, 37, 51] = 0.9  # y=37, x=51
    heat[0, 0, 62, 85] = 0.95  # inside the padding: must be ignored
    dense = {"heatmap": heat, "descriptors": F.normalize(torch.randn(1, 128, 8, 11), dim=1)}
    (f,) = model.detect(dense, sizes)
    assert f["keypoints"].tolist() == [[51.0, 37.0]]
    assert f["descriptors"].shape == (1, 128)
    assert torch.allclose(f["descriptors"].norm(dim=1), torch.ones(1))


def test_subpixel_refinement_recovers_an_off_grid_peak():
    """A blob centred between pixels is found at its centre, not at the nearest pixel."""
    h, w = 40, 50
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    centres = [(20.3, 12.6), (2.2, 30.0)]  # the second sits next to the left border
    heat = sum(torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 0.8**2)) for cx, cy in centres)[None, None]
    integer = torch.tensor([[[[20.0, 13.0], [2.0, 30.0]]]])
    refined = refine_keypoints(heat, integer, 2)
    assert torch.allclose(refined[0, 0, 0], torch.tensor([20.3, 12.6]), atol=0.05)
    assert (refined[0, 0, 1] - torch.tensor([2.2, 30.0])).abs().max() < 0.3  # window cut by the border
    assert torch.equal(refine_keypoints(heat, integer, 0), integer)  # radius 0: off
    # through a model: refinement is on by default; radius 0 reports the peak pixel
    model = build_model("goodpoint_small", {"max_keypoints": 1, "detection_threshold": 0.0}).eval()
    one_blob = F.pad(heat * (xs > 10), (0, 6))  # 40 x 56: a multiple of the stride
    dense = {"heatmap": one_blob, "descriptors": torch.randn(1, 128, 5, 7)}
    sizes = torch.tensor([[40, 56]])
    assert model.conf["subpixel_radius"] == 2
    assert torch.allclose(model.detect(dense, sizes)[0]["keypoints"], torch.tensor([[20.3, 12.6]]), atol=0.05)
    model.set_detection(subpixel_radius=0)
    assert model.detect(dense, sizes)[0]["keypoints"].tolist() == [[20.0, 13.0]]


def test_subpixel_refinement_ignores_the_score_floor():
    """A peak on a raised floor (a broad background response) is still found at its centre:
    the plain score-weighted mean of the window is pulled two thirds of the way back to the
    integer pixel by the floor's mass."""
    ys, xs = torch.meshgrid(torch.arange(20).float(), torch.arange(20).float(), indexing="ij")
    heat = (0.3 + torch.exp(-((xs - 10.4) ** 2 + (ys - 9.7) ** 2) / (2 * 0.8**2)))[None, None]
    refined = refine_keypoints(heat, torch.tensor([[[[10.0, 10.0]]]]), 2)
    assert torch.allclose(refined[0, 0, 0], torch.tensor([10.4, 9.7]), atol=0.08)


def test_nms_never_keeps_two_points_closer_than_radius():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 1, 50, 70, generator=g)
    scores[0, 0, 10:20, 10:20] = 1.0  # a plateau of ties
    for r in (1, 2, 4):
        keep = nms_mask(scores, r)
        for b in range(2):
            pts = torch.nonzero(keep[b, 0]).float()
            d = torch.cdist(pts, pts) + torch.eye(len(pts)) * 1e9
            assert d.min() > r
        assert keep[0, 0, 10:20, 10:20].sum() >= 1  # the plateau keeps at least one point


def test_mnn_returns_exactly_the_constructed_pairs():
    g = torch.Generator().manual_seed(1)
    d1 = F.normalize(torch.randn(40, 32, generator=g), dim=1)
    perm = torch.randperm(40, generator=g)[:25]
    d0 = F.normalize(d1[perm] + 0.05 * torch.randn(25, 32, generator=g), dim=1)
    m, dist = match_mnn(d0, d1)
    assert sorted(map(tuple, m.tolist())) == sorted((i, int(p)) for i, p in enumerate(perm))
    assert (dist < 0.5).all()
    m_strict, _ = match_mnn(d0, d1, max_distance=0.0)
    assert len(m_strict) == 0


def test_mnn_equals_the_arg_max_definition_and_keeps_one_row_per_tied_column():
    g = torch.Generator().manual_seed(3)
    d0 = F.normalize(torch.randn(120, 16, generator=g), dim=1)
    d1 = F.normalize(torch.randn(150, 16, generator=g), dim=1)
    sim = d0 @ d1.t()
    nn01, nn10 = sim.argmax(1), sim.argmax(0)
    want = [(i, int(j)) for i, j in enumerate(nn01) if int(nn10[j]) == i]
    assert match_mnn(d0, d1)[0].tolist() == [list(p) for p in want]
    # duplicate descriptors (equal up to the product's rounding): one match per descriptor of 1
    dup = torch.cat([d1[:5], d1[:5]])
    m, dist = match_mnn(dup, d1)
    assert sorted(m[:, 1].tolist()) == list(range(5))
    assert ((m[:, 0] % 5) == m[:, 1]).all() and (dist < 1e-3).all()
    keep, nn01, _ = _mutual_nn(torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.5]]]), None, None)
    assert keep.tolist() == [[True, False, True]] and nn01.tolist() == [[0, 0, 1]]  # exact tie: first row


@pytest.mark.parametrize("kwargs", [{}, {"ratio": 0.95}, {"max_distance": 1.2}, {"ratio": 0.9, "max_distance": 1.3}])
def test_per_set_matching_equals_full_matching_restricted_to_each_set(kwargs):
    g = torch.Generator().manual_seed(2)
    d0 = F.normalize(torch.randn(300, 16, generator=g), dim=1)
    d1 = F.normalize(torch.randn(280, 16, generator=g), dim=1)
    det0 = torch.randint(0, 3, (300,), generator=g)
    det1 = torch.randint(0, 3, (280,), generator=g)
    det1[det1 == 2] = 0
    det1[7] = 2  # uneven sets, one with a single keypoint (no second neighbour for the ratio test)
    cases = [(det0, det1, 4)]  # set 3 is empty in both
    cases.append((torch.arange(300) % 2, torch.arange(280) % 2, 2))  # equal sets: the unpadded path
    for det0, det1, n in cases:
        _check_per_set(d0, det0, d1, det1, n, kwargs)


def _check_per_set(d0, det0, d1, det1, n, kwargs):
    got, dist = match_per_set(d0, det0, d1, det1, n, **kwargs)
    want, want_dist = [], []
    for s in range(n):
        i0, i1 = torch.nonzero(det0 == s)[:, 0], torch.nonzero(det1 == s)[:, 0]
        m, d = match_mnn(d0[i0], d1[i1], **kwargs)
        want += [(int(i0[a]), int(i1[b])) for a, b in m.tolist()]
        want_dist += d.tolist()
    assert len(want) > 20
    assert list(map(tuple, got.tolist())) == want  # same pairs, in set order
    assert torch.allclose(dist, torch.tensor(want_dist), atol=1e-6)
    assert (det0[got[:, 0]] == det1[got[:, 1]]).all()


@pytest.mark.parametrize("name", ["goodpoint_small", "mdnet_small"])
def test_weights_round_trip_bit_exactly(tmp_path, name):
    model = build_model(name)
    path = tmp_path / "w.pt"
    save_weights(model, path, steps=3)
    loaded = load_model(name, path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_checkpoint(path)["steps"] == 3


def test_corrupt_truncated_and_mismatched_weights_raise_a_clear_error(tmp_path):
    model = build_model("goodpoint_small")
    good = tmp_path / "good.pt"
    save_weights(model, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=path.name):
            load_model("goodpoint_small", path)
    with pytest.raises(CheckpointError, match="'mdnet' was requested"):
        load_model("mdnet", good)
    ckpt = read_checkpoint(good)
    ckpt["state_dict"]["detector.1.weight"] = torch.zeros(3, 3, 1, 1)
    bad = tmp_path / "shape.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model("goodpoint_small", bad)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "goodpoint_ros/1", "state_dict": {}, "x": subprocess.Popen}, evil)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_model("goodpoint_small", evil)


def test_prepare_image_accepts_any_input():
    rgb8 = np.random.default_rng(0).integers(0, 255, (31, 47, 3), dtype=np.uint8)
    for image in (rgb8, rgb8[..., 0], rgb8.astype(np.uint16) * 257, rgb8 / 255.0, np.dstack([rgb8, rgb8[..., :1]])):
        for c in (1, 3):
            t = prepare_image(image, c)
            assert t.shape == (c, 31, 47) and t.dtype == torch.float32
            assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0


@pytest.mark.parametrize("name", ["goodpoint_small", "mdnet_small"])
def test_extraction_contract_on_a_real_photo(photo, name):
    conf = {"max_keypoints": 200, "detection_threshold": 0.0}
    # fp32: the batched-vs-single check below has fp32 margins (auto may pick bf16 here, whose
    # batched kernels round differently; test_precision covers bf16's parity)
    ex = TorchExtractor(name, weights="random", device="cpu", conf=conf, precision="fp32")
    img = photo[:237, :311]  # odd size
    f = ex.extract_numpy(img)
    k = len(f["keypoints"])
    assert 0 < k <= 200
    assert f["keypoints"].dtype == np.float32 and f["keypoints"].shape == (k, 2)
    assert f["descriptors"].shape[0] == k and np.allclose(np.linalg.norm(f["descriptors"], axis=1), 1, atol=1e-4)
    assert (f["keypoints"][:, 0] < 311).all() and (f["keypoints"][:, 1] < 237).all()
    assert (np.diff(f["scores"]) <= 0).all()
    # batched extraction (same-size images, as in training) gives the single-image result
    many = ex.extract_many([img, np.ascontiguousarray(img[::-1])])
    # Random weights give nearly flat heatmaps (MD-Net: 200 scores within 0.05) full of near ties;
    # the batched conv's float noise (its kernels differ from the single image's and between CPUs)
    # may make NMS keep a tied neighbour, and that can cascade. So compare properties, not floats:
    # the score distributions match to a small share of their span, and nearly every keypoint is
    # found at the same place. A wrong image, order or scale in the batch fails both by far.
    a, b = f["scores"], many[0]["scores"].numpy()
    assert len(b) == k and np.abs(a - b).max() <= 0.05 * (a.max() - a.min()) + 1e-5, np.abs(a - b).max()
    near = np.linalg.norm(many[0]["keypoints"].numpy()[:, None] - f["keypoints"][None], axis=2).min(axis=1)
    assert (near < 0.05).mean() >= 0.9, (near < 0.05).mean()


@pytest.mark.slow
def test_mdnet_detectors_each_keep_their_share_and_multiscale_works(photo):
    model = build_model("mdnet_small", {"max_keypoints": 100, "detection_threshold": 0.0}).eval()
    with torch.inference_mode():
        (f,) = extract_batch(model, [prepare_image(photo, 3)])
    assert sorted(set(f["detector"].tolist())) == [0, 1]
    assert (f["detector"] == 0).sum() == 50 and (f["detector"] == 1).sum() == 50
    model.set_detection(pyramid_min_size=100)
    with torch.inference_mode():
        (g,) = extract_batch(model, [prepare_image(photo, 3)])
    assert len(g["keypoints"]) == 100 and g["keypoints"][:, 0].max() < 320


@pytest.mark.slow
def test_cli_extract_contract_and_unreadable_image(tmp_path, photo):
    import cv2

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), photo)
    out = tmp_path / "f.npz"
    cmd = [sys.executable, "-m", "goodpoint_ros.cli.extract"]
    r = subprocess.run(
        [
            *cmd,
            "--model",
            "goodpoint_small",
            "--weights",
            "random",
            "--max-keypoints",
            "50",
            str(img),
            str(img),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    z = np.load(out)
    for i in (0, 1):
        assert z[f"keypoints_{i}"].dtype == np.float32 and z[f"keypoints_{i}"].shape[1] == 2
        assert z[f"scores_{i}"].dtype == np.float32
        assert z[f"descriptors_{i}"].shape == (len(z[f"keypoints_{i}"]), 128)
        assert z[f"detector_{i}"].dtype == np.uint8
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    r = subprocess.run([*cmd, str(bad), "--output", str(out)], capture_output=True, text=True)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.png" in r.stderr


def test_ratio_test_equals_lowes_top_two_in_both_directions():
    """The ratio test reads second-best similarities from masked maxima (no top-k): same keeps as
    Lowe's test on each row's and each matched column's two best, exact ties included."""
    for trial in range(60):
        g = torch.Generator().manual_seed(trial)
        k0, k1 = (int(v) for v in torch.randint(1, 40, (2,), generator=g))
        a = torch.nn.functional.normalize(torch.randn(k0, 8, generator=g), dim=1)
        b = torch.nn.functional.normalize(torch.randn(k1, 8, generator=g), dim=1)
        if trial % 2:  # coarse values: duplicate descriptors, tied similarities
            a, b = (torch.nn.functional.normalize(torch.round(x * 2) / 2 + 1e-9, dim=1) for x in (a, b))
        sim = a @ b.t()
        plain, _ = match_mnn(a, b)
        for ratio in (0.8, 0.95):
            got, _ = match_mnn(a, b, ratio=ratio)
            dist = torch.sqrt((2 - 2 * sim).clamp_min(0))
            want = []
            for i, j in plain.tolist():
                row, column = dist[i].sort().values, dist[:, j].sort().values
                if (k1 < 2 or row[0] < ratio * row[1]) and (k0 < 2 or column[0] < ratio * column[1]):
                    want.append([i, j])
            assert got.tolist() == want, (trial, ratio)


@pytest.mark.parametrize("k", [5, 40, 400])
def test_cpu_topk_over_candidates_equals_topk_over_the_masked_map(k):
    """The CPU path (top-k among the NMS survivors only) keeps the points, scores and order of a
    top-k over the whole masked map, including rows with fewer than k candidates or none."""
    from goodpoint_ros.models.features import _topk_of_candidates

    g = torch.Generator().manual_seed(k)
    scores = torch.rand(4, 30 * 20, generator=g)  # distinct values: one right answer
    keep = torch.rand(4, 30 * 20, generator=g) < torch.tensor([[0.5], [0.05], [0.002], [0.0]])
    top, idx = _topk_of_candidates(scores, keep, k)
    ref_top, ref_idx = torch.topk(torch.where(keep, scores, -math.inf), k, dim=-1)
    assert torch.equal(top, ref_top)
    finite = torch.isfinite(ref_top)
    assert torch.equal(idx[finite], ref_idx[finite]) and int(finite[3].sum()) == 0
