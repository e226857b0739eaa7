"""goodpoint_ros.io.image_codec without ROS: duck-typed messages (SimpleNamespace) of every kind it decodes."""

from __future__ import annotations

import array
import ast
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from goodpoint_ros.io.image_codec import (
    DEFAULT_MAX_PIXELS,
    ENCODINGS,
    PLANAR_ENCODINGS,
    ImageDecodeError,
    UnsupportedEncodingError,
    check_message,
    compressed_is_plain,
    compressed_to_numpy,
    decode_bytes,
    decode_image,
    depth_to_meters,
    encoded_size,
    image_to_numpy,
    to_model_input,
    to_rgb,
)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A small smooth RGB test picture with distinct channels (no files, no ROS)."""
    y, x = np.mgrid[0:24, 0:32]
    return np.dstack([x * 7, y * 10, (x + y) * 4]).astype(np.uint8)


def image(arr: np.ndarray, encoding: str, big: bool = False, pad: int = 0) -> SimpleNamespace:
    """An Image-like message holding ``arr`` with ``pad`` junk bytes at the end of every row."""
    arr = np.ascontiguousarray(arr, arr.dtype.newbyteorder(">" if big else "<"))
    h, w = arr.shape[:2]
    rows = arr.view(np.uint8).reshape(h, -1)
    rows = np.hstack([rows, np.full((h, pad), 0xAB, np.uint8)])
    return SimpleNamespace(
        encoding=encoding, height=h, width=w, step=rows.shape[1], is_bigendian=int(big), data=rows.tobytes()
    )


def compressed(arr_bgr: np.ndarray, ext: str, fmt: str) -> SimpleNamespace:
    ok, buf = cv2.imencode(ext, arr_bgr)
    assert ok
    return SimpleNamespace(format=fmt, data=array.array("B", buf.tobytes()))


def test_imports_nothing_from_ros():
    import goodpoint_ros.io.image_codec as codec

    tree = ast.parse(Path(codec.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names == {"__future__", "struct", "typing", "cv2", "numpy"}


def test_mono8(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = image_to_numpy(image(gray, "mono8"))
    assert out.dtype == np.uint8 and out.shape == gray.shape
    np.testing.assert_array_equal(out, gray)
    np.testing.assert_array_equal(decode_image(image(gray, "8uc1")), gray)  # case-insensitive alias


def test_rgb8_vs_bgr8_channel_order(rgb):
    np.testing.assert_array_equal(image_to_numpy(image(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(image_to_numpy(image(rgb[..., ::-1], "bgr8")), rgb[..., ::-1])  # as stored
    np.testing.assert_array_equal(decode_image(image(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(decode_image(image(rgb[..., ::-1], "bgr8")), rgb)  # model input is RGB
    alpha = np.full(rgb.shape[:2], 9, np.uint8)
    np.testing.assert_array_equal(decode_image(image(np.dstack([rgb[..., ::-1], alpha]), "bgra8")), rgb)
    np.testing.assert_array_equal(decode_image(image(np.dstack([rgb, alpha]), "rgba8")), rgb)


def test_row_padding_is_skipped(rgb):
    msg = image(rgb, "rgb8", pad=5)
    assert msg.step == rgb.shape[1] * 3 + 5
    np.testing.assert_array_equal(image_to_numpy(msg), rgb)
    gray16 = rgb[..., 0].astype(np.uint16) * 250
    np.testing.assert_array_equal(image_to_numpy(image(gray16, "16UC1", pad=3)), gray16)


def test_mono16_big_endian(rgb):
    gray16 = rgb[..., 1].astype(np.uint16) * 257
    for big in (False, True):
        msg = image(gray16, "mono16", big=big, pad=4)
        out = image_to_numpy(msg)
        assert out.dtype == np.uint16 and out.dtype.isnative
        np.testing.assert_array_equal(out, gray16)
    mm = depth_to_meters(image(gray16, "mono16", big=True))
    np.testing.assert_allclose(mm[gray16 > 0], gray16[gray16 > 0] * 1e-3, rtol=1e-6)
    assert np.isnan(mm[gray16 == 0]).all()


def test_32fc1(rgb):
    depth = rgb[..., 2].astype(np.float32) / 10 + 0.5
    depth[0, :3] = np.nan
    msg = image(depth, "32FC1")
    np.testing.assert_array_equal(image_to_numpy(msg), depth)
    np.testing.assert_array_equal(depth_to_meters(msg), depth)
    model = decode_image(msg)  # normalised to [0, 1], non-finite -> 0
    assert model.dtype == np.float32 and np.nanmin(model) == 0.0 and model.max() == 1.0
    assert (model[0, :3] == 0).all()
    with pytest.raises(ImageDecodeError, match="32FC1"):
        to_model_input(np.full((4, 4), np.nan, np.float32), "32FC1")


def test_bayer_rggb8_demosaic(rgb):
    mosaic = np.zeros(rgb.shape[:2], np.uint8)  # RGGB: R at (0,0), G at (0,1)/(1,0), B at (1,1)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    out = decode_image(image(mosaic, "bayer_rggb8", pad=2))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb.astype(int))[2:-2, 2:-2].mean(axis=(0, 1))
    assert err.max() < 12, err  # a wrong pattern swaps R and B and is far off


def test_unknown_encoding_names_it(rgb):
    with pytest.raises(
        UnsupportedEncodingError, match=r"unsupported encoding 'yuv422_weird' \(supported: mono8, "
    ) as e:
        decode_image(image(rgb, "yuv422_weird"))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg  # logged: one line, short
    for name in ("rgb8", "yuv422_yuy2", "nv12", "nv21", "bayer_"):
        assert name in msg, name
    assert isinstance(e.value, ImageDecodeError)  # callers that count ImageDecodeError still do
    with pytest.raises(UnsupportedEncodingError, match="'yuv422_weird'"):
        check_message(image(rgb, "yuv422_weird"))


def test_truncated_and_bad_step(rgb):
    msg = image(rgb, "rgb8")
    msg.data = msg.data[:-100]
    with pytest.raises(ImageDecodeError, match=r"rgb8 image 32x24: data holds 2204 bytes but step\*height = 2304"):
        image_to_numpy(msg)
    msg = image(rgb, "rgb8")
    msg.step = 10
    with pytest.raises(ImageDecodeError, match="rgb8 image: step 10 is smaller"):
        image_to_numpy(msg)
    msg = image(rgb, "rgb8")
    msg.height = 0
    with pytest.raises(ImageDecodeError, match="empty rgb8 image"):
        image_to_numpy(msg)


def test_compressed_png_round_trip(rgb):
    msg = compressed(rgb[..., ::-1], ".png", "png")
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgb)
    np.testing.assert_array_equal(decode_image(msg), rgb)
    assert compressed_is_plain("png")
    # image_transport: "<encoding>; <codec> compressed bgr8" stores BGR even for an rgb8 source
    np.testing.assert_array_equal(
        compressed_to_numpy(compressed(rgb[..., ::-1], ".png", "rgb8; png compressed bgr8")), rgb
    )
    rgb_first = compressed(rgb, ".png", "rgb8; png compressed rgb8")  # colour already RGB-first
    np.testing.assert_array_equal(compressed_to_numpy(rgb_first), rgb)
    assert not compressed_is_plain(rgb_first.format)
    gray16 = rgb[..., 0].astype(np.uint16) * 257
    depth = compressed(gray16, ".png", "16UC1; compressedDepth png")
    depth.data = array.array("B", bytes(12) + depth.data.tobytes())  # the 12-byte config header
    out = compressed_to_numpy(depth)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, gray16)


def test_corrupt_compressed_data():
    with pytest.raises(ImageDecodeError, match=r"could not decode compressed image \(format 'jpeg', 17 bytes\)"):
        compressed_to_numpy(SimpleNamespace(format="jpeg", data=b"not a jpeg at all"))
    with pytest.raises(ImageDecodeError, match="empty compressed image"):
        decode_image(SimpleNamespace(format="png", data=b""))


# ---------------------------------------------------------------- decompression bombs and headers


def png_bomb(width: int, height: int, claim: tuple[int, int] | None = None) -> bytes:
    """A valid all-black 8-bit gray PNG of width x height, deflated row by row so that building it
    never holds the decoded image (16000x16000 is 256 MB decoded, ~250 KB here). ``claim`` writes
    other dimensions into IHDR than the data holds (a header that lies)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    cw, ch = claim or (width, height)
    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", cw, ch, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


RSS_PROBE = """
import sys
from types import SimpleNamespace
from goodpoint_ros.io.image_codec import ImageDecodeError, decode_image

def peak_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

limit = None if sys.argv[1] == "none" else int(sys.argv[1])
blobs = [open(p, "rb").read() for p in sys.argv[2:]]
with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current RSS
    f.write("5")
before = peak_kib()
for blob in blobs:
    try:
        out = decode_image(SimpleNamespace(format="png", data=blob), max_pixels=limit)
        print("decoded", out.shape)
    except ImageDecodeError as e:
        print("refused", e)
print("growth_kib", peak_kib() - before)
"""


def rss_growth(tmp_path: Path, limit: int | None, *blobs: bytes) -> tuple[list[str], float]:
    """Decode ``blobs`` in a fresh process; its lines and the growth of its peak RSS (VmHWM, reset
    just before) in MB."""
    paths = []
    for i, blob in enumerate(blobs):
        paths.append(tmp_path / f"b{i}.png")
        paths[-1].write_bytes(blob)
    res = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(limit or "none"), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    return lines[:-1], int(lines[-1].split()[1]) / 1024


@pytest.mark.slow
def test_png_bombs_are_refused_before_allocating(tmp_path):
    small = png_bomb(4000, 4000)  # 16 MB of pixels in ~16 KB
    huge = png_bomb(16000, 16000)  # 256 MB of pixels in ~250 KB
    assert len(small) < 20_000 and len(huge) < 300_000, (len(small), len(huge))
    lines, growth = rss_growth(tmp_path, DEFAULT_MAX_PIXELS, small, huge)
    assert lines[0].startswith("refused") and "4000x4000" in lines[0] and "max_pixels" in lines[0], lines
    assert lines[1].startswith("refused") and "16000x16000" in lines[1], lines
    assert growth < 100, growth
    # the probe sees a real decode: without the limit the small bomb really allocates its 16 MB
    lines, growth = rss_growth(tmp_path, None, small)
    assert lines == ["decoded (4000, 4000)"] and growth > 12, (lines, growth)


def test_a_header_that_lies_is_refused_by_its_claim():
    liar = png_bomb(8, 8, claim=(16000, 16000))  # 100 bytes that claim 16000x16000
    with pytest.raises(ImageDecodeError, match=r"PNG 16000x16000 has 256000000 pixels, more than max_pixels"):
        decode_image(SimpleNamespace(format="png", data=liar))
    with pytest.raises(ImageDecodeError, match="could not decode"):  # no limit: libpng finds the lie
        decode_image(SimpleNamespace(format="png", data=liar), max_pixels=None)


def jpeg_with_size(bgr: np.ndarray, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(cv2.imencode(".jpg", bgr)[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_corrupt_jpeg_claiming_a_huge_frame_is_refused(rgb):
    bad = jpeg_with_size(rgb, 53232, 320)  # what 1 in 600 randomly corrupted JPEGs claimed
    assert encoded_size(bad) == ("JPEG", 53232, 320)
    with pytest.raises(ImageDecodeError, match=r"JPEG 53232x320 has 17034240 pixels, more than max_pixels 10000000"):
        compressed_to_numpy(SimpleNamespace(format="jpeg", data=bad))


def test_header_size_matches_decoded_size_for_every_accepted_format(rgb):
    bgr = np.ascontiguousarray(np.tile(rgb, (3, 2, 1))[..., ::-1])  # 64x72, not square
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cases = [
        (".png", bgr, "PNG"),
        (".jpg", bgr, "JPEG"),
        (".webp", bgr, "WebP"),  # lossless (VP8L) at OpenCV's default quality
        (".bmp", bgr, "BMP"),
        (".ppm", bgr, "PNM"),
        (".pgm", gray, "PNM"),
        (".tif", bgr, "TIFF"),
    ]
    for ext, arr, fmt in cases:
        ok, buf = cv2.imencode(ext, arr)
        assert ok
        assert encoded_size(buf.tobytes()) == (fmt, arr.shape[1], arr.shape[0]), ext
        assert decode_bytes(buf).shape[:2] == arr.shape[:2], ext
    lossy = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes()
    assert lossy[12:16] == b"VP8 " and encoded_size(lossy) == ("WebP", 64, 72)
    with pytest.raises(ImageDecodeError, match=r"WebP 64x72 has 4608 pixels, more than max_pixels 4000"):
        decode_bytes(lossy, max_pixels=4000)


def test_truncated_corrupt_or_unknown_headers_are_one_clean_error(rgb):
    png = cv2.imencode(".png", rgb)[1].tobytes()
    jpg = cv2.imencode(".jpg", rgb)[1].tobytes()
    gif = cv2.imencode(".gif", rgb)[1].tobytes()
    cases = {
        "png cut in IHDR": (png[:20], "PNG header"),
        "jpeg cut before SOF": (jpg[:30], "JPEG"),
        "jpeg SOS before SOF": (b"\xff\xd8\xff\xda\x00\x02" + bytes(50), "scan data before a frame header"),
        "random bytes": (np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes(), "unknown image format"),
        "gif": (gif, r"unsupported image format GIF \(first bytes b'GIF89a"),
        "png data cut": (png[: len(png) // 2], "data is corrupt or truncated"),
    }
    for name, (blob, reason) in cases.items():
        with pytest.raises(ImageDecodeError, match=reason) as e:
            decode_image(SimpleNamespace(format="png", data=blob))
        assert "\n" not in str(e.value), name


def test_raw_image_over_the_limit_is_refused_before_reading_data():
    msg = SimpleNamespace(encoding="rgb8", height=20000, width=20000, step=60000, is_bigendian=0, data=b"")
    with pytest.raises(ImageDecodeError, match=r"rgb8 image 20000x20000 has 400000000 pixels, more than max_pixels"):
        decode_image(msg)
    with pytest.raises(ImageDecodeError, match="data holds 0 bytes"):  # no limit: the size check still holds
        image_to_numpy(msg, max_pixels=None)
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        depth_to_meters(
            SimpleNamespace(encoding="32FC1", height=4000, width=4000, step=16000, is_bigendian=0, data=b"")
        )


def test_a_real_photo_still_decodes(photo):
    bgr = np.ascontiguousarray(photo[..., ::-1])
    for ext, fmt in ((".jpg", "jpeg"), (".png", "png")):
        msg = SimpleNamespace(format=fmt, data=cv2.imencode(ext, bgr)[1].tobytes())
        out = decode_image(msg)
        assert out.shape == photo.shape and np.abs(out.astype(int) - photo).mean() < 3
        with pytest.raises(ImageDecodeError, match="max_pixels 1000"):
            decode_image(msg, max_pixels=1000)
        assert decode_image(msg, max_pixels=None).shape == photo.shape
    uhd = SimpleNamespace(encoding="mono8", height=2160, width=3840, step=3840, is_bigendian=0, data=bytes(3840 * 2160))
    assert decode_image(uhd).shape == (2160, 3840)  # 4K UHD is under the default limit
    assert DEFAULT_MAX_PIXELS >= 3840 * 2400 and DEFAULT_MAX_PIXELS < 5120 * 2880  # 16:10 4K passes, 5K does not


# ---------------------------------------------------------------- float and depth images


def test_32fc1_beyond_float32_range_or_non_finite_is_normalised_by_the_rule():
    y, x = np.mgrid[0:40, 0:50]
    depth = (1.0 + x * 0.1 + y * 0.05).astype(np.float32)  # 1..8.4 m ramp
    depth[0, 0], depth[0, 1] = -3.0e38, 3.0e38  # finite, but their span overflows float32
    depth[1, 0], depth[1, 1], depth[1, 2] = np.nan, np.inf, -np.inf
    out = decode_image(image(depth, "32FC1"))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() == 0.0 and out.max() == 1.0
    assert (out[1, :3] == 0).all()  # non-finite -> 0
    assert out[0, 0] == 0.0 and out[0, 1] == 1.0  # extremes clipped
    body = out[5:-5, 5:-5]
    assert body.std() > 0.2 and np.all(np.diff(body, axis=1) >= 0)  # the ramp survives, not squashed
    const = decode_image(image(np.full((8, 8), 2.5, np.float32), "32FC1"))
    assert (const == 0).all()


def test_depth_non_finite_zero_and_negative_are_unknown():
    depth = np.array([[1.5, 0.0, -2.0], [np.nan, np.inf, -np.inf], [3e38, 0.25, 7.0]], np.float32)
    msg = image(depth, "32FC1")
    m = depth_to_meters(msg)
    known = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1]], bool)
    assert np.array_equal(~np.isnan(m), known)
    np.testing.assert_array_equal(m[known], depth[known])
    np.testing.assert_array_equal(image_to_numpy(msg), depth)  # the message is not modified


@pytest.mark.slow
def test_randomly_corrupted_files_decode_within_the_limit_or_raise_one_error(photo):
    """The issue's fuzz: 1 in 600 randomly corrupted JPEGs decoded to 53232x320. Here 600 JPEGs and
    600 PNGs with 1-8 random bytes changed: each decodes to at most max_pixels or raises
    ImageDecodeError (never another exception, never a bigger image)."""
    rng = np.random.default_rng(7)
    bgr = np.ascontiguousarray(photo[:120, :160, ::-1])
    limit = 160 * 120 + 100
    outcomes = {"decoded": 0, "refused": 0}
    for ext, fmt in ((".jpg", "jpeg"), (".png", "png")):
        good = np.frombuffer(cv2.imencode(ext, bgr)[1].tobytes(), np.uint8)
        for _ in range(600):
            data = good.copy()
            at = rng.integers(0, min(len(data), 700), rng.integers(1, 9))  # headers live up front
            data[at] = rng.integers(0, 256, len(at))
            try:
                out = decode_image(SimpleNamespace(format=fmt, data=data.tobytes()), max_pixels=limit)
            except ImageDecodeError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1
                continue
            assert out.shape[0] * out.shape[1] <= limit, out.shape
            outcomes["decoded"] += 1
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 100, outcomes


# ---------------------------------------------------------------- what camera drivers publish: YUV, 16-bit Bayer


def yuv_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (HxW), U and V (H/2 x W/2) of ``rgb`` by OpenCV's own RGB -> I420 conversion."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    u = i420[h : h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4 :].reshape(h // 2, w // 2)
    return i420[:h], u, v


def packed_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """HxWx2 packed 4:2:2 bytes in ``order`` ("UYVY" or "YUYV"); each chroma row pair of the 4:2:0
    planes is repeated, which is enough for a picture close to ``rgb``."""
    y, u, v = yuv_planes(rgb)
    u, v = np.repeat(u, 2, axis=0), np.repeat(v, 2, axis=0)
    flat = np.empty((y.shape[0], y.shape[1] * 2), np.uint8)  # 4 bytes per pixel pair
    ys, cs = (slice(1, None, 2), 0) if order == "UYVY" else (slice(0, None, 2), 1)
    flat[:, ys] = y
    flat[:, cs::4] = u
    flat[:, cs + 2 :: 4] = v
    return flat.reshape(y.shape[0], y.shape[1], 2)


def semi_planar_420(rgb: np.ndarray, vu: bool) -> np.ndarray:
    """(H*3/2)xW NV12 (UV interleaved) or NV21 (``vu``) bytes of ``rgb``."""
    y, u, v = yuv_planes(rgb)
    chroma = np.dstack([v, u] if vu else [u, v]).reshape(y.shape[0] // 2, y.shape[1])
    return np.vstack([y, chroma])


def yuv_message(data: np.ndarray, encoding: str, height: int, pad: int = 0) -> SimpleNamespace:
    """``image()`` for packed or planar YUV, whose image height is not the array's."""
    msg = image(data, encoding, pad=pad)
    msg.height = height
    return msg


YUV_CASES = {  # encoding -> (bytes of an RGB picture, OpenCV's conversion back)
    "yuv422": (lambda rgb: packed_422(rgb, "UYVY"), cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (lambda rgb: packed_422(rgb, "YUYV"), cv2.COLOR_YUV2RGB_YUY2),
    "nv12": (lambda rgb: semi_planar_420(rgb, vu=False), cv2.COLOR_YUV2RGB_NV12),
    "nv21": (lambda rgb: semi_planar_420(rgb, vu=True), cv2.COLOR_YUV2RGB_NV21),
}


@pytest.mark.parametrize("encoding,order", [("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_packed_422_as_opencv_encodes_it(photo, encoding, order):
    """The packed bytes built here are laid out as OpenCV's own RGB -> 4:2:2 encoder lays them out
    (its rounding may differ by one), and what that encoder writes decodes back to the photo."""
    code = getattr(cv2, f"COLOR_RGB2YUV_{order}", None)
    if code is None:
        pytest.skip(f"OpenCV without RGB -> {order}")
    theirs = cv2.cvtColor(photo, code)
    diff = np.abs(packed_422(photo, order).astype(int) - theirs)
    luma = 1 if order == "UYVY" else 0
    assert diff[..., luma].max() <= 1 and diff[..., 1 - luma].mean() < 3, diff.mean(axis=(0, 1))
    err = np.abs(decode_image(image(theirs, encoding)).astype(int) - photo.astype(int)).mean()
    assert err < 4, err


@pytest.mark.parametrize("encoding", list(YUV_CASES))
@pytest.mark.parametrize("pad", [0, 6])
def test_yuv_decodes_as_opencv_converts_the_same_bytes(photo, encoding, pad):
    build, code = YUV_CASES[encoding]
    h, w = photo.shape[:2]
    data = build(photo)
    msg = yuv_message(data, encoding, h, pad=pad)
    assert msg.step == (2 * w if encoding.startswith("yuv422") else w) + pad
    assert len(msg.data) == msg.step * (h * 3 // 2 if encoding.startswith("nv") else h)
    check_message(msg)  # valid on arrival
    raw = image_to_numpy(msg)
    np.testing.assert_array_equal(raw, data)  # padding skipped, planes in OpenCV's layout
    out = decode_image(msg)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    np.testing.assert_array_equal(out, cv2.cvtColor(data, code))  # exactly OpenCV's (and cv_bridge's) result
    np.testing.assert_array_equal(to_model_input(raw, encoding), out)
    err = np.abs(out.astype(int) - photo.astype(int)).mean()
    assert err < 4, err  # the picture comes back (a swapped chroma or byte order is > 15 off)
    assert encoding.upper() not in ENCODINGS  # names are matched case-insensitively
    np.testing.assert_array_equal(decode_image(yuv_message(data, encoding.upper(), h, pad=pad)), out)


def test_yuv_tables():
    assert ENCODINGS["yuv422"] == ENCODINGS["yuv422_yuy2"] == (np.dtype(np.uint8), 2)  # cv_bridge's CV_8UC2
    assert set(PLANAR_ENCODINGS) == {"nv12", "nv21"} and not set(PLANAR_ENCODINGS) & set(ENCODINGS)
    for pattern in ("rggb", "bggr", "gbrg", "grbg"):
        assert ENCODINGS[f"bayer_{pattern}16"] == (np.dtype(np.uint16), 1)


def refused(msg: SimpleNamespace, reason: str) -> None:
    """``msg`` is a malformed message (not an unsupported encoding) for both the arrival check and
    decoding, with the same one-line reason."""
    for check in (check_message, decode_image):
        with pytest.raises(ImageDecodeError, match=reason) as e:
            check(msg)
        assert not isinstance(e.value, UnsupportedEncodingError), e.value
        assert "\n" not in str(e.value)


def test_yuv_odd_sizes_are_refused(photo):
    odd = photo[:, :-1]  # 319 wide
    data = np.zeros((odd.shape[0], 319, 2), np.uint8)
    for enc in ("yuv422", "yuv422_yuy2"):
        refused(image(data, enc), rf"{enc} image 319x240: width must be even")
    nv = semi_planar_420(photo, vu=False)
    for enc in ("nv12", "nv21"):
        msg = yuv_message(nv, enc, 240)
        msg.width = 319
        refused(msg, rf"{enc} image 319x240: width and height must be even")
        msg = yuv_message(nv[:-1], enc, 239)  # 239 rows of Y and 119.5 of chroma cannot be
        refused(msg, rf"{enc} image 320x239: width and height must be even")


def test_yuv_short_buffer_and_bad_step_are_refused(photo):
    h, w = photo.shape[:2]
    for enc in ("nv12", "nv21"):
        msg = yuv_message(YUV_CASES[enc][0](photo), enc, h, pad=4)
        msg.data = msg.data[: msg.step * h]  # the Y plane without its chroma
        refused(msg, rf"{enc} image 320x240: data holds {324 * 240} bytes but step\*height\*3/2 = {324 * 360}")
        msg = yuv_message(YUV_CASES[enc][0](photo), enc, h)
        msg.step = w - 1
        refused(msg, rf"{enc} image: step 319 is smaller than width\*channels\*bytes = 320")
    for enc in ("yuv422", "yuv422_yuy2"):
        msg = yuv_message(YUV_CASES[enc][0](photo), enc, h)
        msg.data = msg.data[:-2]
        refused(msg, rf"{enc} image 320x240: data holds {640 * 240 - 2} bytes but step\*height = {640 * 240}")
        msg = yuv_message(YUV_CASES[enc][0](photo), enc, h)
        msg.step = w  # one byte a pixel is a mono8 step, not a 4:2:2 one
        refused(msg, rf"{enc} image: step 320 is smaller than width\*channels\*bytes = 640")


# ROS names a Bayer pattern by its first two rows; OpenCV by the second row, hence the crossed codes
BAYER16 = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}


@pytest.mark.parametrize("pattern", list(BAYER16))
@pytest.mark.parametrize("big", [False, True])
def test_bayer16_demosaics_every_pattern_and_byte_order(photo, pattern, big):
    # a 12-bit camera: values whose two bytes differ, so a wrong byte order cannot go unseen
    rgb12 = photo.astype(np.uint16) * 16 + 5
    mosaic = np.zeros(photo.shape[:2], np.uint16)
    for i, channel in enumerate(pattern):  # the 2x2 cell row by row
        mosaic[i // 2 :: 2, i % 2 :: 2] = rgb12[i // 2 :: 2, i % 2 :: 2, "rgb".index(channel)]
    encoding = f"bayer_{pattern}16"
    msg = image(mosaic, encoding, big=big, pad=4)
    assert msg.step == 320 * 2 + 4
    check_message(msg)
    raw = image_to_numpy(msg)
    assert raw.dtype == np.uint16 and raw.dtype.isnative
    np.testing.assert_array_equal(raw, mosaic)
    colour = to_rgb(raw, encoding)
    assert colour.dtype == np.uint16 and colour.shape == photo.shape
    np.testing.assert_array_equal(colour, cv2.cvtColor(mosaic, BAYER16[pattern]))
    err = np.abs((colour >> 4).astype(int) - photo.astype(int)).mean()
    assert err < 6, err  # a wrong pattern is > 15 off on this photo
    out = decode_image(msg)  # 16-bit colour, like rgb16: stretched to [0, 1] for the model
    assert out.dtype == np.float32 and out.shape == photo.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.1


def test_unsupported_is_told_apart_from_malformed(rgb, photo):
    with pytest.raises(UnsupportedEncodingError, match="'yuv420_planar_x'"):
        decode_image(image(rgb, "yuv420_planar_x"))
    bad_step = image(rgb, "rgb8")
    bad_step.step = 10
    refused(bad_step, "rgb8 image: step 10 is smaller")
    with pytest.raises(UnsupportedEncodingError, match="depth must be 16UC1 or 32FC1, got 'rgb8'"):
        check_message(image(rgb, "rgb8"), depth=True)
    gif = SimpleNamespace(format="gif", data=cv2.imencode(".gif", rgb)[1].tobytes())
    for check in (check_message, decode_image):
        with pytest.raises(UnsupportedEncodingError, match="unsupported image format GIF"):
            check(gif)
    noise = SimpleNamespace(format="png", data=np.random.default_rng(1).integers(0, 256, 500, np.uint8).tobytes())
    with pytest.raises(ImageDecodeError, match="unknown image format") as e:
        decode_image(noise)
    assert not isinstance(e.value, UnsupportedEncodingError)
