"""sensor_msgs <-> numpy without cv_bridge: Image, CompressedImage and the output PointCloud2s.

The decoders only read attributes, so they accept rclpy messages and rosbags messages alike
(``goodpoint-bag`` uses them without rclpy); the builders import sensor_msgs when called.
Images are parsed with ``np.frombuffer`` after checking encoding, step and size, so a malformed
message raises one ``ImageDecodeError`` with the reason instead of garbage or a crash. Message
data is filled from bytes in one copy (``array.array``), never element by element.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np

from goodpoint_ros.ros.layout import (
    build_cloud,
    keypoints_array,
    matches_array,
    read_keypoints,
    read_matches,
    to_byte_array,
)

__all__ = [
    "ImageDecodeError",
    "ENCODINGS",
    "image_to_numpy",
    "compressed_to_numpy",
    "numpy_to_image",
    "numpy_to_compressed",
    "to_model_input",
    "keypoints_to_cloud",
    "matches_to_cloud",
    "read_keypoints",
    "read_matches",
]


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded (unknown encoding, bad step/size, corrupt data)."""


# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "8UC3": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgr16": (np.dtype(np.uint16), 3),
    "bayer_rggb8": (np.dtype(np.uint8), 1),
    "bayer_bggr8": (np.dtype(np.uint8), 1),
    "bayer_gbrg8": (np.dtype(np.uint8), 1),
    "bayer_grbg8": (np.dtype(np.uint8), 1),
}
# OpenCV names Bayer patterns after the second row's first two pixels, so ROS rggb = cv2 BayerBG.
_BAYER_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}


def _buffer(data: Any) -> np.ndarray:
    """Message bytes as a uint8 array without a copy (array.array, bytes or numpy)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data if isinstance(data, bytes | bytearray) else memoryview(data).cast("B"), np.uint8)


def image_to_numpy(msg: Any) -> np.ndarray:
    """An Image as HxW or HxWxC array in its own encoding (no colour conversion, zero copy)."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding '{enc}' (supported: {', '.join(ENCODINGS)})")
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f"empty image ({w}x{h})")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageDecodeError(f"step {step} is smaller than width*channels*bytes = {row} for {enc}")
    size = len(msg.data)
    if size != step * h:
        raise ImageDecodeError(f"data holds {size} bytes but step*height = {step * h}")
    buf = _buffer(msg.data)
    rows = buf.reshape(h, step)[:, :row]
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = rows.view(dt).reshape((h, w, channels) if channels > 1 else (h, w))
    if dt.byteorder == ">":
        out = out.astype(dtype.newbyteorder("="))
    return out


def compressed_to_numpy(msg: Any) -> np.ndarray:
    """A CompressedImage (jpeg/png, incl. image_transport's ``"<enc>; <codec> compressed"``) as
    RGB or gray numpy; 16-bit PNGs stay 16-bit."""
    if len(msg.data) == 0:
        raise ImageDecodeError("empty compressed image")
    fmt = msg.format.lower()
    buf = _buffer(msg.data)
    if "compresseddepth" in fmt:  # compressed_depth_image_transport: 12-byte config header, then PNG
        buf = buf[12:]
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError(f"could not decode compressed image (format '{msg.format}', {len(buf)} bytes)")
    if image.ndim == 3:
        if "rgb" in fmt.split(";")[0]:  # image_transport encoded an rgb image as-is
            return image[..., :3]
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def to_model_input(image: np.ndarray, encoding: str) -> np.ndarray:
    """Image in ``encoding`` -> RGB or gray array that ``features.prepare_image`` accepts."""
    if encoding in _BAYER_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _BAYER_TO_RGB[encoding])
    if encoding in ("bgr8", "bgr16"):
        return image[..., ::-1]
    if encoding == "bgra8":
        return image[..., 2::-1]
    if encoding == "rgba8":
        return image[..., :3]
    if encoding == "32FC1":  # e.g. a float intensity image: normalise to [0, 1] robustly
        finite = np.isfinite(image)
        if not finite.any():
            raise ImageDecodeError("32FC1 image has no finite values")
        lo, hi = float(image[finite].min()), float(image[finite].max())
        return np.where(finite, (image - lo) / max(hi - lo, 1e-12), 0.0).astype(np.float32)
    return image


def decode_image(msg: Any) -> np.ndarray:
    """Any Image or CompressedImage message -> model input (RGB or gray), or ``ImageDecodeError``."""
    if hasattr(msg, "format"):  # CompressedImage (rclpy or rosbags)
        return compressed_to_numpy(msg)
    return to_model_input(image_to_numpy(msg), msg.encoding)


def depth_to_meters(msg: Any) -> np.ndarray:
    """A depth Image (16UC1 in mm, or 32FC1 in m) as float32 metres, NaN where unknown."""
    depth = image_to_numpy(msg)
    if msg.encoding in ("16UC1", "mono16"):
        out = depth.astype(np.float32) * 1e-3
        out[depth == 0] = np.nan
        return out
    if msg.encoding == "32FC1":
        return depth.astype(np.float32)
    raise ImageDecodeError(f"depth must be 16UC1 or 32FC1, got '{msg.encoding}'")


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

    rec = keypoints_array(
        feats["keypoints"], feats["scores"], feats["descriptors"], feats.get("detector"), track_ids, depth
    )
    return build_cloud(rec, header, PointCloud2, PointField)


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
