"""Descriptor matching on the model's device: mutual nearest neighbour, ratio test, and MD-Net's
per-detector-set matching (O(M^2 / N) instead of O(M^2))."""

from __future__ import annotations

import torch


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
    empty = (torch.empty((0, 2), dtype=torch.long, device=desc0.device), torch.empty(0, device=desc0.device))
    if desc0.shape[0] == 0 or desc1.shape[0] == 0:
        return empty
    sim = desc0.float() @ desc1.float().t()
    nn01 = sim.argmax(1)
    nn10 = sim.argmax(0)
    idx0 = torch.arange(sim.shape[0], device=sim.device)
    keep = nn10[nn01] == idx0
    dist = torch.sqrt((2.0 - 2.0 * sim[idx0, nn01]).clamp_min(0.0))
    if ratio is not None and ratio < 1.0 and min(sim.shape) > 1:
        top0 = sim.topk(2, dim=1).values  # for each 0-descriptor, its two best in 1
        top1 = sim.topk(2, dim=0).values  # for each 1-descriptor, its two best in 0
        d0 = torch.sqrt((2.0 - 2.0 * top0).clamp_min(0.0))
        d1 = torch.sqrt((2.0 - 2.0 * top1).clamp_min(0.0))
        keep &= d0[:, 0] < ratio * d0[:, 1]
        keep &= (d1[0] < ratio * d1[1])[nn01]
    if max_distance is not None:
        keep &= dist <= max_distance
    return torch.stack([idx0[keep], nn01[keep]], 1), dist[keep]


def match_per_set(
    desc0: torch.Tensor,
    det0: torch.Tensor,
    desc1: torch.Tensor,
    det1: torch.Tensor,
    num_sets: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MD-Net matching: MNN only between keypoints of the same detector set (paper III.B, Eq. 1).

    Equals ``match_mnn`` restricted to each set, with indices into the full arrays.
    """
    if num_sets is None:
        num_sets = int(max(det0.max().item() if det0.numel() else 0, det1.max().item() if det1.numel() else 0)) + 1
    all_m, all_d = [], []
    for s in range(num_sets):  # a loop over N sets (2-8), each an (M/N)^2 product
        i0 = torch.nonzero(det0 == s).squeeze(1)
        i1 = torch.nonzero(det1 == s).squeeze(1)
        m, d = match_mnn(desc0[i0], desc1[i1], **kwargs)
        all_m.append(torch.stack([i0[m[:, 0]], i1[m[:, 1]]], 1))
        all_d.append(d)
    return torch.cat(all_m), torch.cat(all_d)


def match_features(f0: dict, f1: dict, per_set: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Match two feature dicts: per detector set when either has more than one set."""
    multi = f0["detector"].numel() and (
        int(f0["detector"].max()) > 0 or (f1["detector"].numel() and int(f1["detector"].max()) > 0)
    )
    if per_set and multi:
        return match_per_set(f0["descriptors"], f0["detector"], f1["descriptors"], f1["detector"], **kwargs)
    return match_mnn(f0["descriptors"], f1["descriptors"], **kwargs)
