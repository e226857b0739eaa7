"""OpenCV ORB, AKAZE and SIFT behind the ``Extractor`` protocol: weight-free front ends.

A new one is a ``ClassicalExtractor`` subclass that creates its OpenCV detector (here or in its own
file) plus one line in ``registry.FRONT_ENDS``; ``backends.make_extractor`` builds it by name.

They serve as baselines (evaluation, benches) and as the node's ``model:=orb`` front end for
odometry and tracks where no trained weights exist (random-weight networks do not track). All go
through the project's own matcher, so descriptors become L2-normalised float vectors: binary ones
(ORB, AKAZE) are unpacked to +-1 bits divided by sqrt(bits), for which squared L2 distance =
4 * Hamming / bits, so mutual nearest neighbours by L2 are exactly those by Hamming distance. SIFT
vectors are L2-normalised (MNN on normalised SIFT, a common convention; raw-L2 MNN can differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from goodpoint_ros.backends.extractor import numpy_to_features
from goodpoint_ros.registry import front_end

# The one ORB configuration of the project (node, bag tool, VO bench, evaluation). Its product use
# is frame-to-frame tracking and odometry, where consecutive frames barely change scale: two
# pyramid levels keep keypoints at the finest scales, where they are best localised, and a FAST
# threshold of 10 (OpenCV's default is 20) still finds enough corners in low-texture views. These
# are the settings the VO figures in the README were measured with (OpenCV's default of 8 levels
# gives scale invariance that frame-to-frame matching does not need).
ORB_SETTINGS = {"nlevels": 2, "fastThreshold": 10}


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray for OpenCV, scaled as the learned models read pixels (``features.prepare_image``):
    uint16 over its full range, float images in [0, 1] (mono16 and 32FC1 cameras work the same)."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(np.nan_to_num(image, nan=0.0), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(f"OpenCV detectors need uint8, uint16 or float images, got {image.dtype}")
    if image.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return image


def unpack_binary(desc: np.ndarray) -> np.ndarray:
    """KxB uint8 binary descriptors -> Kx(8B) float32 +-1/sqrt(8B) (unit norm)."""
    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    return (2.0 * bits - 1.0) / np.sqrt(bits.shape[1], dtype=np.float32)


class ClassicalExtractor:
    """An OpenCV detector/descriptor as an ``Extractor`` (CPU tensors out, numpy inside).

    ``max_keypoints`` is the shared budget: a subclass's ``create`` receives it. Options meant
    for the learned backends (precision, fp16, providers, ...) do not apply and are ignored.
    """

    name = ""  # the registry name of the subclass
    binary = False  # OpenCV returns packed bits (unpacked to +-1 / sqrt(bits) here)
    detection_keys = ("max_keypoints",)

    def __init__(self, max_keypoints: int = 1000, **_backend_options: Any) -> None:
        self.device = torch.device("cpu")
        self.descriptor_dim = front_end(self.name).descriptor_dim  # also what an empty frame has
        self.max_keypoints = 0
        self.set_detection(max_keypoints=max_keypoints)

    def create(self, max_keypoints: int) -> Any:
        """The OpenCV ``Feature2D`` for this budget."""
        raise NotImplementedError

    def set_detection(self, max_keypoints: int | None = None, **_: Any) -> None:
        if max_keypoints is None or int(max_keypoints) == self.max_keypoints:
            return
        self.max_keypoints = int(max_keypoints)
        self.detector = self.create(self.max_keypoints)

    def detect_and_compute(self, image: np.ndarray) -> tuple[list, np.ndarray | None]:
        """OpenCV's own keypoints and raw descriptors (for benches that time OpenCV matching)."""
        kps, desc = self.detector.detectAndCompute(_gray(image), None)
        if len(kps) > self.max_keypoints:
            order = np.argsort([-k.response for k in kps], kind="stable")[: self.max_keypoints]
            kps = [kps[i] for i in order]
            desc = desc[order]
        return list(kps), desc

    confident_score = -math.inf  # no fill: every point is the detector's own

    def extract_numpy(self, image: Any) -> dict[str, np.ndarray]:
        kps, desc = self.detect_and_compute(image)
        n = len(kps) if desc is not None else 0
        pts = np.array([k.pt for k in kps[:n]], dtype=np.float32).reshape(n, 2)
        scores = np.array([k.response for k in kps[:n]], dtype=np.float32)
        if n == 0:
            d = np.zeros((0, self.descriptor_dim), np.float32)
        elif self.binary:
            d = unpack_binary(desc)
        else:
            d = desc.astype(np.float32)
            d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return {"keypoints": pts, "scores": scores, "descriptors": d, "detector": np.zeros(n, np.uint8)}

    def extract(self, image: Any) -> dict[str, torch.Tensor]:
        return numpy_to_features(self.extract_numpy(image))

    def extract_many(self, images: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        return [self.extract(im) for im in images]


class ORB(ClassicalExtractor):
    name, binary = "orb", True

    def create(self, max_keypoints: int) -> Any:
        return cv2.ORB_create(nfeatures=max_keypoints, **ORB_SETTINGS)


class AKAZE(ClassicalExtractor):
    """AKAZE has no count parameter: it runs with a low threshold and keeps the strongest responses."""

    name, binary = "akaze", True

    def create(self, max_keypoints: int) -> Any:
        if not hasattr(cv2, "AKAZE_create"):
            raise ValueError("this OpenCV build has no AKAZE (OpenCV 5 moved it to contrib; pin opencv 4.x)")
        return cv2.AKAZE_create(threshold=1e-4)


class SIFT(ClassicalExtractor):
    name = "sift"

    def create(self, max_keypoints: int) -> Any:
        return cv2.SIFT_create(nfeatures=max_keypoints)
