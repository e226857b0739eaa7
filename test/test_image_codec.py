"""goodpoint_ros.image_codec without ROS: duck-typed messages (SimpleNamespace) of every kind it decodes."""

from __future__ import annotations

import array
import ast
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from goodpoint_ros.image_codec import (
    ImageDecodeError,
    compressed_is_plain,
    compressed_to_numpy,
    decode_image,
    depth_to_meters,
    image_to_numpy,
    to_model_input,
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
    import goodpoint_ros.image_codec as codec

    tree = ast.parse(Path(codec.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names == {"__future__", "typing", "cv2", "numpy"}


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
    with pytest.raises(ImageDecodeError, match=r"unsupported encoding 'yuv422_weird' \(supported: mono8, ") as e:
        decode_image(image(rgb, "yuv422_weird"))
    assert "\n" not in str(e.value)


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
