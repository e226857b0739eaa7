"""Shared model plumbing: LightGlue-style ``default_conf`` merging and the detection settings."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from goodpoint_ros.models.features import cross_level_support, fill_mask, min_keypoints


def merge_conf(default: dict, user: dict | None) -> dict:
    """Recursively merge ``user`` into a copy of ``default``; unknown keys are an error."""
    out = copy.deepcopy(default)
    for key, value in (user or {}).items():
        if key not in out:
            raise KeyError(f"unknown config key '{key}' (known: {sorted(out)})")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge_conf(out[key], value)
        else:
            out[key] = value
    return out


class BaseModel(nn.Module):
    """A keypoint model: dense ``forward`` for training, sparse ``detect`` on its outputs; images go
    through ``features.extract_batch`` (the one inference path) or an ``Extractor``.

    Subclasses set ``default_conf`` (architecture and detection keys), ``name``, the number of
    input channels, the stride the input must be padded to, what their dense outputs hold
    (``heatmap_key``, ``descriptor_stride``), and implement ``forward`` and ``detect``; a model
    with an image pyramid overrides ``pyramid_scales`` and ``merge_scales``. The inference path,
    the export graph and training read these declarations, never the model's type or name.
    """

    name: str = "base"
    default_conf: dict[str, Any] = {}
    # Keys that change the detections but not the weights; they may be changed at run time.
    detection_keys: tuple[str, ...] = ()
    in_channels: int = 1
    pad_to: int = 1
    # The ``forward`` output holding the detection heatmaps (BxNxHxW, one channel per detector):
    # the export graph selects keypoints on it and the parity check compares it.
    heatmap_key: str = "heatmap"
    # Input pixels per cell of ``forward``'s ``descriptors`` map (``features.sample_descriptors``).
    descriptor_stride: int = 1
    # Detection settings for offline work (goodpoint-extract / goodpoint-match: pairs and mapping,
    # no 30 Hz budget), over ``default_conf`` where a flag is left at the model's default
    # (``cli.common.build_front_end``); each model's own, as measured for it.
    offline_conf: dict[str, Any] = {}

    def __init__(self, conf: dict | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.conf = merge_conf(self.default_conf, {**(conf or {}), **kwargs})

    @property
    def confident_score(self) -> float:
        """Scores above this are the detector's own points; below it, only the
        ``min_keypoints_per_mpx`` fill (metric odometry trusts the former: ``VisualOdometry``)."""
        return float(self.conf["detection_threshold"])

    @property
    def arch_conf(self) -> dict:
        """The part of the config that determines the weights' shapes (saved in checkpoints)."""
        return {k: v for k, v in self.conf.items() if k not in self.detection_keys}

    def set_detection(self, **kwargs: Any) -> None:
        """Change detection parameters (threshold, NMS radius, max keypoints...) in place."""
        for key, value in kwargs.items():
            if key not in self.detection_keys:
                raise KeyError(f"'{key}' is not a detection parameter of {self.name}")
            self.conf[key] = value

    def pyramid_scales(self, height: int, width: int) -> list[float]:
        """Image scales to run for an image of ``height`` x ``width`` (``features.extract_batch``).

        One level, unless the config's ``pyramid_min_size`` is positive: then a sqrt(2) pyramid
        down to that short side (the MD-Net paper's multi-scale extraction, VI.B, uses 256; any
        model that declares the key gets it), starting ``pyramid_levels_up`` levels above the input
        scale. An upsampled level is SIFT's first octave at -1: a point found on the image scaled
        by sqrt(2) is placed 1.4x more finely (goodpoint_small, training photos: MMA@1 0.59 ->
        0.73, docs/experiments/pyramid_merge)."""
        if int(self.conf.get("pyramid_min_size", 0)) <= 0:
            return [1.0]
        scales, step = [], int(self.conf.get("pyramid_levels_up", 0))
        while min(height, width) * 2.0 ** (step / 2) >= self.conf["pyramid_min_size"] or not scales:
            scales.append(2.0 ** (step / 2))  # 1.0 exactly at step 0: the input runs as it is
            step -= 1
        return scales

    def merge_scales(self, feats: list[dict], area: int, scales: list[float]) -> dict:
        """One image's features from its per-level features (keypoints already in the original
        image's pixels, ``area`` its pixel count, ``scales`` the levels' scales): the best points of
        each detector set across levels, the budget shared; with ``min_keypoints_per_mpx`` the
        points above the threshold and the best others up to that density of the image (each
        level's own fill is only a candidate pool, or the levels together would fill 1.9x the
        density).

        Best means by score, except that a point of a level above the input scale
        (``pyramid_levels_up``) ranks after all others unless a neighbouring level found it too
        (``features.cross_level_support``): an enlarged image interpolates detail, and half the
        budget went to that level while its points repeated least (training photos, 640x480: 0.71
        against 0.82-0.93 on the other levels). Held-out pairs: HM(rep,MMA,H)@3 0.856 -> 0.863;
        COLMAP socketed_axe 16 -> 25 of 25 images (docs/experiments/pyramid_merge). Confirming
        every level's points this way cost the pyramids without an enlarged level (held-out
        pyramid 160: 0.856 -> 0.843, mdnet_small 0.765 -> 0.755).

        A corner found on several levels is kept on each: its descriptors differ from level to
        level (cosine similarity mostly below 0.9), and the coarse one is what matches the same
        corner in a zoomed view. Dropping the lower-scoring copies, as this did until 2026-12-07,
        cost zoomed training pairs HM(rep,MMA,H)@3 0.64 -> 0.45 (docs/experiments/pyramid_merge)."""
        if len(feats) == 1:
            return feats[0]
        allf = {k: torch.cat([f[k] for f in feats]) for k in feats[0]}
        scores, det = allf["scores"], allf["detector"]
        support = cross_level_support([f["keypoints"] for f in feats], scales, [s > 1.0 for s in scales])
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[torch.argsort(support[order].to(torch.uint8), descending=True, stable=True)]
        sets = int(self.conf.get("num_detectors", 1))
        per_set = int(self.conf["max_keypoints"]) // sets
        fill = min_keypoints(self.conf, area, sets)
        chosen = torch.zeros_like(support)
        for d in range(sets):  # N is small (1-8): a loop over sets, not points
            idx = order[det[order] == d]
            chosen[idx[fill_mask(scores[idx], self.conf["detection_threshold"], fill)][:per_set]] = True
        keep = order[chosen[order]]
        return {k: v[keep] for k, v in allf.items()}

    def detect(self, dense: dict[str, torch.Tensor], sizes: torch.Tensor, budget_scale: float = 1.0) -> list[dict]:
        """Sparse features (one dict per image) from ``forward``'s outputs; ``sizes`` Bx2 (h, w)
        of the unpadded images, ``budget_scale`` scales the keypoint budget."""
        raise NotImplementedError


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d (inside an ``nn.Sequential``) into
    that convolution's weights and bias, in place, and return ``model``.

    Inference only (the running statistics become constants): in eager mode each BatchNorm is a
    separate pass over a full-resolution activation, so folding it saves memory traffic where the
    network is memory-bound (goodpoint_small's 32-channel full-resolution layers: 640x480 bf16
    network 45.0 -> 41.7 ms, 320x240 7.4 -> 6.2 ms on 2 Zen 4 cores). fp32 outputs are unchanged
    up to rounding. Training and export never call it (ONNX runtimes fold by themselves).
    """
    if model.training:
        raise RuntimeError("fold_batchnorm is for inference: call model.eval() first")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or bn.running_var is None:
                continue
            scale = (bn.running_var + bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight
            bias = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
            seq[i + 1] = nn.Identity()
    return model
