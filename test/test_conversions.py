"""Image <-> numpy and PointCloud2 layouts: round trips on real photos and clear errors on bad input."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.io.cloud_layout import field_specs, keypoints_dtype  # noqa: E402
from goodpoint_ros.io.image_files import sample_photo  # noqa: E402
from goodpoint_ros.ros.conversions import (  # noqa: E402
    ImageDecodeError,
    compressed_to_numpy,
    decode_image,
    image_to_numpy,
    keypoints_to_cloud,
    matches_to_cloud,
    numpy_to_compressed,
    numpy_to_image,
    read_keypoints,
    read_matches,
)


@pytest.fixture(scope="module")
def rgb():
    return cv2.resize(sample_photo("astronaut"), (64, 48), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip_to_rgb(rgb, enc):
    src = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
    }[enc]
    msg = numpy_to_image(src, enc)
    assert isinstance(msg.data, array.array) and msg.step == 64 * src.shape[2]
    np.testing.assert_array_equal(image_to_numpy(msg), src)
    np.testing.assert_array_equal(decode_image(msg), rgb)


@pytest.mark.parametrize(
    "enc,dtype", [("mono8", np.uint8), ("mono16", np.uint16), ("16UC1", np.uint16), ("32FC1", np.float32)]
)
def test_single_channel_round_trip(rgb, enc, dtype):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(dtype) * (257 if dtype == np.uint16 else 1)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(gray, enc)), gray)


def test_padded_step_and_big_endian(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 200
    msg = numpy_to_image(gray, "mono16")
    padded = np.zeros((48, 64 * 2 + 10), np.uint8)
    padded[:, :128] = gray.astype(">u2").view(np.uint8).reshape(48, 128)
    msg.is_bigendian, msg.step = True, 138
    msg.data = array.array("B", padded.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), gray)


def test_bayer_demosaic_is_close_to_original(rgb):
    h, w = rgb.shape[:2]
    mosaic = np.zeros((h, w), np.uint8)  # RGGB: R at (0,0), G at (0,1)/(1,0), B at (1,1)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    out = decode_image(numpy_to_image(mosaic, "bayer_rggb8"))
    assert out.shape == rgb.shape
    err = np.abs(out.astype(int) - rgb.astype(int)).mean(axis=(0, 1))
    assert err.max() < 25, err  # a wrong pattern swaps R and B and is far off


def test_compressed_round_trip(rgb):
    out = compressed_to_numpy(numpy_to_compressed(rgb, "png"))
    np.testing.assert_array_equal(out, rgb)
    jpg = compressed_to_numpy(numpy_to_compressed(rgb, "jpeg"))
    assert np.abs(jpg.astype(int) - rgb.astype(int)).mean() < 10


def test_malformed_images_raise_one_clear_error(rgb):
    good = numpy_to_image(rgb, "rgb8")
    cases = []
    m = numpy_to_image(rgb, "rgb8")
    m.encoding = "yuv422_weird"
    cases.append((m, "unsupported encoding"))
    m = numpy_to_image(rgb, "rgb8")
    m.step = 10
    cases.append((m, "step"))
    m = numpy_to_image(rgb, "rgb8")
    m.data = array.array("B", bytes(good.data)[:-100])
    cases.append((m, "bytes"))
    m = numpy_to_image(rgb, "rgb8")
    m.height = 0
    cases.append((m, "empty"))
    for msg, reason in cases:
        with pytest.raises(ImageDecodeError, match=reason):
            decode_image(msg)
    bad = numpy_to_compressed(rgb, "jpeg")
    bad.data = array.array("B", b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match="decode"):
        decode_image(bad)


def test_keypoint_cloud_layout_and_round_trip():
    rng = np.random.default_rng(0)
    k, d = 300, 32
    desc = rng.normal(size=(k, d)).astype(np.float32)
    feats = {
        "keypoints": rng.uniform(0, 600, (k, 2)).astype(np.float32),
        "scores": rng.uniform(size=k).astype(np.float32),
        "descriptors": desc / np.linalg.norm(desc, axis=1, keepdims=True),
        "detector": rng.integers(0, 4, k).astype(np.uint8),
    }
    ids = rng.integers(1, 10_000, k).astype(np.uint32)
    msg = keypoints_to_cloud(feats, None, ids)
    assert msg.point_step == 20 + 4 * d and msg.width == k and len(msg.data) == k * msg.point_step
    names = {f.name: (f.offset, f.datatype, f.count) for f in msg.fields}
    assert names == {
        "x": (0, 7, 1),
        "y": (4, 7, 1),
        "score": (8, 7, 1),
        "detector": (12, 2, 1),
        "track_id": (16, 6, 1),
        "descriptor": (20, 7, d),
    }
    back = read_keypoints(msg)
    np.testing.assert_array_equal(back["keypoints"], feats["keypoints"])
    np.testing.assert_array_equal(back["descriptors"], feats["descriptors"])
    np.testing.assert_array_equal(back["detector"], feats["detector"])
    np.testing.assert_array_equal(back["track_ids"], ids)
    assert [s[0] for s in field_specs(keypoints_dtype(0))] == ["x", "y", "score", "detector", "track_id"]


def test_match_cloud_round_trip_carries_previous_stamp():
    rng = np.random.default_rng(1)
    k0, k1 = rng.uniform(0, 100, (50, 2)).astype(np.float32), rng.uniform(0, 100, (40, 2)).astype(np.float32)
    matches = np.stack([rng.permutation(50)[:30], rng.permutation(40)[:30]], 1)
    dist = rng.uniform(0, 1, 30).astype(np.float32)
    inl = rng.uniform(size=30) > 0.3
    msg = matches_to_cloud(matches, k0, k1, dist, inl, (1234, 567), None)
    assert msg.point_step == 40
    back = read_matches(msg)
    np.testing.assert_array_equal(back["matches"], matches)
    np.testing.assert_array_equal(back["pts0"], k0[matches[:, 0]])
    np.testing.assert_array_equal(back["pts1"], k1[matches[:, 1]])
    np.testing.assert_array_equal(back["inliers"], inl)
    assert back["prev_stamp"] == (1234, 567)
    empty = read_matches(matches_to_cloud(np.zeros((0, 2), int), k0, k1, dist[:0], inl[:0], (1, 2), None))
    assert empty["matches"].shape == (0, 2) and empty["prev_stamp"] is None
