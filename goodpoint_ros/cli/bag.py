"""``goodpoint-bag IN OUT --topic /camera/image_raw``: the extractor over a recorded ROS 2 bag, offline.

Reads sqlite3 or mcap bags with ``rosbags`` (no ROS install needed), runs the live node's
``pipeline.FramePipeline`` (extraction, matching, verification, track ids), and writes an mcap bag holding
``<prefix>/keypoints`` and ``<prefix>/matches`` in exactly the node's PointCloud2 layouts (built
from ``goodpoint_ros.io.cloud_layout``), stamped with the input images' headers and bag times. Every
frame is processed: offline there is nothing to drop.

A message the reader cannot read (``unreadable``) or deserialize (``malformed``), or an image that
does not decode or has more than ``--max-pixels`` (``undecodable``), is skipped, counted by reason
and reported on stderr; processing continues. The output is written under a temporary name next
to OUT and renamed to OUT when the writer is closed, also when processing stops on an exception
or Ctrl-C (the frames done are kept), so OUT is always a complete, readable bag. ``--overwrite``
replaces an existing OUT. The summary line says how many frames were written and skipped, and why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from goodpoint_ros.io.cloud_layout import build_cloud, frame_records, stamp_of
from goodpoint_ros.io.image_codec import ImageDecodeError, decode_image
from goodpoint_ros.settings import (
    EXTRACTOR_KEYS,
    MATCH_KEYS,
    ExtractorSettings,
    PipelineSettings,
    add_arguments,
    params_from_args,
)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
SKIP_REASONS = ("undecodable", "malformed", "unreadable")  # image decode, deserialize, bag read
_WARN_LIMIT = 10  # skipped-message warnings printed before they are only counted


class BagToolError(RuntimeError):
    """A bag that cannot be read or written as asked (missing topic, wrong type, existing output)."""


# The node's parameters this tool takes, as flags named after them (settings.add_arguments).
# Offline there is no camera_info: tracks, odometry and essential-matrix checks need it.
FLAG_KEYS = (*EXTRACTOR_KEYS, *MATCH_KEYS, "max_pixels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="goodpoint-bag", description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="input ROS 2 bag folder (sqlite3 or mcap) or a .mcap/.db3 file")
    ap.add_argument("output", help="output bag folder (mcap); must not exist unless --overwrite")
    ap.add_argument("--topic", required=True, help="image topic (sensor_msgs/Image or CompressedImage)")
    add_arguments(
        ap,
        FLAG_KEYS,
        aliases={"verification_method": ["--verification"], "verification_threshold": ["--threshold"]},
    )
    ap.add_argument("--prefix", default="/goodpoint_extractor", help="namespace of the output topics")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many frames (0: all)")
    ap.add_argument("--overwrite", action="store_true", help="replace the output bag if it exists")
    return ap.parse_args(argv)


def new_stats() -> dict:
    """The summary ``run`` fills in as it goes (so a caller still has it after an exception)."""
    return {
        "frames": 0,
        "keypoints": 0,
        "matches": 0,
        "inliers": 0,
        "skipped": dict.fromkeys(SKIP_REASONS, 0),
        "stopped": None,  # why reading ended early (an unreadable part of the bag), if it did
        "output": None,  # the bag written, once it is closed and in place
        "seconds": 0.0,
    }


def _skip(stats: dict, reason: str, timestamp: int | None, error: BaseException) -> None:
    """Count a skipped message; warn for the first few."""
    stats["skipped"][reason] += 1
    n = sum(stats["skipped"].values())
    if n <= _WARN_LIMIT:
        where = f"at {timestamp}" if timestamp is not None else "after the last message read"
        print(f"warning: skipping {reason} message {where}: {error}", file=sys.stderr)
        if n == _WARN_LIMIT:
            print("warning: further skipped messages are only counted", file=sys.stderr)


def _readable_from(reader, conns, start: int) -> bool:
    """Whether reading can start at ``start`` (the first message there, if any, can be read)."""
    try:
        next(reader.messages(connections=conns, start=start), None)
    except Exception:  # rosbags raises several types for a damaged bag
        return False
    return True


def _messages(reader, conns, stats: dict) -> Iterator[tuple]:
    """``reader.messages`` that survives read errors (a chunk failing its CRC, a damaged sqlite
    page): reading resumes at the earliest time after the failure from which the bag reads again
    (found by doubling, then bisecting, the jump), and the messages lost in between are counted as
    ``unreadable`` (the bag's message count minus the messages read). ``stopped`` says why when
    nothing after the failure can be read."""
    total = sum(int(c.msgcount) for c in conns)
    end = int(reader.end_time)
    start: int | None = None
    seen = 0
    while True:
        try:
            for item in reader.messages(connections=conns, start=start):
                seen += 1
                start = item[1] + 1
                yield item
            break
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            print(f"warning: unreadable part of the bag after {start}: {error}", file=sys.stderr)
            lo = int(reader.start_time) if start is None else start  # reading from lo fails
            jump, hi = 1_000_000, None
            while (probe := min(lo + jump, end)) > lo:
                if _readable_from(reader, conns, probe):
                    hi = probe
                    break
                lo, jump = probe, jump * 2
            if hi is None:
                stats["stopped"] = error
                break
            while hi - lo > 1:  # the earliest readable start
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if _readable_from(reader, conns, mid) else (mid, hi)
            start = hi
    stats["skipped"]["unreadable"] = max(0, total - seen)


def _put_in_place(partial: Path, dst: Path) -> None:
    """Rename the finished ``partial`` bag to ``dst``, replacing what is there (``--overwrite``)."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(partial, dst)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


def _typestore():
    from rosbags.typesys import Stores, get_typestore  # rosbags: optional, only this tool needs it

    return get_typestore(Stores.ROS2_HUMBLE)  # the standard messages used here are the same in later distros


def _image_connections(reader, src: Path, topic: str) -> list:
    """The bag's connections on ``topic``; BagToolError when it is missing or holds no images."""
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({c.topic for c in reader.connections})
        raise BagToolError(f"{src}: no topic '{topic}' (topics: {', '.join(topics)})")
    if conns[0].msgtype not in IMAGE_TYPES:
        raise BagToolError(f"'{topic}' holds {conns[0].msgtype}, expected one of {IMAGE_TYPES}")
    return conns


def _frames(reader, conns, stats: dict, max_pixels: int | None) -> Iterator[tuple[int, Any, np.ndarray]]:
    """(bag time, header, decoded image) of every readable frame; the others are counted."""
    for conn, timestamp, raw in _messages(reader, conns, stats):
        try:
            msg = reader.deserialize(raw, conn.msgtype)
            stamp_of(msg.header)
        except Exception as e:  # cut short or garbled: rosbags raises several types
            _skip(stats, "malformed", timestamp, e)
            continue
        try:
            image = decode_image(msg, max_pixels=max_pixels)
        except ImageDecodeError as e:
            _skip(stats, "undecodable", timestamp, e)
            continue
        yield timestamp, msg.header, image


def run(args: argparse.Namespace, stats: dict | None = None) -> dict:
    """Process the bag; returns ``stats`` (see ``new_stats``), filled in as frames are written."""
    from rosbags.highlevel import AnyReader  # rosbags: optional, only this tool needs it

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise BagToolError(f"{src}: no such bag")
    if (dst.exists() or dst.is_symlink()) and not args.overwrite:
        raise BagToolError(f"{dst}: output already exists (choose a new folder, or --overwrite)")
    if dst.resolve() == src.resolve():
        raise BagToolError(f"{dst}: the output would replace the input bag")
    stats = new_stats() if stats is None else stats
    t0 = time.perf_counter()
    store = _typestore()
    try:
        reader = AnyReader([src], default_typestore=store)
        reader.open()
    except Exception as e:
        raise BagToolError(f"{src}: not a readable ROS 2 bag ({type(e).__name__}: {e})") from None
    try:
        conns = _image_connections(reader, src, args.topic)
        p = params_from_args(args, FLAG_KEYS)
        frontend, _ = ExtractorSettings.from_params(p).build()  # the node's settings path
        pipeline = PipelineSettings.from_params({**p, "publish_tracks": False, "publish_odometry": False})
        _write(
            args,
            store,
            pipeline.build(frontend.extractor),
            _frames(reader, conns, stats, int(args.max_pixels) or None),
            stats,
            dst,
        )
    finally:
        reader.close()
        stats["seconds"] = time.perf_counter() - t0
    return stats


def _write(args: argparse.Namespace, store, pipeline, frames: Iterator, stats: dict, dst: Path) -> None:
    """Run ``pipeline`` on ``frames`` into a new mcap bag at ``dst`` (written aside, then moved)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    cloud_type = "sensor_msgs/msg/PointCloud2"
    PointCloud2, PointField = store.types[cloud_type], store.types["sensor_msgs/msg/PointField"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    writer = Writer(partial, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        outputs = {
            name: writer.add_connection(f"{args.prefix}/{name}", cloud_type, typestore=store)
            for name in ("keypoints", "matches")
        }
        for timestamp, header, image in frames:
            r = pipeline.step([image], stamp_of(header))
            serialized = {}
            for name, rec in frame_records(r).items():
                data = np.frombuffer(np.ascontiguousarray(rec).tobytes(), dtype=np.uint8)
                msg = build_cloud(rec, header, PointCloud2, PointField, data=data)
                serialized[name] = store.serialize_cdr(msg, cloud_type)
            with _ctrl_c_held():  # the frame's messages and its count, together or not at all
                for name, raw in serialized.items():
                    writer.write(outputs[name], timestamp, raw)
                if r.previous_keypoints is not None:
                    stats["matches"] += len(r.matches)
                    stats["inliers"] += int(r.inliers.sum())
                stats["frames"] += 1
                stats["keypoints"] += len(r.keypoints)
            if args.limit and stats["frames"] >= args.limit:
                break
    except BaseException:
        _close_and_place(writer, partial, dst, stats)  # keep the frames done, then fail
        raise
    _close_and_place(writer, partial, dst, stats)


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives while one frame is written and deliver it right after, so the
    bag and the summary's frame count agree (a Ctrl-C between the keypoints and the matches
    message, or before the count, once left a frame in the bag that the summary did not count)."""
    held: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:  # not the main thread: signals go elsewhere, nothing to hold
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


def _close_and_place(writer, partial: Path, dst: Path, stats: dict) -> None:
    """Close the writer (rosbags writes the metadata then) and move the bag to ``dst``; a bag
    whose writer cannot be closed is removed rather than left half-written."""
    try:
        writer.close()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _put_in_place(partial, dst)
    stats["output"] = dst


def summary(s: dict) -> str:
    """One line: frames written, skipped and why, rates, output."""
    n = max(s["frames"], 1)
    skipped = sum(s["skipped"].values())
    why = ", ".join(f"{v} {k}" for k, v in s["skipped"].items())
    line = (
        f"{s['frames']} frames written, {skipped} skipped ({why}) in {s['seconds']:.1f} s: "
        f"{s['keypoints'] / n:.0f} keypoints/frame, {s['matches'] / max(n - 1, 1):.0f} matches/frame, "
        f"inlier ratio {s['inliers'] / max(s['matches'], 1):.2f} -> {s['output'] or 'no bag written'}"
    )
    if s["stopped"]:
        line += f"; reading stopped early at an unreadable part of the bag ({s['stopped']})"
    return line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stats = new_stats()
    try:
        run(args, stats)
    except KeyboardInterrupt:
        print(f"goodpoint-bag: interrupted; {summary(stats)}", file=sys.stderr)
        return 130
    except (BagToolError, KeyError, ValueError, RuntimeError, OSError) as e:  # StartupError: a RuntimeError
        print(f"goodpoint-bag: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        if stats["output"] is not None:
            print(f"goodpoint-bag: kept what was done: {summary(stats)}", file=sys.stderr)
        return 2
    print(summary(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
