"""Dense-tensor helpers of the losses: batched homography warps of heatmaps, descriptors and masks,
and the masked mean every loss term reduces with.

Pixel convention is OpenCV's (pixel centres at integer coordinates), the same as
``goodpoint_ros.vo.geometry.warp_points`` and ``cv2.warpPerspective`` used to build the pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from goodpoint_ros.vo.geometry import warp_points


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H*W)x2 (x, y) coordinates of every pixel, row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def sample_at(x: torch.Tensor, points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample BxCxHxW ``x`` at BxNx2 pixel positions -> BxCxN (zeros outside)."""
    b, _, h, w = x.shape
    norm = torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=x.device, dtype=points.dtype)
    grid = (points / norm * 2.0 - 1.0).view(b, 1, -1, 2).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)[:, :, 0]


def warp_dense(x: torch.Tensor, H: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Warp BxCxHxW ``x`` by per-sample homographies ``H`` (Bx3x3, source -> destination pixels)
    into the destination frame, bilinearly (differentiable w.r.t. ``x``)."""
    b, c, h, w = x.shape
    oh, ow = out_hw or (h, w)
    grid = pixel_grid(oh, ow, x.device).expand(b, -1, -1)
    src = warp_points(grid, torch.linalg.inv(H.double()).float())
    return sample_at(x, src).view(b, c, oh, ow)


def warp_valid(mask: torch.Tensor, H: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Destination-frame mask (bool) of pixels that come from a valid source pixel of ``mask``."""
    return warp_dense(mask.float(), H, out_hw) > 0.999


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` (broadcast to ``x``) is true; 0 when nothing is. In float32, so a
    bf16 loss term does not round the count of a large mask."""
    m = mask.expand_as(x).float()
    return (x.float() * m).sum() / m.sum().clamp_min(1.0)
