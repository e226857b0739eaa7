"""~/tracks (VINS-Fusion PointCloud layout) and ~/odometry messages: built from arrays, parsed back."""

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")

from std_msgs.msg import Header  # noqa: E402

from goodpoint_ros.ros.vo_msgs import (  # noqa: E402
    TRACK_CHANNELS,
    odometry_message,
    parse_tracks,
    pose_from_odometry,
    tracks_message,
)
from goodpoint_ros.vo.odometry import normalized_coordinates, track_velocities  # noqa: E402

K = np.array([[250.0, 0.0, 159.5], [0.0, 240.0, 119.5], [0.0, 0.0, 1.0]])


def _header():
    h = Header(frame_id="camera_optical")
    h.stamp.sec, h.stamp.nanosec = 12, 500
    return h


def test_tracks_layout_matches_vins_and_round_trips():
    rng = np.random.default_rng(0)
    kp0 = rng.uniform([0, 0], [320, 240], (50, 2))
    ids0 = np.arange(100, 150)
    kp1 = kp0 + rng.normal(0, 2, kp0.shape)
    ids1 = ids0.copy()
    ids1[-5:] = np.arange(16_777_000, 16_777_005)  # new tracks with large ids (still exact in float32)
    vel = track_velocities(ids0, normalized_coordinates(kp0, K), ids1, normalized_coordinates(kp1, K), dt=0.1)
    msg = tracks_message(_header(), ids1, kp1, K, vel, camera_ids=0)

    assert [c.name for c in msg.channels] == list(TRACK_CHANNELS)
    assert TRACK_CHANNELS == ("id", "camera_id", "u", "v", "velocity_x", "velocity_y")  # VINS index order
    assert len(msg.points) == 50 and all(len(c.values) == 50 for c in msg.channels)
    assert msg.header.frame_id == "camera_optical"
    # VINS reads channel 0 as the id, 2/3 as pixels, points as normalised (x, y, 1)
    assert msg.channels[0].values[3] == 103.0 and msg.points[3].z == 1.0
    assert msg.points[0].x == pytest.approx((kp1[0, 0] - K[0, 2]) / K[0, 0], abs=1e-6)

    back = parse_tracks(msg)
    np.testing.assert_array_equal(back["id"], ids1)
    np.testing.assert_array_equal(back["camera_id"], 0)
    np.testing.assert_allclose(back["uv"], kp1, atol=1e-4)
    np.testing.assert_allclose(back["xy"], normalized_coordinates(kp1, K), atol=1e-6)
    np.testing.assert_allclose(back["velocity"], vel, atol=1e-5)
    assert np.all(back["velocity"][-5:] == 0) and np.any(back["velocity"][:-5] != 0)  # new tracks: no velocity
    expected = (normalized_coordinates(kp1[:3], K) - normalized_coordinates(kp0[:3], K)) / 0.1
    np.testing.assert_allclose(back["velocity"][:3], expected, atol=1e-5)


def test_tracks_bad_input():
    with pytest.raises(ValueError, match="track ids"):
        tracks_message(_header(), np.arange(3), np.zeros((4, 2)), K)
    with pytest.raises(ValueError, match="non-negative"):
        tracks_message(_header(), np.array([-1]), np.zeros((1, 2)), K)
    big = np.array([2**24 + 7, 2**32 - 1], dtype=np.uint32)  # long-running node: ids wrap, stay exact
    np.testing.assert_array_equal(parse_tracks(tracks_message(_header(), big, np.zeros((2, 2)), K))["id"], big % 2**24)
    msg = tracks_message(_header(), np.arange(2), np.zeros((2, 2)), K)
    msg.channels = msg.channels[::-1]
    with pytest.raises(ValueError, match="VINS"):
        parse_tracks(msg)


def test_empty_tracks():
    back = parse_tracks(tracks_message(_header(), np.zeros(0, np.int64), np.zeros((0, 2)), K))
    assert back["id"].shape == (0,) and back["uv"].shape == (0, 2)


@pytest.mark.parametrize("angle", [0.0, 0.3, 3.1])
def test_odometry_message_round_trip(angle):
    axis = np.array([0.2, -0.5, 0.8]) / np.linalg.norm([0.2, -0.5, 0.8])
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (1.0, -2.0, 0.5)
    cov = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
    rel = np.eye(4)
    rel[:3, 3] = (0.1, 0.0, 0.05)
    h = Header(frame_id="odom")
    msg = odometry_message(h, "camera_optical", T, cov, relative=rel, relative_covariance=cov, dt=0.1)
    assert msg.header.frame_id == "odom" and msg.child_frame_id == "camera_optical"
    np.testing.assert_allclose(pose_from_odometry(msg), T, atol=1e-9)
    np.testing.assert_allclose(np.reshape(msg.pose.covariance, (6, 6)), cov)
    assert msg.twist.twist.linear.x == pytest.approx(1.0) and msg.twist.twist.linear.z == pytest.approx(0.5)
    np.testing.assert_allclose(np.reshape(msg.twist.covariance, (6, 6)), cov / 0.01)


def test_odometry_message_without_twist_and_bad_shapes():
    msg = odometry_message(Header(), "cam", np.eye(4), np.eye(6))
    assert msg.twist.twist.linear.x == 0.0 and msg.twist.covariance[0] >= 1e6  # unknown twist
    with pytest.raises(ValueError, match="4x4"):
        odometry_message(Header(), "cam", np.eye(3), np.eye(6))
    with pytest.raises(ValueError, match="6x6"):
        odometry_message(Header(), "cam", np.eye(4), np.eye(3))
