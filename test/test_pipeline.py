"""FramePipeline, the one per-frame loop of the node and goodpoint-bag, on real photos rendered as a
moving camera (``synthetic``: photos on the walls of a box, exact depth and poses) with the
weight-free ORB front end and the shipped goodpoint_small weights. Nothing is mocked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from synthetic import camera_info_p, render_sequence

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.backends.extractor import Extractor
from goodpoint_ros.io.image_files import sample_photo
from goodpoint_ros.models.features import FEATURE_KEYS, to_numpy
from goodpoint_ros.vo.odometry import Calibration, VisualOdometry
from goodpoint_ros.vo.pipeline import FramePipeline, MatchSettings, match_frames
from goodpoint_ros.vo.tracking import TrackIds

BASELINE = 0.3


@pytest.fixture(scope="module")
def seq():
    return render_sequence(12, baseline=BASELINE, amplitude=0.3)


def _stamp(i: int) -> tuple[int, int]:
    ns = 1_700_000_000_000_000_000 + i * 100_000_000
    return ns // 10**9, ns % 10**9


def _orb():
    ex = make_extractor(model="orb")
    ex.set_detection(max_keypoints=600)
    return ex


def _old_loop(seq, ex, settings: MatchSettings) -> tuple[list, list]:
    """The node's per-frame loop as it was written out by hand before FramePipeline (mono): match
    with the previous frame, verify, carry track ids, mono odometry on the ids."""
    tracker, vo, prev, ids_out, poses = TrackIds(), VisualOdometry(seq.K, mode="mono"), None, [], []
    for f in seq.frames:
        feats = ex.extract_many([f.rgb])[0]
        cur = to_numpy(feats)
        m = inl = None
        if prev is not None:
            m, _, inl = match_frames(
                prev[0], feats, prev[1], cur["keypoints"], settings.ratio, settings.max_distance,
                settings.method, settings.threshold, seq.K,
            )  # fmt: skip
        ids = tracker.update(len(cur["keypoints"]), m, inl)
        ids_out.append(ids)
        poses.append(vo.update(cur["keypoints"], track_ids=ids).pose)
        prev = (feats, cur["keypoints"])
    return ids_out, poses


@pytest.mark.slow
def test_mono_step_gives_matches_tracks_and_the_same_poses_as_the_old_loop(seq):
    settings = MatchSettings(ratio=1.0, method="fundamental")
    pipe = FramePipeline(_orb(), "mono", settings)
    calib = Calibration(K=seq.K)
    results = [pipe.step([f.rgb], _stamp(i), calib) for i, f in enumerate(seq.frames)]
    first, later = results[0], results[1:]
    assert first.previous_keypoints is None and len(first.matches) == 0
    assert first.odometry.state == "ok" and np.allclose(first.odometry.result.pose, np.eye(4))
    for prev, r in zip(results, later):
        assert len(r.keypoints) > 300 and r.features["descriptors"].shape == (len(r.keypoints), 256)
        assert len(r.matches) > 100 and r.inliers.mean() > 0.8
        np.testing.assert_array_equal(r.previous_keypoints, prev.keypoints)
        assert r.previous_stamp == prev.stamp
        kept = r.matches[r.inliers]  # a verified match continues its track: same id in both frames
        np.testing.assert_array_equal(r.track_ids[kept[:, 1]], prev.track_ids[kept[:, 0]])
        assert r.odometry.state == "ok" and r.odometry.dt == pytest.approx(0.1)
        assert r.odometry.tracks is not None and len(r.odometry.tracks.ids) == len(r.keypoints)
    ids, poses = _old_loop(seq, _orb(), settings)
    for r, i, p in zip(results, ids, poses):
        np.testing.assert_array_equal(r.track_ids, i)
        np.testing.assert_allclose(r.odometry.result.pose, p, atol=1e-12)
    assert pipe.stats()["vo_frames"] == len(seq.frames) and pipe.stats()["active_tracks"] > 100


def test_time_going_back_restarts_tracks_and_trajectory(seq):
    pipe = FramePipeline(_orb(), "mono", MatchSettings(method="fundamental"))
    calib = Calibration(K=seq.K)
    a = [pipe.step([f.rgb], _stamp(i), calib) for i, f in enumerate(seq.frames[:6])]
    r = pipe.step([seq.frames[0].rgb], _stamp(0), calib)  # the bag starts again
    assert r.restarted and r.previous_keypoints is None and len(r.matches) == 0
    assert r.track_ids.min() > max(x.track_ids.max() for x in a)  # ids are never reused
    assert np.allclose(r.odometry.result.pose, np.eye(4))
    again = pipe.step([seq.frames[1].rgb], _stamp(1), calib)
    assert not again.restarted and len(again.matches) > 100


def test_work_nobody_wants_is_skipped(seq):
    pipe = FramePipeline(_orb(), "mono")
    calib = Calibration(K=seq.K)
    r0 = pipe.step([seq.frames[0].rgb], _stamp(0), calib, want_matches=False, want_tracks=False, want_odometry=False)
    r1 = pipe.step([seq.frames[1].rgb], _stamp(1), calib, want_matches=False, want_tracks=False, want_odometry=False)
    assert len(r1.keypoints) > 300 and len(r1.matches) == 0 and r1.previous_keypoints is None
    assert r1.track_ids.min() > r0.track_ids.max()  # nothing matched: every keypoint starts a track
    assert r1.odometry.state == "skipped" and r1.odometry.result is None and r1.odometry.tracks is None
    r2 = pipe.step([seq.frames[2].rgb], _stamp(2), calib, want_odometry=False)  # matches, no pose
    assert len(r2.matches) > 100 and r2.odometry.result is None and r2.odometry.tracks is not None
    assert FramePipeline(_orb(), "mono", odometry=False).step([seq.frames[0].rgb], _stamp(0), calib).odometry.state == (
        "tracks_only"
    )
    assert FramePipeline(_orb(), "mono").step([seq.frames[0].rgb], _stamp(0)).odometry.state == "no_camera_info"
    quiet = FramePipeline(_orb(), "mono", tracks=False, odometry=False)  # goodpoint-bag's set-up
    quiet.step([seq.frames[0].rgb], _stamp(0), calib)
    r = quiet.step([seq.frames[1].rgb], _stamp(1), calib, want_matches=False)
    assert len(r.matches) == 0 and r.odometry.result is None and r.odometry.tracks is None


def test_rgbd_depth_at_keypoints_and_metric_odometry(seq):
    pipe = FramePipeline(_orb(), "rgbd", MatchSettings(method="fundamental"))
    calib = Calibration(K=seq.K)
    for i, f in enumerate(seq.frames[:6]):
        depth = f.depth.astype(np.float32)
        half = depth[::2, ::2]  # a depth image of another size than the colour image
        r = pipe.step([f.rgb], _stamp(i), calib, depth=half)
        xy = np.clip(np.round(r.keypoints * 0.5).astype(int), 0, [half.shape[1] - 1, half.shape[0] - 1])
        np.testing.assert_array_equal(r.keypoint_depth, half[xy[:, 1], xy[:, 0]])
        assert r.odometry.state == "ok", r.odometry
    travelled = np.linalg.norm(seq.frames[5].pose[:3, 3] - seq.frames[0].pose[:3, 3])
    est = np.linalg.norm(r.odometry.result.pose[:3, 3])
    assert abs(est - travelled) < 0.2 * travelled  # metric: the scale comes from the depth


def test_stereo_left_right_matches_and_bad_calibration_is_a_state(seq):
    calib = Calibration(K=seq.K, P_right=camera_info_p(seq.K, BASELINE))
    pipe = FramePipeline(_orb(), "stereo", MatchSettings(method="fundamental"))
    for i, (left, right) in enumerate(zip(seq.frames[:4], seq.right[:4])):
        r = pipe.step([left.rgb, right.rgb], _stamp(i), calib)
        assert r.right_features is not None and len(r.stereo_matches) > 100
        sm = r.stereo_matches[r.stereo_inliers]
        disparity = r.keypoints[sm[:, 0], 0] - r.right_features["keypoints"][sm[:, 1], 0]
        assert np.mean(disparity > 0) > 0.9  # the right view sees each point further left
        assert r.odometry.state == "ok"
        right_obs = r.odometry.tracks.camera == 1
        assert right_obs.sum() == len(sm) and np.isin(r.odometry.tracks.ids[right_obs], r.track_ids).all()
    bad = Calibration(K=seq.K, P_right=camera_info_p(seq.K, -BASELINE))  # P[0,3] with the wrong sign
    r = FramePipeline(_orb(), "stereo").step([seq.frames[0].rgb, seq.right[0].rgb], _stamp(0), bad)
    assert r.odometry.state == "error" and any(k == "vo" for k, _ in r.warnings)
    assert len(r.keypoints) > 300  # the features still come out
    no_right = FramePipeline(_orb(), "stereo").step(
        [seq.frames[0].rgb, seq.right[0].rgb], _stamp(0), Calibration(seq.K)
    )
    assert no_right.odometry.state == "no_right_camera_info"


def test_learned_front_end_through_the_same_step(seq):
    ex = make_extractor(model="goodpoint_small", device="cpu", precision="fp32")
    ex.set_detection(max_keypoints=500)
    pipe = FramePipeline(ex, "mono", MatchSettings(method="essential"))
    r0 = pipe.step([seq.frames[0].rgb], _stamp(0))  # no camera_info yet: essential cannot verify
    r1 = pipe.step([seq.frames[1].rgb], _stamp(1))
    assert r1.warnings and r1.warnings[0][0] == "noK" and r1.inliers.all()
    r2 = pipe.step([seq.frames[2].rgb], _stamp(2), Calibration(K=seq.K))
    assert len(r2.matches) > 100 and r2.inliers.mean() > 0.5
    assert r2.features["descriptors"].shape[1] == 128 and r0.extract_seconds > 0


def test_learned_rgbd_odometry_is_told_which_points_are_the_fill(seq):
    """The fill adds points below the threshold; the pipeline flags them for the metric pose
    (``VisualOdometry``'s ``confident``), from the extractor's own ``confident_score``."""
    ex = make_extractor(model="goodpoint_small", device="cpu", precision="fp32")
    ex.set_detection(min_keypoints_per_mpx=4000.0)
    pipe = FramePipeline(ex, "rgbd", MatchSettings(method="fundamental"))
    for i, f in enumerate(seq.frames[:3]):
        r = pipe.step([f.rgb], _stamp(i), Calibration(K=seq.K), depth=f.depth.astype(np.float32))
        assert r.odometry.state == "ok"
    sure = r.features["scores"] > ex.confident_score
    assert 0 < sure.sum() < len(sure)
    np.testing.assert_array_equal(pipe.odometry.vo._ref.confident, sure)
    assert make_extractor(model="orb").confident_score == -np.inf


@pytest.mark.parametrize("model", ["orb", "akaze", "sift", pytest.param("goodpoint_small", marks=pytest.mark.slow)])
def test_every_front_end_from_make_extractor_is_one_extractor(seq, model):
    try:
        ex = make_extractor(model=model, device="cpu", precision="fp32")
    except ValueError as e:  # AKAZE left OpenCV 5's main package
        pytest.skip(str(e))
    assert isinstance(ex, Extractor) and "max_keypoints" in ex.detection_keys
    ex.set_detection(max_keypoints=100)
    image = seq.frames[0].rgb
    one, many = ex.extract(image), ex.extract_many([image, image])
    assert set(one) == set(FEATURE_KEYS) and len(many) == 2
    f = to_numpy(one)
    assert 0 < len(f["keypoints"]) <= 100 and f["keypoints"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f["descriptors"], axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(to_numpy(many[1])["keypoints"], f["keypoints"])


def test_classical_front_ends_read_16_bit_and_float_cameras_like_8_bit() -> None:
    """mono16 and 32FC1 cameras reach ORB scaled as the learned models read them."""
    gray = cv2.cvtColor(sample_photo("astronaut"), cv2.COLOR_RGB2GRAY)
    ex = make_extractor("torch", "orb")
    ref = ex.extract_numpy(gray)["keypoints"]
    for image in (gray.astype(np.uint16) * 257, gray.astype(np.float32) / 255.0):
        np.testing.assert_array_equal(ex.extract_numpy(image)["keypoints"], ref)
