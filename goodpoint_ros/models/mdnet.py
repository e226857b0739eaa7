"""MD-Net (Santellani et al.): N complementary detectors on an R2D2-like dilated backbone.

Paper section III.A: a fully convolutional backbone keeps full resolution by replacing the
pooling pyramid with dilated convolutions; its output F (C x H x W) is L2-normalised into the
descriptor volume, and squared then fed to one 1x1 convolution that gives N detection heatmaps.
Section III.B: per heatmap, local maxima above a threshold (0.7) after NMS (radius 3), the best
M/N per detector; optionally on a sqrt(2) image pyramid down to a short side of 256 px (VI.B).

Deviations, on purpose (the paper's Fig. 2 with the exact layer list is not in the text):
- Backbone: 3x3 convs 32-32-64-64-128-128 (dilations 1,1,2,2,4,4) then three 2x2 convs of 128
  with dilation 8, batch norm + ReLU between: < 0.5 M parameters as the paper states.
- The last conv has no bias and is followed by a batch norm without affine parameters (L2-Net /
  HardNet, whose Hardest-in-Batch triplet loss the paper adopts). With a plain last conv the
  descriptors collapsed to one vector within 20 steps (triplet loss stuck at the margin, 1.0);
  per-channel normalisation across the batch makes a constant descriptor impossible.
- Heatmaps go through a sigmoid so that the paper's 0.7 threshold is meaningful.
- ``channels`` is configurable; ``mdnet_small`` halves the widths (64-d descriptors) for CPUs.
- Keypoints are refined to sub-pixel positions (``subpixel_radius``: a 5x5 soft-argmax on their
  heatmap; the paper keeps integer local maxima); 0 turns it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from goodpoint_ros.models.base import BaseModel
from goodpoint_ros.models.features import sample_descriptors, select_keypoints, split_batch


class MDNet(BaseModel):
    name = "mdnet"
    in_channels = 3
    pad_to = 1
    heatmap_key = "heatmaps"  # BxNxHxW: one channel per detector
    descriptor_stride = 1  # full-resolution descriptor volume
    default_conf = {
        "channels": [32, 32, 64, 64, 128, 128, 128],
        "num_detectors": 2,
        # detection (run-time) parameters
        "max_keypoints": 1000,  # M: each detector keeps M / N
        "detection_threshold": 0.7,
        "nms_radius": 3,
        "remove_borders": 4,
        "pyramid_min_size": 0,  # > 0: sqrt(2) pyramid down to this short side (the paper's VI.B: 256)
        "pyramid_levels_up": 0,  # pyramid levels above the input scale (not the paper's: BaseModel.pyramid_scales)
        "subpixel_radius": 2,  # local soft-argmax over a (2r+1)^2 window (features.refine_keypoints); 0: off
        "min_keypoints_per_mpx": 0,  # > 0: keep at least this density below the threshold (features.min_keypoints)
    }
    # The paper's pyramid (VI.B) down to 160 px but not above the input: mdnet_small, held-out
    # pairs, HM(rep,MMA,H)@3 0.704 -> 0.765; the level above (sqrt(2) x the image) measured worse
    # on training photos (0.820 -> 0.754, docs/experiments/pyramid_merge).
    offline_conf = {"pyramid_min_size": 160, "pyramid_levels_up": 0}
    detection_keys = (
        "max_keypoints",
        "detection_threshold",
        "nms_radius",
        "remove_borders",
        "pyramid_min_size",
        "pyramid_levels_up",
        "subpixel_radius",
        "min_keypoints_per_mpx",
    )

    def __init__(self, conf: dict | None = None, **kwargs) -> None:
        super().__init__(conf, **kwargs)
        c0, c1, c2, c3, c4, c5, c6 = self.conf["channels"]
        layers: list[nn.Module] = []
        spec = [(3, c0, 3, 1), (c0, c1, 3, 1), (c1, c2, 3, 2), (c2, c3, 3, 2), (c3, c4, 3, 4), (c4, c5, 3, 4)]
        spec += [(c5, c6, 2, 8), (c6, c6, 2, 8), (c6, c6, 2, 8)]
        for i, (cin, cout, k, d) in enumerate(spec):
            layers.append(nn.Conv2d(cin, cout, k, padding=d * (k - 1) // 2, dilation=d, bias=False))
            last = i == len(spec) - 1
            layers += [nn.BatchNorm2d(cout, affine=not last)] + ([] if last else [nn.ReLU(inplace=True)])
        self.backbone = nn.Sequential(*layers)
        for m in self.backbone.modules():  # He init keeps unit scale through the ReLUs, so that an
            if isinstance(m, nn.Conv2d):  # untrained model in eval mode still has non-flat heatmaps
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.detector = nn.Conv2d(c6, self.conf["num_detectors"], 1)

    @property
    def descriptor_dim(self) -> int:
        return self.conf["channels"][-1]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image Bx3xHxW in [0, 1] -> ``features`` F, ``descriptors`` (F normalised) and
        ``heatmaps`` BxNxHxW in (0, 1)."""
        feat = self.backbone(image)
        # The N-channel 1x1 head runs in fp32 even under autocast: bf16 heatmaps hold only a few
        # hundred distinct values near the 0.7 threshold, so NMS and top-k would be ruled by ties.
        with torch.autocast(image.device.type, enabled=False):
            heat = torch.sigmoid(self.detector(feat.float() ** 2))
        return {"features": feat, "descriptors": F.normalize(feat, dim=1), "heatmaps": heat}

    def detect(self, dense: dict[str, torch.Tensor], sizes: torch.Tensor, budget_scale: float = 1.0) -> list[dict]:
        c = self.conf
        heat = dense[self.heatmap_key]
        b, n = heat.shape[:2]
        per_det = int(c["max_keypoints"] * budget_scale) // n
        kpts, scores, valid = select_keypoints(heat, sizes, c, per_det, c["detection_threshold"])
        desc = sample_descriptors(dense["descriptors"], kpts.view(b, -1, 2), self.descriptor_stride)
        desc = desc.view(*kpts.shape[:3], -1)
        detector = torch.arange(n, device=heat.device).view(1, n, 1).expand_as(valid)
        return split_batch(kpts, scores, desc, detector, valid)
