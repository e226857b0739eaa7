"""Reading images from disk and the embedded real photos used by demos and tests."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from goodpoint_ros.io.image_codec import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_bytes


class ImageReadError(RuntimeError):
    pass


def parse_size(text: str, minimum: int = 16) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``640x480``) as (width, height); an ``argparse`` type, so a bad value
    is one usage line."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT (e.g. 640x480)") from None
    if w < minimum or h < minimum:
        raise argparse.ArgumentTypeError(f"'{text}': width and height must be at least {minimum}")
    return w, h


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as RGB (or gray) uint8/uint16, or ImageReadError with the reason.

    Decoded by ``image_codec.decode_bytes``, like camera messages: the header must declare at
    most ``max_pixels`` (None/0: no limit), so a decompression bomb is refused before decoding."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        image = decode_bytes(path.read_bytes(), max_pixels, str(path))
    except ImageDecodeError as e:
        raise ImageReadError(str(e)) from None
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return image


def sample_photo(name: str = "astronaut") -> np.ndarray:
    """A real photo bundled with scikit-image (offline): astronaut, coffee, chelsea, rocket,
    motorcycle_left, motorcycle_right, brick, grass, gravel, camera..."""
    from skimage import data

    if hasattr(data, name):
        image = getattr(data, name)()
    else:  # files without a loader function (the stereo pair halves)
        found = sorted(Path(data.__file__).parent.glob(f"{name}.*"))
        if not found:
            raise ImageReadError(f"no bundled photo named '{name}'")
        image = read_image(found[0])
    return np.ascontiguousarray(image[..., :3] if image.ndim == 3 else image)


def sample_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real stereo pair (Middlebury motorcycle, bundled with scikit-image), half resolution."""
    left, right = sample_photo("motorcycle_left"), sample_photo("motorcycle_right")
    size = (left.shape[1] // 2, left.shape[0] // 2)
    return cv2.resize(left, size, interpolation=cv2.INTER_AREA), cv2.resize(right, size, interpolation=cv2.INTER_AREA)
