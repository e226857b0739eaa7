"""sensor_msgs Image / CompressedImage -> numpy, ROS-free: the one image decoder of the project.

The live node (``goodpoint_ros.ros.conversions`` re-exports these), ``goodpoint-bag`` and the
training data loader (``training.datasets``) all decode through here. Nothing is imported from
rclpy or a message package: a message is any object with ``encoding``, ``height``, ``width``,
``step``, ``is_bigendian`` and ``data`` (Image) or ``format`` and ``data`` (CompressedImage), so
rclpy messages and ``rosbags`` deserialised messages both work.

Raw images are parsed with ``np.frombuffer`` after checking encoding, step and size, so a malformed
message raises one ``ImageDecodeError`` with a one-line reason instead of garbage or a crash.
Encodings are matched case-insensitively (``8uc1`` is ``8UC1``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = [
    "ImageDecodeError",
    "ENCODINGS",
    "canonical_encoding",
    "image_to_numpy",
    "compressed_to_numpy",
    "compressed_is_plain",
    "to_rgb",
    "to_model_input",
    "decode_image",
    "depth_to_meters",
]


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded (unknown encoding, bad step/size, corrupt data)."""


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)

# encoding -> (numpy dtype, channels); the names of sensor_msgs/image_encodings.hpp
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (_U8, 1),
    "8UC1": (_U8, 1),
    "mono16": (_U16, 1),
    "16UC1": (_U16, 1),
    "32FC1": (_F32, 1),
    "rgb8": (_U8, 3),
    "bgr8": (_U8, 3),
    "8UC3": (_U8, 3),
    "rgba8": (_U8, 4),
    "bgra8": (_U8, 4),
    "8UC4": (_U8, 4),
    "rgb16": (_U16, 3),
    "bgr16": (_U16, 3),
    "rgba16": (_U16, 4),
    "bgra16": (_U16, 4),
    "bayer_rggb8": (_U8, 1),
    "bayer_bggr8": (_U8, 1),
    "bayer_gbrg8": (_U8, 1),
    "bayer_grbg8": (_U8, 1),
}
_CANONICAL = {name.lower(): name for name in ENCODINGS}
# OpenCV names Bayer patterns after the second row's first two pixels, so ROS rggb = cv2 BayerBG.
_BAYER_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
_COMPRESSED_DEPTH_HEADER = 12  # compressed_depth_image_transport: config header before the PNG


def canonical_encoding(encoding: str) -> str:
    """The ``ENCODINGS`` key for ``encoding`` (any case), or ``ImageDecodeError``."""
    name = _CANONICAL.get(str(encoding).lower())
    if name is None:
        raise ImageDecodeError(f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    return name


def _buffer(data: Any) -> np.ndarray:
    """Message bytes as a flat uint8 array, without a copy where the buffer allows it."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, bytes | bytearray):
        return np.frombuffer(data, np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), np.uint8)  # array.array, memoryview
    except TypeError:
        return np.asarray(data, dtype=np.uint8)  # a list of ints


def image_to_numpy(msg: Any) -> np.ndarray:
    """An Image as HxW or HxWxC array in its own encoding and dtype (no colour conversion; zero
    copy unless big-endian). Row padding (``step`` > width*channels*bytes) is skipped."""
    enc = canonical_encoding(msg.encoding)
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f"empty {enc} image ({w}x{h})")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageDecodeError(f"{enc} image: step {step} is smaller than width*channels*bytes = {row}")
    buf = _buffer(msg.data)
    if buf.size != step * h:
        raise ImageDecodeError(f"{enc} image {w}x{h}: data holds {buf.size} bytes but step*height = {step * h}")
    rows = buf.reshape(h, step)[:, :row]
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = rows.view(dt).reshape((h, w, channels) if channels > 1 else (h, w))
    if dt.byteorder == ">":
        out = out.astype(dtype.newbyteorder("="))
    return out


def _compressed_layout(fmt: str) -> tuple[int, bool]:
    """(bytes before the image file, colour stored RGB-first) for a CompressedImage ``format``.

    image_transport writes ``"<encoding>; <codec> compressed <order>"``; like its subscriber, the
    colour order is BGR when the codec part says ``compressed bgr`` or there is no ``;`` at all
    (a plain ``jpeg``/``png``), RGB otherwise."""
    f = fmt.lower()
    header = _COMPRESSED_DEPTH_HEADER if "compresseddepth" in f else 0
    _, sep, codec = f.partition(";")
    return header, bool(sep) and "compressed bgr" not in codec


def compressed_is_plain(fmt: str) -> bool:
    """True when the payload is an ordinary image file in OpenCV's BGR order, so that storing the
    bytes and ``cv2.imdecode`` later gives the same picture as ``compressed_to_numpy``."""
    return _compressed_layout(fmt) == (0, False)


def compressed_to_numpy(msg: Any) -> np.ndarray:
    """A CompressedImage (jpeg/png, image_transport's ``"<enc>; <codec> compressed <order>"``
    and compressedDepth) as RGB or gray numpy; 16-bit PNGs stay 16-bit."""
    fmt = str(msg.format)
    header, rgb_first = _compressed_layout(fmt)
    buf = _buffer(msg.data)[header:]
    if buf.size == 0:
        raise ImageDecodeError(f"empty compressed image (format '{fmt}')")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageDecodeError(f"could not decode compressed image (format '{fmt}', {buf.size} bytes)")
    if image.ndim == 3:
        if rgb_first:
            return image[..., :3]
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """``image_to_numpy`` output -> RGB (HxWx3) or single-channel, dtype kept: Bayer is demosaiced,
    BGR(A) reordered, alpha dropped. 8UC3 is taken as RGB, 8UC4 as RGBA."""
    enc = canonical_encoding(encoding)
    if enc in _BAYER_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _BAYER_TO_RGB[enc])
    if enc in ("bgr8", "bgr16"):
        return image[..., ::-1]
    if enc in ("bgra8", "bgra16"):
        return image[..., 2::-1]
    if enc in ("rgba8", "rgba16", "8UC4"):
        return image[..., :3]
    return image


def to_model_input(image: np.ndarray, encoding: str) -> np.ndarray:
    """Image in ``encoding`` -> RGB or gray array that ``features.prepare_image`` accepts
    (``to_rgb``, and a 32FC1 image normalised robustly to [0, 1], non-finite pixels 0)."""
    image = to_rgb(image, encoding)
    if canonical_encoding(encoding) == "32FC1":
        finite = np.isfinite(image)
        if not finite.any():
            raise ImageDecodeError("32FC1 image has no finite values")
        lo, hi = float(image[finite].min()), float(image[finite].max())
        return np.where(finite, (image - lo) / max(hi - lo, 1e-12), 0.0).astype(np.float32)
    return image


def decode_image(msg: Any) -> np.ndarray:
    """Any Image or CompressedImage message -> model input (RGB or gray), or ``ImageDecodeError``."""
    if hasattr(msg, "format"):  # CompressedImage
        return compressed_to_numpy(msg)
    return to_model_input(image_to_numpy(msg), msg.encoding)


def depth_to_meters(msg: Any) -> np.ndarray:
    """A depth Image (16UC1/mono16 in mm, or 32FC1 in m) as float32 metres, NaN where unknown."""
    depth = image_to_numpy(msg)
    enc = canonical_encoding(msg.encoding)
    if enc in ("16UC1", "mono16"):
        out = depth.astype(np.float32) * 1e-3
        out[depth == 0] = np.nan
        return out
    if enc == "32FC1":
        return depth.astype(np.float32)
    raise ImageDecodeError(f"depth must be 16UC1 or 32FC1, got '{msg.encoding}'")
