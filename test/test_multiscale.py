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
