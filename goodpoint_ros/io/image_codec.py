"""sensor_msgs Image / CompressedImage -> numpy, ROS-free: the one image decoder of the project.

The live node (``goodpoint_ros.ros.conversions`` re-exports these), ``goodpoint-bag`` and the
training data loader (``goodpoint_ros.training.datasets``) all decode through here. Nothing is imported from
rclpy or a message package: a message is any object with ``encoding``, ``height``, ``width``,
``step``, ``is_bigendian`` and ``data`` (Image) or ``format`` and ``data`` (CompressedImage), so
rclpy messages and ``rosbags`` deserialised messages both work.

Raw encodings (``sensor_msgs/image_encodings.hpp`` names, matched case-insensitively: ``8uc1`` is
``8UC1``): mono8/8UC1, mono16/16UC1, 32FC1, rgb8/bgr8/8UC3, rgba8/bgra8/8UC4, rgb16/bgr16,
rgba16/bgra16, Bayer ``bayer_{rggb,bggr,gbrg,grbg}{8,16}``, and what USB and embedded camera drivers
publish: ``yuv422`` (UYVY, usb_cam's), ``yuv422_yuy2`` (YUYV) and the 4:2:0 ``nv12``/``nv21`` (a Y
plane, then a half-height plane of interleaved chroma, both ``step`` bytes a row). Colour is
converted by OpenCV's codes, as cv_bridge does, so YUV decodes with OpenCV's BT.601 coefficients.
Raw images are parsed with ``np.frombuffer`` after checking encoding, step and size, so a malformed
message raises one ``ImageDecodeError`` with a one-line reason instead of garbage or a crash; an
encoding or compressed format that is not supported raises its subclass
``UnsupportedEncodingError`` (a configuration problem, not a corrupt message).

Decompression bombs: every decode function takes ``max_pixels`` (default ``DEFAULT_MAX_PIXELS``,
10 MP, a little above 4K: 3840x2160, 4096x2160 and 3840x2400 pass, 5K is refused; ``None`` or 0
disables the check).
A raw image's ``width*height`` and a compressed image's header (PNG IHDR, JPEG SOFn, WebP
VP8/VP8L/VP8X, BMP, PNM, TIFF) are checked before anything is allocated or decoded, so a 16 KB PNG
that claims 16000x16000 costs nothing. Compressed formats whose header is not read here (GIF, AVIF,
HDR, JPEG 2000...) are refused, never decoded unchecked (a recognised one as
``UnsupportedEncodingError``). Both refusals are ``ImageDecodeError``s, so callers count them with
the other decode errors.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

__all__ = [
    "ImageDecodeError",
    "UnsupportedEncodingError",
    "ENCODINGS",
    "PLANAR_ENCODINGS",
    "DEFAULT_MAX_PIXELS",
    "encoded_size",
    "check_pixels",
    "check_message",
    "decode_bytes",
    "canonical_encoding",
    "image_to_numpy",
    "compressed_to_numpy",
    "compressed_is_plain",
    "to_rgb",
    "to_model_input",
    "decode_image",
    "DEPTH_ENCODINGS",
    "depth_array_to_meters",
    "depth_to_meters",
    "stretch_to_unit",
    "to_uint8",
]


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded (unknown encoding, bad step/size, corrupt data)."""


class UnsupportedEncodingError(ImageDecodeError):
    """An encoding (or compressed format) this module does not decode: every message on the topic
    will fail the same way, so it is a setup problem rather than one malformed message. A subclass,
    so that callers counting ``ImageDecodeError`` count it too."""


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)

# encoding -> (numpy dtype, channels) of one pixel as ``image_to_numpy`` returns it (HxW or HxWxC);
# the names of sensor_msgs/image_encodings.hpp. The packed 4:2:2 YUV encodings are 2 bytes a pixel
# (as cv_bridge's CV_8UC2): luma and one of the pair's two chroma samples.
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
    "bayer_rggb16": (_U16, 1),
    "bayer_bggr16": (_U16, 1),
    "bayer_gbrg16": (_U16, 1),
    "bayer_grbg16": (_U16, 1),
    "yuv422": (_U8, 2),  # UYVY: U0 Y0 V0 Y1 for each pixel pair
    "yuv422_yuy2": (_U8, 2),  # YUYV: Y0 U0 Y1 V0
}
# 4:2:0 encodings whose image is not one array of pixels: a full-resolution Y plane of ``height``
# rows, then ``height/2`` rows of interleaved chroma (UV for nv12, VU for nv21), each ``step``
# bytes. (dtype, channels) as in ENCODINGS, but ``image_to_numpy`` returns the (height*3/2)xwidth
# array OpenCV's converters take, so these are kept apart from ENCODINGS (whose entries an
# HxW(xC) array of that dtype fills, e.g. for building messages).
PLANAR_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "nv12": (_U8, 1),
    "nv21": (_U8, 1),
}
# depth images: millimetres in uint16, metres in float32 (REP 118)
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_CANONICAL = {name.lower(): name for name in (*ENCODINGS, *PLANAR_ENCODINGS)}
# for the refusal message: one line, the Bayer family folded
_SUPPORTED = ", ".join(
    [n for n in (*ENCODINGS, *PLANAR_ENCODINGS) if not n.startswith("bayer_")] + ["bayer_{rggb,bggr,gbrg,grbg}{8,16}"]
)
# OpenCV names Bayer patterns after the second row's first two pixels, so ROS rggb = cv2 BayerBG;
# its demosaicing keeps uint16, so the 16-bit patterns use the same codes.
_BAYER_TO_RGB = {
    f"bayer_{ros}{bits}": code
    for ros, code in (
        ("rggb", cv2.COLOR_BayerBG2RGB),
        ("bggr", cv2.COLOR_BayerRG2RGB),
        ("gbrg", cv2.COLOR_BayerGR2RGB),
        ("grbg", cv2.COLOR_BayerGB2RGB),
    )
    for bits in (8, 16)
}
_YUV422 = ("yuv422", "yuv422_yuy2")
# chroma-subsampled YUV -> RGB, the codes cv_bridge uses for the same encodings
_YUV_TO_RGB = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "nv12": cv2.COLOR_YUV2RGB_NV12,
    "nv21": cv2.COLOR_YUV2RGB_NV21,
}
_COMPRESSED_DEPTH_HEADER = 12  # compressed_depth_image_transport: config header before the PNG

# 4K UHD (3840x2160 = 8.29 MP) plus ~20 %, so DCI 4K (4096x2160) and 16:10 4K (3840x2400 = 9.22 MP)
# pass too. At the worst case (16-bit RGBA) that is 80 MB decoded; a 5K frame (14.7 MP) is refused.
DEFAULT_MAX_PIXELS = 10_000_000


def canonical_encoding(encoding: str) -> str:
    """The ``ENCODINGS`` or ``PLANAR_ENCODINGS`` key for ``encoding`` (any case), or
    ``UnsupportedEncodingError`` naming it."""
    name = _CANONICAL.get(str(encoding).lower())
    if name is None:
        raise UnsupportedEncodingError(f"unsupported encoding '{encoding}' (supported: {_SUPPORTED})")
    return name


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """``ImageDecodeError`` when ``width*height`` exceeds ``max_pixels`` (None/0: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} {width}x{height} has {width * height} pixels, more than max_pixels {max_pixels} "
            f"(refused before decoding)"
        )


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first SOFn, walking markers as libjpeg does: bytes that are not a
    marker are skipped to the next 0xFF (libjpeg warns and does the same), so both find the same
    frame header; a scan (SOS) or the end before any SOFn is refused (libjpeg refuses it too)."""
    i, n = 2, len(data)
    while True:
        i = data.find(b"\xff", i)
        while 0 <= i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i < 0 or i >= n:
            raise ImageDecodeError("JPEG without a frame header (SOF): truncated or corrupt")
        marker = data[i]
        i += 1
        if marker == 0x00 or marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise ImageDecodeError("JPEG reaches its scan data before a frame header (SOF): corrupt")
        if i + 2 > n:
            raise ImageDecodeError("JPEG header truncated")
        length = (data[i] << 8) | data[i + 1]
        if marker in _JPEG_SOF:
            if length < 8 or i + 7 > n:
                raise ImageDecodeError("JPEG frame header (SOF) truncated")
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            if width == 0 or height == 0:
                raise ImageDecodeError(f"JPEG frame header declares {width}x{height} (zero or deferred height)")
            return width, height
        if length < 2:
            raise ImageDecodeError(f"JPEG marker 0x{marker:02X} with invalid length {length}")
        i += length


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the first image directory, the one OpenCV decodes."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        size: dict[int, int] = {}
        for k in range(count):
            tag, typ, _, value = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * k)
            if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG, stored inline
                fmt = "H" if typ == 3 else "I"
                size[tag] = struct.unpack_from(order + fmt, value)[0]
    except struct.error:
        raise ImageDecodeError("TIFF header truncated") from None
    if 256 not in size or 257 not in size:
        raise ImageDecodeError("TIFF first directory has no image width/length")
    return size[256], size[257]


def _pnm_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a P1-P6 header: tokens separated by whitespace, ``#`` comments."""
    fields: list[int] = []
    i, n = 2, min(len(data), 4096)
    while len(fields) < 2 and i < n:
        c = data[i : i + 1]
        if c.isspace():
            i += 1
        elif c == b"#":
            end = data.find(b"\n", i)
            i = n if end < 0 else end + 1
        else:
            j = i
            while j < n and data[j : j + 1].isdigit():
                j += 1
            if j == i:
                break
            fields.append(int(data[i:j]))
            i = j
    if len(fields) < 2:
        raise ImageDecodeError("PNM header truncated or corrupt")
    return fields[0], fields[1]


_ACCEPTED_FORMATS = "PNG, JPEG, WebP, BMP, PNM, TIFF"
# recognised but never decoded (their headers are not read here): leading bytes -> name
_UNSUPPORTED_FORMATS = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x00\x00\x00\x0cjP  \r\n": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000",
    b"#?RADIANCE": "Radiance HDR",
    b"#?RGBE": "Radiance HDR",
    b"\x76\x2f\x31\x01": "OpenEXR",
}
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _unsupported_format(head: bytes) -> str | None:
    """The name of a known image format that is refused (not decoded here), or None."""
    for magic, name in _UNSUPPORTED_FORMATS.items():
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    return None


def encoded_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from an image file's header without decoding it.

    ``ImageDecodeError`` for a truncated or corrupt header and for unrecognised bytes;
    ``UnsupportedEncodingError`` for a recognised format whose header is not read here (so that
    nothing is ever decoded without its size being known first)."""
    head = data[:32]
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            if len(data) < 24 or data[12:16] != b"IHDR":
                raise ImageDecodeError("PNG header (IHDR) truncated or missing")
            w, h = struct.unpack(">II", data[16:24])
            return "PNG", w, h
        if head.startswith(b"\xff\xd8\xff"):
            return ("JPEG", *_jpeg_size(data))
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            chunk = head[12:16]
            if len(data) < 30:
                raise ImageDecodeError("WebP header truncated")
            if chunk == b"VP8 ":  # lossy: 3-byte frame tag, start code, 14-bit sizes
                if data[23:26] != b"\x9d\x01\x2a":
                    raise ImageDecodeError("WebP (VP8) frame header corrupt")
                w, h = struct.unpack("<HH", data[26:30])
                return "WebP", w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":  # lossless: signature 0x2F, then 14-bit width-1 and height-1
                if data[20] != 0x2F:
                    raise ImageDecodeError("WebP (VP8L) header corrupt")
                bits = int.from_bytes(data[21:25], "little")
                return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return "WebP", w, h
            raise ImageDecodeError(f"WebP with unknown first chunk {chunk!r}")
        if head.startswith(b"BM"):
            if len(data) < 26:
                raise ImageDecodeError("BMP header truncated")
            (hdr,) = struct.unpack("<I", data[14:18])
            if hdr == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                w, h = struct.unpack("<HH", data[18:22])
            else:
                w, h = struct.unpack("<ii", data[18:26])
            return "BMP", abs(w), abs(h)  # negative height: top-down rows
        if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
            return ("PNM", *_pnm_size(data))
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return ("TIFF", *_tiff_size(data))
    except (struct.error, IndexError):
        raise ImageDecodeError("image header truncated") from None
    name = _unsupported_format(bytes(head))
    if name is not None:
        raise UnsupportedEncodingError(
            f"unsupported image format {name} (first bytes {bytes(head[:8])!r}); accepted: {_ACCEPTED_FORMATS}"
        )
    raise ImageDecodeError(
        f"unsupported or unknown image format (first bytes {bytes(head[:8])!r}); accepted: {_ACCEPTED_FORMATS}"
    )


def decode_bytes(data: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS, what: str = "image") -> np.ndarray:
    """An encoded image file (bytes or uint8 array) -> array in OpenCV's order (BGR/BGRA or gray,
    dtype kept), after its header passed ``max_pixels``; ``ImageDecodeError`` otherwise."""
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageDecodeError(f"empty {what}")
    try:
        fmt, w, h = encoded_size(buf.tobytes())
    except ImageDecodeError as e:
        raise type(e)(f"could not decode {what}: {e}") from None  # an unsupported format stays one
    if w == 0 or h == 0:
        raise ImageDecodeError(f"could not decode {what}: {fmt} header declares an empty {w}x{h} image")
    check_pixels(w, h, max_pixels, f"{what}: {fmt}")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageDecodeError(f"could not decode {what}: {fmt} {w}x{h} data is corrupt or truncated")
    check_pixels(image.shape[1], image.shape[0], max_pixels, f"{what}: decoded {fmt}")  # belt and braces
    return image


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


def _raw_layout(msg: Any, max_pixels: int | None) -> tuple[str, np.dtype, int, int, int, int, int]:
    """(encoding, dtype, channels, height, width, step, bytes per row) of a raw Image, checked from
    its fields alone (known encoding, non-empty, ``max_pixels``, step >= one row, even sizes where
    chroma is shared by pixel pairs or 2x2 blocks): the shared first half of decoding it and of
    checking it on arrival. For ``PLANAR_ENCODINGS`` a row is one row of either plane."""
    enc = canonical_encoding(msg.encoding)
    dtype, channels = ENCODINGS[enc] if enc in ENCODINGS else PLANAR_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f"empty {enc} image ({w}x{h})")
    check_pixels(w, h, max_pixels, f"{enc} image")
    if enc in PLANAR_ENCODINGS and (w % 2 or h % 2):
        raise ImageDecodeError(f"{enc} image {w}x{h}: width and height must be even (4:2:0 chroma covers 2x2 pixels)")
    if enc in _YUV422 and w % 2:
        raise ImageDecodeError(f"{enc} image {w}x{h}: width must be even (4:2:2 chroma covers pixel pairs)")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageDecodeError(f"{enc} image: step {step} is smaller than width*channels*bytes = {row}")
    return enc, dtype, channels, h, w, step, row


def _stored_rows(enc: str, h: int) -> int:
    """Rows of ``step`` bytes in the data: ``h``, or ``h*3/2`` for a Y plane plus a 4:2:0 chroma plane."""
    return h * 3 // 2 if enc in PLANAR_ENCODINGS else h


def _check_data_size(enc: str, h: int, w: int, step: int, size: int) -> None:
    """A raw Image's data must hold exactly step*height bytes (step*height*3/2 for nv12/nv21)."""
    rows = _stored_rows(enc, h)
    if size != step * rows:
        rule = "step*height*3/2" if rows != h else "step*height"
        raise ImageDecodeError(f"{enc} image {w}x{h}: data holds {size} bytes but {rule} = {step * rows}")


def _check_depth_encoding(msg: Any) -> None:
    """Depth comes as 16UC1/mono16 (mm) or 32FC1 (m); anything else is an
    ``UnsupportedEncodingError`` (a colour camera wired to the depth input fails every frame)."""
    if canonical_encoding(msg.encoding) not in DEPTH_ENCODINGS:
        raise UnsupportedEncodingError(f"depth must be 16UC1 or 32FC1, got '{msg.encoding}'")


def image_to_numpy(msg: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An Image as HxW or HxWxC array in its own encoding and dtype (no colour conversion; zero
    copy unless big-endian): yuv422 variants as HxWx2 bytes, nv12/nv21 as (H*3/2)xW bytes (Y plane
    over chroma plane), the layouts OpenCV converts. Row padding (``step`` > width*channels*bytes)
    is skipped. More than ``max_pixels`` is refused before anything else: later stages (colour,
    float, the network) would multiply the memory."""
    enc, dtype, channels, h, w, step, row = _raw_layout(msg, max_pixels)
    buf = _buffer(msg.data)
    _check_data_size(enc, h, w, step, buf.size)
    n = _stored_rows(enc, h)
    rows = buf.reshape(n, step)[:, :row]
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = rows.view(dt).reshape((n, w, channels) if channels > 1 else (n, w))
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


def compressed_to_numpy(msg: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A CompressedImage (jpeg/png, image_transport's ``"<enc>; <codec> compressed <order>"``
    and compressedDepth) as RGB or gray numpy; 16-bit PNGs stay 16-bit. The payload's header must
    declare at most ``max_pixels`` (checked before decoding, see the module docstring)."""
    fmt = str(msg.format)
    header, rgb_first = _compressed_layout(fmt)
    buf = _buffer(msg.data)[header:]
    if buf.size == 0:
        raise ImageDecodeError(f"empty compressed image (format '{fmt}')")
    image = decode_bytes(buf, max_pixels, f"compressed image (format '{fmt}', {buf.size} bytes)")
    if image.ndim == 3:
        if rgb_first:
            return image[..., :3]
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """``image_to_numpy`` output -> RGB (HxWx3) or single-channel, dtype kept: Bayer is demosaiced
    (8 or 16 bit), YUV converted, BGR(A) reordered, alpha dropped. 8UC3 is taken as RGB, 8UC4 as
    RGBA."""
    enc = canonical_encoding(encoding)
    if enc in _BAYER_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _BAYER_TO_RGB[enc])
    if enc in _YUV_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _YUV_TO_RGB[enc])
    if enc in ("bgr8", "bgr16"):
        return image[..., ::-1]
    if enc in ("bgra8", "bgra16"):
        return image[..., 2::-1]
    if enc in ("rgba8", "rgba16", "8UC4"):
        return image[..., :3]
    return image


STRETCH_PERCENTILES = (1.0, 99.0)


def stretch_to_unit(image: np.ndarray, what: str = "image") -> np.ndarray:
    """A 16-bit or float image -> float32 in [0, 1] by one explicit rule, the same in the node,
    training and evaluation (a 12-bit camera sending mono16 fills a sliver of 0..65535, and a float
    image has no fixed range, so both are stretched rather than scaled):

    - NaN and +-inf pixels are ignored for the range and become 0;
    - the range is the 1st..99th percentile of the finite values (a few extreme values, e.g.
      +-3e38, do not squash the rest), computed in float64, so a span wider than float32's own
      range cannot overflow;
    - values are clipped to [0, 1]; a constant image is all 0.
    ``ImageDecodeError`` when no pixel is finite (nothing to show the network)."""
    finite = np.isfinite(image)
    values = image[finite]
    if values.size == 0:
        raise ImageDecodeError(f"{what} has no finite values")
    lo, hi = (float(v) for v in np.percentile(values.astype(np.float64), STRETCH_PERCENTILES))
    span = hi - lo
    if not span > 0:
        return np.zeros(image.shape, np.float32)
    out = (image.astype(np.float64) - lo) / span
    out[~finite] = 0.0
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image -> uint8 of the same shape: uint8 as it is, anything else through
    ``stretch_to_unit`` (the one conversion for display, training crops and evaluation)."""
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.round(stretch_to_unit(image) * 255.0).astype(np.uint8)


def to_model_input(image: np.ndarray, encoding: str) -> np.ndarray:
    """Image in ``encoding`` -> RGB or gray array that ``features.prepare_image`` accepts
    (``to_rgb``; 16-bit and 32FC1 images through ``stretch_to_unit``, as training sees them)."""
    image = to_rgb(image, encoding)
    if image.dtype != np.uint8:
        return stretch_to_unit(image, f"{encoding} image")
    return image


def decode_image(msg: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any Image or CompressedImage message -> model input (RGB or gray), or ``ImageDecodeError``
    (also for more than ``max_pixels``, checked before decoding)."""
    if hasattr(msg, "format"):  # CompressedImage
        return compressed_to_numpy(msg, max_pixels=max_pixels)
    return to_model_input(image_to_numpy(msg, max_pixels=max_pixels), msg.encoding)


def depth_array_to_meters(depth: np.ndarray) -> np.ndarray:
    """An HxW depth image as float32 metres, NaN where unknown: uint16 is millimetres (16UC1,
    mono16), floats are metres (32FC1). The one depth conversion (messages, odometry, tests).

    Unknown is explicit: 0 for integer depth; NaN, +-inf (REP 117's too far / too close), zero
    and negative values for floats, so no consumer sees an infinite or negative range. Always a
    new array: a message's buffer stays untouched."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"expected an HxW depth image, got shape {depth.shape}")
    if depth.dtype == np.uint16:
        out = depth.astype(np.float32) * 1e-3
        out[depth == 0] = np.nan
        return out
    if depth.dtype.kind == "f":
        out = depth.astype(np.float32)  # a copy, also for float32 input
        out[~(np.isfinite(out) & (out > 0))] = np.nan
        return out
    raise TypeError(f"unsupported depth dtype {depth.dtype} (use uint16 mm or float metres)")


def depth_to_meters(msg: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A depth Image (16UC1/mono16 in mm, or 32FC1 in m) as float32 metres, NaN where unknown
    (``depth_array_to_meters``); another encoding is an ``ImageDecodeError``."""
    _check_depth_encoding(msg)
    return depth_array_to_meters(image_to_numpy(msg, max_pixels=max_pixels))


def check_message(msg: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, depth: bool = False) -> None:
    """``ImageDecodeError`` when a message cannot decode, judged from its fields and header only.

    Raw images: known encoding (a depth encoding when ``depth``), non-zero size, ``max_pixels``,
    even sizes for YUV, step >= one row, data size == step*height (*3/2 for nv12/nv21), all
    O(1). Compressed images: non-empty, then the file header's size (``encoded_size``: a few
    header bytes, no decoding) against ``max_pixels``. An encoding or format that is not
    supported raises ``UnsupportedEncodingError``. A receiver calls this on arrival so that a
    malformed message is counted as an error even when a newer frame replaces it before it is
    decoded; what passes may still fail to decode (corrupt compressed data), which
    ``decode_image`` then reports."""
    if hasattr(msg, "format"):  # CompressedImage
        fmt = str(msg.format)
        header, _ = _compressed_layout(fmt)
        n = len(msg.data)
        if n <= header:
            raise ImageDecodeError(f"empty compressed image (format '{fmt}')")
        # the header walk needs bytes (one copy of the compressed payload, no decoding): a JPEG's
        # frame header may follow any amount of EXIF, so the whole payload is searched
        fmt_name, w, h = encoded_size(_buffer(msg.data)[header:].tobytes())
        if w == 0 or h == 0:
            raise ImageDecodeError(f"compressed image: {fmt_name} header declares an empty {w}x{h} image")
        check_pixels(w, h, max_pixels, f"compressed image (format '{fmt}'): {fmt_name}")
        return
    if depth:
        _check_depth_encoding(msg)
    enc, _, _, h, w, step, _ = _raw_layout(msg, max_pixels)
    _check_data_size(enc, h, w, step, len(msg.data) * getattr(msg.data, "itemsize", 1))
