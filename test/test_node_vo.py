"""Visual-odometry outputs of the extractor node (``~/tracks``, ``~/odometry``) over real DDS.

The node runs in its own process in RGB-D mode; this process plays the rendered room
(``synthetic``: photos on the walls, exact depth, K and poses) with camera_info,
in lock step (each frame waits for its keypoints) so every frame is processed, then covers the
lens (blank image, no depth) for a few frames and plays on.

Front-end: the node's weight-free ORB front-end (``model: orb``), so the ATE bound tests the node
and the odometry, not a training run: random-weight networks do not track (measured: keypoints on
a fixed grid, PnP finds no motion, ATE ~0.11 m = not moving), and an ATE bound on them would
measure nothing. ``GOODPOINT_VO_MODEL`` / ``GOODPOINT_VO_WEIGHTS`` run a learned model instead
(e.g. ``goodpoint_small`` with shipped or trained weights); its ATE is then printed, not asserted.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile  # noqa: E402

apply_fastdds_profile()

from nav_msgs.msg import Odometry  # noqa: E402
from probe import NodeProcess, Probe  # noqa: E402
from sensor_msgs.msg import CameraInfo, PointCloud  # noqa: E402
from synthetic import camera_info_p, render_sequence, trajectory  # noqa: E402

from goodpoint_ros.backends import make_extractor  # noqa: E402
from goodpoint_ros.models.features import to_numpy  # noqa: E402
from goodpoint_ros.ros.conversions import numpy_to_image  # noqa: E402
from goodpoint_ros.ros.vo_msgs import MAX_EXACT_ID, TRACK_CHANNELS, parse_tracks, pose_from_odometry  # noqa: E402
from goodpoint_ros.vo.odometry import VisualOdometry  # noqa: E402
from goodpoint_ros.vo.pipeline import match_frames  # noqa: E402
from goodpoint_ros.vo.tracking import TrackIds  # noqa: E402

DOMAIN = 64
pytestmark = pytest.mark.slow  # node processes
SIZE = (320, 240)  # ORB needs the texture detail; 160x120 gives ~0.2 m ATE
N_FRAMES = 30  # tracked phase
N_BLANK = 4  # lens covered
N_AFTER = 10  # tracking must resume
ATE_MAX = 0.06  # metres; measured ~0.03 (ORB, 30 frames over ~0.7 m of a 6 x 3 x 8 m room)
REPO = Path(__file__).resolve().parents[1]


def _bench_vo():
    spec = importlib.util.spec_from_file_location("bench_vo", REPO / "bench" / "vo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _front_end() -> tuple[str, str, bool]:
    """(model, weights, assert the ATE bound?)."""
    if os.environ.get("GOODPOINT_VO_MODEL") or os.environ.get("GOODPOINT_VO_WEIGHTS"):
        model = os.environ.get("GOODPOINT_VO_MODEL", "goodpoint_small")
        return model, os.environ.get("GOODPOINT_VO_WEIGHTS", "default"), False
    return "orb", "default", True


def _info(seq, stamp) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp, "camera_optical"
    msg.width, msg.height, msg.distortion_model = seq.width, seq.height, "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = seq.K.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    msg.p = camera_info_p(seq.K).ravel().tolist()
    return msg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Play the sequence through the node; return everything recorded."""
    seq = render_sequence(N_FRAMES + N_AFTER, *SIZE, amplitude=0.3)
    model, weights, bound = _front_end()
    node = NodeProcess(
        DOMAIN,
        {
            "model": model, "weights": weights, "device": "cpu", "max_keypoints": 1000,
            "qos": "reliable", "input_mode": "rgbd", "match_ratio": 1.0, "verification_method": "fundamental",
            "odom_frame": "vo_odom", "child_frame": "vo_cam", "diagnostics_period": 0.5,
        },
        {"image": "/vo/image", "depth": "/vo/depth", "camera_info": "/vo/camera_info"},
    )  # fmt: skip
    probe = Probe(DOMAIN)
    prefix = "/goodpoint_extractor"
    probe.record(PointCloud, f"{prefix}/tracks", lambda m: (m.header, [c.name for c in m.channels], parse_tracks(m)))
    probe.record(Odometry, f"{prefix}/odometry", lambda m: (m.header, m.child_frame_id, pose_from_odometry(m)))
    try:
        probe.wait_ready(node)
        pub_img = probe.publisher("/vo/image", best_effort=False)
        pub_depth = probe.publisher("/vo/depth", best_effort=False)
        pub_info = probe.publisher("/vo/camera_info", CameraInfo, best_effort=False)
        for p in (pub_img, pub_depth, pub_info):
            probe.wait_subscribed(p)
        blank = (np.full((SIZE[1], SIZE[0], 3), 30, np.uint8), np.zeros((SIZE[1], SIZE[0]), np.float32))
        plan = [("before_info", 0), ("before_info", 1)]  # no camera_info yet: no tracks, no odometry
        plan += [("play", i) for i in range(N_FRAMES)] + [("blank", i) for i in range(N_BLANK)]
        plan += [("play", N_FRAMES + i) for i in range(N_AFTER)]
        stamps, diag_before_blank, diag_after_blank = [], None, None
        for k, (kind, i) in enumerate(plan):
            if kind == "blank" and i == 0:  # the state just before the lens is covered
                n = len(probe.diagnostics)
                probe.spin_until(lambda n=n: len(probe.diagnostics) > n, 3)
                diag_before_blank = dict(probe.diagnostics[-1])
            rgb, depth = blank if kind == "blank" else (seq.frames[i].rgb, seq.frames[i].depth)
            stamp = probe.stamp(k)
            if kind != "before_info":
                pub_info.publish(_info(seq, stamp))
                probe.spin(0.02)
            img = numpy_to_image(rgb, "rgb8")
            dep = numpy_to_image(np.round(depth * 1000).astype(np.uint16), "16UC1")
            for m in (img, dep):
                m.header.stamp, m.header.frame_id = stamp, "camera_optical"
            pub_depth.publish(dep)
            pub_img.publish(img)
            key = (stamp.sec, stamp.nanosec)
            assert probe.spin_until(
                lambda key=key: any((h.stamp.sec, h.stamp.nanosec) == key for _, h, _ in probe.keypoints), 10
            ), f"no keypoints for frame {k} ({kind})"
            stamps.append((kind, i, key))
            if kind == "blank" and i == N_BLANK - 1:
                n = len(probe.diagnostics)
                probe.spin_until(lambda n=n: len(probe.diagnostics) > n + 1, 3)
                diag_after_blank = dict(probe.diagnostics[-1])
        probe.spin(1.0)
        n = len(probe.diagnostics)
        probe.spin_until(lambda: len(probe.diagnostics) > n, 3)
        yield {
            "seq": seq, "bound": bound, "model": model, "stamps": stamps, "probe": probe,
            "diag_blank": (diag_before_blank, diag_after_blank), "diag_end": dict(probe.diagnostics[-1]),
        }  # fmt: skip
    finally:
        out = node.stop()
        probe.close()
        print(out[-2000:])


def _by_stamp(records):
    return {(r[1][0].stamp.sec, r[1][0].stamp.nanosec): r[1] for r in records}


def test_tracks_layout_normalised_and_velocities(run):
    probe, seq, stamps = run["probe"], run["seq"], run["stamps"]
    tracks = _by_stamp(probe.other["/goodpoint_extractor/tracks"])
    kps = {(h.stamp.sec, h.stamp.nanosec): k for _, h, k in probe.keypoints}
    for kind, _, key in stamps:
        assert (key in tracks) == (kind != "before_info"), f"{kind} frame: tracks only with camera_info"
    K = seq.K
    checked_velocity = 0
    prev = None
    for kind, _, key in stamps:
        if kind == "before_info":
            continue
        header, names, t = tracks[key]
        assert header.frame_id == "camera_optical"
        assert tuple(names) == TRACK_CHANNELS  # VINS reads channels by position
        assert (t["camera_id"] == 0).all()
        kp = kps[key]
        np.testing.assert_allclose(t["uv"], kp["keypoints"], atol=1e-3)
        np.testing.assert_array_equal(t["id"], kp["track_ids"].astype(np.int64) % MAX_EXACT_ID)
        expected = (t["uv"] - K[:2, 2]) / [K[0, 0], K[1, 1]]
        np.testing.assert_allclose(t["xy"], expected, atol=1e-5)
        if prev is not None:
            dt = (key[0] - prev[0][0]) + (key[1] - prev[0][1]) * 1e-9
            ids, i0, i1 = np.intersect1d(prev[1]["id"], t["id"], return_indices=True)
            if len(ids):
                v = (t["xy"][i1] - prev[1]["xy"][i0]) / dt
                np.testing.assert_allclose(t["velocity"][i1], v, atol=1e-3, rtol=1e-3)
                checked_velocity += len(ids)
            new = np.setdiff1d(np.arange(len(t["id"])), i1)
            assert (t["velocity"][new] == 0).all()  # a new track has no velocity yet
        prev = (key, t)
    assert checked_velocity > 0, "no track continued across frames"


def test_odometry_stamps_frames_and_quality(run):
    probe, seq, stamps = run["probe"], run["seq"], run["stamps"]
    odom = _by_stamp(probe.other["/goodpoint_extractor/odometry"])
    for kind, _, key in stamps:
        assert (key in odom) == (kind != "before_info")
    for header, child, _ in odom.values():
        assert header.frame_id == "vo_odom" and child == "vo_cam"
    played = [(i, key) for kind, i, key in stamps if kind == "play" and i < N_FRAMES]
    est = np.stack([odom[key][2] for _, key in played])
    np.testing.assert_allclose(est[0], np.eye(4), atol=1e-9)  # the first frame defines the odom frame
    ate, rpe_t, rpe_r = _bench_vo().ate_rpe(est, seq.poses[[i for i, _ in played]], sim3=False)
    print(
        f"ATE through the node ({run['model']}): {ate:.4f} m, RPE {rpe_t:.4f} m/frame {rpe_r:.3f} deg/frame ({N_FRAMES} frames)"
    )
    if not run["bound"]:
        pytest.skip(
            f"{run['model']} chosen by the environment: ATE {ate:.3f} m reported, bound {ATE_MAX} m not asserted"
        )
    assert ate < ATE_MAX


def test_blank_frames_reset_and_odometry_resumes(run):
    probe, stamps = run["probe"], run["stamps"]
    before, after = run["diag_blank"]
    assert after["tracking"] == "lost"
    assert int(after["vo_failures"]) >= int(before["vo_failures"]) + N_BLANK - 1
    assert int(after["vo_resets"]) >= 1
    assert int(after["vo_resets"]) >= int(before["vo_resets"]) + (before["tracking"] == "ok")
    odom = _by_stamp(probe.other["/goodpoint_extractor/odometry"])
    blank_keys = [key for kind, _, key in stamps if kind == "blank"]
    held = odom[blank_keys[0]][2]
    for key in blank_keys[1:]:  # covered lens: the pose is held, never jumps
        np.testing.assert_allclose(odom[key][2], held, atol=1e-9)
    later = [odom[key][2] for kind, i, key in stamps if kind == "play" and i >= N_FRAMES]
    moved = [np.linalg.norm(p[:3, 3] - held[:3, 3]) for p in later]
    assert max(moved) > 1e-4, "odometry never moved again after the blank frames"
    end = run["diag_end"]
    assert float(end["track_length_max"]) >= 2 and float(end["track_length_mean"]) >= 2
    assert int(end["active_tracks"]) > 0


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_stereo_and_mono_odometry_through_the_node(mode):
    """Stereo: baseline from right/camera_info P, right observations in ~/tracks with camera_id 1 and
    the left id, metric poses. Mono: poses up to scale (Sim3-aligned ATE)."""
    n, baseline = 14, 0.12
    poses = trajectory(N_FRAMES + N_AFTER, 0.3)[:n]  # the same per-frame motion as the RGB-D run
    seq = render_sequence(n, *SIZE, baseline=baseline if mode == "stereo" else 0.0, poses=poses)
    params = {"model": "orb", "max_keypoints": 1000, "qos": "reliable", "input_mode": mode}
    params |= {"match_ratio": 1.0, "verification_method": "fundamental", "diagnostics_period": 0.5}
    remaps = {"camera_info": "/vo2/camera_info", "right/camera_info": "/vo2/right/camera_info"}
    remaps |= {"left/image": "/vo2/left", "right/image": "/vo2/right"} if mode == "stereo" else {"image": "/vo2/left"}
    node = NodeProcess(DOMAIN + 1, params, remaps)
    probe = Probe(DOMAIN + 1)
    prefix = "/goodpoint_extractor"
    probe.record(PointCloud, f"{prefix}/tracks", lambda m: (m.header, parse_tracks(m)))
    probe.record(Odometry, f"{prefix}/odometry", lambda m: (m.header, pose_from_odometry(m)))
    try:
        probe.wait_ready(node)
        pubs = {"left": probe.publisher("/vo2/left", best_effort=False)}
        pubs["info"] = probe.publisher("/vo2/camera_info", CameraInfo, best_effort=False)
        if mode == "stereo":
            pubs["right"] = probe.publisher("/vo2/right", best_effort=False)
            pubs["rinfo"] = probe.publisher("/vo2/right/camera_info", CameraInfo, best_effort=False)
        for p in pubs.values():
            probe.wait_subscribed(p)
        # camera_info and images travel on different topics with no ordering between them: let the
        # node hold the calibration before the first frame, or frame 0 races its camera_info.
        for _ in range(3):
            pubs["info"].publish(_info(seq, probe.stamp(0)))
            if mode == "stereo":
                rinfo = _info(seq, probe.stamp(0))
                rinfo.p = camera_info_p(seq.K, baseline).ravel().tolist()
                pubs["rinfo"].publish(rinfo)
            probe.spin(0.2)
        keys = []
        for i in range(n):
            stamp = probe.stamp(i)
            pubs["info"].publish(_info(seq, stamp))
            if mode == "stereo":
                rinfo = _info(seq, stamp)
                rinfo.p = camera_info_p(seq.K, baseline).ravel().tolist()
                pubs["rinfo"].publish(rinfo)
            probe.spin(0.02)
            msgs = {"left": numpy_to_image(seq.frames[i].rgb, "rgb8")}
            if mode == "stereo":
                msgs["right"] = numpy_to_image(seq.right[i].rgb, "rgb8")
            for name, m in msgs.items():
                m.header.stamp, m.header.frame_id = stamp, "camera_optical"
                pubs[name].publish(m)
            key = (stamp.sec, stamp.nanosec)
            assert probe.spin_until(
                lambda key=key: any((h.stamp.sec, h.stamp.nanosec) == key for _, (h, _) in probe.other[
                    f"{prefix}/odometry"]), 10
            ), f"no odometry for frame {i}"  # fmt: skip
            keys.append(key)
        probe.spin(0.3)
        odom = _by_stamp(probe.other[f"{prefix}/odometry"])
        tracks = _by_stamp(probe.other[f"{prefix}/tracks"])
    finally:
        out = node.stop()
        probe.close()
        print(out[-2000:])
    est = np.stack([odom[k][1] for k in keys])
    ate, _, _ = _bench_vo().ate_rpe(est, seq.poses, sim3=mode == "mono")
    gt = seq.poses[:, :3, 3]
    spread = float(np.sqrt(np.mean(np.sum((gt - gt.mean(0)) ** 2, 1))))  # the ATE of a pose that never moves
    print(f"{mode} ATE through the node (orb, {n} frames): {ate:.4f} m; a held pose would give {spread:.3f} m")
    if mode == "mono":
        # Mono VO on this short, fast sequence is weak in the core itself (ATE ~0.11-0.18 m whatever
        # correspondences it is fed), so check the wiring: the node's poses are exactly what the
        # core gives on the same features, matches and track ids.
        np.testing.assert_allclose(est, _offline_mono(seq), atol=1e-6)
        return
    assert ate < 0.3 * spread
    if mode == "stereo":  # metric: the distance travelled has the right scale
        travelled = np.linalg.norm(gt[-1] - gt[0])
        assert abs(np.linalg.norm(est[-1, :3, 3]) - travelled) < 0.3 * travelled
        t = tracks[keys[-1]][1]
        left, right = t["camera_id"] == 0, t["camera_id"] == 1
        assert left.any() and right.any() and left.sum() + right.sum() == len(t["id"])
        assert np.isin(t["id"][right], t["id"][left]).all()  # a right observation carries its left id
        ids_l, uv_l = t["id"][left], t["uv"][left]
        order = np.argsort(ids_l)
        partner = order[np.searchsorted(ids_l[order], t["id"][right])]
        disparity = uv_l[partner, 0] - t["uv"][right][:, 0]
        assert np.mean(disparity > 0) > 0.9  # the right view sees each point further left


def _offline_mono(seq) -> np.ndarray:
    """The node's mono loop as it was written out by hand before FramePipeline, without ROS: ORB,
    frame matching + verification, track ids, VO."""
    ext = make_extractor(model="orb")
    ext.set_detection(max_keypoints=1000)
    vo, tracker, poses, prev = VisualOdometry(seq.K, mode="mono"), TrackIds(), [], None
    for f in seq.frames:
        feats = ext.extract_many([f.rgb])[0]
        cur = to_numpy(feats)
        m = inl = None
        if prev is not None:
            m, _, inl = match_frames(prev[0], feats, prev[1]["keypoints"], cur["keypoints"], 1.0, 0.0, "fundamental")
        ids = tracker.update(len(cur["keypoints"]), m, inl)
        poses.append(vo.update(cur["keypoints"], track_ids=ids).pose)
        prev = (feats, cur)
    return np.stack(poses)
