"""The extractor node's visual-odometry outputs: ``~/tracks`` (VINS-Fusion layout) and ``~/odometry``.

Runs in the node's worker thread after matching, on what the node already computed (keypoints,
track ids, the depth image or the verified stereo matches), so it adds no second matcher. The
estimate itself is ``goodpoint_ros.odometry.VisualOdometry`` (mono: essential matrix with
parallax keyframes, up to scale; RGB-D: PnP on depth; stereo: triangulation + PnP); messages come
from ``goodpoint_ros.ros.vo_msgs``. Both outputs need ``camera_info`` (K, D; stereo also the right
camera's P for the baseline); before it arrives nothing is published and diagnostics say why.
Every output carries the input image's stamp.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import PointCloud
from std_msgs.msg import Header

from goodpoint_ros.odometry import (
    VisualOdometry,
    baseline_from_projection,
    normalized_coordinates,
    track_velocities,
)
from goodpoint_ros.ros.vo_msgs import odometry_message, tracks_message


class Calibration(NamedTuple):
    """What camera_info told the node: K, D (None: no distortion) and, for stereo, the right P.

    Replaced whole on each camera_info, never mutated, so a frame keeps the calibration that had
    arrived when it was received, whatever arrives while it waits for the worker."""

    K: np.ndarray | None = None
    D: np.ndarray | None = None
    P_right: np.ndarray | None = None


class NodeOdometry:
    """Tracks and odometry publishing for one ``ExtractorNode`` (its K/D/P, tracker and parameters)."""

    def __init__(self, node: Any, params: dict, qos: Any) -> None:
        self.node = node
        self.mode = str(params["input_mode"])
        self.publish_tracks = bool(params["publish_tracks"])
        self.publish_odometry = bool(params["publish_odometry"])
        self.odom_frame, self.child_frame = str(params["odom_frame"]), str(params["child_frame"])
        self.vo_conf = {
            "min_inliers": int(params["vo_min_inliers"]),
            "ransac_px": float(params["vo_ransac_px"]),
            "min_parallax_px": float(params["vo_min_parallax_px"]),
        }
        self.pub_tracks = node.create_publisher(PointCloud, "~/tracks", qos) if self.publish_tracks else None
        self.pub_odom = node.create_publisher(Odometry, "~/odometry", qos) if self.publish_odometry else None
        self.vo: VisualOdometry | None = None
        self._vo_key: tuple | None = None
        self._prev: tuple[int, np.ndarray, np.ndarray] | None = None  # tracks: stamp ns, ids, normalised
        self._last_odom_ns: int | None = None
        self.state = "no_camera_info"
        self.frames = self.failures = self.resets = 0

    def restart(self) -> None:
        """Time went backwards (bag loop): a new trajectory from the identity."""
        self.vo, self._vo_key, self._prev, self._last_odom_ns = None, None, None, None

    def _odometry(self, calib: Calibration) -> VisualOdometry | None:
        """The estimator for ``calib``; rebuilt (new trajectory) when the calibration changes."""
        K, D = calib.K, calib.D
        baseline = None
        if self.mode == "stereo":
            if calib.P_right is None:
                self.state = "no_right_camera_info"
                return None
            baseline = baseline_from_projection(calib.P_right)
        key = (K.tobytes(), None if D is None else D.tobytes(), baseline)
        if key != self._vo_key:
            self.vo = VisualOdometry(K, mode=self.mode, baseline=baseline, D=D, **self.vo_conf)
            self._vo_key = key
            self._last_odom_ns = None
        return self.vo

    def process(
        self,
        header: Any,
        stamp_ns: int,
        keypoints: np.ndarray,
        ids: np.ndarray,
        depth: np.ndarray | None,
        stereo: tuple[np.ndarray, np.ndarray] | None,
        calib: Calibration,
    ) -> None:
        """One processed frame: ``stereo`` = (right keypoints, verified left/right matches Mx2),
        ``calib`` the calibration the frame arrived with."""
        K, D = calib.K, calib.D
        if K is None:
            self.state = "no_camera_info"
            return
        if self.pub_tracks is not None:
            self._tracks(header, stamp_ns, keypoints, ids, stereo, K, D)
        if self.pub_odom is None:
            self.state = "tracks_only"
            return
        vo = self._odometry(calib)
        if vo is None:
            return
        kw: dict[str, Any] = {}
        if self.mode == "rgbd":
            kw["depth"] = depth
        elif self.mode == "stereo":
            kw["right_keypoints"], kw["stereo_matches"] = stereo
        r = vo.update(keypoints, track_ids=ids, **kw)
        self.frames += 1
        self.failures += int(not r.ok)
        self.resets += int(r.reset)
        self.state = "ok" if r.ok else "lost"
        dt = 0.0 if self._last_odom_ns is None else (stamp_ns - self._last_odom_ns) * 1e-9
        self._last_odom_ns = stamp_ns
        out = Header(stamp=header.stamp, frame_id=self.odom_frame)
        self.pub_odom.publish(
            odometry_message(out, self.child_frame, r.pose, r.covariance, r.relative, r.relative_covariance, dt)
        )

    def _tracks(self, header, stamp_ns, keypoints, ids, stereo, K, D) -> None:
        norm = normalized_coordinates(keypoints, K, D)
        vel = np.zeros((len(keypoints), 2))
        if self._prev is not None:
            vel = track_velocities(self._prev[1], self._prev[2], ids, norm, (stamp_ns - self._prev[0]) * 1e-9)
        self._prev = (stamp_ns, ids, norm)
        kp, tid, cam = keypoints, ids, np.zeros(len(keypoints))
        if stereo is not None and len(stereo[1]):  # VINS stereo: the right observation shares the left id
            right, m = stereo
            kp = np.concatenate([keypoints, right[m[:, 1]]])
            tid = np.concatenate([ids, ids[m[:, 0]]])
            cam = np.concatenate([cam, np.ones(len(m))])
            vel = np.concatenate([vel, np.zeros((len(m), 2))])  # right velocities are not tracked
        self.pub_tracks.publish(tracks_message(header, tid, kp, K, vel, cam, D))

    def stats(self) -> dict[str, Any]:
        """Tracking state, resets and track lengths (frames) of the active tracks (seen >= 2 frames)."""
        lengths = self.node.tracker.track_lengths
        active = lengths[lengths >= 2]
        return {
            "tracking": self.state,
            "vo_frames": self.frames,
            "vo_failures": self.failures,
            "vo_resets": self.resets,
            "active_tracks": len(active),
            "track_length_mean": float(active.mean()) if len(active) else 0.0,
            "track_length_max": int(active.max()) if len(active) else 0,
        }
