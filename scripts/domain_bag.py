"""Write a ROS 2 bag of a virtual camera sweeping over one image of an unusual domain.

    .venv/bin/python scripts/domain_bag.py --source retina --out data/bags/retina
    .venv/bin/python scripts/domain_bag.py --source cell --out data/bags/cell --frames 600

The retraining demonstration (docs/retraining.md) needs footage unlike the training photos, with a
licence: scikit-image's ``retina`` (a fundus photograph, the domain of the GoodPoint paper's FIRE
experiment) and ``cell`` (a microscope image), both CC0 and neither among the training photos
(``data/photos_v2/manifest.csv``); ``field``, a farm field from above drawn here (repetitive rows
of plants over soil); ``--source PATH`` takes any image file. ``--look night`` films it as a cheap
camera at night: a tenth of the light, high gain, fresh sensor noise in every frame; ``--look
thermal`` as an uncooled thermal camera: grey, soft, low contrast, fixed column pattern. ``seabed``
(rippled sand and pebbles, drawn here) with ``--look underwater``: red absorbed, blue-green haze,
soft focus, noise and drifting particles. The camera sweeps the
image in a raster (left to right, row by row) with a slow roll, zoom and mild perspective, so a
late time range of the bag shows parts of the image that the early part never showed: holding out
the end of the bag (``goodpoint-eval --bag``) is a held-out region, not a revisit.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from goodpoint_ros.io.image_files import parse_size, read_image, sample_photo
from goodpoint_ros.vo.geometry import warp_image

RATE_HZ = 30.0


def sweep_homography(u: float, photo_size: tuple[int, int], size: tuple[int, int], rows: int = 3) -> np.ndarray:
    """Photo -> frame homography at progress ``u`` in [0, 1] of a ``rows``-row raster sweep."""
    pw, ph = photo_size
    w, h = size
    scale = h / (ph / 2.2) * (1.0 + 0.08 * math.sin(2 * math.pi * 3 * u))  # a view is 1/2.2 of the height
    row = min(int(u * rows), rows - 1)
    along = u * rows - row
    along = along if row % 2 == 0 else 1.0 - along  # boustrophedon: no jump between rows
    view_w, view_h = w / scale, h / scale
    cx = view_w / 2 + along * (pw - view_w)
    cy = view_h / 2 + (row + 0.5) / rows * (ph - view_h)
    theta = 0.12 * math.sin(2 * math.pi * 2 * u)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    A = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T0 = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    T1 = np.array([[1.0, 0.0, w / 2], [0.0, 1.0, h / 2], [0.0, 0.0, 1.0]])
    P = np.eye(3)
    P[2, :2] = 2e-4 * scale * np.array([math.sin(2 * math.pi * u), math.cos(2 * math.pi * u)])  # a few % across a frame
    return T1 @ A @ P @ T0


def crop_field(width: int = 2400, height: int = 1200, seed: int = 0) -> np.ndarray:
    """A procedural farm field seen from above: rows of plants of random size over noisy soil.
    Repetitive structure, the hard case for descriptors; generated here, so no licence applies."""
    rng = np.random.default_rng(seed)
    soil = rng.normal(0, 1, (height // 8, width // 8)).astype(np.float32)
    soil = cv2.resize(soil, (width, height), interpolation=cv2.INTER_CUBIC) * 12 + rng.normal(0, 6, (height, width))
    image = np.stack([110 + soil, 82 + soil * 0.8, 55 + soil * 0.6], axis=2)
    for y in np.arange(40, height, 70):  # crop rows, plants at irregular spacing
        x = float(rng.uniform(0, 30))
        while x < width:
            r = float(rng.uniform(7, 20))
            cy = int(y + rng.normal(0, 4))
            shade = rng.uniform(0.7, 1.1)
            cv2.circle(image, (int(x), cy), int(r), (60 * shade, 140 * shade, 45 * shade), -1, cv2.LINE_AA)
            for _ in range(4):  # leaves
                a = rng.uniform(0, 2 * np.pi)
                tip = (int(x + 1.6 * r * np.cos(a)), int(cy + 1.6 * r * np.sin(a)))
                cv2.line(image, (int(x), cy), tip, (40 * shade, 120 * shade, 35 * shade), 3, cv2.LINE_AA)
            x += float(rng.uniform(35, 70))
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0), 0, 255).astype(np.uint8)


def seabed(width: int = 2400, height: int = 1200, seed: int = 1) -> np.ndarray:
    """A sandy seabed from above: rippled sand and scattered pebbles, generated here (no licence)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    warp = cv2.resize(rng.normal(0, 1, (height // 100, width // 100)).astype(np.float32), (width, height))
    ripples = np.sin(xx / 9.0 + yy / 23.0 + 6.0 * warp)
    grain = cv2.resize(rng.normal(0, 1, (height // 4, width // 4)).astype(np.float32), (width, height))
    sand = 150 + 18 * ripples + 10 * grain + rng.normal(0, 5, (height, width))
    image = np.stack([sand * 1.0, sand * 0.9, sand * 0.7], axis=2)
    for _ in range(900):  # pebbles and shells
        c = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(4, 18)), int(rng.uniform(3, 12)))
        tone = float(rng.uniform(50, 220))
        colour = (tone, tone * rng.uniform(0.8, 1.0), tone * rng.uniform(0.6, 0.9))
        cv2.ellipse(image, c, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    return np.clip(image, 0, 255).astype(np.uint8)


def underwater(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame through a few metres of murky water: red absorbed, blue-green haze, soft focus,
    sensor noise and drifting particles (new in every frame)."""
    rgb = frame.astype(np.float32) * np.array([0.35, 0.8, 0.9], np.float32)
    rgb = 0.55 * rgb + 0.45 * np.array([20.0, 90.0, 110.0], np.float32)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 1.3) + rng.normal(0.0, 4.0, rgb.shape)
    for _ in range(40):
        c = (int(rng.uniform(0, frame.shape[1])), int(rng.uniform(0, frame.shape[0])))
        cv2.circle(rgb, c, int(rng.integers(1, 3)), (170.0, 200.0, 200.0), -1, cv2.LINE_AA)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def night(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame as a cheap camera sees it at night: a tenth of the light, the gain turned up, so
    sensor noise (shot + read noise, new every frame) and crushed blacks dominate."""
    light = frame.astype(np.float32) * 0.1
    shot = rng.normal(0.0, 1.0, frame.shape).astype(np.float32) * np.sqrt(np.maximum(light, 0.0) * 0.5)
    read = rng.normal(0.0, 1.5, frame.shape[:2] + (1,)).astype(np.float32)
    return np.clip((light + shot + read) * 4.0, 0, 255).astype(np.uint8)


def thermal(frame: np.ndarray, rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """The frame as an uncooled thermal camera renders it: one grey channel where green leaves are
    cooler than the soil, soft optics, a fixed column pattern and a little temporal noise."""
    rgb = frame.astype(np.float32)
    heat = cv2.GaussianBlur(rgb[..., 0] - 0.8 * rgb[..., 1], (0, 0), 1.5)
    heat = 128.0 + 25.0 * (heat - heat.mean()) / max(float(heat.std()), 1e-3)
    heat += pattern + rng.normal(0.0, 2.0, heat.shape)
    return np.repeat(np.clip(heat, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def write_bag(out: Path, photo: np.ndarray, frames: int, size: tuple[int, int], topic: str, look: str = "day") -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    rgb = photo if photo.ndim == 3 else np.repeat(photo[..., None], 3, axis=2)
    rng = np.random.default_rng(0)
    pattern = np.tile(rng.normal(0.0, 1.5, (1, size[0])), (size[1], 1)).astype(np.float32)  # fixed column noise
    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, Image.__msgtype__, typestore=store)
        for i in range(frames):
            frame = warp_image(rgb, sweep_homography(i / max(frames - 1, 1), (rgb.shape[1], rgb.shape[0]), size), size)
            if look == "night":
                frame = night(frame, rng)
            elif look == "underwater":
                frame = underwater(frame, rng)
            elif look == "thermal":
                frame = thermal(frame, rng, pattern)
            ns = 1_700_000_000_000_000_000 + int(i * 1e9 / RATE_HZ)
            msg = Image(
                header=Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="camera"),
                height=size[1], width=size[0], encoding="rgb8", is_bigendian=0, step=size[0] * 3,
                data=np.ascontiguousarray(frame, dtype=np.uint8).reshape(-1),
            )  # fmt: skip
            writer.write(conn, ns, store.serialize_cdr(msg, Image.__msgtype__))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--source", required=True, help="retina | cell (scikit-image, CC0) | field, seabed (procedural) | a file"
    )
    ap.add_argument("--out", required=True, help="output bag folder (mcap); must not exist")
    ap.add_argument("--frames", type=int, default=900, help="frames at 30 Hz (default: 30 s)")
    ap.add_argument("--size", type=parse_size, default=(320, 240), help="WxH (default 320x240)")
    ap.add_argument("--topic", default="/camera/image_raw")
    ap.add_argument(
        "--look",
        choices=("day", "night", "thermal", "underwater"),
        default="day",
        help="night: dim, high gain, noisy; thermal: grey, soft, low contrast",
    )
    a = ap.parse_args(argv)
    out = Path(a.out)
    if out.exists():
        print(f"domain_bag: {out} exists", file=sys.stderr)
        return 2
    if a.source == "field":
        photo = crop_field()
    elif a.source == "seabed":
        photo = seabed()
    else:
        photo = sample_photo(a.source) if a.source in ("retina", "cell") else read_image(a.source)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bag(out, photo, a.frames, a.size, a.topic, a.look)
    print(f"wrote {out}: {a.frames} frames {a.size[0]}x{a.size[1]} of '{a.source}' on {a.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
