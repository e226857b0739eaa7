"""Pairs of real consecutive frames for fine-tuning on a bag.

Synthetic warps of one frame teach invariance to viewpoint, but never show what really changes
between two frames of the robot's camera: fresh sensor noise, particles drifting in water, flicker,
motion blur, small parallax. A tracker pays for exactly those. So a fine-tune may also build a pair
from frame ``t`` and frame ``t + gap`` of the same recording, related by the homography that aligns
them (``frame_homography``); both views then get the usual random warps and noise on top
(``augment.make_pair(second=...)``).

The alignment does not use the detector being trained (it would inherit its blind spots) and
works on the noisy, low-texture frames where SIFT fails: phase correlation of blurred frames finds
the overall shift, then each patch of a grid finds its own sub-pixel shift the same way, and a
RANSAC homography fit over the patch centres rejects patches on moving things (particles, people)
or off the dominant plane. A pair with too few agreeing patches is not used (the sample falls back
to a synthetic pair).

Deviation from the GoodPoint paper (which trains on synthetic warps only, section 4): this is an
addition for fine-tuning; a homography is exact for a planar or distant scene and an approximation
for a close 3-D one, which is why the gap between the frames stays small (``data.pair_gap``).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["frame_homography"]

BLUR_SIGMA = 1.5  # px at full resolution: averages sensor noise away before correlating
PATCH = 64  # px side of the patches that each measure a local shift
MIN_TEXTURE = 0.1  # gray levels of standard deviation (blurred) below which a patch is flat (any shift fits)
MIN_RESPONSE = 0.2  # phase-correlation peak below this: the patch has no usable texture
REFINE = 2  # passes against the frame warped back by the last estimate (mean error 0.36 -> 0.12 px at gap 3)
RANSAC_PX = 1.0  # a patch agrees with the homography within this many pixels


def _gray(image: np.ndarray) -> np.ndarray:
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.GaussianBlur(g.astype(np.float32), (0, 0), BLUR_SIGMA)


def _shift(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, peak): ``b`` ~ ``a`` moved by (dx, dy).

    Copies: OpenCV 4.14's phaseCorrelate multiplies its inputs by the window in place, which
    would corrupt the frames (and every overlapping patch view of them)."""
    (dx, dy), peak = cv2.phaseCorrelate(a.copy(), b.copy(), window)
    return dx, dy, peak


def _patch_matches(
    ga: np.ndarray, gb: np.ndarray, offset: tuple[int, int], valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres of ``ga`` and where each lies in ``gb`` (sub-pixel), for the textured patches
    that lie inside both frames when ``gb`` is moved by the integer ``offset`` (and, if given,
    wholly inside ``valid``, the pixels of ``gb`` that hold image)."""
    h, w = ga.shape
    ox, oy = offset
    window = cv2.createHanningWindow((PATCH, PATCH), cv2.CV_32F)
    step = PATCH // 2
    src, dst = [], []
    for y in range(max(0, -oy), min(h, h - oy) - PATCH + 1, step):
        for x in range(max(0, -ox), min(w, w - ox) - PATCH + 1, step):
            pa = ga[y : y + PATCH, x : x + PATCH]
            if pa.std() < MIN_TEXTURE:
                continue
            pb = gb[y + oy : y + oy + PATCH, x + ox : x + ox + PATCH]
            rx, ry, peak = _shift(pa, pb, window)
            inside = valid is None or valid[y + oy : y + oy + PATCH, x + ox : x + ox + PATCH].all()
            if peak >= MIN_RESPONSE and inside:
                c = (x + PATCH / 2, y + PATCH / 2)
                src.append(c)
                dst.append((c[0] + ox + rx, c[1] + oy + ry))
    return np.float32(src).reshape(-1, 2), np.float32(dst).reshape(-1, 2)


def _fit(src: np.ndarray, dst: np.ndarray, min_patches: int, min_agree: float) -> np.ndarray | None:
    if len(src) < min_patches:
        return None
    H, inliers = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX)
    if H is None or not np.isfinite(H).all():
        return None
    n = int(inliers.sum())
    return H / H[2, 2] if n >= min_patches and n >= min_agree * len(src) else None


def frame_homography(a: np.ndarray, b: np.ndarray, min_patches: int = 12, min_agree: float = 0.5) -> np.ndarray | None:
    """The homography (float64, ``a`` pixels -> ``b`` pixels) of two nearby frames, or None when
    fewer than ``min_patches`` patches (and ``min_agree`` of the textured ones) agree with it.

    Two passes: patch shifts against ``b`` moved by the overall shift give a first homography;
    then against ``b`` warped back by it, so that what remains per patch is a small shift (the
    rotation and scale inside a patch, which one shift cannot express, are gone)."""
    ga, gb = _gray(a), _gray(b)
    if ga.shape != gb.shape or min(ga.shape) < PATCH * 2:
        return None
    h, w = ga.shape
    dx, dy, _ = _shift(ga, gb, cv2.createHanningWindow((w, h), cv2.CV_32F))
    H = _fit(*_patch_matches(ga, gb, (round(dx), round(dy))), min_patches, min_agree)
    if H is None:
        return None
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for _ in range(REFINE):
        back = cv2.warpPerspective(gb, H, (w, h), flags=flags)  # ~ ga
        valid = cv2.warpPerspective(np.ones_like(gb), H, (w, h), flags=flags) > 0.999
        src, residual = _patch_matches(ga, back, (0, 0), valid)
        if len(src) == 0:
            return None
        H = _fit(src, cv2.perspectiveTransform(residual[None], H)[0], min_patches, min_agree)
        if H is None:
            return None
    return H
