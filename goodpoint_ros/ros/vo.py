"""The extractor node's visual-odometry outputs: ``~/tracks`` (VINS-Fusion layout) and ``~/odometry``.

Only messages: the per-frame work (track velocities, the estimate, its state machine and
counters) is ``odometry.StreamOdometry``, run by ``pipeline.FramePipeline`` after matching on what
the frame already computed (keypoints, track ids, the depth image or the verified stereo
matches), so it adds no second matcher. The estimate is ``odometry.VisualOdometry`` (mono:
essential matrix with parallax keyframes, up to scale; RGB-D: PnP on depth; stereo: triangulation
+ PnP); the layouts are ``vo_msgs``. Both outputs need ``camera_info`` (K, D; stereo also the right
camera's P for the baseline); before it arrives nothing is published and diagnostics say why.
Every output carries the input image's stamp.
"""

from __future__ import annotations

from typing import Any

from nav_msgs.msg import Odometry
from sensor_msgs.msg import PointCloud
from std_msgs.msg import Header

from goodpoint_ros.ros.vo_msgs import odometry_message, tracks_message
from goodpoint_ros.vo.odometry import Calibration, OdometryStep


class OdometryPublisher:
    """``~/tracks`` and ``~/odometry`` of one node (each only when its parameter enables it)."""

    def __init__(self, node: Any, params: dict, qos: Any) -> None:
        self.odom_frame, self.child_frame = str(params["odom_frame"]), str(params["child_frame"])
        self.pub_tracks = node.create_publisher(PointCloud, "~/tracks", qos) if params["publish_tracks"] else None
        self.pub_odom = node.create_publisher(Odometry, "~/odometry", qos) if params["publish_odometry"] else None

    def publish(self, header: Any, step: OdometryStep, calib: Calibration) -> None:
        """The messages of one frame's ``step``, computed with the calibration ``calib`` it arrived with."""
        t = step.tracks
        if t is not None and self.pub_tracks is not None:
            self.pub_tracks.publish(
                tracks_message(header, t.ids, t.keypoints, calib.K, t.velocities, t.camera, calib.D)
            )
        r = step.result
        if r is not None and self.pub_odom is not None:
            out = Header(stamp=header.stamp, frame_id=self.odom_frame)
            self.pub_odom.publish(
                odometry_message(
                    out, self.child_frame, r.pose, r.covariance, r.relative, r.relative_covariance, step.dt
                )
            )
