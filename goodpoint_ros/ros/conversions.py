"""sensor_msgs <-> numpy without cv_bridge: Image, CompressedImage and the output PointCloud2s.

Decoding lives in the ROS-free ``goodpoint_ros.io.image_codec`` (shared with ``goodpoint-bag`` and
training) and is re-exported here; this module adds the builders, which import sensor_msgs when
called. Message data is filled from bytes in one copy (``array.array``), never element by element.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np

from goodpoint_ros.io.cloud_layout import (
    build_cloud,
    features_array,
    matches_array,
    read_keypoints,
    read_matches,
    to_byte_array,
)
from goodpoint_ros.io.image_codec import (
    ENCODINGS,
    ImageDecodeError,
    compressed_to_numpy,
    decode_image,
    depth_to_meters,
    image_to_numpy,
    to_model_input,
)

__all__ = [
    "ImageDecodeError",
    "ENCODINGS",
    "image_to_numpy",
    "compressed_to_numpy",
    "numpy_to_image",
    "numpy_to_compressed",
    "to_model_input",
    "decode_image",
    "depth_to_meters",
    "keypoints_to_cloud",
    "matches_to_cloud",
    "read_keypoints",
    "read_matches",
]


def numpy_to_image(image: np.ndarray, encoding: str, header: Any = None) -> Any:
    """HxW / HxWxC array -> sensor_msgs Image (data filled in one copy)."""
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    image = np.ascontiguousarray(image, dtype=dtype.newbyteorder("<"))
    if image.ndim != (2 if channels == 1 else 3) or (channels > 1 and image.shape[2] != channels):
        raise ValueError(f"shape {image.shape} does not fit encoding {encoding}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = int(image.shape[1] * channels * dtype.itemsize)
    msg.data = to_byte_array(image)
    return msg


def numpy_to_compressed(image: np.ndarray, fmt: str = "jpeg", header: Any = None, rgb: bool = True) -> Any:
    """RGB (or gray) array -> sensor_msgs CompressedImage in ``fmt`` (jpeg or png)."""
    from sensor_msgs.msg import CompressedImage

    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode("." + ("jpg" if fmt == "jpeg" else fmt), image)
    if not ok:
        raise ValueError(f"could not encode image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    data = array.array("B")
    data.frombytes(buf.tobytes())
    msg.data = data
    return msg


def keypoints_to_cloud(
    feats: dict[str, np.ndarray], header: Any, track_ids: np.ndarray | None = None, depth: np.ndarray | None = None
) -> Any:
    """Numpy features (``features.to_numpy``) -> ``~/keypoints`` PointCloud2 (layout in ``layout``)."""
    from sensor_msgs.msg import PointCloud2, PointField

    return build_cloud(features_array(feats, track_ids, depth), header, PointCloud2, PointField)


def matches_to_cloud(
    matches: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    distances: np.ndarray,
    inliers: np.ndarray,
    prev_stamp: tuple[int, int],
    header: Any,
) -> Any:
    """Frame-to-frame matches -> ``~/matches`` PointCloud2; ``prev_stamp`` = (sec, nanosec)."""
    from sensor_msgs.msg import PointCloud2, PointField

    rec = matches_array(matches, kpts0, kpts1, distances, inliers, prev_stamp)
    return build_cloud(rec, header, PointCloud2, PointField)
