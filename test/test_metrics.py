"""Metrics with known answers: synthetic keypoints placed exactly where a homography sends them."""

import math

import numpy as np
import pytest
import torch
from goodpoint_ros.training.metrics import (
    coverage_fraction,
    evaluate_pair,
    harmonic_mean,
    paired_bootstrap,
    separability,
    summarize,
)

from goodpoint_ros.vo.geometry import inside, warp_points

SHAPE = (240, 320)


def _homography() -> np.ndarray:
    # A mild similarity + perspective: keeps most of the image shared.
    c, s = math.cos(0.1), math.sin(0.1)
    H = np.array([[0.95 * c, -0.95 * s, 20.0], [0.95 * s, 0.95 * c, -5.0], [1e-4, -5e-5, 1.0]])
    return H


def _features(shift=(0.0, 0.0), seed=0):
    """Keypoints of image 0 (a jittered 16-px grid), their exact projections in image 1 (+shift),
    shared random descriptors."""
    rng = np.random.default_rng(seed)
    H = _homography()
    grid = np.stack(np.meshgrid(np.arange(10, SHAPE[1] - 10, 16), np.arange(10, SHAPE[0] - 10, 16)), -1)
    k0 = grid.reshape(-1, 2) + rng.uniform(-2, 2, size=(grid.size // 2, 2))
    w = warp_points(k0, H)
    keep = inside(w, *SHAPE)
    k0, w = k0[keep], w[keep]
    desc = rng.normal(size=(len(k0), 64)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    f0 = {"keypoints": k0.astype(np.float32), "descriptors": desc}
    f1 = {"keypoints": (w + np.asarray(shift)).astype(np.float32), "descriptors": desc.copy()}
    return f0, f1, H


def test_perfect_detector_and_descriptor():
    f0, f1, H = _features()
    r = evaluate_pair(f0, f1, H, SHAPE, SHAPE)
    assert r["repeatability"] == pytest.approx(1.0)
    assert r["num_matches"] == len(f0["keypoints"])
    for t in (1, 3, 5):
        assert r[f"mma@{t}px"] == pytest.approx(1.0)
        assert r[f"homography_accuracy@{t}px"] == 1.0
    assert r["corner_error"] < 0.1
    assert r["matching_score"] == pytest.approx(1.0)
    assert 0.0 < r["coverage"] <= 1.0
    assert math.isnan(r["sep@3px"])  # one detector set


def test_shift_of_four_pixels_counts_at_five_not_three():
    f0, f1, H = _features(shift=(4.0, 0.0))
    r = evaluate_pair(f0, f1, H, SHAPE, SHAPE, epsilon=3.0)
    assert r["mma@5px"] == pytest.approx(1.0)
    assert r["mma@3px"] == 0.0 and r["mma@1px"] == 0.0
    assert r["repeatability"] == 0.0  # grid neighbours are >= 12 px from a shifted point
    assert r["coverage"] == 0.0 and r["harmonic_mean"] == 0.0
    r5 = evaluate_pair(f0, f1, H, SHAPE, SHAPE, epsilon=5.0)
    assert r5["repeatability"] == pytest.approx(1.0, abs=0.02)  # points near the border may leave


def test_wrong_descriptors_give_zero_precision_and_torch_inputs_work():
    f0, f1, H = _features()
    f1["descriptors"] = np.roll(f1["descriptors"], 1, axis=0)  # every match goes to a wrong point
    t0 = {k: torch.from_numpy(v) for k, v in f0.items()}
    r = evaluate_pair(t0, f1, torch.from_numpy(H), SHAPE, SHAPE)
    assert r["repeatability"] == pytest.approx(1.0)
    assert r["mma@5px"] < 0.05
    assert r["homography_accuracy@5px"] == 0.0


def test_coverage_of_regular_grid_matches_analytic_value():
    area = np.ones((400, 400), bool)
    xs = np.arange(50, 400, 100)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    # 16 disjoint discs of radius 25: 16 * pi * 25^2 / 400^2
    assert coverage_fraction(grid, area, 25) == pytest.approx(16 * math.pi * 625 / 160000, rel=0.01)
    # Spacing 30 px: every pixel is within 15 * sqrt(2) < 25 px of a grid point.
    xs = np.arange(0, 400, 30)
    dense = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    assert coverage_fraction(dense, area, 25) == 1.0
    # Only the area counts: the left half, holding half of the discs.
    half = area.copy()
    half[:, 200:] = False
    assert coverage_fraction(grid, half, 25) == pytest.approx(8 * math.pi * 625 / 80000, rel=0.01)
    assert coverage_fraction(np.zeros((0, 2)), area, 25) == 0.0


def test_separability_of_two_sets():
    base = np.stack(np.meshgrid(np.arange(20, 300, 40), np.arange(20, 240, 40)), -1).reshape(-1, 2).astype(float)
    n = len(base)
    other = base + np.where(np.arange(n)[:, None] % 2 == 0, [2.0, 0.0], [10.0, 0.0])  # half within 3 px
    k = np.concatenate([base, other])
    det = np.repeat([0, 1], n)
    # Each close pair makes both of its points "close": n/2 pairs -> n of 2n points.
    assert separability(k, det, 3) == pytest.approx(0.5)
    assert separability(k, det, 1) == pytest.approx(1.0)
    assert math.isnan(separability(k, np.zeros(2 * n), 3))


def test_per_set_matching_and_sep_in_pair():
    f0, f1, H = _features()
    det = (np.arange(len(f0["keypoints"])) % 2).astype(np.uint8)
    f0["detector"], f1["detector"] = det, det.copy()
    full = evaluate_pair(f0, f1, H, SHAPE, SHAPE, per_set=False)
    per = evaluate_pair(f0, f1, H, SHAPE, SHAPE, per_set=True)
    assert per["mma@1px"] == pytest.approx(1.0) and full["mma@1px"] == pytest.approx(1.0)
    assert per["num_matches"] == full["num_matches"]
    assert 0.0 <= per["sep@3px"] <= 1.0


def test_valid_masks_restrict_the_shared_area():
    f0, f1, H = _features()
    valid1 = np.zeros(SHAPE, bool)
    valid1[:, : SHAPE[1] // 2] = True  # only the left half of image 1 holds content
    r = evaluate_pair(f0, f1, H, SHAPE, SHAPE, valid1=valid1)
    assert r["num_shared1"] < 0.7 * len(f1["keypoints"])
    assert r["repeatability"] == pytest.approx(1.0)


def test_harmonic_mean_and_summary():
    # GoodPoint Table 2 (HPatches, illumination): 0.85, 0.55, 0.65 -> 0.66.
    assert harmonic_mean([0.85, 0.55, 0.65]) == pytest.approx(0.66, abs=0.005)
    assert harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    rows = [
        {"precision": 1.0, "repeatability": 0.5, "coverage": 0.5, "corner_error": 1.0, "sep@3px": math.nan},
        {"precision": 0.5, "repeatability": 0.5, "coverage": 0.5, "corner_error": math.inf, "sep@3px": math.nan},
    ]
    s = summarize(rows)
    assert s["precision"] == pytest.approx(0.75)
    assert s["harmonic_mean"] == pytest.approx(harmonic_mean([0.75, 0.5, 0.5]))
    assert s["corner_error_median"] == math.inf or s["corner_error_median"] > 1.0
    assert math.isnan(s["sep@3px"]) and s["num_pairs"] == 2


def test_acceptance_harmonic_mean_of_repeatability_mma_and_homography_accuracy():
    rows = [
        {"repeatability": 0.5, "mma@3px": 0.6, "homography_accuracy@3px": 1.0},
        {"repeatability": 0.3, "mma@3px": 0.8, "homography_accuracy@3px": 0.0},
    ]
    s = summarize(rows)  # dataset-level means first: 0.4, 0.7, 0.5
    assert s["hm_rep_mma_hacc@3px"] == pytest.approx(3 / (1 / 0.4 + 1 / 0.7 + 1 / 0.5))


def test_paired_bootstrap_separates_a_real_gap_from_the_pairs_noise():
    rng = np.random.default_rng(1)

    def rows(rep: np.ndarray) -> list[dict]:
        return [{"repeatability": r, "mma@3px": 0.9, "homography_accuracy@3px": 1.0} for r in rep]

    base = rng.uniform(0.4, 0.9, 40)  # pairs differ far more than the methods do
    diff, lo, hi = paired_bootstrap(rows(base + 0.05), rows(base))
    assert diff > 0 and 0 < lo <= diff <= hi  # a constant gain on every pair is significant
    diff, lo, hi = paired_bootstrap(rows(base + rng.normal(0, 0.1, 40)), rows(base))
    assert lo < 0 < hi  # zero-mean noise is not
    with pytest.raises(ValueError):
        paired_bootstrap(rows(base), rows(base[:10]))
