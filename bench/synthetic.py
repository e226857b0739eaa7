"""A textured room rendered by a moving pinhole camera, with exact depth and poses.

Why: visual odometry needs sequences with ground truth, and this machine has no dataset. The room
is a box whose six faces carry real photos (scikit-image's bundled images), so detectors see real
texture while poses, depth and intrinsics are known exactly.

Each face is a plane, so texture -> image is a homography H = K [r1 r2 t] (texture axes scaled to
metres). Pixels are filled with ``cv2.warpPerspective(texture, H)``; the per-pixel plane depth
z = c / (n . K^-1 [u v 1]) (c, n: the plane in camera coordinates) is the z-buffer and also masks
the part of a plane behind the camera, which a homography alone would mirror into view.

Conventions: camera frame x right, y down, z forward (optical). Poses are ``T_world_cam`` 4x4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from goodpoint_ros.io.image_files import sample_photo

# Room half-extents in metres (x: width, y: height with y down, z: depth).
ROOM = (3.0, 1.5, 4.0)


@dataclass
class Face:
    """A rectangular textured plane: world point = origin + a * u_axis + b * v_axis, a, b in [0, 1]."""

    origin: np.ndarray
    u_axis: np.ndarray
    v_axis: np.ndarray
    texture: np.ndarray  # HxWx3 uint8


@dataclass
class Frame:
    """One rendered view: RGB uint8, depth float32 metres (0 where nothing), pose T_world_cam."""

    rgb: np.ndarray
    depth: np.ndarray
    pose: np.ndarray


@dataclass
class Sequence:
    """A rendered sequence; ``right`` is the stereo partner of each frame (rectified, same K)."""

    K: np.ndarray
    width: int
    height: int
    frames: list[Frame]
    right: list[Frame] = field(default_factory=list)
    baseline: float = 0.0
    fps: float = 10.0

    @property
    def poses(self) -> np.ndarray:
        return np.stack([f.pose for f in self.frames])


def intrinsics(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    """A pinhole K with the principal point at the image centre."""
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def _texture(names: list[str], height: int = 384) -> np.ndarray:
    """Photos side by side at a common height (gray ones made RGB), a wall's texture."""
    parts = []
    for n in names:
        im = sample_photo(n)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, -1)
        w = int(round(im.shape[1] * height / im.shape[0]))
        parts.append(cv2.resize(im, (w, height), interpolation=cv2.INTER_AREA))
    return np.ascontiguousarray(np.concatenate(parts, 1))


def room_faces(scale: float = 1.0) -> list[Face]:
    """The six faces of the room, each with photos; ``scale`` shrinks textures for speed."""
    X, Y, Z = ROOM
    h = max(64, int(384 * scale))

    def face(o, u, v, names):
        return Face(np.array(o, float), np.array(u, float), np.array(v, float), _texture(names, h))

    return [
        face((-X, -Y, Z), (2 * X, 0, 0), (0, 2 * Y, 0), ["astronaut", "coffee", "rocket"]),  # front
        face((X, -Y, -Z), (-2 * X, 0, 0), (0, 2 * Y, 0), ["chelsea", "motorcycle_left"]),  # back
        face((-X, -Y, -Z), (0, 0, 2 * Z), (0, 2 * Y, 0), ["coffee", "chelsea", "astronaut"]),  # left
        face((X, -Y, Z), (0, 0, -2 * Z), (0, 2 * Y, 0), ["rocket", "astronaut", "coffee"]),  # right
        face((-X, Y, Z), (2 * X, 0, 0), (0, 0, -2 * Z), ["gravel", "brick", "gravel"]),  # floor
        face((-X, -Y, -Z), (2 * X, 0, 0), (0, 0, 2 * Z), ["brick", "grass", "brick"]),  # ceiling
    ]


def render(
    faces: list[Face], K: np.ndarray, pose: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render RGB uint8 and depth float32 (metres along the optical axis) at ``pose`` (T_world_cam)."""
    T_cw = np.linalg.inv(pose)
    R, t = T_cw[:3, :3], T_cw[:3, 3]
    rays = np.linalg.inv(K) @ np.stack(
        [
            *np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)),
            np.ones((height, width)),
        ]
    ).reshape(3, -1)  # 3 x HW, z = 1
    rgb = np.zeros((height, width, 3), np.uint8)
    zbuf = np.full(height * width, np.inf)
    for f in faces:
        th, tw = f.texture.shape[:2]
        # texture pixel (a, b) -> camera point: R (o + a/tw u + b/th v) + t
        A = np.stack([R @ f.u_axis / tw, R @ f.v_axis / th, R @ f.origin + t], 1)
        H = K @ A
        n = np.cross(R @ f.u_axis, R @ f.v_axis)
        c = n @ (R @ f.origin + t)
        denom = n @ rays
        with np.errstate(divide="ignore", invalid="ignore"):
            z = c / denom
        # inside the face rectangle: invert A for the hit points' texture coordinates
        pts = rays * z
        ab = np.linalg.solve(A, pts)  # rows: a, b, 1 (up to numerical error)
        ok = (z > 0.05) & np.isfinite(z) & (ab[0] >= 0) & (ab[0] <= tw) & (ab[1] >= 0) & (ab[1] <= th)
        closer = ok & (z < zbuf)
        if not closer.any():
            continue
        warped = cv2.warpPerspective(f.texture, H, (width, height), flags=cv2.INTER_LINEAR)
        zbuf[closer] = z[closer]
        rgb.reshape(-1, 3)[closer] = warped.reshape(-1, 3)[closer]
    depth = np.where(np.isfinite(zbuf), zbuf, 0.0).astype(np.float32).reshape(height, width)
    return rgb, depth


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])  # about the camera's y (down): yaw
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def trajectory(n: int, amplitude: float = 1.0) -> np.ndarray:
    """A smooth closed-ish path inside the room: n poses T_world_cam (4x4)."""
    s = np.linspace(0.0, 1.0, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    a = amplitude
    pos = np.stack(
        [1.2 * a * np.sin(2 * np.pi * s), 0.2 * a * np.sin(4 * np.pi * s), 1.0 * a * (1 - np.cos(2 * np.pi * s))], 1
    )
    pos[:, 2] -= 1.0 * a
    for i in range(n):
        poses[i, :3, :3] = _rot(0.5 * a * np.sin(2 * np.pi * s[i]), 0.1 * a * np.sin(4 * np.pi * s[i]), 0.05 * a)
    poses[:, :3, 3] = pos
    return poses


def render_sequence(
    n: int = 100,
    width: int = 320,
    height: int = 240,
    baseline: float = 0.0,
    amplitude: float = 1.0,
    texture_scale: float = 0.5,
    poses: np.ndarray | None = None,
) -> Sequence:
    """Render ``n`` frames along ``trajectory`` (or given ``poses``); stereo when ``baseline`` > 0."""
    K = intrinsics(width, height)
    faces = room_faces(texture_scale)
    poses = trajectory(n, amplitude) if poses is None else np.asarray(poses, dtype=np.float64)
    seq = Sequence(K=K, width=width, height=height, frames=[], baseline=baseline)
    for T in poses:
        seq.frames.append(Frame(*render(faces, K, T, width, height), T))
        if baseline > 0:
            Tr = T.copy()
            Tr[:3, 3] = T[:3, 3] + T[:3, :3] @ np.array([baseline, 0.0, 0.0])
            seq.right.append(Frame(*render(faces, K, Tr, width, height), Tr))
    return seq


def camera_info_p(K: np.ndarray, baseline: float = 0.0) -> np.ndarray:
    """The 3x4 projection P of camera_info: right camera of a rectified pair has P[0,3] = -fx * b."""
    P = np.zeros((3, 4))
    P[:, :3] = K
    P[0, 3] = -K[0, 0] * baseline
    return P
