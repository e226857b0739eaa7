"""Pictures for people: keypoints, matches and tracks drawn with OpenCV (no ROS)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from goodpoint_ros.io.image_codec import to_uint8

SHIFT = 4  # fractional bits of the fixed-point coordinates given to OpenCV: sub-pixel, steady lines
FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, KEYPOINT = (0, 220, 0), (0, 0, 255), (255, 200, 0)  # BGR: inlier, outlier, keypoint
BAR = 28  # grey level of title bars and text panels


def id_colours(ids: np.ndarray, code: int = cv2.COLOR_HSV2RGB) -> np.ndarray:
    """One saturated colour per track id (Nx3 uint8, RGB or with ``code`` BGR): a hash of the id
    picks the hue, so neighbouring ids get distant colours and an id keeps its colour."""
    hue = (np.asarray(ids).astype(np.uint64) * 2654435761 % 180).astype(np.uint8)
    return cv2.cvtColor(np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 255)], 1)[None], code)[0]


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any gray/RGB image -> BGR uint8 for OpenCV drawing."""
    image = to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)


def backdrop(image: np.ndarray, scale: float = 1.0, dim: float | None = None) -> np.ndarray:
    """BGR uint8 canvas of ``image`` resized by ``scale``; with ``dim`` it turns grey at that share of
    its brightness, so coloured marks stand out on any photo."""
    canvas = to_bgr(image)
    if dim is not None:
        canvas = cv2.cvtColor(
            cv2.convertScaleAbs(cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY), alpha=dim), cv2.COLOR_GRAY2BGR
        )
    if scale != 1.0:
        canvas = cv2.resize(
            canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        )
    return np.ascontiguousarray(canvas)


def scaled(xy: np.ndarray, scale: float) -> np.ndarray:
    """Pixel positions in an image resized by ``scale`` (pixel centres stay centres)."""
    return (np.asarray(xy, np.float64) + 0.5) * scale - 0.5


def fixed(xy: np.ndarray) -> np.ndarray:
    """Float pixel positions -> int32 fixed point for OpenCV's ``shift=SHIFT``."""
    return np.round(np.asarray(xy, np.float64) * (1 << SHIFT)).astype(np.int32)


def dots(canvas: np.ndarray, xy: np.ndarray, colours: np.ndarray | tuple, radius: int = 1) -> None:
    """Round dots of ``radius`` pixels at ``xy`` (Nx2), one colour or one per dot, painted by fancy
    indexing: no Python loop over keypoints (radius 1 is a 3x3 square)."""
    h, w = canvas.shape[:2]
    p = np.round(np.asarray(xy, np.float64).reshape(-1, 2)).astype(np.int64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius + radius:
                canvas[np.clip(p[:, 1] + dy, 0, h - 1), np.clip(p[:, 0] + dx, 0, w - 1)] = colours


def draw_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches: np.ndarray,
    inliers: np.ndarray | None = None,
    scale: float = 1.0,
    dim: float | None = None,
    alpha: float = 1.0,
) -> np.ndarray:
    """Side-by-side BGR picture: inlier matches in green, outliers in red, keypoints as dots; both
    images resized by ``scale`` (and greyed by ``dim``, see ``backdrop``); lines blended at ``alpha``
    so that hundreds of them leave the photos visible."""
    a, b = backdrop(image0, scale, dim), backdrop(image1, scale, dim)
    h = max(a.shape[0], b.shape[0])
    canvas = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    k0 = scaled(np.asarray(kpts0).reshape(-1, 2), scale)
    k1 = scaled(np.asarray(kpts1).reshape(-1, 2), scale) + (a.shape[1], 0)
    r = max(1, round(scale))
    dots(canvas, k0, KEYPOINT, r)
    dots(canvas, k1, KEYPOINT, r)
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    inliers = np.ones(len(matches), bool) if inliers is None else np.asarray(inliers, bool)
    lines = fixed(np.stack([k0[matches[:, 0]], k1[matches[:, 1]]], 1))  # Mx2x2
    drawn = canvas.copy() if alpha < 1.0 else canvas
    for ok in (False, True):  # outliers first so inliers stay on top
        cv2.polylines(drawn, list(lines[inliers == ok]), False, GREEN if ok else RED, 1, cv2.LINE_AA, SHIFT)
    return cv2.addWeighted(drawn, alpha, canvas, 1.0 - alpha, 0.0) if alpha < 1.0 else canvas


def draw_debug(
    image: np.ndarray, kpts: np.ndarray, ids: np.ndarray, pts0: np.ndarray, pts1: np.ndarray, inliers: np.ndarray
) -> np.ndarray:
    """RGB uint8 picture (the node's ``~/debug_image``): keypoints coloured by track id, inlier
    motion vectors green, outliers red."""
    image = to_uint8(image)
    canvas = np.ascontiguousarray(np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]).copy()
    if len(pts0):
        segs = np.round(np.stack([pts0, pts1], 1)).astype(np.int32)
        cv2.polylines(canvas, list(segs[~inliers]), False, (255, 0, 0), 1)
        cv2.polylines(canvas, list(segs[inliers]), False, (0, 255, 0), 1)
    dots(canvas, kpts, id_colours(ids))
    return canvas


def track_polylines(
    history: Sequence[tuple[np.ndarray, np.ndarray]], min_length: int = 5
) -> tuple[list[np.ndarray], np.ndarray]:
    """The tracks alive in the last frame of ``history`` ((keypoints Kx2, track_ids K) per frame,
    oldest first) seen in at least ``min_length`` frames: one Lx2 float32 polyline each (oldest
    point first) and their lengths L. Tracks that ended earlier are left out: they would be drawn
    where the last frame no longer shows their point; id 0 (never tracked) is no track."""
    if not history:
        return [], np.zeros(0, np.int64)
    ids = np.concatenate([np.asarray(t, np.int64).ravel() for _, t in history])
    xy = np.concatenate([np.asarray(k, np.float32).reshape(-1, 2) for k, _ in history])
    order = np.argsort(ids, kind="stable")  # stable: frame order is kept within a track
    ids, xy = ids[order], xy[order]
    uniq, start, count = np.unique(ids, return_index=True, return_counts=True)
    keep = (count >= min_length) & (uniq != 0) & np.isin(uniq, np.asarray(history[-1][1], np.int64))
    return [t for t, k in zip(np.split(xy, start[1:]), keep) if k], count[keep]


def age_colours(ages: np.ndarray, young: int, old: int) -> np.ndarray:
    """BGR colour (Nx3 uint8) per track age on the turbo scale: ``young`` frames blue, ``old`` and
    more red. Turbo's darkest blues are skipped so young tracks stay visible on a dark photo."""
    t = np.clip((np.asarray(ages, np.float64) - young) / max(old - young, 1), 0.0, 1.0)
    level = np.round(255 * (0.12 + 0.85 * t)).astype(np.uint8)
    return cv2.applyColorMap(level.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)


def draw_tracks(
    image: np.ndarray,
    history: Sequence[tuple[np.ndarray, np.ndarray]],
    min_length: int = 5,
    scale: float = 2.0,
    dim: float | None = 0.55,
) -> np.ndarray:
    """BGR picture of the live tracks (see ``track_polylines``) over ``image`` (the last frame),
    resized by ``scale`` and coloured by age (``age_colours``, ``min_length`` to the history length),
    the current position as a dot. Short tracks are mostly jitter and are left out."""
    canvas = backdrop(image, scale, dim)
    lines, ages = track_polylines(history, min_length)
    if not lines:
        return canvas
    ends = np.cumsum(ages)
    flat = scaled(np.concatenate(lines), scale)
    pts = np.split(fixed(flat), ends[:-1])
    colours = age_colours(ages, min_length, max(len(history), min_length + 1))
    for age in np.unique(ages):  # one call per age, the oldest last so the steady tracks stay on top
        sel = np.flatnonzero(ages == age)
        cv2.polylines(canvas, [pts[i] for i in sel], False, colours[sel[0]].tolist(), 1, cv2.LINE_AA, SHIFT)
    dots(canvas, flat[ends - 1], colours, max(1, round(scale)))
    return canvas


def put_lines(
    canvas: np.ndarray, lines: Sequence[str], org: tuple[int, int], size: float = 0.5, step: int = 20
) -> None:
    """White text lines with a black outline from ``org`` (baseline of the first line): legible on
    photos and on the dark title bars alike."""
    for i, line in enumerate(lines):
        at = (int(org[0]), int(org[1] + i * step))
        cv2.putText(canvas, line, at, FONT, size, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, line, at, FONT, size, (255, 255, 255), 1, cv2.LINE_AA)


def titled(panel: np.ndarray, title: str, height: int = 28) -> np.ndarray:
    """``panel`` under a dark bar carrying ``title``."""
    bar = np.full((height, panel.shape[1], 3), BAR, np.uint8)
    put_lines(bar, [title], (8, height - 9))
    return np.vstack([bar, panel])


def age_legend(width: int, young: int, old: int, height: int = 12) -> np.ndarray:
    """The ``age_colours`` scale as a bar ``width`` pixels wide, labelled with its ends in frames."""
    bar = np.full((height + 20, width, 3), BAR, np.uint8)
    bar[:height] = age_colours(np.linspace(young, old, width), young, old)[None]
    put_lines(bar, [f"{young}"], (0, height + 16))
    label = f"{old}+ frames"
    put_lines(bar, [label], (width - cv2.getTextSize(label, FONT, 0.5, 1)[0][0] - 2, height + 16))
    return bar


MatchPair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""image0, image1, keypoints0 Kx2, keypoints1 Kx2, matches Mx2, inliers M bool."""


def demo_picture(
    image: np.ndarray,
    history: Sequence[tuple[np.ndarray, np.ndarray]],
    pair: MatchPair | None,
    text: Sequence[str],
    pair_title: str = "matches: inliers green, outliers red",
    min_length: int = 5,
    scale: float = 2.0,
) -> np.ndarray:
    """The ``make demo`` picture (BGR). Left: the live tracks of >= ``min_length`` frames over the
    last frame at ``scale``, coloured by age. Right: the matches of ``pair`` side by side (inliers
    green, outliers red) as wide as the tracks, and under them the ``text`` lines and the age scale."""
    left = titled(draw_tracks(image, history, min_length, scale), f"tracks of >= {min_length} frames, coloured by age")
    width = left.shape[1]
    right = []
    if pair is not None:
        im0, im1, k0, k1, m, inl = pair
        mscale = width / (im0.shape[1] + im1.shape[1])
        right.append(titled(draw_matches(im0, im1, k0, k1, m, inl, mscale, 0.8, 0.6), pair_title))
    old = max(len(history), min_length + 1)
    legend = age_legend(width // 2, min_length, old)
    used = sum(p.shape[0] for p in right)
    info = np.full((max(left.shape[0] - used, 40 + 28 * len(text) + legend.shape[0]), width, 3), BAR, np.uint8)
    put_lines(info, text, (12, 34), size=0.65, step=28)
    info[-legend.shape[0] - 12 : -12, 12 : 12 + legend.shape[1]] = legend
    put_lines(info, ["track age"], (24 + legend.shape[1], info.shape[0] - 30))
    right.append(info)
    right_col = np.vstack(right)
    h = max(left.shape[0], right_col.shape[0])
    gap = np.full((h, 4, 3), 0, np.uint8)
    pad = [np.pad(c, ((0, h - c.shape[0]), (0, 0), (0, 0)), constant_values=BAR) for c in (left, right_col)]
    return np.hstack([pad[0], gap, pad[1]])
