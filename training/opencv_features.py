"""OpenCV ORB, AKAZE and SIFT behind the same feature-dict interface as our models, so that
evaluation and benches run them through the same matcher and metric code.

Descriptors become L2-normalised float vectors: binary ones (ORB, AKAZE) are unpacked to +-1 bits
divided by sqrt(bits), for which squared L2 distance = 4 * Hamming / bits, so mutual nearest
neighbours by cosine similarity are exactly mutual nearest neighbours by Hamming distance. SIFT
vectors are L2-normalised (MNN on normalised SIFT, a common convention; raw-L2 MNN can differ).
"""

from __future__ import annotations

import cv2
import numpy as np

CLASSICAL = ("orb", "akaze", "sift")


def _gray(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise TypeError(f"OpenCV detectors need uint8 images, got {image.dtype}")
    if image.ndim == 3:
        return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    return image


def unpack_binary(desc: np.ndarray) -> np.ndarray:
    """KxB uint8 binary descriptors -> Kx(8B) float32 +-1/sqrt(8B) (unit norm)."""
    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    return (2.0 * bits - 1.0) / np.sqrt(bits.shape[1], dtype=np.float32)


class OpenCVFeatures:
    """``extract_numpy(image)`` -> keypoints Kx2, scores K, descriptors KxD (unit norm), detector K.

    ``max_keypoints`` is the shared budget: ORB and SIFT are asked for it, AKAZE (which has no
    count parameter) runs with a low threshold and keeps the strongest responses.
    """

    def __init__(self, name: str, max_keypoints: int = 1000) -> None:
        name = name.lower()
        if name not in CLASSICAL:
            raise ValueError(f"unknown OpenCV method '{name}' (use one of {CLASSICAL})")
        self.name = name
        self.max_keypoints = int(max_keypoints)
        if name == "orb":
            self.detector = cv2.ORB_create(nfeatures=self.max_keypoints)
        elif name == "akaze":
            if not hasattr(cv2, "AKAZE_create"):
                raise ValueError("this OpenCV build has no AKAZE (OpenCV 5 moved it to contrib; pin opencv 4.x)")
            self.detector = cv2.AKAZE_create(threshold=1e-4)
        else:
            self.detector = cv2.SIFT_create(nfeatures=self.max_keypoints)
        self.binary = name in ("orb", "akaze")

    def set_detection(self, max_keypoints: int | None = None, **_: object) -> None:
        if max_keypoints is not None and int(max_keypoints) != self.max_keypoints:
            self.__init__(self.name, int(max_keypoints))

    def detect_and_compute(self, image: np.ndarray) -> tuple[list, np.ndarray | None]:
        """OpenCV's own keypoints and raw descriptors (for benches that time OpenCV matching)."""
        kps, desc = self.detector.detectAndCompute(_gray(image), None)
        if len(kps) > self.max_keypoints:
            order = np.argsort([-k.response for k in kps], kind="stable")[: self.max_keypoints]
            kps = [kps[i] for i in order]
            desc = desc[order]
        return list(kps), desc

    def extract_numpy(self, image: np.ndarray) -> dict[str, np.ndarray]:
        kps, desc = self.detect_and_compute(image)
        n = len(kps)
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(n, 2)
        scores = np.array([k.response for k in kps], dtype=np.float32)
        if desc is None or n == 0:
            d = np.zeros((0, 256 if self.binary else 128), np.float32)
        elif self.binary:
            d = unpack_binary(desc)
        else:
            d = desc.astype(np.float32)
            d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return {"keypoints": pts, "scores": scores, "descriptors": d, "detector": np.zeros(n, np.uint8)}
