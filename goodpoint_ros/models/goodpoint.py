"""GoodPoint (Belikov & Potapov, 2021): the SuperPoint architecture trained without labels.

Paper section 3: a VGG encoder (stride 8) shared by two heads.
- Detector: 64 channels per 8x8 cell, *no dustbin*, softmax over the 64 channels, reshaped to a
  full-resolution confidence map (pixel shuffle).
- Descriptor: a 256-d semi-dense map, bilinearly interpolated at keypoints and L2-normalised.
- Activation: leaky ReLU everywhere (instead of SuperPoint's ReLU).

Deviations, on purpose:
- Optional batch norm after each convolution (on by default, as in common SuperPoint training
  code); it makes from-scratch training on small CPU batches stable.
- ``channels``/``head_channels``/``descriptor_dim`` are configurable so ``goodpoint_small`` can
  run in real time on a CPU; the default values are the paper's.
- Keypoints are refined to sub-pixel positions (``subpixel_radius``, a 5x5 soft-argmax on the
  confidence map; the paper reads integer pixels). On pairs of training photos (not the held-out
  set) it raised the harmonic mean of the shipped goodpoint_small by 0.017 (README); 0 turns it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from goodpoint_ros.models.base import BaseModel
from goodpoint_ros.models.features import sample_descriptors, select_keypoints, split_batch


def conv(cin: int, cout: int, k: int, bn: bool, act: bool = True, slope: float = 0.01) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.LeakyReLU(slope, inplace=True))
    return nn.Sequential(*layers)


class GoodPoint(BaseModel):
    name = "goodpoint"
    in_channels = 1
    pad_to = 8
    heatmap_key = "heatmap"  # Bx1xHxW: one detector
    descriptor_stride = 8  # descriptors on the encoder's 1/8 grid
    default_conf = {
        "channels": [64, 64, 128, 128],  # VGG blocks 1-4 (SuperPoint)
        "head_channels": 256,
        "descriptor_dim": 256,
        "batch_norm": True,
        "leaky_slope": 0.01,
        # detection (run-time) parameters
        "max_keypoints": 1000,
        # The paper's evaluation value (0.028; uniform softmax over 64 cells is 1/64 = 0.0156, so
        # 0.015 kept points at chance level). On 40 pairs of training photos at 320 px it raised
        # goodpoint_small's HM 0.563 -> 0.573 and MMA@3 0.580 -> 0.613 (README, Decisions); at
        # 640x480 the 1000-point budget fills above either threshold, so nothing changes there.
        "detection_threshold": 0.028,
        "nms_radius": 4,
        "remove_borders": 4,
        "subpixel_radius": 2,  # local soft-argmax over a (2r+1)^2 window (features.refine_keypoints); 0: off
        # > 0: a sqrt(2) image pyramid down to this short side (BaseModel.pyramid_scales); 0: one
        # scale, as in the GoodPoint paper. Borrowed from the MD-Net paper (VI.B) for scale changes.
        "pyramid_min_size": 0,
        # Pyramid levels above the input scale (each sqrt(2) larger), as SIFT's first octave doubles
        # the image: finer positions (BaseModel.pyramid_scales). Only with pyramid_min_size > 0.
        "pyramid_levels_up": 0,
        # > 0: an adaptive threshold: at least this many keypoints per megapixel, the best NMS
        # maxima below detection_threshold filling up to it (features.min_keypoints), so that a
        # SLAM back-end gets points on weakly textured frames too. 0: the threshold alone (paper).
        # 4000 (308 points per 320x240 frame instead of ~140) ends monocular VO's failures (26 -> 4
        # in 5 runs, ORB 4) at no RGB-D cost since the odometry takes metric poses from the
        # confident points (ATE 0.031 -> 0.025 m), but costs pair HM (0.803 -> 0.712 held-out) and
        # node throughput: off by default (docs/decisions.md).
        "min_keypoints_per_mpx": 0,
    }
    # The image pyramid from sqrt(2) x the image down to a 160-px short side. goodpoint_small,
    # held-out pairs at 640x480 against one scale: HM(rep,MMA,H)@3 0.803 -> 0.863, MMA@1 0.582 ->
    # 0.631 (SIFT 0.640), H-acc@1 0.72 -> 0.86; zoomed 1.5-2.5x 0.148 -> 0.613 (SIFT 0.576); about 4x the time
    # (docs/experiments/pyramid_merge).
    offline_conf = {"pyramid_min_size": 160, "pyramid_levels_up": 1}
    detection_keys = (
        "max_keypoints", "detection_threshold", "nms_radius", "remove_borders", "subpixel_radius",
        "pyramid_min_size", "pyramid_levels_up", "min_keypoints_per_mpx",
    )  # fmt: skip

    def __init__(self, conf: dict | None = None, **kwargs) -> None:
        super().__init__(conf, **kwargs)
        c = self.conf
        bn, sl = c["batch_norm"], c["leaky_slope"]
        c1, c2, c3, c4 = c["channels"]
        self.encoder = nn.Sequential(
            conv(1, c1, 3, bn, slope=sl), conv(c1, c1, 3, bn, slope=sl), nn.MaxPool2d(2),
            conv(c1, c2, 3, bn, slope=sl), conv(c2, c2, 3, bn, slope=sl), nn.MaxPool2d(2),
            conv(c2, c3, 3, bn, slope=sl), conv(c3, c3, 3, bn, slope=sl), nn.MaxPool2d(2),
            conv(c3, c4, 3, bn, slope=sl), conv(c4, c4, 3, bn, slope=sl),
        )  # fmt: skip
        h = c["head_channels"]
        self.detector = nn.Sequential(conv(c4, h, 3, bn, slope=sl), nn.Conv2d(h, 64, 1))
        self.descriptor = nn.Sequential(conv(c4, h, 3, bn, slope=sl), nn.Conv2d(h, c["descriptor_dim"], 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image Bx1xHxW in [0, 1] (H, W multiples of 8) -> dense heatmap and descriptors.

        ``heatmap`` is Bx1xHxW (softmax probabilities, each 8x8 cell sums to 1), ``logits`` the
        Bx64xH/8xW/8 pre-softmax cells, ``descriptors`` Bx D xH/8xW/8 L2-normalised.
        """
        x = self.encoder(image)
        logits = self.detector(x)
        heatmap = F.pixel_shuffle(torch.softmax(logits.float(), dim=1), 8)
        desc = F.normalize(self.descriptor(x), dim=1)
        return {"heatmap": heatmap, "logits": logits, "descriptors": desc}

    def detect(self, dense: dict[str, torch.Tensor], sizes: torch.Tensor, budget_scale: float = 1.0) -> list[dict]:
        c = self.conf
        heat = dense[self.heatmap_key]
        kpts, scores, valid = select_keypoints(
            heat, sizes, c, c["max_keypoints"] * budget_scale, c["detection_threshold"]
        )
        b = kpts.shape[0]
        desc = sample_descriptors(dense["descriptors"], kpts.view(b, -1, 2), self.descriptor_stride)
        desc = desc.view(*kpts.shape[:3], -1)
        return split_batch(kpts, scores, desc, torch.zeros_like(valid, dtype=torch.uint8), valid)
