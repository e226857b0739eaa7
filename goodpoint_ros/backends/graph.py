"""The exportable graph: network + heatmap post-processing up to a FIXED top-k.

ONNX/TensorRT need static output shapes, so the graph stops at "the best K candidates per
detector" and returns a validity mask instead of dropping slots; the detection threshold is
applied after the graph (by the backend), so it can change without re-exporting. The graph calls
the same ``features.py`` functions as the torch extractor (NMS by max-pool, border mask, top-k,
descriptor sampling), so the exported graph is the shipped code, not a re-implementation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from goodpoint_ros.models import BaseModel
from goodpoint_ros.models.features import fill_mask, min_keypoints, sample_descriptors, select_keypoints

OUTPUT_NAMES = ("keypoints", "scores", "descriptors", "detector", "valid", "heatmap")
# Bump when the graph's inputs/outputs or post-processing change: it is part of the cache key.
GRAPH_VERSION = 3  # 2: sub-pixel refinement (subpixel_radius); 3: refinement above the window floor, squared


def graph_keep(out: dict, conf: dict, height: int, width: int) -> np.ndarray:
    """Which slots of one image's graph outputs (``out[name][0]``) are features: valid, and above
    the detection threshold or among the best ``features.min_keypoints`` of their detector (each
    detector's K slots come sorted best first), as the torch extractor selects them."""
    maps = int(conf.get("num_detectors", 1))
    scores = torch.from_numpy(np.ascontiguousarray(out["scores"][0])).view(maps, -1)
    fill = min_keypoints(conf, height * width, maps)
    return out["valid"][0] & fill_mask(scores, conf["detection_threshold"], fill).reshape(-1).numpy()


def keypoints_per_detector(model: BaseModel) -> int:
    """K per detector: max_keypoints for GoodPoint, M/N per detector for MD-Net (paper III.B)."""
    n = model.conf.get("num_detectors", 1)
    return int(model.conf["max_keypoints"]) // n


class ExportGraph(nn.Module):
    """image BxCxHxW float [0, 1] -> fixed-size features of the N*K best NMS maxima.

    Outputs (B = batch, K' = N*K): keypoints BxK'x2 (x, y px), scores BxK' (0 where not valid),
    descriptors BxK'xD (L2-normalised), detector BxK' int32, valid BxK' bool, heatmap BxNxHxW
    (dense, for parity checks). Slots are grouped per detector, each group sorted by score.
    """

    def __init__(self, model: BaseModel) -> None:
        super().__init__()
        self.model = model
        # what the model declares its dense outputs hold (BaseModel), whatever the model
        self.heat_key, self.stride = model.heatmap_key, model.descriptor_stride
        self.k = keypoints_per_detector(model)
        self.pad_to = model.pad_to

    def forward(self, image: torch.Tensor):
        b = image.shape[0]
        # Valid (unpadded) size read from the input's shape, so dynamic axes stay dynamic.
        sizes = torch._shape_as_tensor(image)[-2:].view(1, 2).expand(b, 2)
        h, w = image.shape[-2:]
        ph, pw = (-int(h)) % self.pad_to, (-int(w)) % self.pad_to  # static at export time
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph))
        dense = self.model(image)
        heat = dense[self.heat_key].float()
        c = self.model.conf
        # threshold -1: every masked-in candidate competes (scores are probabilities in [0, 1]);
        # the real threshold is applied after the graph. The top-k of "mask & score > t" equals
        # the top-k of "mask" filtered by "score > t", so this is the torch result.
        kpts, top, _ = select_keypoints(heat, sizes, c, self.k, -1.0)
        valid = top > -1.0  # not isfinite(): IsInf is missing from older TensorRT parsers
        n = kpts.shape[1]
        kpts = kpts.reshape(b, -1, 2)
        desc = sample_descriptors(dense["descriptors"], kpts, self.stride)
        scores = torch.where(valid, top, torch.zeros_like(top)).reshape(b, -1)
        ids = torch.arange(n, dtype=torch.int32, device=image.device).view(1, n, 1)
        detector = (ids * valid.to(torch.int32)).reshape(b, -1)  # computed, not a constant output
        return kpts, scores, desc, detector, valid.reshape(b, -1), heat
