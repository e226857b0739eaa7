"""Image -> sparse features: input preparation, NMS, borders, top-k and descriptor sampling.

Every function here is batched and runs on the model's device; nothing loops over keypoints.
Training, evaluation, the CLI and the node all go through ``extract_batch`` so that what is
measured is what ships.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_KEYS = ("keypoints", "scores", "descriptors", "detector")


def prepare_image(image: Any, channels: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Any image (numpy/torch, uint8/uint16/float, gray/RGB/RGBA, HxW or HxWxC or CxHxW) -> CxHxW
    float32 in [0, 1] with ``channels`` channels (1 = gray, 3 = RGB)."""
    if isinstance(image, np.ndarray):
        arr = image
        # Always a fresh float32 copy: the input may be a read-only view of a message buffer
        # (torch.from_numpy warns on those), and the caller's array is never written through.
        if arr.dtype == np.uint8:
            t = torch.from_numpy(arr.astype(np.float32)).div_(255.0)
        elif arr.dtype == np.uint16:
            t = torch.from_numpy(arr.astype(np.float32)).div_(65535.0)
        elif arr.dtype.kind == "f":
            t = torch.from_numpy(arr.astype(np.float32))
        else:
            raise TypeError(f"unsupported image dtype {arr.dtype}")
        if t.ndim == 3:
            t = t.permute(2, 0, 1)  # HWC -> CHW
    elif isinstance(image, torch.Tensor):
        t = image
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        t = t.float()
    else:
        raise TypeError(f"expected a numpy array or torch tensor, got {type(image).__name__}")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4) or min(t.shape[1:]) < 1:
        raise ValueError(f"expected an HxW, HxWxC or CxHxW image, got shape {tuple(t.shape)}")
    t = t[:3].to(device)
    if channels == 1 and t.shape[0] == 3:
        t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
    elif channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.clamp(0.0, 1.0).contiguous()


def pad_to_multiple(images: Sequence[torch.Tensor] | torch.Tensor, multiple: int):
    """Stack CxHxW images into one zero-padded batch whose sides are multiples of ``multiple``.

    Returns the batch and the valid (H, W) of each image as a Bx2 long tensor; coordinates stay
    exact because padding is only added on the right and bottom.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.long)
    h, w = (int(math.ceil(int(s) / multiple) * multiple) for s in sizes.max(0).values)
    batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, im in enumerate(images):  # one copy per image, not per keypoint
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    return batch, sizes.to(batch.device)


def nms_mask(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Local maxima of ``scores`` (...xHxW) in a (2r+1)^2 window, ties broken deterministically.

    Two points that are both window maxima within each other's window must have equal scores;
    a second max-pool over their linear indices keeps exactly one of them, so no two kept points
    are within ``radius`` (Chebyshev, hence also Euclidean) of each other.
    """
    if radius <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    shape = scores.shape
    s = scores.reshape(-1, 1, *shape[-2:]).float()
    is_max = s == _window_max(s, radius)
    index = torch.arange(s[0, 0].numel(), device=s.device, dtype=torch.float32).view(1, 1, *shape[-2:])
    index = torch.where(is_max, index.expand_as(s), -1.0)
    keep = is_max & (index == _window_max(index, radius))
    return keep.reshape(shape)


def _window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over a (2r+1)^2 window (zero-free: the border is -inf padding), as a row pass then a
    column pass; max is separable, so the values equal one 2-D max-pool.

    On CPU the passes are element-wise maxima of shifted views (``_running_max``; about 10x
    faster than ``max_pool2d``, which also computes indices); when tracing for ONNX, and on GPUs, they are
    1-D max-pools (one MaxPool op per pass, symbolic shapes for dynamic export).
    """
    k = 2 * radius + 1
    if torch.jit.is_tracing() or x.device.type != "cpu":
        x = F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
        return F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    rows = _running_max(F.pad(x, (radius, radius), value=-math.inf), k, x.dim() - 1)
    return _running_max(F.pad(rows, (0, 0, radius, radius), value=-math.inf), k, x.dim() - 2)


def _running_max(p: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Max over every window of ``k`` along ``dim`` of ``p`` (padded by k - 1 along it), by
    doubling: after maxima of spans 1, 2, 4, ... one more of two overlapping spans covers k.
    4 passes for the 9-wide NMS window instead of 8."""
    n = p.shape[dim] - (k - 1)
    span = 1
    while 2 * span <= k:
        length = p.shape[dim] - span
        p = torch.maximum(p.narrow(dim, 0, length), p.narrow(dim, span, length))
        span *= 2
    return torch.maximum(p.narrow(dim, 0, n), p.narrow(dim, k - span, n))


def valid_mask(shape: torch.Size, sizes: torch.Tensor, border: int) -> torch.Tensor:
    """Bx1xHxW mask of pixels at least ``border`` px inside each image's valid (unpadded) area."""
    b, _, h, w = shape
    ys = torch.arange(h, device=sizes.device).view(1, h, 1)
    xs = torch.arange(w, device=sizes.device).view(1, 1, w)
    hh = sizes[:, 0].view(b, 1, 1)
    ww = sizes[:, 1].view(b, 1, 1)
    m = (ys >= border) & (xs >= border) & (ys < hh - border) & (xs < ww - border)
    return m[:, None]


def topk_keypoints(scores: torch.Tensor, mask: torch.Tensor, k: int, threshold: float, min_count: int = 0):
    """Top-``k`` points of each BxNxHxW map among ``mask`` & score > threshold, and at least the
    best ``min_count`` of ``mask`` whatever their score (an adaptive threshold: ``fill_mask``).

    Returns keypoints BxNxkx2 (x, y), their scores BxNxk and a validity mask BxNxk (False where an
    image has fewer than k candidates).
    """
    b, n, h, w = scores.shape
    if min_count > 0:  # every candidate competes; the threshold is applied after the top-k
        kpts, top, found = topk_keypoints(scores, mask, k, -math.inf)
        return kpts, top, found & fill_mask(top, threshold, min_count)
    keep = mask & (scores > threshold)
    k = max(0, min(int(k), h * w))
    if torch.jit.is_tracing() or scores.device.type != "cpu":
        flat = torch.where(keep, scores, -math.inf).reshape(b, n, h * w).float()
        top, idx = torch.topk(flat, k, dim=-1)
    else:
        top, idx = _topk_of_candidates(scores.reshape(b * n, h * w).float(), keep.reshape(b * n, h * w), k)
        top, idx = top.view(b, n, k), idx.view(b, n, k)
    kpts = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).float()
    return kpts, top, torch.isfinite(top)


def _topk_of_candidates(scores: torch.Tensor, keep: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` of each row of ``scores`` among its ``keep`` entries (-inf where fewer than
    k): the same points as a top-k over the masked full rows, which on a CPU costs more than the
    NMS before it (307k pixels at 640x480 against a few thousand NMS survivors)."""
    rows, cols = keep.nonzero(as_tuple=True)  # row-major: each row's candidates are contiguous
    counts = torch.bincount(rows, minlength=keep.shape[0])
    width = max(int(counts.max()) if rows.numel() else 0, k)
    slot = torch.arange(rows.numel()) - (torch.cumsum(counts, 0) - counts)[rows]
    vals = torch.full((keep.shape[0], width), -math.inf)
    where = torch.zeros((keep.shape[0], width), dtype=torch.long)
    vals[rows, slot] = scores[rows, cols]
    where[rows, slot] = cols
    top, sel = torch.topk(vals, k, dim=-1)
    return top, torch.gather(where, 1, sel)


def window_scores(scores: torch.Tensor, keypoints: torch.Tensor, radius: int):
    """The (2r+1)^2 scores around each keypoint, by batched gathers (no loop over keypoints; it
    traces to ONNX): values BxNxKxS (S = window pixels, row-major), ``inside`` BxNxKxS (False
    where the window leaves the map; those values are the clamped border's) and the Sx2 (x, y)
    offsets. ``scores`` BxNxHxW, ``keypoints`` BxNxKx2 (x, y), rounded to their pixel."""
    b, n, h, w = scores.shape
    k = keypoints.shape[2]
    r = torch.arange(-radius, radius + 1, device=scores.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    offsets = torch.stack([dx.reshape(-1), dy.reshape(-1)], -1)  # Sx2 (x, y)
    pos = keypoints.round().long()[..., None, :] + offsets  # BxNxKxSx2
    x, y = pos[..., 0], pos[..., 1]
    inside = (x >= 0) & (y >= 0) & (x < w) & (y < h)
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).reshape(b, n, -1)
    vals = torch.gather(scores.reshape(b, n, h * w).float(), 2, flat).view(b, n, k, -1)
    return vals, inside, offsets


def refine_keypoints(scores: torch.Tensor, keypoints: torch.Tensor, radius: int) -> torch.Tensor:
    """Sub-pixel positions: a local soft-argmax over the (2r+1)^2 window around each keypoint,
    weighted by the squared height above the window's lowest score.

    Why not the plain score-weighted mean (the usual SuperPoint-style step): the score floor
    under a peak weighs every window pixel alike and pulls the mean toward the window's centre,
    the integer pixel NMS picked. Removing the floor and squaring (which damps the shoulders)
    raised goodpoint_small's MMA@1 from 0.50 to 0.57 on 50 pairs of training photos at 640x480,
    two seeds alike (docs/experiments/subpixel). ``scores`` is BxNxHxW, ``keypoints`` BxNxKx2
    integer (x, y); window pixels outside the map do not count. Batched gathers only: no loop
    over keypoints, and it traces to ONNX.
    """
    if radius <= 0:
        return keypoints
    vals, inside, offsets = window_scores(scores, keypoints, radius)
    floor = torch.where(inside, vals, torch.full_like(vals, math.inf)).amin(-1, keepdim=True)
    weights = torch.where(inside, (vals - floor).clamp_min(0.0) ** 2, torch.zeros_like(vals))
    total = weights.sum(-1, keepdim=True)
    shift = (weights[..., None] * offsets.to(weights)).sum(-2) / total.clamp_min(1e-12)
    return keypoints + torch.where(total > 0, shift, torch.zeros_like(shift))


def fill_mask(scores: torch.Tensor, threshold: float, min_count: int) -> torch.Tensor:
    """Which of ``scores`` (...xK, each row sorted best first, as top-k returns them) to keep:
    those above ``threshold``, and the first ``min_count`` of each row whatever their score."""
    rank = torch.arange(scores.shape[-1], device=scores.device)
    return (scores > threshold) | (rank < min_count)


def cross_level_support(
    levels: Sequence[torch.Tensor], scales: Sequence[float], check: Sequence[bool], pixels: float = 3.0
) -> torch.Tensor:
    """Per keypoint of an image pyramid (``levels``: each level's Kx2 keypoints in the original
    image's pixels, ``scales`` their scales), concatenated in level order: for the levels with
    ``check`` set, whether a keypoint of a neighbouring level lies within ``pixels`` pixels of the
    coarser of the two levels, i.e. the corner holds across a sqrt(2) change of scale, as SIFT's
    extrema must across scale-space; True on the other levels (nothing computed for them)."""
    out = []
    for i, k in enumerate(levels):
        support = torch.full((len(k),), not check[i], dtype=torch.bool, device=k.device)
        for j in (i - 1, i + 1) if check[i] else ():  # two neighbours at most: a loop over levels, not points
            if 0 <= j < len(levels) and len(levels[j]) and len(k):
                radius = pixels / min(scales[i], scales[j])
                support |= torch.cdist(k.float(), levels[j].float()).min(1).values <= radius
        out.append(support)
    return torch.cat(out)


def min_keypoints(conf: dict, area: int | torch.Tensor, maps: int = 1) -> int:
    """Keypoints per detector map kept below the threshold: ``min_keypoints_per_mpx`` of the
    image's ``area`` in pixels (0 when the config lacks the key), shared by ``maps`` detector
    sets. ``area`` may be a tensor: it is read only when the density is set (no device sync)."""
    density = float(conf.get("min_keypoints_per_mpx", 0) or 0)
    return math.ceil(density * int(area) / 1e6 / maps) if density > 0 else 0


def select_keypoints(heat: torch.Tensor, sizes: torch.Tensor, conf: dict, k: int, threshold: float):
    """Heatmap -> keypoints, the one detection path of every model and of the export graph:
    NMS maxima away from the borders (``nms_radius``, ``remove_borders``), the top ``k`` per map
    above ``threshold`` (at least ``min_keypoints`` of them: ``min_keypoints_per_mpx``), refined to
    sub-pixel positions (``subpixel_radius``, 0 when absent).

    Returns ``topk_keypoints``' BxNxkx2 keypoints, BxNxk scores and validity mask.
    """
    mask = nms_mask(heat, conf["nms_radius"]) & valid_mask(heat.shape, sizes, conf["remove_borders"])
    # The batch's largest valid area sets the floor (a batch holds images of one size in practice);
    # the export graph leaves the fill to the backend (graph_keep).
    fill = 0 if torch.jit.is_tracing() else min_keypoints(conf, sizes.prod(dim=1).max(), heat.shape[1])
    kpts, scores, valid = topk_keypoints(heat, mask, k, threshold, fill)
    return refine_keypoints(heat, kpts, conf.get("subpixel_radius", 0)), scores, valid


def sample_descriptors(dense: torch.Tensor, keypoints: torch.Tensor, stride: int) -> torch.Tensor:
    """Bilinearly sample BxDxhxw descriptors at BxKx2 pixel positions; L2-normalised BxKxD.

    Cell (i, j) of a stride-s map is centred on pixel (s*j + (s-1)/2, s*i + (s-1)/2).
    """
    b, d, h, w = dense.shape
    pos = (keypoints - (stride - 1) / 2.0) / stride
    if torch.jit.is_tracing():  # ONNX export: keep H, W symbolic so dynamic axes stay correct
        norm = (torch._shape_as_tensor(dense)[-2:].flip(0) - 1).clamp(min=1).to(pos)
    else:
        norm = torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=dense.device, dtype=pos.dtype)
    grid = (pos / norm * 2.0 - 1.0).view(b, 1, -1, 2).to(dense.dtype)
    desc = F.grid_sample(dense, grid, mode="bilinear", align_corners=True)
    return F.normalize(desc.view(b, d, -1).transpose(1, 2).float(), dim=-1)


def split_batch(kpts, scores, desc, detector, valid) -> list[dict[str, torch.Tensor]]:
    """Flatten BxNxK candidates (valid ones only) into one feature dict per image, by score."""
    out = []
    for i in range(kpts.shape[0]):
        v = valid[i]
        s = scores[i][v]
        order = torch.argsort(s, descending=True)
        out.append(
            {
                "keypoints": kpts[i][v][order],
                "scores": s[order],
                "descriptors": desc[i][v][order],
                "detector": detector[i][v][order].to(torch.uint8),
            }
        )
    return out


def rescale_keypoints(keypoints: torch.Tensor, src_hw: Sequence[int], dst_hw: Sequence[int]) -> torch.Tensor:
    """Map (x, y) pixel centres from an image of size ``src_hw`` to one resized to ``dst_hw``.

    ``F.interpolate(align_corners=False)`` aligns pixel *edges*, so centres map as
    (x + 0.5) * W / w - 0.5; plain ``x / s`` is off by 0.5 * (1 / s - 1) px (~1 px at s = 0.35).
    """
    factor = keypoints.new_tensor([dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0]])
    return (keypoints + 0.5) * factor - 0.5


# Reduced precisions the torch backend runs the network in (autocast); int8 is onnxruntime's.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def run_network(model, batch: torch.Tensor, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """The model's dense outputs, the network run under ``precision`` (fp32, bf16, fp16 autocast).

    Outputs come back as float32: the precision boundary is the network's output, so that NMS,
    top-k, sub-pixel refinement and descriptor sampling + normalisation run in fp32 and scores
    and ties stay stable (heatmaps are already computed in fp32 inside the models).
    """
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        if precision != "fp32":
            raise ValueError(f"the torch backend runs fp32, bf16 or fp16, not '{precision}'")
        return model(batch)
    with torch.autocast(batch.device.type, dtype=dtype):
        dense = model(batch)
    return {k: v.float() if v.is_floating_point() else v for k, v in dense.items()}


def pyramid_level(
    batch: torch.Tensor, sizes: torch.Tensor, scale: float, pad_to: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` (padded BxCxHxW, ``sizes`` Bx2 unpadded (h, w)) resized by ``scale`` for one
    pyramid level, padded again to a multiple of ``pad_to``, and the unpadded sizes at that
    scale; the input itself at scale 1."""
    if scale == 1.0:
        return batch, sizes
    h, w = (int(round(v * scale)) for v in batch.shape[-2:])
    h, w = (int(math.ceil(v / pad_to) * pad_to) for v in (h, w))
    resized = F.interpolate(batch, size=(h, w), mode="bilinear", align_corners=False)
    factor = sizes.new_tensor([h / batch.shape[-2], w / batch.shape[-1]], dtype=torch.float32)
    return resized, (sizes.float() * factor).floor().long()


def extract_batch(model, images: Sequence[torch.Tensor] | torch.Tensor, precision: str = "fp32") -> list[dict]:
    """Run ``model`` on CxHxW images (same channels, any sizes) and return one feature dict each.

    Keypoints are (x, y) pixels of the original image; descriptors are L2-normalised. The
    network runs in ``precision`` (``run_network``), everything after it in fp32.
    """
    batch, sizes = pad_to_multiple(images, model.pad_to)
    scales = model.pyramid_scales(int(sizes[:, 0].min()), int(sizes[:, 1].min()))
    if len(scales) == 1:
        return model.detect(run_network(model, batch, precision), sizes)
    per_scale = []
    for s in scales:
        sb, ss = pyramid_level(batch, sizes, s, model.pad_to)
        feats = model.detect(run_network(model, sb, precision), ss, budget_scale=1.0)
        if s != 1.0:
            for f in feats:
                f["keypoints"] = rescale_keypoints(f["keypoints"], sb.shape[-2:], batch.shape[-2:])
        per_scale.append(feats)
    return [model.merge_scales([p[i] for p in per_scale], int(sizes[i].prod()), scales) for i in range(len(sizes))]


def to_numpy(feats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {k: feats[k].detach().cpu().numpy() for k in FEATURE_KEYS}
    for k in ("keypoints", "scores", "descriptors"):
        out[k] = out[k].astype(np.float32, copy=False)
    out["detector"] = out["detector"].astype(np.uint8, copy=False)
    return out
