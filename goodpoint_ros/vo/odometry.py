"""Frame-to-frame visual odometry from sparse features: mono, RGB-D and stereo, ROS-free.

Input per frame: keypoints Nx2 (pixels) plus the correspondences with the previous frame, either as
index pairs ``matches`` Mx2 (previous, current) or as ``track_ids`` N (equal id = same point), and
optionally a depth image (RGB-D) or right-image keypoints with left/right matches (stereo).

- RGB-D / stereo (metric): 3D points of the previous frame (depth at its keypoints, or left/right
  triangulation of the rectified pair, Z = fx b / disparity) against the current 2D keypoints:
  ``cv2.solvePnPRansac`` then Levenberg-Marquardt refinement on the inliers. Where the frames say
  which keypoints are ``confident`` (scored above the detector's threshold, not the
  ``min_keypoints_per_mpx`` fill) and at least ``min_confident`` correspondences join two
  confident points, the pose comes from those alone: the fill's weak points sit 1.6 px off at the
  median and cost metric accuracy (docs/experiments/confident_pose), while mono keeps them all,
  since there they are what stops tracking failures.
- Mono (up to scale): essential matrix of verified correspondences with the last keyframe
  (``geometry.verify(method="essential")`` then ``cv2.recoverPose``). A new keyframe is taken when
  the median pixel displacement exceeds ``min_parallax_px``; below it the pose is held. The scale
  of each keyframe step is chained from the depths of points triangulated in the previous step
  (median ratio), so a whole trajectory shares one unknown scale (align with Sim3).
- Tracking loss (fewer than ``min_inliers``): the pose is held, the current frame becomes the new
  reference, ``Result.ok`` is False, ``Result.reset`` marks the first failed frame of a loss and
  ``stats`` counts failures and resets (for /diagnostics).
- Covariance: first-order, sigma^2 (J^T J)^-1 of the reprojection residuals of the inliers w.r.t.
  a 6-dof perturbation (translation, rotation) of the relative motion, sigma^2 the inliers'
  residual variance; accumulated into the pose covariance by the adjoint (first-order).

Poses are ``T_world_cam`` 4x4 in the optical frame (x right, y down, z forward) of the first
frame; ``Result.relative`` is ``T_prev_cur``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from goodpoint_ros.io.image_codec import depth_array_to_meters
from goodpoint_ros.vo.geometry import same_aspect, verify, warp_points

MODES = ("mono", "rgbd", "stereo")


@dataclass
class Result:
    """The outcome of one ``update``."""

    pose: np.ndarray  # 4x4 T_world_cam
    relative: np.ndarray  # 4x4 T_prev_cur (identity when not tracked)
    ok: bool
    reset: bool = False
    keyframe: bool = False
    matches: int = 0
    inliers: int = 0
    residual_px: float = float("nan")
    covariance: np.ndarray = field(default_factory=lambda: np.eye(6))  # pose covariance (x y z rx ry rz)
    relative_covariance: np.ndarray = field(default_factory=lambda: np.eye(6))


def baseline_from_projection(P_right: np.ndarray) -> float:
    """Stereo baseline (metres) from the right camera_info P of a rectified pair: P[0,3] = -fx b."""
    P = np.asarray(P_right, dtype=np.float64).reshape(3, 4)
    if P[0, 0] == 0:
        raise ValueError("right camera P has fx = 0")
    b = -P[0, 3] / P[0, 0]
    if b <= 0:
        raise ValueError(f"right camera P gives a non-positive baseline {b:.4f} (P[0,3] must be -fx*b)")
    return float(b)


def normalized_coordinates(keypoints: np.ndarray, K: np.ndarray, D: np.ndarray | None = None) -> np.ndarray:
    """Pixels Nx2 -> undistorted normalised image coordinates Nx2 (x/z, y/z)."""
    pts = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    if D is not None and np.any(np.asarray(D) != 0) and len(pts):
        return cv2.undistortPoints(pts.reshape(-1, 1, 2), np.asarray(K, np.float64), np.asarray(D, np.float64)).reshape(
            -1, 2
        )
    K = np.asarray(K, dtype=np.float64)
    return np.stack([(pts[:, 0] - K[0, 2]) / K[0, 0], (pts[:, 1] - K[1, 2]) / K[1, 1]], 1)


def matches_from_track_ids(ids0: np.ndarray, ids1: np.ndarray) -> np.ndarray:
    """Index pairs Mx2 of points that carry the same track id in two frames; id 0 means "no id"
    (``tracking.TrackIds``) and never matches."""
    ids, i0, i1 = np.intersect1d(np.asarray(ids0), np.asarray(ids1), assume_unique=False, return_indices=True)
    keep = ids != 0
    return np.stack([i0[keep], i1[keep]], 1).astype(np.int64)


def track_velocities(ids0: np.ndarray, norm0: np.ndarray, ids1: np.ndarray, norm1: np.ndarray, dt: float) -> np.ndarray:
    """Velocities (normalised coordinates per second, as VINS) of frame-1 points; 0 for new tracks."""
    vel = np.zeros((len(ids1), 2))
    if dt > 0 and len(ids0) and len(ids1):
        m = matches_from_track_ids(ids0, ids1)
        vel[m[:, 1]] = (np.asarray(norm1)[m[:, 1]] - np.asarray(norm0)[m[:, 0]]) / dt
    return vel


def _to_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.ravel(t)
    return T


def _skew(v: np.ndarray) -> np.ndarray:
    """Nx3 -> Nx3x3 cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack(
        [np.stack([z, -v[:, 2], v[:, 1]], 1), np.stack([v[:, 2], z, -v[:, 0]], 1), np.stack([-v[:, 1], v[:, 0], z], 1)],
        1,
    )


def reprojection_covariance(points_cam: np.ndarray, residuals: np.ndarray, K: np.ndarray) -> np.ndarray:
    """6x6 covariance of a pose perturbation (translation, rotation) from inlier points (Nx3, in the
    current camera) and their pixel residuals Nx2: sigma^2 (J^T J)^-1."""
    P = np.asarray(points_cam, dtype=np.float64)
    n = len(P)
    if n < 4:
        return np.eye(6) * 1e3
    X, Y, Z = P[:, 0], P[:, 1], np.maximum(P[:, 2], 1e-6)
    fx, fy = K[0, 0], K[1, 1]
    dproj = np.zeros((n, 2, 3))
    dproj[:, 0, 0] = fx / Z
    dproj[:, 0, 2] = -fx * X / Z**2
    dproj[:, 1, 1] = fy / Z
    dproj[:, 1, 2] = -fy * Y / Z**2
    dpose = np.concatenate([np.broadcast_to(np.eye(3), (n, 3, 3)), -_skew(P)], 2)  # d(exp(xi) P)/d(xi)
    J = (dproj @ dpose).reshape(2 * n, 6)
    sigma2 = max(float(np.mean(np.square(residuals))), 0.25**2)  # floor: sub-pixel noise is never zero
    return sigma2 * np.linalg.pinv(J.T @ J)


def _adjoint(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[3:, 3:] = R
    A[:3, 3:] = _skew(t[None])[0] @ R
    return A


@dataclass
class _Ref:
    """The reference frame: its keypoints, ids, pose, per-keypoint 3D points (camera frame, NaN if
    unknown) and, for mono, the keyframe index each keypoint maps to through chained matches."""

    keypoints: np.ndarray
    ids: np.ndarray | None
    pose: np.ndarray
    points: np.ndarray
    confident: np.ndarray | None = None


# Mono: how far, in keyframe baselines, a point may lie and still vote for the pose (``_update_mono``).
MONO_MAX_BASELINES = 1000.0


class VisualOdometry:
    """Feature-based odometry; one instance per camera stream (see the module docstring)."""

    def __init__(
        self,
        K: np.ndarray,
        mode: str = "rgbd",
        baseline: float | None = None,
        D: np.ndarray | None = None,
        min_inliers: int = 12,
        ransac_px: float = 2.0,
        min_parallax_px: float = 10.0,
        depth_range: tuple[float, float] = (0.1, 20.0),
        max_stereo_dy: float = 1.5,
        depth_edge_ratio: float = 0.05,
        min_confident: int = 40,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown odometry mode '{mode}' (use one of {MODES})")
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K must be a 3x3 intrinsics matrix with positive focal lengths, got {K.tolist()}")
        if mode == "stereo" and (baseline is None or baseline <= 0):
            raise ValueError("stereo odometry needs a positive baseline (see baseline_from_projection)")
        self.K, self.mode, self.baseline, self.D = K, mode, baseline, D
        self.min_inliers, self.ransac_px, self.min_parallax_px = min_inliers, ransac_px, min_parallax_px
        self.depth_range, self.max_stereo_dy, self.depth_edge_ratio = depth_range, max_stereo_dy, depth_edge_ratio
        self.min_confident = min_confident
        self._confident: np.ndarray | None = None  # the current frame's (``update``)
        self.pose = np.eye(4)
        self.covariance = np.zeros((6, 6))
        self.stats = {"frames": 0, "tracked": 0, "failures": 0, "resets": 0, "keyframes": 0}
        self._ref: _Ref | None = None
        self._chain: np.ndarray | None = None  # mono: previous frame keypoint -> keyframe index
        self._lost = False
        self._ref_covariance = np.zeros((6, 6))  # pose covariance at the reference frame
        self._scale = 1.0  # mono: length of the last keyframe step

    # ---- 3D points of a frame (metric modes) -------------------------------------------------
    def points_from_depth(self, keypoints: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Nx3 camera-frame points from a depth image at the keypoints (NaN where invalid or on a
        depth edge: the 3x3 min/max differ by more than ``depth_edge_ratio``)."""
        d = depth_array_to_meters(depth)
        h, w = d.shape
        d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
        kernel = np.ones((3, 3), np.uint8)
        dmin, dmax = cv2.erode(d, kernel), cv2.dilate(d, kernel)
        u = np.clip(np.round(keypoints[:, 0]).astype(np.int64), 0, w - 1)
        v = np.clip(np.round(keypoints[:, 1]).astype(np.int64), 0, h - 1)
        z = d[v, u].astype(np.float64)
        good = (
            (z > self.depth_range[0])
            & (z < self.depth_range[1])
            & (dmax[v, u] - dmin[v, u] < self.depth_edge_ratio * z)
        )
        z = np.where(good, z, np.nan)
        return np.concatenate([normalized_coordinates(keypoints, self.K, self.D) * z[:, None], z[:, None]], 1)

    def points_from_stereo(self, keypoints: np.ndarray, right_keypoints: np.ndarray, stereo_matches: np.ndarray):
        """Nx3 points triangulated from rectified left/right matches Mx2 (left, right); NaN elsewhere."""
        pts = np.full((len(keypoints), 3), np.nan)
        m = np.asarray(stereo_matches, dtype=np.int64).reshape(-1, 2)
        if not len(m):
            return pts
        left, right = keypoints[m[:, 0]], np.asarray(right_keypoints)[m[:, 1]]
        disp = left[:, 0] - right[:, 0]
        good = (np.abs(left[:, 1] - right[:, 1]) <= self.max_stereo_dy) & (disp > 0.5)
        z = self.K[0, 0] * self.baseline / np.where(good, disp, 1.0)
        good &= (z > self.depth_range[0]) & (z < self.depth_range[1])
        n = normalized_coordinates(left, self.K, self.D)
        pts[m[good, 0]] = np.concatenate([n[good] * z[good, None], z[good, None]], 1)
        return pts

    # ---- the main entry point ---------------------------------------------------------------
    def update(
        self,
        keypoints: np.ndarray,
        matches: np.ndarray | None = None,
        track_ids: np.ndarray | None = None,
        depth: np.ndarray | None = None,
        right_keypoints: np.ndarray | None = None,
        stereo_matches: np.ndarray | None = None,
        confident: np.ndarray | None = None,
    ) -> Result:
        """Process one frame. ``matches`` (Mx2: previous index, current index) or ``track_ids`` give
        the correspondences with the previous call's frame; the first frame needs neither.
        ``confident`` (N bool, optional): the keypoints above the detector's threshold."""
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        ids = None if track_ids is None else np.asarray(track_ids).reshape(-1)
        if ids is not None and len(ids) != len(kp):
            raise ValueError(f"{len(ids)} track ids for {len(kp)} keypoints")
        self._confident = None if confident is None else np.asarray(confident, dtype=bool).reshape(-1)
        if self._confident is not None and len(self._confident) != len(kp):
            raise ValueError(f"{len(self._confident)} confidence flags for {len(kp)} keypoints")
        points = self._frame_points(kp, depth, right_keypoints, stereo_matches)
        self.stats["frames"] += 1
        if self._ref is None:
            self._set_reference(kp, ids, points)
            self.stats["tracked"] += 1
            return Result(self.pose.copy(), np.eye(4), ok=True, keyframe=True, covariance=self.covariance.copy())
        corr = self._correspondences(kp, matches, ids)
        if self.mode == "mono":
            return self._update_mono(kp, ids, corr)
        return self._update_metric(kp, ids, points, corr)

    def _frame_points(self, kp, depth, right_keypoints, stereo_matches) -> np.ndarray:
        if self.mode == "rgbd":
            if depth is None:
                raise ValueError("rgbd odometry needs a depth image every frame")
            return self.points_from_depth(kp, depth)
        if self.mode == "stereo":
            if right_keypoints is None or stereo_matches is None:
                raise ValueError("stereo odometry needs right_keypoints and stereo_matches every frame")
            return self.points_from_stereo(kp, np.asarray(right_keypoints, np.float64).reshape(-1, 2), stereo_matches)
        return np.full((len(kp), 3), np.nan)

    def _correspondences(self, kp: np.ndarray, matches: np.ndarray | None, ids: np.ndarray | None) -> np.ndarray:
        """Mx2 (reference index, current index). Mono chains previous-frame matches to the keyframe."""
        ref = self._ref
        if ids is not None and ref.ids is not None:
            return matches_from_track_ids(ref.ids, ids)
        if matches is None:
            raise ValueError("give either matches with the previous frame or track_ids")
        m = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
        if len(m) and (m.min() < 0 or m[:, 1].max() >= len(kp)):
            raise ValueError("matches index outside the keypoints")
        if self._chain is None:  # reference = previous frame
            return m[m[:, 0] < len(ref.keypoints)]
        prev_to_ref = self._chain
        m = m[m[:, 0] < len(prev_to_ref)]
        r = prev_to_ref[m[:, 0]]
        keep = r >= 0
        return np.stack([r[keep], m[keep, 1]], 1)

    def _set_reference(self, kp, ids, points) -> None:
        self._ref = _Ref(kp, ids, self.pose.copy(), points, self._confident)
        self._chain = np.arange(len(kp)) if self.mode == "mono" else None

    def _fail(self, kp, ids, points, n_matches: int, n_inliers: int = 0) -> Result:
        reset = not self._lost
        self._lost = True
        self.stats["failures"] += 1
        self.stats["resets"] += int(reset)
        self._set_reference(kp, ids, points)
        self.stats["keyframes"] += 1
        return Result(
            self.pose.copy(), np.eye(4), ok=False, reset=reset, matches=n_matches, inliers=n_inliers,
            covariance=self.covariance.copy(), relative_covariance=np.eye(6) * 1e3,
        )  # fmt: skip

    def _advance(self, T_ref_cur: np.ndarray, rel_cov: np.ndarray) -> None:
        """Compose the pose and propagate the covariance (first order, through the adjoint)."""
        A = _adjoint(self._ref.pose)
        self.pose = self._ref.pose @ T_ref_cur
        self.covariance = self._ref_covariance + A @ rel_cov @ A.T

    def _update_metric(self, kp, ids, points, corr) -> Result:
        ref = self._ref
        obj = ref.points[corr[:, 0]] if len(corr) else np.zeros((0, 3))
        valid = np.isfinite(obj).all(1)
        if ref.confident is not None and self._confident is not None:
            sure = valid & ref.confident[corr[:, 0]] & self._confident[corr[:, 1]]
            if sure.sum() >= self.min_confident:
                valid = sure
        obj, img = obj[valid], kp[corr[valid, 1]]
        if len(obj) < max(self.min_inliers, 6):
            return self._fail(kp, ids, points, len(corr))
        try:
            ok, rvec, tvec, inl = cv2.solvePnPRansac(
                obj, img, self.K, None, iterationsCount=200, reprojectionError=self.ransac_px,
                confidence=0.999, flags=cv2.SOLVEPNP_EPNP,
            )  # fmt: skip
        except cv2.error:
            ok, inl = False, None
        if not ok or inl is None or len(inl) < self.min_inliers:
            return self._fail(kp, ids, points, len(corr), 0 if inl is None else len(inl))
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], self.K, None, rvec, tvec)
        R = cv2.Rodrigues(rvec)[0]
        T_cur_ref = _to_T(R, tvec)
        cam = obj[inl] @ R.T + tvec.ravel()
        proj = cam[:, :2] / cam[:, 2:] * [self.K[0, 0], self.K[1, 1]] + self.K[:2, 2]
        res = proj - img[inl]
        rel_cov = reprojection_covariance(cam, res, self.K)
        # rel_cov perturbs T_cur_ref on the left; express it for T_ref_cur (= inverse) in ref frame
        A = _adjoint(np.linalg.inv(T_cur_ref))
        rel_cov_ref = A @ rel_cov @ A.T
        self._advance(np.linalg.inv(T_cur_ref), rel_cov_ref)
        relative = np.linalg.inv(T_cur_ref)
        self._ref_covariance = self.covariance.copy()
        self._set_reference(kp, ids, points)
        self._lost = False
        self.stats["tracked"] += 1
        self.stats["keyframes"] += 1
        return Result(
            self.pose.copy(), relative, ok=True, keyframe=True, matches=len(corr), inliers=len(inl),
            residual_px=float(np.sqrt(np.mean(np.sum(res**2, 1)))), covariance=self.covariance.copy(),
            relative_covariance=rel_cov_ref,
        )  # fmt: skip

    def _update_mono(self, kp, ids, corr) -> Result:
        ref = self._ref
        nan_pts = np.full((len(kp), 3), np.nan)
        if len(corr) < max(self.min_inliers, 8):
            return self._fail(kp, ids, nan_pts, len(corr))
        p0, p1 = ref.keypoints[corr[:, 0]], kp[corr[:, 1]]
        E, mask = verify(p0, p1, method="essential", threshold=self.ransac_px, K=self.K)
        if E is None or mask.sum() < self.min_inliers:
            return self._fail(kp, ids, nan_pts, len(corr), int(mask.sum()))
        # OpenCV's recoverPose counts a point only if it lies within 50 baselines; a camera that
        # moves slowly between frames (a robot's 1 cm per frame at 30 Hz, a scene 4 m away: 400
        # baselines) then failed every frame, and each failure reset the keyframe, so parallax never
        # built up (58 of 59 frames failed; test_odometry). Points up to MONO_MAX_BASELINES count.
        n_good, R, t, pose_mask, _ = cv2.recoverPose(E, p0[mask], p1[mask], self.K, distanceThresh=MONO_MAX_BASELINES)
        inl = np.flatnonzero(mask)[pose_mask.ravel() > 0]
        if n_good < self.min_inliers:
            return self._fail(kp, ids, nan_pts, len(corr), int(n_good))
        # parallax after removing the rotation (infinite homography K R K^-1): pure rotation gives
        # no baseline, so a keyframe needs translation-induced displacement, not just any motion
        H_inf = self.K @ R @ np.linalg.inv(self.K)
        parallax = float(np.median(np.linalg.norm(p1[inl] - warp_points(p0[inl], H_inf), axis=1)))
        if parallax < self.min_parallax_px:  # hold the keyframe's position, follow the rotation
            chain = np.full(len(kp), -1, dtype=np.int64)
            chain[corr[:, 1]] = corr[:, 0]
            self._chain = chain
            self._lost = False
            self.stats["tracked"] += 1
            prev_pose = self.pose.copy()
            self.pose = ref.pose @ _to_T(R.T, np.zeros(3))
            return Result(
                self.pose.copy(), np.linalg.inv(prev_pose) @ self.pose, ok=True, matches=len(corr),
                inliers=len(inl), covariance=self.covariance.copy(),
            )  # fmt: skip
        t = t.ravel()
        # triangulate in the keyframe's camera with unit baseline, then fix the scale from the
        # previous step's points seen again (median depth ratio)
        P0 = self.K @ np.hstack([np.eye(3), np.zeros((3, 1))])
        P1 = self.K @ np.hstack([R, t[:, None]])
        X = cv2.triangulatePoints(P0, P1, p0[inl].T, p1[inl].T)
        X = (X[:3] / X[3]).T
        front = (X[:, 2] > 0) & ((X @ R.T + t)[:, 2] > 0)
        prev_z = ref.points[corr[inl, 0], 2]
        both = front & np.isfinite(prev_z) & (prev_z > 0)
        # without 5 points seen again (first pair, after a loss) keep the last step length
        scale = float(np.median(prev_z[both] / X[both, 2])) if both.sum() >= 5 else self._scale
        t, X = t * scale, X * scale
        T_cur_ref = _to_T(R, t)
        cam = X @ R.T + t
        proj = cam[:, :2] / cam[:, 2:] * [self.K[0, 0], self.K[1, 1]] + self.K[:2, 2]
        res = (proj - p1[inl])[front]
        rel_cov = reprojection_covariance(cam[front], res, self.K)
        A = _adjoint(np.linalg.inv(T_cur_ref))
        rel_cov_ref = A @ rel_cov @ A.T
        prev_pose = self.pose.copy()
        self._advance(np.linalg.inv(T_cur_ref), rel_cov_ref)
        self._scale = float(np.linalg.norm(t))
        self._ref_covariance = self.covariance.copy()
        points = np.full((len(kp), 3), np.nan)
        points[corr[inl[front], 1]] = cam[front]
        self._set_reference(kp, ids, points)
        self._lost = False
        self.stats["tracked"] += 1
        self.stats["keyframes"] += 1
        return Result(
            self.pose.copy(), np.linalg.inv(prev_pose) @ self.pose, ok=True, keyframe=True, matches=len(corr),
            inliers=len(inl), residual_px=float(np.sqrt(np.mean(np.sum(res**2, 1)))) if len(res) else float("nan"),
            covariance=self.covariance.copy(), relative_covariance=rel_cov_ref,
        )  # fmt: skip


class Calibration(NamedTuple):
    """What a camera told us: K, D (None: no distortion) and, for stereo, the right camera's P.

    Replaced whole when a new camera_info arrives, never mutated, so a frame keeps the calibration
    that had arrived when it was received, whatever arrives while it waits to be processed."""

    K: np.ndarray | None = None
    D: np.ndarray | None = None
    P_right: np.ndarray | None = None
    size: tuple[int, int] | None = None  # camera_info's (width, height); None: not stated (0x0)


def calibration_for_image(calib: Calibration, width: int, height: int) -> tuple[Calibration, str | None]:
    """``calib`` for an image of ``width`` x ``height``, and what was wrong, if anything.

    A camera_info for another resolution than the images is a misconfiguration (a remap to the
    wrong camera, a driver that changed mode) that used to pass silently: a K for 320x240 on
    640x480 images gave 1.28 deg per-frame rotation error instead of 0.05. With the same aspect
    ratio (within 1 %) K and the right camera's P are scaled to the image, as image_proc's resize
    does; with another aspect ratio the crop is unknown, so K is not used at all (no tracks, no
    odometry) rather than used wrongly.
    """
    if calib.size is None or calib.size == (width, height) or calib.K is None:
        return calib, None
    cw, ch = calib.size
    sx, sy = width / cw, height / ch
    said = f"camera_info is {cw}x{ch} but the image is {width}x{height}"
    if not same_aspect((width, height), calib.size):
        return Calibration(size=calib.size), f"{said} (another aspect ratio): K not used, no tracks or odometry"
    scale = np.diag([sx, sy, 1.0])
    p_right = None if calib.P_right is None else scale @ calib.P_right
    scaled = calib._replace(K=scale @ calib.K, P_right=p_right, size=(width, height))
    return scaled, f"{said}: K scaled by {sx:.3g} (same aspect ratio)"


@dataclass
class Tracks:
    """One frame's feature tracks in the VINS-Fusion feature-tracker layout (before normalisation):
    one row per observation; a stereo frame's right observations carry their left point's id."""

    ids: np.ndarray  # N track ids
    keypoints: np.ndarray  # Nx2 pixels
    camera: np.ndarray  # N: 0 left / mono, 1 right
    velocities: np.ndarray  # Nx2 normalised coordinates per second (0 for new tracks and right points)


@dataclass
class OdometryStep:
    """What ``StreamOdometry.step`` produced for one frame; ``result`` None when no estimate ran."""

    state: str  # ok | lost | tracks_only | no_camera_info | no_right_camera_info | error | skipped
    result: Result | None = None
    dt: float = 0.0  # seconds since the previous estimate (0 for the first of a trajectory)
    tracks: Tracks | None = None
    error: str | None = None


class StreamOdometry:
    """The odometry state machine of one camera stream (mono, RGB-D or stereo), ROS-free.

    Owns a ``VisualOdometry`` built from the calibration each frame arrives with (rebuilt, as a new
    trajectory, when the calibration changes), the VINS-layout track velocities, the tracking
    state and counters for diagnostics. Correspondences come from track ids, so frames where the
    estimate is skipped do not break the chain.
    """

    def __init__(
        self,
        mode: str = "mono",
        tracks: bool = True,
        odometry: bool = True,
        min_inliers: int = 12,
        ransac_px: float = 2.0,
        min_parallax_px: float = 10.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown odometry mode '{mode}' (use one of {MODES})")
        self.mode, self.tracks, self.odometry = mode, bool(tracks), bool(odometry)
        self.vo_conf = {"min_inliers": int(min_inliers), "ransac_px": float(ransac_px)}
        self.vo_conf["min_parallax_px"] = float(min_parallax_px)
        self.state = "no_camera_info"
        self.frames = self.failures = self.resets = 0
        self.restart()

    def restart(self) -> None:
        """A new trajectory from the identity: time went backwards (a bag loop), or matching resumed
        after frames without it (``pipeline.FramePipeline.step``)."""
        self.vo: VisualOdometry | None = None
        self._vo_key: tuple | None = None
        self._prev: tuple[int, np.ndarray, np.ndarray] | None = None  # tracks: stamp ns, ids, normalised
        self._last_odom_ns: int | None = None

    def step(
        self,
        stamp_ns: int,
        keypoints: np.ndarray,
        ids: np.ndarray,
        calib: Calibration,
        depth: np.ndarray | None = None,
        stereo: tuple[np.ndarray, np.ndarray] | None = None,
        want_tracks: bool = True,
        want_odometry: bool = True,
        confident: np.ndarray | None = None,
    ) -> OdometryStep:
        """One frame: ``stereo`` = (right keypoints, verified left/right matches Mx2), ``depth`` a
        metric depth image aligned with the keypoints' image, ``confident`` the keypoints above
        the detector's threshold (``VisualOdometry.update``). Bad calibration or depth gives
        state ``error`` (with the reason), never an exception: the features still go out."""
        tracks = None
        try:
            if calib.K is None:
                out = OdometryStep("no_camera_info")
            else:
                if self.tracks and want_tracks:
                    tracks = self._tracks(stamp_ns, keypoints, ids, stereo, calib)
                out = self._estimate(stamp_ns, keypoints, ids, calib, depth, stereo, want_odometry, confident)
        except (ValueError, TypeError, cv2.error) as e:  # bad camera_info or depth
            out = OdometryStep("error", error=f"{type(e).__name__}: {e}")
        out.tracks = tracks
        self.state = out.state
        return out

    def _estimate(self, stamp_ns, keypoints, ids, calib, depth, stereo, want_odometry, confident) -> OdometryStep:
        if not self.odometry:
            return OdometryStep("tracks_only")
        if not want_odometry:
            return OdometryStep("skipped")
        vo = self._odometry(calib)
        if vo is None:
            return OdometryStep("no_right_camera_info")
        kw: dict = {}
        if self.mode == "rgbd":
            kw["depth"] = depth
        elif self.mode == "stereo":
            kw["right_keypoints"], kw["stereo_matches"] = stereo
        r = vo.update(keypoints, track_ids=ids, confident=confident, **kw)
        self.frames += 1
        self.failures += int(not r.ok)
        self.resets += int(r.reset)
        dt = 0.0 if self._last_odom_ns is None else (stamp_ns - self._last_odom_ns) * 1e-9
        self._last_odom_ns = stamp_ns
        return OdometryStep("ok" if r.ok else "lost", r, dt)

    def _odometry(self, calib: Calibration) -> VisualOdometry | None:
        """The estimator for ``calib``; rebuilt (new trajectory) when the calibration changes."""
        baseline = None
        if self.mode == "stereo":
            if calib.P_right is None:
                return None
            baseline = baseline_from_projection(calib.P_right)
        key = (calib.K.tobytes(), None if calib.D is None else calib.D.tobytes(), baseline)
        if key != self._vo_key:
            self.vo = VisualOdometry(calib.K, mode=self.mode, baseline=baseline, D=calib.D, **self.vo_conf)
            self._vo_key = key
            self._last_odom_ns = None
        return self.vo

    def _tracks(self, stamp_ns, keypoints, ids, stereo, calib: Calibration) -> Tracks:
        norm = normalized_coordinates(keypoints, calib.K, calib.D)
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
        return Tracks(tid, kp, cam, vel)

    def stats(self, track_lengths: np.ndarray) -> dict:
        """Tracking state, resets and the lengths (frames) of the active tracks (seen >= 2 frames)."""
        active = track_lengths[track_lengths >= 2]
        return {
            "tracking": self.state,
            "vo_frames": self.frames,
            "vo_failures": self.failures,
            "vo_resets": self.resets,
            "active_tracks": len(active),
            "track_length_mean": float(active.mean()) if len(active) else 0.0,
            "track_length_max": int(active.max()) if len(active) else 0,
        }
