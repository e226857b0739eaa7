"""Descriptor matching on the model's device: mutual nearest neighbour, ratio test, and MD-Net's
per-detector-set matching (O(M^2 / N) instead of O(M^2)).

Both matchers run the same batched kernel (``_mutual_nn``) on S x K0 x K1 similarity blocks:
full matching is one block, per-set matching one block per detector set, all in one batched
product. So per-set matching costs the same number of operations as full matching with N times
fewer flops, and the two agree by construction.
"""

from __future__ import annotations

import torch


def _mutual_nn(
    sim: torch.Tensor, ratio: float | None, max_distance: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours in each block of S x K0 x K1 cosine similarities.

    Pairs that do not exist (padding) hold -inf. Returns ``keep`` (S x K0: row i has a mutual
    match), ``nn01`` (S x K0: its column) and the Euclidean descriptor distance (S x K0).
    """
    s, k0, k1 = sim.shape
    val, nn01 = sim.max(2)
    # Column maxima as values only: on CPUs ``amax`` is several times faster than an arg-max
    # (measured: 0.09 vs 0.8 ms for 722 x 722). Row i is mutual when it reaches its column's max.
    col_max = sim.amax(1)
    keep = (val >= torch.gather(col_max, 1, nn01)) & torch.isfinite(val)
    # Exact ties within a column (duplicate descriptors): keep only the first row, as an arg-max.
    col = nn01 + k1 * torch.arange(s, device=sim.device)[:, None]
    rows = torch.arange(k0, device=sim.device).expand(s, k0)
    first = torch.full((s * k1,), k0, dtype=torch.long, device=sim.device)
    first = first.scatter_reduce(0, col[keep], rows[keep], "amin")
    keep &= first[col] == rows
    dist = torch.sqrt((2.0 - 2.0 * val).clamp_min(0.0))
    if ratio is not None and ratio < 1.0:
        # Lowe's test in each direction that has a second neighbour; a missing one (a single
        # candidate, or padding: -inf, distance inf) passes.
        if k1 > 1:
            d0 = torch.sqrt((2.0 - 2.0 * sim.topk(2, dim=2).values).clamp_min(0.0))  # S x K0 x 2
            keep &= d0[..., 0] < ratio * d0[..., 1]
        if k0 > 1:
            d1 = torch.sqrt((2.0 - 2.0 * sim.topk(2, dim=1).values).clamp_min(0.0))  # S x 2 x K1
            keep &= torch.gather(d1[:, 0] < ratio * d1[:, 1], 1, nn01)
    if max_distance is not None:
        keep &= dist <= max_distance
    return keep, nn01, dist


def match_mnn(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    ratio: float | None = None,
    max_distance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of L2-normalised K0xD and K1xD descriptors.

    Returns matches Mx2 (index in 0, index in 1), ordered by the index in 0, and their Euclidean
    descriptor distances M. ``ratio``: Lowe's test on distances (nearest < ratio * second nearest)
    in each direction that has a second neighbour. ``max_distance``: drop matches whose descriptor distance exceeds it.
    """
    if desc0.shape[0] == 0 or desc1.shape[0] == 0:
        return torch.empty((0, 2), dtype=torch.long, device=desc0.device), torch.empty(0, device=desc0.device)
    sim = (desc0.float() @ desc1.float().t())[None]
    keep, nn01, dist = _mutual_nn(sim, ratio, max_distance)
    keep, nn01, dist = keep[0], nn01[0], dist[0]
    idx0 = torch.arange(keep.shape[0], device=keep.device)
    return torch.stack([idx0[keep], nn01[keep]], 1), dist[keep]


def group_by_set(desc: torch.Tensor, det: torch.Tensor, num_sets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The descriptors of each detector set as one N x K x D block (K = the largest set).

    Returns the blocks (zero rows as padding) and N x K indices into ``desc`` (-1 for padding).
    Order within a set is the order in ``desc``. MD-Net keeps M/N points per detector, so the sets
    are usually equal and this is one gather without padding.
    """
    det = det.long()
    counts = torch.bincount(det, minlength=num_sets)[:num_sets]
    k = int(counts.max())
    order = torch.argsort(det, stable=True)
    if int(counts.min()) == k:
        return desc[order].view(num_sets, k, -1), order.view(num_sets, k)
    sorted_det = det[order]
    slot = torch.arange(det.numel(), device=det.device) - (torch.cumsum(counts, 0) - counts)[sorted_det]
    index = torch.full((num_sets, k), -1, dtype=torch.long, device=det.device)
    index[sorted_det, slot] = order
    blocks = desc.new_zeros((num_sets, k, desc.shape[1]))
    blocks[sorted_det, slot] = desc[order]
    return blocks, index


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

    Equals ``match_mnn`` restricted to each set, with indices into the full arrays, ordered by
    set and then by the index in 0. All sets are matched in one batched product.
    """
    if desc0.shape[0] == 0 or desc1.shape[0] == 0:
        return match_mnn(desc0, desc1)
    if num_sets is None:
        num_sets = int(max(det0.max().item(), det1.max().item())) + 1
    blocks0, index0 = group_by_set(desc0.float(), det0, num_sets)
    blocks1, index1 = group_by_set(desc1.float(), det1, num_sets)
    sim = blocks0 @ blocks1.transpose(1, 2)  # N x K0 x K1: (M/N)^2 per set
    pad0, pad1 = index0 < 0, index1 < 0
    if bool(pad0.any()) or bool(pad1.any()):
        sim = sim.masked_fill(pad0[:, :, None] | pad1[:, None, :], float("-inf"))
    keep, nn01, dist = _mutual_nn(sim, ratio, max_distance)
    matches = torch.stack([index0[keep], torch.gather(index1, 1, nn01)[keep]], 1)
    return matches, dist[keep]


def match_features(f0: dict, f1: dict, per_set: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Match two feature dicts: per detector set when either has more than one set."""
    multi = f0["detector"].numel() and (
        int(f0["detector"].max()) > 0 or (f1["detector"].numel() and int(f1["detector"].max()) > 0)
    )
    if per_set and multi:
        return match_per_set(f0["descriptors"], f0["detector"], f1["descriptors"], f1["detector"], **kwargs)
    return match_mnn(f0["descriptors"], f1["descriptors"], **kwargs)
