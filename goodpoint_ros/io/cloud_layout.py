"""The one definition of the ``~/keypoints`` and ``~/matches`` PointCloud2 layouts (ROS-free).

Both the live node (rclpy messages) and ``goodpoint-bag`` (rosbags messages) build their clouds
from these numpy structured dtypes, so the byte layout exists exactly once. Nothing here imports
rclpy or rosbags: a builder gets the message classes passed in.

Keypoints (one point per keypoint, little endian, ``point_step = 20 + 4 * D``):

    field       type     count  offset
    x           float32  1      0      pixel column in the input image
    y           float32  1      4      pixel row in the input image
    score       float32  1      8      detector score
    detector    uint8    1      12     MD-Net detector set (0 for GoodPoint)
    track_id    uint32   1      16     stable id across frames (0 = never tracked)
    descriptor  float32  D      20     L2-normalised descriptor
    depth       float32  1      20+4D  RGB-D mode only: metres at the keypoint, NaN if unknown

Matches (one point per match between the previous processed frame and this one, 40 bytes):

    field              type     offset
    index0             uint32   0      keypoint index in the previous frame's keypoints message
    index1             uint32   4      keypoint index in this frame's keypoints message
    x0, y0             float32  8, 12  pixel position in the previous frame
    x1, y1             float32  16, 20 pixel position in this frame
    distance           float32  24     Euclidean descriptor distance (0..2)
    inlier             uint8    28     1 if geometric verification kept the match
    prev_stamp_sec     int32    32     header.stamp.sec of the previous frame
    prev_stamp_nanosec uint32   36     header.stamp.nanosec of the previous frame

The matches header is this frame's header, and every point repeats the previous frame's stamp, so a
consumer always knows which two keypoints messages a matches message joins, even after drops.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

# sensor_msgs/PointField datatype constants (same values in every ROS 2 distribution).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_NP_TO_FIELD = {
    np.dtype(np.int8): INT8,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int16): INT16,
    np.dtype(np.uint16): UINT16,
    np.dtype(np.int32): INT32,
    np.dtype(np.uint32): UINT32,
    np.dtype(np.float32): FLOAT32,
    np.dtype(np.float64): FLOAT64,
}
_FIELD_TO_NP = {v: k for k, v in _NP_TO_FIELD.items()}


class CloudLayoutError(ValueError):
    """A PointCloud2 whose fields or sizes do not follow the documented layout."""


def keypoints_dtype(descriptor_dim: int, depth: bool = False) -> np.dtype:
    """Structured dtype of one ``~/keypoints`` point for descriptors of length ``descriptor_dim``."""
    d = int(descriptor_dim)
    fields = {
        "names": ["x", "y", "score", "detector", "track_id"],
        "formats": ["<f4", "<f4", "<f4", "u1", "<u4"],
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20 + 4 * d + (4 if depth else 0),
    }
    if d > 0:
        fields["names"].append("descriptor")
        fields["formats"].append(("<f4", (d,)))
        fields["offsets"].append(20)
    if depth:
        fields["names"].append("depth")
        fields["formats"].append("<f4")
        fields["offsets"].append(20 + 4 * d)
    return np.dtype(fields)


MATCHES_DTYPE = np.dtype(
    {
        "names": [
            "index0",
            "index1",
            "x0",
            "y0",
            "x1",
            "y1",
            "distance",
            "inlier",
            "prev_stamp_sec",
            "prev_stamp_nanosec",
        ],
        "formats": ["<u4", "<u4", "<f4", "<f4", "<f4", "<f4", "<f4", "u1", "<i4", "<u4"],
        "offsets": [0, 4, 8, 12, 16, 20, 24, 28, 32, 36],
        "itemsize": 40,
    }
)


def field_specs(dtype: np.dtype) -> list[tuple[str, int, int, int]]:
    """(name, offset, PointField datatype, count) for every field of a structured dtype."""
    out = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        base, count = (sub.base, int(np.prod(sub.shape))) if sub.shape else (sub, 1)
        out.append((name, int(offset), _NP_TO_FIELD[np.dtype(base.newbyteorder("="))], count))
    return out


def keypoints_array(
    keypoints: np.ndarray,
    scores: np.ndarray,
    descriptors: np.ndarray,
    detector: np.ndarray | None = None,
    track_ids: np.ndarray | None = None,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """Pack feature arrays (Kx2, K, KxD, K, K[, K]) into the keypoints structured array (vectorised)."""
    k = len(keypoints)
    d = int(descriptors.shape[1]) if descriptors.ndim == 2 else 0
    rec = np.zeros(k, dtype=keypoints_dtype(d, depth is not None))
    if depth is not None and k:
        rec["depth"] = depth
    if k:
        rec["x"] = keypoints[:, 0]
        rec["y"] = keypoints[:, 1]
        rec["score"] = scores
        rec["detector"] = 0 if detector is None else detector
        rec["track_id"] = 0 if track_ids is None else track_ids
        if d:
            rec["descriptor"] = descriptors
    return rec


def matches_array(
    matches: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    distances: np.ndarray,
    inliers: np.ndarray,
    prev_stamp: tuple[int, int],
) -> np.ndarray:
    """Pack Mx2 match indices, both keypoint sets, distances and the inlier mask (vectorised)."""
    m = len(matches)
    rec = np.zeros(m, dtype=MATCHES_DTYPE)
    if m:
        i0, i1 = matches[:, 0], matches[:, 1]
        rec["index0"], rec["index1"] = i0, i1
        rec["x0"], rec["y0"] = kpts0[i0, 0], kpts0[i0, 1]
        rec["x1"], rec["y1"] = kpts1[i1, 0], kpts1[i1, 1]
        rec["distance"] = distances
        rec["inlier"] = inliers
        rec["prev_stamp_sec"], rec["prev_stamp_nanosec"] = int(prev_stamp[0]), int(prev_stamp[1])
    return rec


def stamp_of(header: Any) -> tuple[int, int]:
    """(sec, nanosec) of a message header (rclpy or rosbags)."""
    return int(header.stamp.sec), int(header.stamp.nanosec)


def stamp_ns(stamp: tuple[int, int]) -> int:
    """(sec, nanosec) -> integer nanoseconds."""
    return int(stamp[0]) * 1_000_000_000 + int(stamp[1])


def features_array(
    feats: dict[str, np.ndarray], track_ids: np.ndarray | None = None, depth: np.ndarray | None = None
) -> np.ndarray:
    """``keypoints_array`` of a numpy feature dict (``features.to_numpy``: keypoints, scores,
    descriptors, optional detector)."""
    return keypoints_array(
        feats["keypoints"], feats["scores"], feats["descriptors"], feats.get("detector"), track_ids, depth
    )


def frame_records(result: Any, right_stamp: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """A ``pipeline.FrameResult`` as the records of each PointCloud2 output it fills, by output
    name (``keypoints``; ``matches`` once there is a previous frame; stereo: ``right/keypoints``,
    and ``stereo_matches`` when matching ran, whose ``prev_stamp`` is ``right_stamp``). The node
    and goodpoint-bag both publish these, so their bytes are the same for the same frame."""
    out = {"keypoints": features_array(result.features, result.track_ids, result.keypoint_depth)}
    if result.previous_keypoints is not None:
        out["matches"] = matches_array(
            result.matches, result.previous_keypoints, result.keypoints, result.distances, result.inliers,
            result.previous_stamp,
        )  # fmt: skip
    right = result.right_features
    if right is not None:
        out["right/keypoints"] = keypoints_array(
            right["keypoints"], right["scores"], right["descriptors"], right.get("detector")
        )
        if result.stereo_matches is not None:
            out["stereo_matches"] = matches_array(
                result.stereo_matches, result.keypoints, right["keypoints"], result.stereo_distances,
                result.stereo_inliers, right_stamp or result.stamp,
            )  # fmt: skip
    return out


def to_byte_array(rec: np.ndarray) -> array.array:
    """One copy into ``array.array('B')``: what rclpy's uint8[] setter takes without a per-byte check."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(rec).view(np.uint8).reshape(-1))
    return out


def build_cloud(rec: np.ndarray, header: Any, cloud_cls: Any, field_cls: Any, data: Any = None) -> Any:
    """A PointCloud2 (of ``cloud_cls``/``field_cls``, rclpy or rosbags) holding ``rec`` as one row."""
    fields = [field_cls(name=n, offset=o, datatype=t, count=c) for n, o, t, c in field_specs(rec.dtype)]
    step = rec.dtype.itemsize
    extra = {} if header is None else {"header": header}
    return cloud_cls(
        **extra,
        height=1,
        width=len(rec),
        fields=fields,
        is_bigendian=False,
        point_step=step,
        row_step=step * len(rec),
        data=to_byte_array(rec) if data is None else data,
        is_dense=True,
    )


def cloud_dtype(fields: Any, point_step: int) -> np.dtype:
    """Structured dtype described by PointField-like objects (name, offset, datatype, count)."""
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in _FIELD_TO_NP:
            raise CloudLayoutError(f"field '{f.name}' has unknown PointField datatype {f.datatype}")
        base = _FIELD_TO_NP[f.datatype].newbyteorder("<")
        names.append(f.name)
        formats.append((base, (int(f.count),)) if f.count > 1 else base)
        offsets.append(int(f.offset))
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})
    except ValueError as e:
        raise CloudLayoutError(f"fields do not fit point_step {point_step}: {e}") from None


def read_cloud(msg: Any, required: tuple[str, ...] = ()) -> np.ndarray:
    """Parse any PointCloud2 (rclpy or rosbags) into a structured array with ``np.frombuffer``."""
    if msg.is_bigendian:
        raise CloudLayoutError("big-endian point clouds are not supported")
    dtype = cloud_dtype(msg.fields, msg.point_step)
    missing = [n for n in required if n not in dtype.names]
    if missing:
        raise CloudLayoutError(f"point cloud lacks fields {missing}")
    n = int(msg.width) * int(msg.height)
    buf = memoryview(msg.data).cast("B") if not isinstance(msg.data, np.ndarray) else msg.data.view(np.uint8)
    if len(buf) < n * msg.point_step:
        raise CloudLayoutError(f"data holds {len(buf)} bytes, {n} points of {msg.point_step} need {n * msg.point_step}")
    return np.frombuffer(buf, dtype=dtype, count=n)


KEYPOINT_FIELDS = ("x", "y", "score", "detector", "track_id")
MATCH_FIELDS = MATCHES_DTYPE.names


def read_keypoints(msg: Any) -> dict[str, np.ndarray]:
    """A ``~/keypoints`` cloud as arrays: keypoints Kx2, scores, detector, track_ids, descriptors KxD."""
    rec = read_cloud(msg, KEYPOINT_FIELDS)
    desc = rec["descriptor"] if "descriptor" in rec.dtype.names else np.zeros((len(rec), 0), np.float32)
    out = {
        "keypoints": np.stack([rec["x"], rec["y"]], 1).astype(np.float32),
        "scores": rec["score"].astype(np.float32),
        "detector": rec["detector"].astype(np.uint8),
        "track_ids": rec["track_id"].astype(np.uint32),
        # an empty cloud (blank image) keeps its descriptor width: reshape(0, -1) is ambiguous
        "descriptors": np.ascontiguousarray(desc, dtype=np.float32).reshape(len(rec), int(np.prod(desc.shape[1:]))),
    }
    if "depth" in rec.dtype.names:
        out["depth"] = rec["depth"].astype(np.float32)
    return out


def read_matches(msg: Any) -> dict[str, np.ndarray]:
    """A ``~/matches`` cloud as arrays: matches Mx2, pts0, pts1, distances, inliers, prev_stamp."""
    rec = read_cloud(msg, MATCH_FIELDS)
    prev = (int(rec["prev_stamp_sec"][0]), int(rec["prev_stamp_nanosec"][0])) if len(rec) else None
    return {
        "matches": np.stack([rec["index0"], rec["index1"]], 1).astype(np.int64),
        "pts0": np.stack([rec["x0"], rec["y0"]], 1).astype(np.float32),
        "pts1": np.stack([rec["x1"], rec["y1"]], 1).astype(np.float32),
        "distances": rec["distance"].astype(np.float32),
        "inliers": rec["inlier"].astype(bool),
        "prev_stamp": prev,
    }
