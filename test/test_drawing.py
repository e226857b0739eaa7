"""The demo picture (goodpoint_ros.io.drawing) on real features: a real photo seen by a panning camera,
keypoints from the shipped goodpoint_small, tracks and matches as the node makes them."""

from __future__ import annotations

import numpy as np
import pytest

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.backends.extractor import numpy_to_features
from goodpoint_ros.io.drawing import (
    GREEN,
    RED,
    age_colours,
    backdrop,
    demo_picture,
    draw_matches,
    draw_tracks,
    scaled,
    track_polylines,
)
from goodpoint_ros.io.image_files import sample_photo
from goodpoint_ros.models.features import FEATURE_KEYS
from goodpoint_ros.vo.geometry import warp_image
from goodpoint_ros.vo.pipeline import match_frames
from goodpoint_ros.vo.tracking import TrackIds

FRAMES = 10  # 1 s of a 10 Hz camera


def _match(f0: dict, f1: dict, ratio: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    m, _, inl = match_frames(
        numpy_to_features({k: f0[k] for k in FEATURE_KEYS}),
        numpy_to_features({k: f1[k] for k in FEATURE_KEYS}),
        f0["keypoints"],
        f1["keypoints"],
        ratio,
    )
    return m, inl


@pytest.fixture(scope="module")
def stream() -> tuple[list[np.ndarray], list[dict], list[tuple[np.ndarray, np.ndarray]]]:
    """Frames of a camera panning over a real photo, their features and the track history."""
    photo = sample_photo("astronaut")
    frames = [
        warp_image(photo, np.array([[0.7, 0.0, -40.0 - 4 * t], [0.0, 0.7, -30.0 - 2 * t], [0, 0, 1]]), (320, 240))
        for t in range(FRAMES)
    ]
    ex = make_extractor("torch", "goodpoint_small", device="cpu")
    tracker, feats, history = TrackIds(), [], []
    for frame in frames:
        f = {k: v[:300] for k, v in ex.extract_numpy(frame).items()}
        if feats:
            m, inl = _match(feats[-1], f)
            ids = tracker.update(len(f["keypoints"]), m, inl)
        else:
            ids = tracker.update(len(f["keypoints"]))
        feats.append(f)
        history.append((f["keypoints"], ids))
    return frames, feats, history


def _lengths(history: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, int]:
    """Frames each track id appears in, counted the slow, obvious way."""
    ids, counts = np.unique(np.concatenate([t for _, t in history]), return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def test_only_live_tracks_of_five_frames_are_drawn(stream) -> None:
    frames, _, history = stream
    lengths = _lengths(history)
    live = history[-1][1].tolist()
    long_ids = {i for i in live if lengths[i] >= 5}
    short_ids = {i for i in live if lengths[i] < 5}
    # both kinds are there to tell apart (better weights track longer: 111 long, 14 short at 21500 steps)
    assert len(long_ids) > 20 and len(short_ids) >= 5

    lines, ages = track_polylines(history, 5)
    assert sorted(ages.tolist()) == sorted(lengths[i] for i in long_ids)
    assert all(len(t) == a for t, a in zip(lines, ages))
    last = {tuple(p) for p in history[-1][0].tolist()}
    assert all(tuple(t[-1].tolist()) in last for t in lines)  # each ends at a keypoint of the last frame

    picture = draw_tracks(frames[-1], history, min_length=5)
    assert picture.shape == (480, 640, 3)  # drawn at 2x
    assert not np.array_equal(picture, backdrop(frames[-1], 2.0, 0.55))
    keep = [(k[np.isin(t, list(long_ids))], t[np.isin(t, list(long_ids))]) for k, t in history]
    assert np.array_equal(picture, draw_tracks(frames[-1], keep, min_length=5))  # short tracks add nothing
    assert not np.array_equal(picture, draw_tracks(frames[-1], history, min_length=1))

    # coloured by age: the dot at each track's current position has its age's colour
    heads = np.round(scaled(np.stack([t[-1] for t in lines]), 2.0)).astype(int)
    expected = age_colours(ages, 5, len(history))
    assert (picture[heads[:, 1], heads[:, 0]] == expected).all(1).mean() > 0.8
    assert len(np.unique(expected, axis=0)) >= 3


def test_demo_picture_has_tracks_beside_matches_in_inlier_and_outlier_colours(stream) -> None:
    frames, feats, history = stream
    i, j = FRAMES - 6, FRAMES - 1  # 0.5 s apart at 10 Hz
    m, inl = _match(feats[i], feats[j], ratio=1.0)
    assert inl.any()
    # Good weights leave few outliers, whose lines the inliers may cover: add 8 wrong matches
    # (random pairs, marked outliers) so the red colour is always there to find.
    rng = np.random.default_rng(0)
    wrong = np.stack(
        [rng.integers(0, len(feats[i]["keypoints"]), 8), rng.integers(0, len(feats[j]["keypoints"]), 8)], 1
    )
    m, inl = np.concatenate([m, wrong.astype(m.dtype)]), np.concatenate([inl, np.zeros(8, bool)])

    solid = draw_matches(frames[i], frames[j], feats[i]["keypoints"], feats[j]["keypoints"], m, inl)
    assert solid.shape == (240, 640, 3)
    b, g, r = (solid.astype(int)[..., c] for c in range(3))  # BGR; anti-aliased lines: dominant channel
    assert ((g > r + 60) & (g > b + 60)).sum() > 100 and ((r > g + 60) & (r > b + 60)).sum() > 10
    # the colour constants themselves, on two lines over black: OpenCV's anti-aliased 1-px lines
    # never reach full intensity, so pure hue near full strength, not exact equality
    blank = np.zeros((20, 30, 3), np.uint8)
    k0, k1 = np.array([[5.0, 5.0], [5.0, 15.0]]), np.array([[25.0, 5.0], [25.0, 15.0]])
    flat = draw_matches(blank, blank, k0, k1, np.array([[0, 0], [1, 1]]), [True, False]).astype(int)
    green, red = flat[5, 12:48], flat[15, 12:48]  # BGR rows along each line, between the dots
    assert (green[:, 1] > 0.85 * GREEN[1]).all() and (green[:, [0, 2]] == 0).all()
    assert (red[:, 2] > 0.85 * RED[2]).all() and (red[:, :2] == 0).all()

    pair = (frames[i], frames[j], feats[i]["keypoints"], feats[j]["keypoints"], m, inl)
    text = ["goodpoint_small (shipped weights) on cpu", "camera 320x240 at 10 Hz", f"inlier ratio {inl.mean():.2f}"]
    picture = demo_picture(frames[j], history, pair, text)
    assert picture.dtype == np.uint8 and picture.shape == (28 + 480, 640 + 4 + 640, 3)
    assert np.array_equal(picture[28:, :640], draw_tracks(frames[j], history, 5))  # the tracks panel, untouched
    b, g, r = (picture[28 : 28 + 240, 644:].astype(int)[..., c] for c in range(3))  # the (blended) matches
    assert ((g > r + 60) & (g > b + 60)).sum() > 100 and ((r > g + 60) & (r > b + 60)).sum() > 10
    text_area = picture[28 + 240 :, 644:]  # under the matches
    assert (text_area.min(2) > 200).sum() > 500  # the written lines are there, in white
