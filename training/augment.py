"""Homographic and photometric augmentation (GoodPoint paper, sections 5.1 and 5.2).

``sample_homography`` draws a random homography as a product of simple transforms (perspective,
rotation, corner shift); ``photometric`` applies the six noise filters of 5.1 in order, each with
probability 0.5, skipping a filter that ruins the image; ``make_pair`` builds one training pair
where BOTH images are warped and remain related by a single homography H (paper section 4).

Deviations (documented on purpose):
- The paper gives its magnitudes (shift +-14 px, perspective +-85 px) for 256x256 crops. Here they
  scale linearly with the short side (``reference_size=256``) so small test crops stay sane.
- "Mostly inside": a draw is rejected (up to 20 times, then halved) when the warped image covers less
  than ``min_coverage`` of the output frame.
- The paper does not list the noise magnitudes; we use SuperPoint's published defaults (gaussian
  std <= 10, brightness +-50, shade transparency +-0.5 with 100-150 px blur, speckle <= 0.35 %,
  motion blur <= 3 px kernel... widened to 7, contrast 0.5-1.5).
- The paper uses one H per mini-batch; we draw one per sample (more diversity, same equations).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["sample_homography", "photometric", "make_pair", "warp_mask", "coverage"]


def _corners(width: int, height: int) -> np.ndarray:
    return np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)


def coverage(H: np.ndarray, height: int, width: int) -> float:
    """Fraction of the ``width`` x ``height`` frame covered by the image warped with ``H``."""
    quad = cv2.perspectiveTransform(_corners(width, height).reshape(-1, 1, 2), H).reshape(-1, 2)
    frame = _corners(width, height).astype(np.float32)
    if cv2.contourArea(quad.astype(np.float32), oriented=True) <= 0:  # folded / mirrored: reject
        return 0.0
    area, _ = cv2.intersectConvexConvex(quad.astype(np.float32), frame)
    return float(area) / float(width * height)


def _draw(height: int, width: int, rng: np.random.Generator, shift: float, perspective: float, rotation: float):
    src = _corners(width, height)
    dst = src.copy()
    # Perspective: shorten one side and lengthen the opposite one (left/right and/or top/bottom).
    mode = rng.integers(3)  # 0 side, 1 top/bottom, 2 both
    if mode in (0, 2):
        a = rng.uniform(-perspective, perspective) / 2
        dst[0, 1] += a  # top-left down
        dst[3, 1] -= a  # bottom-left up
        dst[1, 1] -= a  # top-right up
        dst[2, 1] += a  # bottom-right down
    if mode in (1, 2):
        a = rng.uniform(-perspective, perspective) / 2
        dst[0, 0] += a
        dst[1, 0] -= a
        dst[3, 0] -= a
        dst[2, 0] += a
    # Rotation about the centre.
    t = rng.uniform(-rotation, rotation)
    c = np.array([width / 2.0, height / 2.0])
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    dst = (dst - c) @ R.T + c
    # Independent shift of every corner.
    dst += rng.uniform(-shift, shift, size=(4, 2))
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def sample_homography(
    height: int,
    width: int,
    rng: np.random.Generator,
    shift: float = 14,
    perspective: float = 85,
    rotation: float = 0.08,
    reference_size: float = 256,
    min_coverage: float = 0.6,
) -> np.ndarray:
    """A random 3x3 homography (float64) mapping pixels of an image to its warped version.

    Magnitudes are in pixels for a ``reference_size`` short side and scale with the image.
    """
    if height < 2 or width < 2:
        raise ValueError(f"image too small for a homography: {width}x{height}")
    scale = min(height, width) / float(reference_size) if reference_size else 1.0
    s, p = shift * scale, perspective * scale
    for attempt in range(40):
        if attempt == 20:  # pathological settings: halve the magnitudes rather than loop forever
            s, p, rotation = s / 2, p / 2, rotation / 2
        H = _draw(height, width, rng, s, p, rotation)
        if coverage(H, height, width) >= min_coverage:
            return H
    return np.eye(3)


def zoom(H: np.ndarray, height: int, width: int, rng: np.random.Generator, factors: tuple[float, float]) -> np.ndarray:
    """``H`` followed by a zoom about the image centre by a factor drawn log-uniformly from
    ``factors`` (lo, hi >= 1), in or out with equal odds: the scale changes of multi-view mapping
    (a landmark seen from twice the distance), which ``sample_homography``'s moderate warps lack."""
    lo, hi = factors
    f = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    f = f if rng.random() < 0.5 else 1.0 / f
    cx, cy = width / 2.0, height / 2.0
    Z = np.array([[f, 0.0, cx * (1 - f)], [0.0, f, cy * (1 - f)], [0.0, 0.0, 1.0]])
    return Z @ H


# ---------------------------------------------------------------- photometric noise (5.1)


def _gaussian(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return im + rng.normal(0.0, rng.uniform(0, 10), im.shape)


def _brightness(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return im + rng.uniform(-50, 50)


def _shade(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random ellipses blurred into a soft shadow/highlight (SuperPoint's additive shade)."""
    h, w = im.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        ax = int(rng.integers(max(1, min(h, w) // 8), max(2, min(h, w) // 2)))
        ay = int(rng.integers(max(1, min(h, w) // 8), max(2, min(h, w) // 2)))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.ellipse(mask, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 255, -1)
    k = int(rng.integers(100, 150)) * min(h, w) // 256 | 1  # odd kernel, scaled like the homography
    shade = cv2.GaussianBlur(mask.astype(np.float64) / 255.0, (max(k, 3), max(k, 3)), 0)
    factor = 1.0 - rng.uniform(-0.5, 0.5) * shade
    return im * (factor[..., None] if im.ndim == 3 else factor)


def _salt_pepper(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = im.copy()
    p = rng.uniform(0, 0.0035)
    u = rng.random(im.shape[:2])
    out[u < p / 2] = 0
    out[u > 1 - p / 2] = 255
    return out


def _motion_blur(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(1, 4)) * 2 + 1  # 3, 5 or 7
    kernel = np.zeros((k, k))
    kernel[k // 2] = 1.0
    M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, M, (k, k))
    kernel /= max(kernel.sum(), 1e-6)
    return cv2.filter2D(im, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _contrast(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = im.mean()
    return (im - m) * rng.uniform(0.5, 1.5) + m


FILTERS = (_gaussian, _brightness, _shade, _salt_pepper, _motion_blur, _contrast)


def photometric(image: np.ndarray, rng: np.random.Generator, p: float = 0.5, min_variance: float = 0.1) -> np.ndarray:
    """The six noise filters of GoodPoint 5.1, in order, each applied with probability ``p``.

    A filter whose result keeps less than ``min_variance`` of the original image's variance is
    skipped (the paper's "ruined image" check). uint8 in, uint8 out, same shape.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"photometric expects a uint8 image, got {image.dtype}")
    im = image.astype(np.float64)
    var0 = float(im.var())
    for f in FILTERS:
        if rng.random() >= p:
            continue
        out = np.clip(f(im, rng), 0, 255)
        if float(out.var()) < min_variance * var0:
            continue
        im = out
    return np.round(im).astype(np.uint8)


# ---------------------------------------------------------------- training pairs


def warp_mask(shape: tuple[int, int], M: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Valid-region mask (bool, ``size`` = (w, h)) of a ``shape`` = (h, w) image warped by ``M``.

    Eroded by one pixel so that interpolated border pixels (half black) are not counted valid.
    """
    ones = np.full(shape, 255, np.uint8)
    m = cv2.warpPerspective(ones, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return cv2.erode((m == 255).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def make_pair(
    image: np.ndarray,
    crop: int | tuple[int, int],
    rng: np.random.Generator,
    noise: bool = True,
    homography: dict | None = None,
    second: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """A training pair from one image: both views warped by their own random homography.

    A random ``crop`` (int or (h, w)) window of the image is warped twice (H0, H1); the content
    around the window fills what the warp pulls in, and the masks mark pixels that come from the
    image. Returns ``image0``, ``image1`` (uint8, same channels as ``image``), ``H`` (float64,
    maps image0 pixels to image1 pixels), ``mask0``, ``mask1`` (bool).

    ``second`` = (frame, G): view 1 is cut from that other frame of the same scene instead, where
    ``G`` maps ``image`` pixels to ``frame`` pixels (``frame_pairs.frame_homography``); H keeps
    its meaning, so the loss is unchanged.

    ``homography`` holds ``sample_homography``'s magnitudes and optionally ``zoom: [lo, hi]``:
    view 1 is also zoomed in or out by a factor in that range (``zoom``), so the pair holds the
    scale changes of multi-view mapping. Not in the GoodPoint paper, whose warps keep the scale
    near 1 (section 5.1).
    """
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    h, w = image.shape[:2]
    if min(h, w) < 8:
        raise ValueError(f"image too small: {w}x{h}")
    if h < ch or w < cw:  # upscale so that the crop fits
        s = max(ch / h, cw / w)
        image = cv2.resize(image, (math.ceil(w * s), math.ceil(h * s)), interpolation=cv2.INTER_LINEAR)
        if second is not None:  # the other frame and G in the upscaled pixels too
            S = np.diag([image.shape[1] / w, image.shape[0] / h, 1.0])
            second = (
                cv2.resize(second[0], image.shape[1::-1], interpolation=cv2.INTER_LINEAR),
                S @ second[1] @ np.linalg.inv(S),
            )
        h, w = image.shape[:2]
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float64)  # image -> crop frame
    kw = dict(homography or {})
    factors = kw.pop("zoom", None)
    H0 = sample_homography(ch, cw, rng, **kw) @ T
    H1 = sample_homography(ch, cw, rng, **kw)
    H1 = (zoom(H1, ch, cw, rng, tuple(factors)) if factors else H1) @ T
    size = (cw, ch)
    other, M1 = (image, H1) if second is None else (second[0], H1 @ np.linalg.inv(second[1]))
    im0 = cv2.warpPerspective(image, H0, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    im1 = cv2.warpPerspective(other, M1, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask0 = warp_mask((h, w), H0, size)
    mask1 = warp_mask(other.shape[:2], M1, size)
    if noise:
        im0, im1 = photometric(im0, rng), photometric(im1, rng)
    H = H1 @ np.linalg.inv(H0)
    return {"image0": im0, "image1": im1, "H": H / H[2, 2], "mask0": mask0, "mask1": mask1}
