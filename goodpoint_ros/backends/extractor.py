"""The one interface every feature front end implements: learned backends and OpenCV alike.

The node, the frame pipeline, the bag tool, the CLI, the benches and the evaluation only talk to
this protocol, so adding a front end means implementing it and registering it in
``goodpoint_ros.backends.make_extractor``; nothing downstream special-cases a name.

Features are dicts of tensors with the keys of ``features.FEATURE_KEYS``: ``keypoints`` Kx2
(x, y pixels of the input image), ``scores`` K, ``descriptors`` KxD (L2-normalised float) and
``detector`` K uint8 (MD-Net set, 0 otherwise), sorted by score where the front end scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Extractor(Protocol):
    """Image(s) in, feature dicts out (see the module docstring for the layout)."""

    name: str
    device: torch.device  # where the returned tensors live (the matcher runs there)

    @property
    def detection_keys(self) -> tuple[str, ...]:
        """Detection settings ``set_detection`` accepts (``max_keypoints`` always)."""
        ...

    @property
    def confident_score(self) -> float:
        """Points scored above this are confident; the others only fill a minimum count
        (``min_keypoints_per_mpx``). -inf where every point counts (OpenCV front ends)."""
        ...

    def set_detection(self, **kwargs: Any) -> None:
        """Change detection settings (budget, threshold, NMS...) between frames."""
        ...

    def extract(self, image: Any) -> dict[str, torch.Tensor]:
        """Features of one image (numpy or torch; uint8, uint16 or float; gray or RGB)."""
        ...

    def extract_many(self, images: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        """Features of several images at once (stereo pairs: one batch where the backend can)."""
        ...

    def extract_numpy(self, image: Any) -> dict[str, np.ndarray]:
        """Features of one image as numpy arrays (float32, detector uint8)."""
        ...


def numpy_to_features(feats: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Numpy feature dict -> CPU tensors (shares memory), for front ends that compute in numpy."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feats.items()}
