"""Message builders for ``~/tracks`` (VINS-Fusion feature layout) and ``~/odometry``.

Pure functions from numpy arrays to standard messages, so the node, tests and other tools share
one layout. ``~/tracks`` is a sensor_msgs/PointCloud exactly as VINS-Fusion's estimator reads it
(``feature_callback`` indexes channels by position):

- ``points[i]`` = (x, y, 1): undistorted normalised image coordinates of feature i
- channels, in this order: ``id`` (track id), ``camera_id`` (0 left / mono, 1 right),
  ``u``, ``v`` (pixels), ``velocity_x``, ``velocity_y`` (normalised coordinates per second)

Track ids travel as float32 in the channel, exact only below 2^24, so they are sent modulo 2^24:
unique among any 16.7 M consecutive tracks, far more than an estimator's sliding window holds
(a long-running node at 1000 new tracks per frame and 30 Hz passes 2^24 after ~9 minutes).
"""

from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Point32
from nav_msgs.msg import Odometry
from sensor_msgs.msg import ChannelFloat32, PointCloud
from std_msgs.msg import Header

from goodpoint_ros.vo.odometry import normalized_coordinates

TRACK_CHANNELS = ("id", "camera_id", "u", "v", "velocity_x", "velocity_y")
MAX_EXACT_ID = 2**24


def tracks_message(
    header: Header,
    track_ids: np.ndarray,
    keypoints: np.ndarray,
    K: np.ndarray,
    velocities: np.ndarray | None = None,
    camera_ids: np.ndarray | int = 0,
    D: np.ndarray | None = None,
) -> PointCloud:
    """A VINS-style feature PointCloud from track ids N, pixel keypoints Nx2 and the camera's K
    (and distortion D). ``velocities`` Nx2 in normalised coordinates per second
    (``odometry.track_velocities``); zeros when omitted."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    ids = np.asarray(track_ids).reshape(-1)
    n = len(kp)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} track ids for {n} keypoints")
    if n and ids.min() < 0:
        raise ValueError("track ids must be non-negative")
    ids = ids.astype(np.int64) % MAX_EXACT_ID  # exact in float32 (see the module docstring)
    vel = np.zeros((n, 2)) if velocities is None else np.asarray(velocities, dtype=np.float64).reshape(-1, 2)
    if len(vel) != n:
        raise ValueError(f"{len(vel)} velocities for {n} keypoints")
    cam = np.broadcast_to(np.asarray(camera_ids, dtype=np.float64), (n,))
    norm = normalized_coordinates(kp, K, D)
    msg = PointCloud(header=header)
    msg.points = [Point32(x=float(x), y=float(y), z=1.0) for x, y in norm]  # Point32 has no bulk setter
    columns = (ids, cam, kp[:, 0], kp[:, 1], vel[:, 0], vel[:, 1])
    msg.channels = [
        ChannelFloat32(name=name, values=array.array("f", np.asarray(col, np.float32).tobytes()))
        for name, col in zip(TRACK_CHANNELS, columns)
    ]
    return msg


def parse_tracks(msg: PointCloud) -> dict[str, np.ndarray]:
    """Arrays back from a tracks PointCloud: ``xy`` Nx2 normalised, ``id`` (int64), ``camera_id``,
    ``uv`` Nx2, ``velocity`` Nx2. Channels are read by position, as VINS does, and their names
    checked so a different layout fails loudly."""
    names = tuple(c.name for c in msg.channels)
    if names[: len(TRACK_CHANNELS)] != TRACK_CHANNELS:
        raise ValueError(f"not a VINS tracks cloud: channels {names}, expected {TRACK_CHANNELS}")
    col = [np.asarray(c.values, dtype=np.float64) for c in msg.channels[: len(TRACK_CHANNELS)]]
    xy = np.array([(p.x, p.y) for p in msg.points], dtype=np.float64).reshape(-1, 2)
    return {
        "xy": xy,
        "id": np.rint(col[0]).astype(np.int64),
        "camera_id": np.rint(col[1]).astype(np.int64),
        "uv": np.stack([col[2], col[3]], 1),
        "velocity": np.stack([col[4], col[5]], 1),
    }


def _quaternion(R: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix (Shepperd's method, numerically safe for all angles)."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q) * (1 if q[3] >= 0 else -1)


def odometry_message(
    header: Header,
    child_frame_id: str,
    pose: np.ndarray,
    pose_covariance: np.ndarray,
    relative: np.ndarray | None = None,
    relative_covariance: np.ndarray | None = None,
    dt: float = 0.0,
) -> Odometry:
    """nav_msgs/Odometry from a 4x4 pose (``header.frame_id`` <- ``child_frame_id``) and its 6x6
    covariance (x, y, z, rot x, rot y, rot z), e.g. ``odometry.Result.pose`` / ``.covariance``.
    The twist (in the child frame, as REP 105 says) comes from ``relative`` (T_prev_cur) over ``dt``
    seconds; without them the twist is zero with a huge covariance (unknown)."""
    T = np.asarray(pose, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"pose must be 4x4, got {T.shape}")
    cov = np.asarray(pose_covariance, dtype=np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f"pose covariance must be 6x6, got {cov.shape}")
    msg = Odometry(header=header, child_frame_id=child_frame_id)
    p, q = T[:3, 3], _quaternion(T[:3, :3])
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in p)
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q)
    msg.pose.covariance = array.array("d", cov.ravel().tolist())
    twist_cov = np.eye(6) * 1e6
    if relative is not None and dt > 0:
        rel = np.asarray(relative, dtype=np.float64)
        v = rel[:3, 3] / dt
        rv = _rotvec(rel[:3, :3]) / dt
        t = msg.twist.twist
        t.linear.x, t.linear.y, t.linear.z = (float(x) for x in v)
        t.angular.x, t.angular.y, t.angular.z = (float(x) for x in rv)
        if relative_covariance is not None:
            twist_cov = np.asarray(relative_covariance, dtype=np.float64) / dt**2
    msg.twist.covariance = array.array("d", twist_cov.ravel().tolist())
    return msg


def _rotvec(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix."""
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if np.pi - angle < 1e-6:  # near pi: axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(R) + 1) / 2, 0)) * np.sign(np.where(w == 0, 1, w))
        return axis / np.linalg.norm(axis) * angle
    return w / (2 * np.sin(angle)) * angle


def pose_from_odometry(msg: Odometry) -> np.ndarray:
    """4x4 pose back from an Odometry message (for tests and consumers)."""
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    x, y, z, w = o.x, o.y, o.z, o.w
    R = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (p.x, p.y, p.z)
    return T
