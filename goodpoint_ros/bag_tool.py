"""``goodpoint-bag IN OUT --topic /camera/image_raw``: the extractor over a recorded ROS 2 bag, offline.

Reads sqlite3 or mcap bags with ``rosbags`` (no ROS install needed), runs the live node's
``pipeline.FramePipeline`` (extraction, matching, verification, track ids), and writes an mcap bag holding
``<prefix>/keypoints`` and ``<prefix>/matches`` in exactly the node's PointCloud2 layouts (built
from ``goodpoint_ros.layout``), stamped with the input images' headers and bag times. Every
frame is processed: offline there is nothing to drop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.image_codec import ImageDecodeError, decode_image
from goodpoint_ros.layout import build_cloud, keypoints_array, matches_array
from goodpoint_ros.params import DEFAULTS  # the node's parameter table: one source of defaults
from goodpoint_ros.pipeline import FramePipeline, MatchSettings

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


class BagToolError(RuntimeError):
    """A bag that cannot be read or written as asked (missing topic, wrong type, existing output)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="goodpoint-bag", description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="input ROS 2 bag folder (sqlite3 or mcap) or a .mcap/.db3 file")
    ap.add_argument("output", help="output bag folder (mcap); must not exist")
    ap.add_argument("--topic", required=True, help="image topic (sensor_msgs/Image or CompressedImage)")
    ap.add_argument("--model", default=DEFAULTS["model"], help="goodpoint | goodpoint_small | mdnet | mdnet_small")
    ap.add_argument("--weights", default=DEFAULTS["weights"], help="default | random | path to a checkpoint")
    ap.add_argument("--backend", default=DEFAULTS["backend"])
    ap.add_argument("--device", default=DEFAULTS["device"])
    ap.add_argument("--max-keypoints", type=int, default=DEFAULTS["max_keypoints"])
    ap.add_argument("--match-ratio", type=float, default=DEFAULTS["match_ratio"], help=">= 1 disables the ratio test")
    ap.add_argument("--match-max-distance", type=float, default=DEFAULTS["match_max_distance"], help="<= 0 disables it")
    ap.add_argument(
        "--verification", default=DEFAULTS["verification_method"], choices=["homography", "fundamental", "none"]
    )
    ap.add_argument(
        "--threshold", type=float, default=DEFAULTS["verification_threshold"], help="RANSAC inlier threshold in pixels"
    )
    ap.add_argument("--prefix", default="/goodpoint_extractor", help="namespace of the output topics")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many frames (0: all)")
    return ap.parse_args(argv)


def _typestore():
    from rosbags.typesys import Stores, get_typestore  # rosbags: optional, only this tool needs it

    return get_typestore(Stores.ROS2_HUMBLE)  # the standard messages used here are the same in later distros


def run(args: argparse.Namespace) -> dict:
    """Process the bag; returns a summary dict (frames, keypoints, matches, inliers, decode errors)."""
    from rosbags.highlevel import AnyReader  # rosbags: optional, only this tool needs it
    from rosbags.rosbag2 import StoragePlugin, Writer

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise BagToolError(f"{src}: no such bag")
    if dst.exists():
        raise BagToolError(f"{dst}: output already exists (choose a new folder)")
    store = _typestore()
    PointCloud2 = store.types["sensor_msgs/msg/PointCloud2"]
    PointField = store.types["sensor_msgs/msg/PointField"]
    cloud_type = "sensor_msgs/msg/PointCloud2"

    stats = {"frames": 0, "keypoints": 0, "matches": 0, "inliers": 0, "decode_errors": 0}
    t0 = time.perf_counter()

    def cloud(rec: np.ndarray, header) -> bytes:
        data = np.frombuffer(np.ascontiguousarray(rec).tobytes(), dtype=np.uint8)
        return store.serialize_cdr(build_cloud(rec, header, PointCloud2, PointField, data=data), cloud_type)

    try:
        reader = AnyReader([src], default_typestore=store)
        reader.open()
    except Exception as e:
        raise BagToolError(f"{src}: not a readable ROS 2 bag ({type(e).__name__}: {e})") from None
    try:
        conns = [c for c in reader.connections if c.topic == args.topic]
        if not conns:
            topics = sorted({c.topic for c in reader.connections})
            raise BagToolError(f"{src}: no topic '{args.topic}' (topics: {', '.join(topics)})")
        if conns[0].msgtype not in IMAGE_TYPES:
            raise BagToolError(f"'{args.topic}' holds {conns[0].msgtype}, expected one of {IMAGE_TYPES}")
        extractor = make_extractor(args.backend, args.model, args.weights, args.device, None)
        extractor.set_detection(max_keypoints=int(args.max_keypoints))
        match = MatchSettings(args.match_ratio, args.match_max_distance, args.verification, args.threshold)
        pipeline = FramePipeline(extractor, "mono", match, tracks=False, odometry=False)
        with Writer(dst, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
            w_kp = writer.add_connection(f"{args.prefix}/keypoints", cloud_type, typestore=store)
            w_m = writer.add_connection(f"{args.prefix}/matches", cloud_type, typestore=store)
            for conn, timestamp, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                try:
                    image = decode_image(msg)
                except ImageDecodeError as e:
                    stats["decode_errors"] += 1
                    print(f"warning: skipping frame at {timestamp}: {e}", file=sys.stderr)
                    continue
                r = pipeline.step([image], (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)))
                f = r.features
                rec = keypoints_array(f["keypoints"], f["scores"], f["descriptors"], f["detector"], r.track_ids)
                writer.write(w_kp, timestamp, cloud(rec, msg.header))
                if r.previous_keypoints is not None:
                    m = r.matches
                    mrec = matches_array(m, r.previous_keypoints, r.keypoints, r.distances, r.inliers, r.previous_stamp)
                    writer.write(w_m, timestamp, cloud(mrec, msg.header))
                    stats["matches"] += len(m)
                    stats["inliers"] += int(r.inliers.sum())
                stats["frames"] += 1
                stats["keypoints"] += len(r.keypoints)
                if args.limit and stats["frames"] >= args.limit:
                    break
    finally:
        reader.close()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        s = run(args)
    except (BagToolError, KeyError, ValueError, RuntimeError) as e:
        print(f"goodpoint-bag: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    n = max(s["frames"], 1)
    print(
        f"{s['frames']} frames in {s['seconds']:.1f} s: {s['keypoints'] / n:.0f} keypoints/frame, "
        f"{s['matches'] / max(n - 1, 1):.0f} matches/frame, inlier ratio {s['inliers'] / max(s['matches'], 1):.2f}, "
        f"{s['decode_errors']} undecodable frames -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
