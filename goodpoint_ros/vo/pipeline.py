"""The product's main loop, once and ROS-free: one camera frame in, everything derived from it out.

``FramePipeline.step`` runs, per frame: feature extraction (both images of a stereo pair in one
batch), matching with the previous processed frame plus geometric verification, track ids, depth
at the keypoints (RGB-D), left/right matching (stereo), and the odometry state machine
(``odometry.StreamOdometry``: VINS-layout tracks and the pose). A stamp before the previous one
(a bag played in a loop) or a change of image size restarts the tracks and the trajectory. Zero or
repeated stamps (some drivers and bag conversions) do not: frames are matched in arrival order and
a warning says the stamps are unusable. A camera_info or depth image whose size disagrees with the
image is scaled when the aspect ratio matches and ignored when it does not, each with a warning.

The node (``ros/extractor_node.py``) and ``goodpoint-bag`` only turn messages into arrays, call
``step`` and turn the ``FrameResult`` into messages, so a change to the loop happens here.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from goodpoint_ros.backends.extractor import Extractor
from goodpoint_ros.io.cloud_layout import stamp_ns
from goodpoint_ros.models.features import to_numpy
from goodpoint_ros.params import INPUT_MODES, TABLE
from goodpoint_ros.vo.geometry import same_aspect, verify
from goodpoint_ros.vo.matching import match_features
from goodpoint_ros.vo.odometry import Calibration, OdometryStep, StreamOdometry, calibration_for_image
from goodpoint_ros.vo.tracking import TrackIds


def match_frames(
    f0: dict,
    f1: dict,
    k0: np.ndarray,
    k1: np.ndarray,
    ratio: float = TABLE["match_ratio"].default,
    max_distance: float = TABLE["match_max_distance"].default,
    method: str = TABLE["verification_method"].default,
    threshold: float = TABLE["verification_threshold"].default,
    K: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match two frames' features (tensors ``f0``, ``f1``; numpy keypoints ``k0``, ``k1``).

    Returns matches Mx2 int64, descriptor distances M float32 and the inlier mask M bool.
    ``ratio >= 1`` and ``max_distance <= 0`` disable those tests; ``method='none'`` (or
    ``essential`` without intrinsics) marks every match an inlier.
    """
    m, d = match_features(
        f0, f1, ratio=ratio if ratio < 1.0 else None, max_distance=max_distance if max_distance > 0 else None
    )
    m = m.cpu().numpy().astype(np.int64).reshape(-1, 2)
    d = d.float().cpu().numpy()
    if method == "none" or (method == "essential" and K is None):
        return m, d, np.ones(len(m), bool)
    _, inl = verify(k0[m[:, 0]], k1[m[:, 1]], method, threshold, K=K)
    return m, d, inl


@dataclass(frozen=True)
class MatchSettings:
    """Frame-to-frame matching: Lowe ``ratio`` (>= 1 off), ``max_distance`` (<= 0 off), and the
    verification ``method`` with its RANSAC ``threshold`` in pixels. Defaults: the node's."""

    ratio: float = TABLE["match_ratio"].default
    max_distance: float = TABLE["match_max_distance"].default
    method: str = TABLE["verification_method"].default
    threshold: float = TABLE["verification_threshold"].default


@dataclass
class FrameResult:
    """Everything one frame produced. Index pairs are (previous frame, this frame) for ``matches``
    and (left, right) for ``stereo_matches``; ``track_ids`` has one id per keypoint."""

    stamp: tuple[int, int]  # (sec, nanosec) of the frame
    features: dict[str, np.ndarray]  # keypoints, scores, descriptors, detector (features.to_numpy)
    torch_features: dict[str, torch.Tensor]  # the same on the extractor's device: the next frame matches them
    track_ids: np.ndarray
    matches: np.ndarray  # Mx2 int64; empty on the first frame, after a restart or when not wanted
    distances: np.ndarray  # M float32 descriptor distances
    inliers: np.ndarray  # M bool after geometric verification
    previous_keypoints: np.ndarray | None = None  # the matched previous frame's keypoints (None: no previous)
    previous_stamp: tuple[int, int] | None = None
    restarted: bool = False  # the stamp went back or the image size changed: tracks and trajectory started again
    resumed: bool = False  # matching resumed after frames without it: the trajectory started again
    keypoint_depth: np.ndarray | None = None  # RGB-D: metres at each keypoint (NaN unknown)
    calibration: Calibration = field(default_factory=Calibration)  # the one used (scaled to the image)
    right_features: dict[str, np.ndarray] | None = None  # stereo: the right image's features
    stereo_matches: np.ndarray | None = None
    stereo_distances: np.ndarray | None = None
    stereo_inliers: np.ndarray | None = None
    odometry: OdometryStep = field(default_factory=lambda: OdometryStep("skipped"))
    extract_seconds: float = 0.0
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (key, text): callers rate-limit by key

    @property
    def keypoints(self) -> np.ndarray:
        return self.features["keypoints"]


def empty_matches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros(0, bool)


def sample_depth(depth: np.ndarray, keypoints: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Depth at each keypoint (nearest pixel), for a depth image of any size aligned with the image."""
    sy, sx = depth.shape[0] / image_hw[0], depth.shape[1] / image_hw[1]
    xs = np.clip((keypoints[:, 0] * sx).round().astype(np.int64), 0, depth.shape[1] - 1)
    ys = np.clip((keypoints[:, 1] * sy).round().astype(np.int64), 0, depth.shape[0] - 1)
    return depth[ys, xs]


class FramePipeline:
    """Per-stream state (previous frame, track ids, odometry) and the per-frame ``step``.

    ``extract_lock`` (optional) is held around the extractor call only, so that another thread
    may change the detection settings between frames but never during one.
    """

    def __init__(
        self,
        extractor: Extractor,
        mode: str = "mono",
        match: MatchSettings | None = None,
        tracks: bool = True,
        odometry: bool = True,
        vo_min_inliers: int = TABLE["vo_min_inliers"].default,
        vo_ransac_px: float = TABLE["vo_ransac_px"].default,
        vo_min_parallax_px: float = TABLE["vo_min_parallax_px"].default,
        extract_lock: threading.Lock | None = None,
    ) -> None:
        if mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be mono, stereo or rgbd, got '{mode}'")
        self.extractor, self.mode = extractor, mode
        self.match = match or MatchSettings()
        self.tracker = TrackIds()
        self.odometry = StreamOdometry(mode, tracks, odometry, vo_min_inliers, vo_ransac_px, vo_min_parallax_px)
        self.extract_lock = extract_lock
        # torch feats, keypoints, stamp, image (height, width)
        self._prev: tuple[dict, np.ndarray, tuple[int, int], tuple[int, int]] | None = None
        self._matching_gap = False  # a frame went without matching (nobody wanted it)

    def reset(self) -> None:
        """Forget the previous frame: new track ids and a new trajectory from the next frame on."""
        self._prev = None
        self.tracker.reset()
        self.odometry.restart()

    def extract(self, images: list[np.ndarray]) -> tuple[list[dict], float]:
        """The extractor on the frame's images (under ``extract_lock``), and its wall time."""
        with self.extract_lock or nullcontext():
            t0 = time.perf_counter()
            feats = self.extractor.extract_many(images)
            return feats, time.perf_counter() - t0

    def step(
        self,
        images: list[np.ndarray],
        stamp: tuple[int, int],
        calibration: Calibration | None = None,
        depth: np.ndarray | None = None,
        *,
        match: MatchSettings | None = None,
        want_matches: bool = True,
        want_tracks: bool = True,
        want_odometry: bool = True,
        extracted: tuple[list[dict], float] | None = None,
    ) -> FrameResult:
        """One frame: ``images`` = [image] (mono, RGB-D) or [left, right] (stereo), ``depth`` in
        metres (RGB-D), ``calibration`` the one the frame arrived with.

        Keypoints are always computed. ``want_matches=False`` skips frame-to-frame and stereo
        matching (track ids then start afresh on this frame) unless tracks or odometry, enabled
        and wanted, need them; ``want_tracks``/``want_odometry`` skip the VINS tracks / the pose
        estimate for this frame. When matching resumes after frames without it, it matches the
        previous frame as usual (its fresh ids carry on from there) and the odometry starts a new
        trajectory (``resumed``): the ids it would chain through were never matched. A frame
        that skips only the odometry keeps the chain (its correspondences come from track ids).
        ``extracted``: ``extract(images)``'s result when the caller ran it already (the node runs
        the next frame's network while this one is matched).
        """
        ms, vo = match or self.match, self.odometry
        hw = images[0].shape[:2]
        calib, calib_problem = calibration_for_image(calibration or Calibration(), hw[1], hw[0])
        depth, depth_problem = _aligned_depth(depth, hw)
        need_matches = want_matches or (want_tracks and vo.tracks) or (want_odometry and vo.odometry)
        feats, t_extract = extracted if extracted is not None else self.extract(images)
        cur = to_numpy(feats[0])
        kp = cur["keypoints"]
        prev, warnings, restarted = self._previous(stamp, hw)
        r = FrameResult(stamp, cur, feats[0], np.zeros(0, np.uint32), *empty_matches(), restarted=restarted)
        r.extract_seconds, r.warnings, r.calibration = t_extract, warnings, calib
        if calib_problem:
            warnings.append(("camera_info", calib_problem))
        if depth_problem:
            warnings.append(("depth_size", depth_problem))
        r.resumed = self._resumes(need_matches, prev is not None)
        if prev is not None and need_matches:
            if ms.method == "essential" and calib.K is None:
                r.warnings.append(("noK", "essential-matrix verification needs camera_info; matches are unverified"))
            r.matches, r.distances, r.inliers = self._match(prev[0], feats[0], prev[1], kp, ms, calib.K)
            r.previous_keypoints, r.previous_stamp = prev[1], prev[2]
        r.track_ids = self.tracker.update(len(kp), r.matches if r.previous_keypoints is not None else None, r.inliers)
        if depth is not None:
            r.keypoint_depth = sample_depth(depth, kp, images[0].shape[:2])
        stereo = self._stereo(r, feats, ms, need_matches) if self.mode == "stereo" else None
        if depth is not None and want_odometry and depth.shape != hw:  # odometry reads depth at keypoint pixels
            depth = cv2.resize(depth, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        confident = cur["scores"] > self.extractor.confident_score
        r.odometry = vo.step(
            stamp_ns(stamp), kp, r.track_ids, calib, depth, stereo, want_tracks, want_odometry, confident
        )
        if r.odometry.error:
            r.warnings.append(("vo", f"odometry skipped this frame: {r.odometry.error}"))
        self._prev = (feats[0], kp, stamp, hw)
        return r

    def _previous(self, stamp: tuple[int, int], hw: tuple[int, int]) -> tuple[tuple | None, list, bool]:
        """The previous frame to match (None after a restart), warnings about the stamps or size,
        and whether the stream restarted: time went back (a bag loop) or the image size changed."""
        prev, warnings = self._prev, []
        if prev is not None and stamp == prev[2]:
            what = "zero" if stamp == (0, 0) else "repeated"
            warnings.append(("stamps", f"header stamps are {what}: frames are matched in arrival order"))
        restarted = prev is not None and (stamp < prev[2] or hw != prev[3])
        if restarted:  # new tracks and trajectory
            if hw != prev[3]:
                (h0, w0), (h1, w1) = prev[3], hw
                warnings.append(("resize", f"image size changed {w0}x{h0} -> {w1}x{h1}: tracks restarted"))
            self.reset()
            prev = None
        return prev, warnings, restarted

    def _resumes(self, need_matches: bool, has_previous: bool) -> bool:
        """Whether matching resumes after frames without it: those frames started fresh track ids
        each, so the odometry's reference ids are gone and a new trajectory starts."""
        if not need_matches:
            self._matching_gap = has_previous or self._matching_gap
            return False
        if not self._matching_gap:
            return False
        self._matching_gap = False
        self.odometry.restart()
        return True

    def _stereo(self, r: FrameResult, feats: list, ms: MatchSettings, need_matches: bool) -> tuple | None:
        """The right image's features into ``r`` and, when matching runs, the left/right matches
        (always checked against a fundamental matrix); (right keypoints, inlier matches) or None."""
        r.right_features = to_numpy(feats[1])
        if not need_matches:
            return None
        right_kp = r.right_features["keypoints"]
        sm = self._match(feats[0], feats[1], r.keypoints, right_kp, ms, r.calibration.K, "fundamental")
        r.stereo_matches, r.stereo_distances, r.stereo_inliers = sm
        return right_kp, sm[0][sm[2]]

    @staticmethod
    def _match(f0, f1, k0, k1, ms: MatchSettings, K, method: str | None = None):
        return match_frames(f0, f1, k0, k1, ms.ratio, ms.max_distance, method or ms.method, ms.threshold, K)

    def stats(self) -> dict[str, Any]:
        """Tracking state, odometry counters and track lengths (for diagnostics)."""
        return self.odometry.stats(self.tracker.track_lengths)


def _aligned_depth(depth: np.ndarray | None, hw: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """The depth image if it can be read at the colour image's pixels, and what was wrong.

    Same size: as is. Same aspect ratio (within 1 %), another resolution: used, scaled (a depth
    stream registered to colour at a lower resolution), with a warning since an unregistered depth
    image of that size would pass too. Another aspect ratio: not used (the crop is unknown)."""
    if depth is None or depth.shape[:2] == hw:
        return depth, None
    (dh, dw), (h, w) = depth.shape[:2], hw
    said = f"depth is {dw}x{dh} but the image is {w}x{h}"
    if not same_aspect((w, h), (dw, dh)):
        return None, f"{said} (another aspect ratio): depth not used"
    return depth, f"{said}: depth scaled to the image (same aspect ratio; is it registered to colour?)"
