"""Descriptor matching on the model's device: mutual nearest neighbour, ratio test, and MD-Net's
per-detector-set matching (O(M^2 / N) instead of O(M^2))."""

from __future__ import annotations

import torch

_PAD = -4.0  # similarity given to padding slots: below any cosine similarity of unit vectors


def _mnn(
    sim: torch.Tensor, n0: torch.Tensor, n1: torch.Tensor, ratio: float | None, max_distance: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours in a batch of SxK0xK1 similarity blocks.

    Block s holds ``n0[s]`` real rows and ``n1[s]`` real columns; the rest is padding filled with
    ``_PAD``. Returns block, row, column and Euclidean descriptor distance of each kept match.
    """
    s, k0, k1 = sim.shape
    nn01 = sim.argmax(2)  # SxK0
    nn10 = sim.argmax(1)  # SxK1
    rows = torch.arange(k0, device=sim.device).expand(s, k0)
    keep = (rows < n0[:, None]) & (n1[:, None] > 0) & (torch.gather(nn10, 1, nn01) == rows)
    best = torch.gather(sim, 2, nn01[..., None])[..., 0]
    dist = torch.sqrt((2.0 - 2.0 * best).clamp_min(0.0))
    if ratio is not None and ratio < 1.0 and min(k0, k1) > 1:
        # a block with a single real row or column has no second neighbour: its test is skipped
        single = ((n0 < 2) | (n1 < 2))[:, None]
        top0 = torch.sqrt((2.0 - 2.0 * sim.topk(2, dim=2).values).clamp_min(0.0))  # SxK0x2
        top1 = torch.sqrt((2.0 - 2.0 * sim.topk(2, dim=1).values).clamp_min(0.0))  # Sx2xK1
        ok0 = (top0[..., 0] < ratio * top0[..., 1]) | single
        ok1 = (top1[:, 0] < ratio * top1[:, 1]) | single
        keep &= ok0 & torch.gather(ok1, 1, nn01)
    if max_distance is not None:
        keep &= dist <= max_distance
    b, i = torch.nonzero(keep, as_tuple=True)
    return b, i, nn01[b, i], dist[b, i]


def match_mnn(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    ratio: float | None = None,
    max_distance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of L2-normalised K0xD and K1xD descriptors.

    Returns matches Mx2 (index in 0, index in 1) and their Euclidean descriptor distances M.
    ``ratio``: Lowe's test on distances (nearest < ratio * second nearest) in both directions.
    ``max_distance``: drop matches whose descriptor distance exceeds it.
    """
    if desc0.shape[0] == 0 or desc1.shape[0] == 0:
        return torch.empty((0, 2), dtype=torch.long, device=desc0.device), torch.empty(0, device=desc0.device)
    sim = (desc0.float() @ desc1.float().t())[None]
    n0, n1 = (torch.tensor([k], device=desc0.device) for k in sim.shape[1:])
    _, i, j, dist = _mnn(sim, n0, n1, ratio, max_distance)
    return torch.stack([i, j], 1), dist


def _by_set(desc: torch.Tensor, det: torch.Tensor, num_sets: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scatter KxD descriptors into an SxKmaxxD block per set (zero padding).

    Returns the blocks, the per-set counts and, per block slot, the index into ``desc`` (-1: pad).
    """
    det = det.long()
    counts = torch.bincount(det, minlength=num_sets)[:num_sets]
    order = torch.argsort(det, stable=True)
    sorted_det = det[order]
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(det), device=det.device) - start[sorted_det]
    kmax = int(counts.max()) if len(det) else 0
    blocks = desc.new_zeros((num_sets, kmax, desc.shape[1]))
    index = torch.full((num_sets, kmax), -1, dtype=torch.long, device=det.device)
    blocks[sorted_det, rank] = desc[order]
    index[sorted_det, rank] = order
    return blocks, counts, index


def match_per_set(
    desc0: torch.Tensor,
    det0: torch.Tensor,
    desc1: torch.Tensor,
    det1: torch.Tensor,
    num_sets: int | None = None,
    ratio: float | None = None,
    max_distance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MD-Net matching: MNN only between keypoints of the same detector set (paper III.B, Eq. 1).

    The sets are padded into one SxKxD batch and matched with one batched product, so N sets cost
    N (M/N)^2 multiply-adds and a handful of kernels, not a Python loop. Equals ``match_mnn``
    restricted to each set, with indices into the full arrays.
    """
    if num_sets is None:
        num_sets = int(max(det0.max().item() if det0.numel() else 0, det1.max().item() if det1.numel() else 0)) + 1
    if desc0.shape[0] == 0 or desc1.shape[0] == 0:
        return match_mnn(desc0, desc1)
    b0, n0, idx0 = _by_set(desc0.float(), det0, num_sets)
    b1, n1, idx1 = _by_set(desc1.float(), det1, num_sets)
    sim = torch.bmm(b0, b1.transpose(1, 2))
    if int(n0.min()) < b0.shape[1] or int(n1.min()) < b1.shape[1]:  # uneven sets: mask the padding
        sim = sim.masked_fill((idx0 < 0)[:, :, None] | (idx1 < 0)[:, None, :], _PAD)
    s, i, j, dist = _mnn(sim, n0, n1, ratio, max_distance)
    return torch.stack([idx0[s, i], idx1[s, j]], 1), dist


def match_features(f0: dict, f1: dict, per_set: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Match two feature dicts: per detector set when either has more than one set."""
    multi = f0["detector"].numel() and (
        int(f0["detector"].max()) > 0 or (f1["detector"].numel() and int(f1["detector"].max()) > 0)
    )
    if per_set and multi:
        return match_per_set(f0["descriptors"], f0["detector"], f1["descriptors"], f1["detector"], **kwargs)
    return match_mnn(f0["descriptors"], f1["descriptors"], **kwargs)
