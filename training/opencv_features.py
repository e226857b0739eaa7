"""OpenCV ORB, AKAZE and SIFT for evaluation: the one implementation is ``goodpoint_ros.classical``
(also the node's ``model:=orb`` front end); this name stays for ``training.evaluate``'s imports."""

from __future__ import annotations

from goodpoint_ros.classical import CLASSICAL, ClassicalExtractor, unpack_binary

OpenCVFeatures = ClassicalExtractor

__all__ = ["CLASSICAL", "OpenCVFeatures", "unpack_binary"]
