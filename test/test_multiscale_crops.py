"""Multi-scale random crops (data.crop_scale): one large photo yields views from fine detail to the
whole scene; the scale is log-uniform, never upscales, survives source wrappers, and leaves the
sample stream unchanged when it is not configured."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from goodpoint_ros.training import datasets
from goodpoint_ros.training.datasets import (
    DataError,
    ImageFolder,
    PairDataset,
    build_source,
    multiscale_view,
    parse_crop_scale,
)

from goodpoint_ros.io.image_files import sample_photo


def _big_photo(tmp_path, side: int = 1536) -> None:
    photo = cv2.resize(sample_photo("astronaut"), (side, side), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))


def test_the_crop_covers_the_drawn_share_of_the_short_side() -> None:
    image = np.zeros((1200, 1800), np.uint8)
    rng = np.random.default_rng(0)
    whole = multiscale_view(image, 192, (1.0, 1.0), rng)
    assert whole.shape == (192, 288)  # the crop spans the whole short side
    assert multiscale_view(np.zeros((2000, 3000), np.uint8), 192, (0.125, 0.125), rng).shape == (1536, 2304)
    assert multiscale_view(image, 192, (0.125, 0.125), rng).shape == (1200, 1800)  # 1536 > 1200: native
    assert multiscale_view(image, (96, 160), (0.5, 0.5), rng).shape == (320, 480)  # longer crop side
    small = np.zeros((300, 400), np.uint8)  # 1/8 of 300 px would need upscaling: native instead
    assert multiscale_view(small, 192, (0.125, 0.125), rng).shape == (300, 400)


@pytest.mark.slow
def test_scales_are_log_uniform() -> None:
    image = np.zeros((8 * 256, 8 * 256), np.uint8)
    rng = np.random.default_rng(1)
    shares = np.array([256 / multiscale_view(image, 256, (0.125, 1.0), rng).shape[0] for _ in range(400)])
    assert shares.min() >= 0.125 - 1e-3 and shares.max() <= 1.0 + 1e-3
    logs = np.log2(shares)  # uniform on [-3, 0]: each octave of zoom equally often
    assert abs(float(np.median(logs)) + 1.5) < 0.25
    assert all(0.2 < np.mean((logs >= a) & (logs < a + 1)) < 0.47 for a in (-3, -2, -1))


def test_config_key_and_per_source_override(tmp_path) -> None:
    _big_photo(tmp_path)
    assert build_source({"root": str(tmp_path)}).sources[0].crop_scale is None  # default: today's crops
    conf = {"root": str(tmp_path), "crop_scale": [0.125, 1.0]}
    assert build_source(conf).sources[0].crop_scale == (0.125, 1.0)
    conf = {"crop_scale": [0.25, 0.5], "sources": [{"type": "images", "root": str(tmp_path), "crop_scale": None}]}
    assert build_source(conf).sources[0].crop_scale is None
    for bad in ([0.0, 1.0], [0.5, 0.25], [0.5, 2.0], 0.5, "x"):
        with pytest.raises(DataError):
            parse_crop_scale(bad)


class _Slice:
    """Like goodpoint_ros.training.train's slice of a source: passes frames through untouched."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int):
        return self.source.load(index)


@pytest.mark.slow
def test_pairs_see_many_scales_through_wrappers_and_are_reproducible(tmp_path, monkeypatch) -> None:
    _big_photo(tmp_path)
    seen: list[tuple[int, int]] = []
    real = datasets.multiscale_view

    def spy(image, crop, crop_scale, rng):
        out = real(image, crop, crop_scale, rng)
        seen.append(out.shape[:2])
        return out

    monkeypatch.setattr(datasets, "multiscale_view", spy)
    src = _Slice(build_source({"root": str(tmp_path), "crop_scale": [0.125, 1.0]}))
    ds = PairDataset(src, crop=128, channels=1, seed=3)
    first = [ds[i] for i in range(12)]
    assert len(seen) == 12 and len(set(seen)) >= 8  # a new scale for (nearly) every sample
    assert min(h for h, _ in seen) < 256 and max(h for h, _ in seen) > 768
    assert all(x["image0"].shape == (1, 128, 128) for x in first)
    again = PairDataset(src, crop=128, channels=1, seed=3)
    for i in (0, 5, 11):
        assert torch.equal(first[i]["image0"], again[i]["image0"]) and torch.equal(first[i]["H"], again[i]["H"])


def test_without_crop_scale_the_stream_is_unchanged(tmp_path, monkeypatch) -> None:
    _big_photo(tmp_path, 400)
    plain = PairDataset(ImageFolder(tmp_path), crop=96, seed=5)
    monkeypatch.setattr(datasets, "multiscale_view", lambda *a: pytest.fail("multiscale_view called"))
    frame = plain.source.load(0)
    assert type(frame) is np.ndarray
    rng = np.random.default_rng([5, 2])
    ref = datasets.make_pair(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 96, rng)
    got = plain[2]
    assert np.allclose(got["image0"][0].numpy(), ref["image0"] / 255.0)
    assert math.isclose(float(got["H"][0, 0]), float(ref["H"][0, 0]), rel_tol=1e-6)
