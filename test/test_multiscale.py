"""Pyramid levels map keypoints back to the original pixels exactly (MD-Net's multi-scale extraction)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from goodpoint_ros.models.features import rescale_keypoints


def _blob(h: int, w: int, x0: float, y0: float, sigma: float = 6.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2))[None, None]


def _centroid(img: torch.Tensor) -> torch.Tensor:
    img = img[0, 0]
    ys, xs = torch.meshgrid(
        torch.arange(img.shape[0], dtype=img.dtype), torch.arange(img.shape[1], dtype=img.dtype), indexing="ij"
    )
    return torch.stack([(img * xs).sum(), (img * ys).sum()]) / img.sum()


@pytest.mark.parametrize("size", [(88, 112), (120, 160), (168, 224)])
def test_a_blob_found_on_a_pyramid_level_maps_back_to_where_it_is(size: tuple[int, int]) -> None:
    x0, y0 = 141.3, 97.6
    full = _blob(240, 320, x0, y0)
    level = F.interpolate(full, size=size, mode="bilinear", align_corners=False)
    back = rescale_keypoints(_centroid(level)[None], size, (240, 320))[0]
    # float64 blobs: the exact mapping is within 0.003 px; the old x / s mapping is 0.5 * (W / w - 1)
    # px off (0.21 px at 224 wide), so a tolerance of 0.25 px would have let it pass at that size
    tol = 0.05
    assert torch.allclose(back, torch.tensor([x0, y0], dtype=back.dtype), atol=tol), back
    naive = _centroid(level) * torch.tensor([320 / size[1], 240 / size[0]], dtype=back.dtype)
    assert not torch.allclose(naive, torch.tensor([x0, y0], dtype=back.dtype), atol=tol), "tol too loose"


def test_identity_size_leaves_keypoints_alone() -> None:
    k = torch.tensor([[0.0, 0.0], [10.5, 3.25]])
    assert torch.equal(rescale_keypoints(k, (48, 64), (48, 64)), k)


def _level(points: list[tuple[float, float]], scores: list[float], detector: list[int] | None = None) -> dict:
    n = len(points)
    return {
        "keypoints": torch.tensor(points, dtype=torch.float32),
        "scores": torch.tensor(scores),
        "descriptors": torch.nn.functional.normalize(torch.rand(n, 8), dim=1),
        "detector": torch.tensor(detector or [0] * n, dtype=torch.uint8),
    }


@pytest.mark.parametrize("name", ["goodpoint_small", "mdnet_small"])
def test_levels_merge_by_score_within_the_budget_keeping_a_corner_on_each_level(name: str) -> None:
    """A corner found on two levels keeps both copies (each level's descriptor is what matches a
    view zoomed to that scale); the budget is shared per detector set, best scores first."""
    from goodpoint_ros.models import build_model

    model = build_model(name)
    sets = int(model.conf.get("num_detectors", 1))
    model.set_detection(max_keypoints=2 * sets, pyramid_min_size=256, detection_threshold=0.0)
    det = [d % sets for d in range(4)]
    fine = _level([(10.0, 10.0), (18.0, 10.0), (50.0, 50.0), (90.0, 20.0)], [0.9, 0.8, 0.3, 0.2], det)
    coarse = _level([(10.5, 11.0), (70.0, 70.0)], [0.95, 0.5], [det[0], det[1]])
    merged = model.merge_scales([fine, coarse], 100 * 100, [1.0, 0.5**0.5])
    kept = [tuple(round(v, 1) for v in k.tolist()) for k in merged["keypoints"]]
    # (10, 10) is the coarse corner (10.5, 11) again: both stay; budget 2 per detector set
    expected = [(10.5, 11.0), (10.0, 10.0)] if sets == 1 else [(10.5, 11.0), (10.0, 10.0), (18.0, 10.0), (70.0, 70.0)]
    assert kept == expected
    assert torch.all(merged["scores"][:-1] >= merged["scores"][1:])
    assert merged["descriptors"].shape == (len(expected), 8)


def test_a_point_of_the_enlarged_level_needs_a_neighbouring_level_to_rank_by_score() -> None:
    """A level above the input scale interpolates detail: its points rank by score only where a
    neighbouring level found them too (within 3 px of the coarser level), after all others when
    not; pyramids without an enlarged level rank by score alone. Scores come back as detected."""
    from goodpoint_ros.models import build_model

    model = build_model("goodpoint_small")
    model.set_detection(max_keypoints=3, pyramid_min_size=64, detection_threshold=0.0)
    up = _level([(60.0, 60.0), (20.0, 20.0), (80.0, 10.0)], [0.9, 0.4, 0.3])  # the image x sqrt(2)
    base = _level([(21.5, 21.5), (40.0, 80.0)], [0.35, 0.8])  # the input: (20, 20) again, 2.1 px off
    merged = model.merge_scales([up, base], 100 * 100, [2**0.5, 1.0])
    assert [tuple(k.tolist()) for k in merged["keypoints"]] == [(40.0, 80.0), (20.0, 20.0), (21.5, 21.5)]
    assert merged["scores"].tolist() == pytest.approx([0.8, 0.4, 0.35])
    base["keypoints"][0] = torch.tensor([24.0, 24.5])  # 6 px away: (20, 20) is alone on its level
    merged = model.merge_scales([up, base], 100 * 100, [2**0.5, 1.0])
    assert merged["scores"].tolist() == pytest.approx([0.8, 0.35, 0.9])
    merged = model.merge_scales([up, base], 100 * 100, [1.0, 0.5**0.5])  # no enlarged level
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.8, 0.4])


def test_the_fill_below_the_threshold_is_counted_over_the_image_not_per_level() -> None:
    """Each level fills to the density on its own area; merged, the image keeps every point above
    the threshold and only the best others up to the density of the whole image."""
    from goodpoint_ros.models import build_model

    model = build_model("goodpoint_small")
    model.set_detection(max_keypoints=100, pyramid_min_size=256, detection_threshold=0.5, min_keypoints_per_mpx=400)
    # a 100x100 image: 400 per megapixel is 4 points; 3 above the threshold, 6 fill candidates
    fine = _level([(i * 10.0, 5.0) for i in range(6)], [0.9, 0.8, 0.4, 0.3, 0.2, 0.1])
    coarse = _level([(i * 10.0, 50.0) for i in range(3)], [0.7, 0.35, 0.25])
    merged = model.merge_scales([fine, coarse], 100 * 100, [1.0, 0.5**0.5])
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.4])
    model.set_detection(min_keypoints_per_mpx=0)
    assert (
        merged["scores"].numel() == 4
        and model.merge_scales([fine, coarse], 100 * 100, [1.0, 0.5**0.5])["scores"].numel() == 3
    )


def test_goodpoint_runs_on_a_pyramid() -> None:
    from goodpoint_ros.models import build_model
    from goodpoint_ros.models.features import extract_batch

    model = build_model("goodpoint_small").eval()
    assert model.pyramid_scales(480, 640) == [1.0]
    model.set_detection(pyramid_min_size=256, detection_threshold=0.0, max_keypoints=300)
    assert model.pyramid_scales(480, 640) == pytest.approx([1.0, 2**-0.5])
    with torch.inference_mode():
        feats = extract_batch(model, [torch.rand(1, 240, 320)])[0]
    assert len(feats["keypoints"]) == 300 and feats["keypoints"][:, 0].max() < 320


def test_the_shipped_model_on_a_pyramid_matches_a_view_zoomed_2x() -> None:
    """A real photo and the same photo zoomed 2x about its centre: one scale finds almost no correct
    match; the pyramid does, because each corner keeps its coarse level's copy, whose descriptor
    is what the zoomed view's fine level matches (the merge that kept one copy per corner got 60
    correct matches here, this one ~180)."""
    import cv2
    import numpy as np

    from goodpoint_ros.backends import make_extractor
    from goodpoint_ros.io.image_files import sample_photo
    from goodpoint_ros.vo.geometry import warp_points
    from goodpoint_ros.vo.matching import match_features

    photo = cv2.resize(sample_photo("astronaut"), (640, 480), interpolation=cv2.INTER_AREA)
    zoom = np.array([[2.0, 0, -319.5], [0, 2.0, -239.5], [0, 0, 1]])
    zoomed = cv2.warpPerspective(photo, zoom, (640, 480), flags=cv2.INTER_LINEAR)
    correct = {}
    for pyramid in (0, 160):
        ex = make_extractor(
            "torch", "goodpoint_small", "default", "cpu", {"pyramid_min_size": pyramid}, precision="fp32"
        )
        f0, f1 = ex.extract(photo), ex.extract(zoomed)
        m = np.asarray(match_features(f0, f1)[0])
        err = np.linalg.norm(
            warp_points(f0["keypoints"][m[:, 0]].numpy(), zoom) - f1["keypoints"][m[:, 1]].numpy(), axis=1
        )
        correct[pyramid] = int((err <= 3.0).sum())
    assert correct[0] < 30 and correct[160] >= 100, correct  # here 6 and 182
