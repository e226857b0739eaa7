"""Training data: image folders (COCO layout) and ROS 2 bags, mixed into one stream of pairs.

A *source* holds frames and returns one as uint8 (HxW gray or HxWx3 RGB) by index. ``PairDataset``
turns any source into homography pairs (``training.augment.make_pair``); every sample is a pure
function of (seed, sample index), so a resumed run sees exactly the data it would have seen.

Bags are read once with ``rosbags`` (sqlite3 and mcap) and their selected frames are kept in memory
as encoded bytes (CompressedImage payloads as they are, raw images JPEG-encoded at quality 95: a
deliberate, small loss that keeps 2000 frames around 100 MB).

Command line: ``python -m goodpoint_ros.training.datasets --list-topics BAG`` lists a bag's topics;
``python -m goodpoint_ros.training.datasets --count SOURCE...`` counts usable frames.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from goodpoint_ros.io.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    compressed_is_plain,
    compressed_to_numpy,
    image_to_numpy,
    to_rgb,
    to_uint8,
)
from goodpoint_ros.io.image_files import ImageReadError, read_image

from .augment import make_pair
from .frame_pairs import frame_homography

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


class DataError(RuntimeError):
    """A data source that cannot be used (missing folder, no images, missing topic...)."""


def frame_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded frame -> uint8 HxW or HxWx3 (alpha and a singleton channel dropped; 16-bit and
    float frames through ``image_codec.to_uint8``, the node's stretch)."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return to_uint8(image)


class _SkipCounter:
    """Counts frames that could not be used; warns once per process, not once per frame."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._warned = False

    def add(self, reason: str) -> None:
        self.count += 1
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.what}: skipping unusable frames (first: {reason}); see .skipped", stacklevel=3)


class ScaledFrame(np.ndarray):
    """A loaded frame that carries its source's ``crop_scale`` range, so that ``PairDataset``
    draws the scale of its crop whatever wrappers (mixtures, slices) the frame came through."""

    crop_scale: tuple[float, float] | None = None


def with_crop_scale(image: np.ndarray, crop_scale: tuple[float, float] | None) -> np.ndarray:
    """``image`` tagged with ``crop_scale`` (a view, no copy); unchanged when it is None."""
    if crop_scale is None:
        return image
    out = image.view(ScaledFrame)
    out.crop_scale = crop_scale
    return out


def parse_crop_scale(value) -> tuple[float, float] | None:
    """``data.crop_scale``: None (crops at the photo's own resolution) or [lo, hi] with
    0 < lo <= hi <= 1, the range of the share of the image's short side that a crop covers."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"crop_scale must be null or [lo, hi], got {value!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise DataError(f"crop_scale [lo, hi] needs 0 < lo <= hi <= 1, got [{lo}, {hi}]")
    return lo, hi


def multiscale_view(
    image: np.ndarray, crop: int | Sequence[int], crop_scale: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """The photo scaled so that a ``crop`` window covers a share ``f`` of its short side, ``f``
    log-uniform in ``crop_scale`` (equal odds for each octave of zoom), so that one large photo
    yields many distinct views, from fine detail (small ``f``) to the whole scene (``f`` = 1).
    Never upscales: where ``f`` would need more pixels than the photo has, the crop is taken at
    the photo's own resolution (the share is then larger than ``f``)."""
    lo, hi = crop_scale
    f = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    side = max(crop) if not np.isscalar(crop) else int(crop)
    h, w = image.shape[:2]
    s = min(1.0, side / (f * min(h, w)))
    if s >= 1.0:
        return np.asarray(image)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_AREA)


class ImageFolder:
    """Every image file under ``root`` (any nested tree, e.g. COCO train2017), sorted by path.
    Files are decoded by ``image_codec.decode_bytes``: one whose header declares more than
    ``max_pixels`` is skipped (counted) before it is decoded, like a frame from a camera.
    ``crop_scale`` (see ``parse_crop_scale``) rides along with each loaded frame."""

    def __init__(
        self,
        root: str | Path,
        min_size: int = 64,
        max_images: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        crop_scale: Sequence[float] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist")
        paths: list[str] = []
        for d, subdirs, files in os.walk(self.root, followlinks=True):
            subdirs.sort()
            paths += [os.path.join(d, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if max_images:
            paths = paths[: int(max_images)]
        if not paths:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")
        self.paths = paths
        self.min_size = min_size
        self.max_pixels = max_pixels
        self.crop_scale = parse_crop_scale(crop_scale)
        self.skips = _SkipCounter(f"image folder {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def skipped(self) -> int:
        return self.skips.count

    def load(self, index: int) -> np.ndarray | None:
        """The frame, or None (counted) when it is unreadable or smaller than ``min_size``."""
        path = self.paths[index]
        try:
            image = frame_uint8(read_image(path, self.max_pixels))
        except (ImageReadError, ImageDecodeError, OSError) as e:
            self.skips.add(f"unreadable: {e}")
            return None
        if min(image.shape[:2]) < self.min_size:
            self.skips.add(f"{path}: {image.shape[1]}x{image.shape[0]} is smaller than {self.min_size} px")
            return None
        return with_crop_scale(image, self.crop_scale)


# ---------------------------------------------------------------- ROS 2 bags


def decode_image_msg(msg, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> uint8 HxW or HxWx3 RGB (decoded by ``goodpoint_ros.io.image_codec``)."""
    return frame_uint8(to_rgb(image_to_numpy(msg, max_pixels=max_pixels), msg.encoding))


def decode_compressed_msg(msg, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> uint8 HxW or HxWx3 RGB."""
    return frame_uint8(compressed_to_numpy(msg, max_pixels=max_pixels))


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (message type, message count) of a ROS 2 bag (sqlite3 or mcap)."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise DataError(f"bag {path} does not exist")
    try:
        with AnyReader([path]) as reader:
            return {t: (i.msgtype, i.msgcount) for t, i in sorted(reader.topics.items())}
    except Exception as e:  # rosbags raises several types for a broken or unknown bag
        raise DataError(f"bag {path}: cannot be read ({type(e).__name__}: {e})") from None


class BagFrames:
    """Image frames of one topic of a ROS 2 bag; ``topic=None`` picks the only image topic (or the
    one with most messages), ``stride`` keeps every n-th frame, ``max_frames`` caps the count;
    frames above ``max_pixels`` are skipped (counted) before decoding.

    ``span`` = (lo, hi) keeps the messages whose bag time lies in that fraction of the bag's
    duration: fine-tuning reads (0, 0.8) and ``goodpoint-eval --bag`` holds out (0.8, 1), a time
    range training never saw. Fewer than ``min_frames`` usable frames is a ``DataError``."""

    def __init__(
        self,
        path: str | Path,
        topic: str | None = None,
        stride: int = 1,
        max_frames: int | None = 2000,
        min_size: int = 64,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        span: Sequence[float] = (0.0, 1.0),
        min_frames: int = 1,
    ) -> None:
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        topics = bag_topics(self.path)
        listing = ", ".join(f"{t} [{m}, {n} msgs]" for t, (m, n) in topics.items()) or "none"
        if topic is None:
            images = [t for t, (m, _) in topics.items() if m in IMAGE_TYPES]
            if not images:
                raise DataError(f"bag {self.path} has no Image/CompressedImage topic; topics: {listing}")
            topic = max(images, key=lambda t: topics[t][1])
        elif topic not in topics:
            raise DataError(f"bag {self.path} has no topic '{topic}'; topics: {listing}")
        elif topics[topic][0] not in IMAGE_TYPES:
            raise DataError(f"topic '{topic}' of {self.path} is {topics[topic][0]}, not an image; topics: {listing}")
        self.topic = topic
        self.skips = _SkipCounter(f"bag {self.path} topic {topic}")
        self.frames: list[bytes] = []
        stride = max(1, int(stride))
        lo, hi = (float(x) for x in span)
        if not 0.0 <= lo < hi <= 1.0:
            raise DataError(f"bag span {lo}..{hi}: need 0 <= lo < hi <= 1 (fractions of the bag's duration)")
        self.stamps: list[int] = []  # bag time (ns) of each kept frame
        with AnyReader([self.path]) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            t0, t1 = int(reader.start_time), int(reader.end_time)
            start, end = t0 + lo * (t1 - t0), t0 + hi * (t1 - t0)
            in_span = (
                m for m in reader.messages(connections=conns) if start <= m[1] <= end and (hi == 1.0 or m[1] < end)
            )
            for i, (conn, timestamp, raw) in enumerate(in_span):
                if i % stride:
                    continue
                if max_frames and len(self.frames) >= int(max_frames):
                    break
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    if conn.msgtype.endswith("CompressedImage"):
                        img = decode_compressed_msg(msg, max_pixels)  # kept as is when load() can read it back
                        data = bytes(np.asarray(msg.data, dtype=np.uint8)) if compressed_is_plain(msg.format) else None
                    else:
                        img = decode_image_msg(msg, max_pixels)
                        data = None
                except Exception as e:  # corrupt or unsupported message: skip it, count it
                    self.skips.add(f"message {i}: {type(e).__name__}: {e}")
                    continue
                if min(img.shape[:2]) < min_size:
                    self.skips.add(f"message {i}: {img.shape[1]}x{img.shape[0]} smaller than {min_size} px")
                    continue
                if data is None:
                    bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                self.frames.append(data)
                self.stamps.append(int(timestamp))
        if len(self.frames) < max(1, int(min_frames)):
            where = "" if (lo, hi) == (0.0, 1.0) else f" in {lo:g}..{hi:g} of its duration"
            raise DataError(
                f"bag {self.path} topic {topic}: {len(self.frames)} usable frames{where}, need at least "
                f"{max(1, int(min_frames))} ({self.skips.count} skipped)"
            )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def skipped(self) -> int:
        return self.skips.count

    def neighbour(self, index: int, gap: int) -> int | None:
        """The frame ``gap`` kept frames after ``index`` (a real pair for ``frame_pairs``), if any."""
        return index + gap if 0 <= index + gap < len(self.frames) else None

    def load(self, index: int) -> np.ndarray | None:
        img = cv2.imdecode(np.frombuffer(self.frames[index], np.uint8), cv2.IMREAD_UNCHANGED)
        if img.ndim == 3:
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
        return frame_uint8(img)


class Mixture:
    """Several sources as one, concatenated (index i goes to the source that holds it)."""

    def __init__(self, sources: Sequence) -> None:
        if not sources:
            raise DataError("no data sources configured (set data.root or data.sources)")
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.sources)

    def load(self, index: int) -> np.ndarray | None:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.sources[k].load(index - int(self.offsets[k]))

    def neighbour(self, index: int, gap: int) -> int | None:
        """A later frame of the same recording (never across sources); None for photo folders."""
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        find = getattr(self.sources[k], "neighbour", None)
        j = find(index - int(self.offsets[k]), gap) if find else None
        return None if j is None else j + int(self.offsets[k])


def build_source(conf: dict) -> Mixture:
    """Sources from a ``data`` config: ``root`` (one image folder, the common case) and/or
    ``sources``: a list of ``{type: images, root, max_images}`` or
    ``{type: bag, path, topic, stride, max_frames}``. ``max_pixels`` (default
    ``image_codec.DEFAULT_MAX_PIXELS``; 0 or None: no limit) applies to every source.
    ``crop_scale`` (default None: crops at each photo's own resolution; e.g. [0.125, 1.0]: a crop
    covers 1/8 to all of the short side, see ``multiscale_view``) applies to every image folder;
    an image source's own ``crop_scale`` overrides it."""
    min_size = int(conf.get("min_size", 64))
    crop_scale = parse_crop_scale(conf.get("crop_scale"))
    max_pixels = conf.get("max_pixels", DEFAULT_MAX_PIXELS)
    specs = list(conf.get("sources") or [])
    if conf.get("root"):
        specs.insert(0, {"type": "images", "root": conf["root"]})
    out = []
    for i, spec in enumerate(specs):
        kind = spec.get("type", "images")
        key = "path" if kind == "bag" else "root"
        if not spec.get(key):
            raise DataError(f"data source {i} ({kind}) has no '{key}': set data.sources.{i}.{key}=... or data.root=...")
        if kind == "images":
            out.append(
                ImageFolder(
                    spec["root"],
                    min_size=min_size,
                    max_images=spec.get("max_images"),
                    max_pixels=max_pixels,
                    crop_scale=spec["crop_scale"] if "crop_scale" in spec else crop_scale,
                )
            )
        elif kind == "bag":
            out.append(
                BagFrames(
                    spec["path"],
                    topic=spec.get("topic"),
                    stride=spec.get("stride", 1),
                    max_frames=spec.get("max_frames", 2000),
                    min_size=min_size,
                    max_pixels=max_pixels,
                    span=spec.get("span", (0.0, 1.0)),
                    min_frames=spec.get("min_frames", 1),
                )
            )
        else:
            raise DataError(f"unknown data source type '{kind}' (use 'images' or 'bag')")
    return Mixture(out)


class PairDataset(Dataset):
    """Sample ``i`` -> a homography pair from frame ``perm_epoch[i mod n]``; deterministic in (seed, i).

    Items: ``image0``/``image1`` CxHxW float32 in [0, 1] (C = ``channels``), ``H`` 3x3 float32
    (image0 -> image1 pixels), ``mask0``/``mask1`` 1xHxW float32.

    Multi-scale crops: when a frame carries a ``crop_scale`` (an image folder configured with
    one), the photo is first scaled by ``multiscale_view`` with a draw from the sample's own
    generator, then cropped; frames without one are cropped at their own resolution, drawing
    exactly the random numbers they always did.

    Real frame pairs (``frame_pairs`` > 0, recordings only): that fraction of samples cuts view 1
    from a frame 1..``pair_gap`` kept frames later, aligned by ``frame_pairs.frame_homography``;
    when the source has no later frame or the alignment fails, the sample stays synthetic. With
    ``frame_pairs`` = 0 no extra random numbers are drawn (old runs resume identically).
    """

    def __init__(
        self,
        source,
        crop: int | Sequence[int] = 256,
        channels: int = 1,
        seed: int = 0,
        noise: bool = True,
        homography: dict | None = None,
        length: int | None = None,
        frame_pairs: float = 0.0,
        pair_gap: int = 3,
    ) -> None:
        self.source = source
        self.frame_pairs = float(frame_pairs)
        self.pair_gap = max(1, int(pair_gap))
        self._aligned: dict[tuple[int, int], np.ndarray | None] = {}  # (i, j) -> homography, per worker
        self.crop = int(crop) if np.isscalar(crop) else tuple(int(c) for c in crop)
        self.channels = channels
        self.seed = int(seed)
        self.noise = noise
        self.homography = dict(homography or {})
        self.length = length
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.source)

    def _frame_index(self, i: int) -> int:
        n = len(self.source)
        epoch = i // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 7919, epoch]).permutation(n))
        return int(self._perm[1][i % n])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        image = None
        for k in range(64):  # unusable frames: take the next sample's frame (deterministically)
            index = self._frame_index(int(i) + k * 104729)
            image = self.source.load(index)
            if image is not None:
                break
        if image is None:
            raise DataError("64 consecutive frames were unusable: check the data source")
        crop_scale = getattr(image, "crop_scale", None)
        image = np.asarray(image)
        if crop_scale is not None:
            image = multiscale_view(image, self.crop, crop_scale, rng)
        image = self._channels(image)
        second = self._second_frame(index, image, rng) if self.frame_pairs > 0 and crop_scale is None else None
        pair = make_pair(image, self.crop, rng, noise=self.noise, homography=self.homography, second=second)

        def im(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(x).float().div_(255.0)
            return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()

        return {
            "image0": im(pair["image0"]),
            "image1": im(pair["image1"]),
            "H": torch.from_numpy(pair["H"]).float(),
            "mask0": torch.from_numpy(pair["mask0"])[None].float(),
            "mask1": torch.from_numpy(pair["mask1"])[None].float(),
        }

    def _channels(self, image: np.ndarray) -> np.ndarray:
        if self.channels == 1 and image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.channels == 3 and image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return image

    def _second_frame(
        self, index: int, image: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(later frame, homography image -> it) for a real pair, or None: a synthetic pair."""
        real, gap = rng.random() < self.frame_pairs, int(rng.integers(1, self.pair_gap + 1))
        find = getattr(self.source, "neighbour", None)
        j = find(index, gap) if real and find else None
        if j is None:
            return None
        other = self.source.load(j)
        if other is None:
            return None
        other = self._channels(np.asarray(other))
        if (index, j) not in self._aligned:
            self._aligned[(index, j)] = frame_homography(image, other)
        G = self._aligned[(index, j)]
        return None if G is None else (other, G)


class StepSampler(torch.utils.data.Sampler):
    """Sample indices for steps ``start_step, start_step+1, ...``, sharded by rank.

    Plays the role of ``DistributedSampler`` (each rank gets disjoint samples) but starts at any
    step, so ``--resume`` continues the exact data stream; the permutation lives in the dataset.
    """

    def __init__(self, batch_size: int, start_step: int = 0, steps: int | None = None, rank: int = 0, world: int = 1):
        self.batch_size, self.start, self.steps, self.rank, self.world = batch_size, start_step, steps, rank, world

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            base = (step * self.world + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            step += 1

    def __len__(self) -> int:
        return max(0, (self.steps or 0) - self.start) * self.batch_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list-topics", metavar="BAG", help="print the topics of a ROS 2 bag and exit")
    ap.add_argument("--count", nargs="+", metavar="SOURCE", help="image folders or bags: count usable frames")
    ap.add_argument("--topic", default=None)
    ap.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="skip frames whose header declares more pixels, before decoding (0: no limit)",
    )
    args = ap.parse_args(argv)
    try:
        if args.list_topics:
            for t, (m, n) in bag_topics(args.list_topics).items():
                print(f"{t}\t{m}\t{n}{'  (image)' if m in IMAGE_TYPES else ''}")
            return 0
        if args.count:
            for s in args.count:
                p = Path(s)
                is_bag = p.suffix in (".mcap", ".db3") or (p / "metadata.yaml").exists()
                src = (
                    BagFrames(p, args.topic, max_pixels=args.max_pixels)
                    if is_bag
                    else ImageFolder(p, max_pixels=args.max_pixels)
                )
                skipped = f" ({src.skipped} skipped)" if is_bag else ""
                print(f"{s}: {len(src)} frames{skipped}")
            return 0
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ap.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
