"""Visual-odometry bench: GoodPoint, MD-Net and ORB through the SAME odometry on one rendered room.

    .venv/bin/python bench/vo.py                       # table of ATE / RPE, rgbd + stereo + mono
    .venv/bin/python bench/vo.py --write-bag /tmp/room # also write the sequence as a ROS 2 bag (mcap)
    .venv/bin/python bench/vo.py --methods goodpoint_small,detection_threshold=0 orb --modes mono

The sequence comes from ``synthetic`` (photos on the walls of a box, exact depth and
poses). Features: ``goodpoint-eval``'s method specs (``training.evaluate.Method``: a model with
optional ``:weights`` and ``,key=value`` detection parameters or precision, or an OpenCV front end),
all matched by ``matching.match_features`` (mutual nearest neighbour) and fed to
``odometry.VisualOdometry``.

ATE: RMSE of positions after aligning the estimate to ground truth (SE3 for metric modes, Sim3 for
mono). RPE: RMSE of the translation (m, after the same scale for mono) and rotation (deg) errors of
consecutive-frame relative motions.

One trajectory's ATE is chaotic: a different rounding (bf16 on another CPU) or one RANSAC draw
moved goodpoint_small's RGB-D ATE between 0.04 and 0.11 m with the same weights. So each method
runs ``--runs`` times, each time on the same frames with fresh sensor noise (Gaussian,
``--noise`` grey levels, seeded by the run), and the table gives the median with the range.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from goodpoint_ros.training.evaluate import Method
from synthetic import Sequence, camera_info_p, render_sequence

from goodpoint_ros.backends.extractor import numpy_to_features
from goodpoint_ros.vo.matching import match_features
from goodpoint_ros.vo.odometry import VisualOdometry


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """s, R, t minimising |dst - (s R src + t)|^2 over Nx3 point sets (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = xs.var(0).sum()
    # an estimate that never moved has no scale: 0 (ATE = the ground truth's spread), not NaN
    s = (float(np.trace(np.diag(S) @ D) / var) if var > 1e-12 else 0.0) if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def ate_rpe(est: np.ndarray, gt: np.ndarray, sim3: bool) -> tuple[float, float, float]:
    """ATE (m), RPE translation (m/frame) and RPE rotation (deg/frame) of Nx4x4 poses."""
    gt_rel = np.linalg.inv(gt[0]) @ gt  # both trajectories start at the identity
    s, R, t = umeyama(est[:, :3, 3], gt_rel[:, :3, 3], sim3)
    aligned = (s * est[:, :3, 3] @ R.T) + t
    ate = float(np.sqrt(np.mean(np.sum((aligned - gt_rel[:, :3, 3]) ** 2, 1))))
    scaled = est.copy()
    scaled[:, :3, 3] *= s  # mono: the Sim3 scale, so relative translations are comparable
    d_est = np.linalg.inv(scaled[:-1]) @ scaled[1:]
    d_gt = np.linalg.inv(gt_rel[:-1]) @ gt_rel[1:]
    err = np.linalg.inv(d_gt) @ d_est
    rpe_t = float(np.sqrt(np.mean(np.sum(err[:, :3, 3] ** 2, 1))))
    cos = np.clip((np.trace(err[:, :3, :3], axis1=1, axis2=2) - 1) / 2, -1, 1)
    rpe_r = float(np.degrees(np.sqrt(np.mean(np.arccos(cos) ** 2))))
    return ate, rpe_t, rpe_r


def feature_fn(spec: str, device: str, max_keypoints: int):
    """image -> numpy feature dict for one ``goodpoint-eval`` method spec (precision: the spec's,
    fp32 unless it says ``precision=auto``)."""
    method = Method(spec, max_keypoints, "torch", device, None)

    def extract(im: np.ndarray) -> dict:
        f = method.extract(im)[0]
        return {**f, "confident": f["scores"] > method.impl.confident_score}  # as the node's pipeline

    return extract


def match(f0: dict, f1: dict, ratio: float | None) -> np.ndarray:
    m, _ = match_features(numpy_to_features(f0), numpy_to_features(f1), ratio=ratio)
    return m.numpy()


def noisy(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` with Gaussian sensor noise of ``sigma`` grey levels (unchanged when 0)."""
    if sigma <= 0:
        return rgb
    return np.clip(rgb + rng.normal(0.0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def run_vo(
    seq: Sequence,
    feats: list[dict],
    right: list[dict] | None,
    mode: str,
    ratio: float | None,
    ransac_px: float = 2.0,
    confident_pose: bool = True,
) -> dict:
    """Poses of ``mode`` odometry over the sequence, with the tracker's diagnostics
    (``confident_pose``: tell the odometry which points are above the threshold, as the node does)."""
    vo = VisualOdometry(seq.K, mode=mode, baseline=seq.baseline if mode == "stereo" else None, ransac_px=ransac_px)
    poses, inliers = [], []
    for i, f in enumerate(feats):
        kw: dict = {}
        if i:
            kw["matches"] = match(feats[i - 1], f, ratio)
        if mode == "rgbd":
            kw["depth"] = (seq.frames[i].depth * 1000).astype(np.uint16)  # as a 16UC1 camera sends it
        if mode == "stereo":
            kw["right_keypoints"] = right[i]["keypoints"]
            kw["stereo_matches"] = match(f, right[i], ratio)
        r = vo.update(f["keypoints"], confident=f["confident"] if confident_pose else None, **kw)
        poses.append(r.pose)
        inliers.append(r.inliers)
    ate, rpe_t, rpe_r = ate_rpe(np.stack(poses), seq.poses, sim3=mode == "mono")
    return {"ate": ate, "rpe_t": rpe_t, "rpe_r": rpe_r, "inliers": float(np.median(inliers[1:])), **vo.stats}


def write_bag(seq: Sequence, path: str | Path) -> None:
    """The sequence as a ROS 2 bag (mcap): camera/image (rgb8), camera/depth (16UC1 mm),
    camera/camera_info, camera/right/image + camera/right/camera_info when stereo, and
    ground_truth/odometry (nav_msgs/Odometry, optical frame of the first camera)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image, Info = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CameraInfo"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    RoI = ts.types["sensor_msgs/msg/RegionOfInterest"]
    Odometry = ts.types["nav_msgs/msg/Odometry"]
    PoseWC, Pose = ts.types["geometry_msgs/msg/PoseWithCovariance"], ts.types["geometry_msgs/msg/Pose"]
    TwistWC, Twist = ts.types["geometry_msgs/msg/TwistWithCovariance"], ts.types["geometry_msgs/msg/Twist"]
    Point, Quat, Vec = (ts.types[f"geometry_msgs/msg/{n}"] for n in ("Point", "Quaternion", "Vector3"))
    from scipy.spatial.transform import Rotation

    def info(header, baseline):
        return Info(
            header=header, height=seq.height, width=seq.width, distortion_model="plumb_bob",
            d=np.zeros(5), k=seq.K.ravel(), r=np.eye(3).ravel(), p=camera_info_p(seq.K, baseline).ravel(),
            binning_x=0, binning_y=0, roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )  # fmt: skip

    def image(header, data, encoding, step):
        return Image(
            header=header, height=seq.height, width=seq.width, encoding=encoding, is_bigendian=0, step=step,
            data=np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8),
        )  # fmt: skip

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose a new bag path")
    topics = {
        "/camera/image": Image, "/camera/depth": Image, "/camera/camera_info": Info,
        "/ground_truth/odometry": Odometry,
    }  # fmt: skip
    if seq.right:
        topics |= {"/camera/right/image": Image, "/camera/right/camera_info": Info}
    gt0 = np.linalg.inv(seq.poses[0])
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, c.__msgtype__, typestore=ts) for t, c in topics.items()}
        for i, f in enumerate(seq.frames):
            ns = int(1_000_000_000 + i * 1e9 / seq.fps)
            stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            hdr = Header(stamp=stamp, frame_id="camera_optical")
            msgs = {
                "/camera/image": image(hdr, f.rgb, "rgb8", 3 * seq.width),
                "/camera/depth": image(hdr, np.round(f.depth * 1000).astype(np.uint16), "16UC1", 2 * seq.width),
                "/camera/camera_info": info(hdr, 0.0),
            }
            T = gt0 @ f.pose
            q = Rotation.from_matrix(T[:3, :3]).as_quat()
            msgs["/ground_truth/odometry"] = Odometry(
                header=Header(stamp=stamp, frame_id="odom"), child_frame_id="camera_optical",
                pose=PoseWC(pose=Pose(position=Point(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                      orientation=Quat(x=q[0], y=q[1], z=q[2], w=q[3])), covariance=np.zeros(36)),
                twist=TwistWC(twist=Twist(linear=Vec(x=0.0, y=0.0, z=0.0), angular=Vec(x=0.0, y=0.0, z=0.0)),
                              covariance=np.zeros(36)),
            )  # fmt: skip
            if seq.right:
                rh = Header(stamp=stamp, frame_id="camera_right_optical")
                msgs["/camera/right/image"] = image(rh, seq.right[i].rgb, "rgb8", 3 * seq.width)
                msgs["/camera/right/camera_info"] = info(rh, seq.baseline)
            for topic, msg in msgs.items():
                w.write(conns[topic], ns, ts.serialize_cdr(msg, msg.__msgtype__))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--baseline", type=float, default=0.3, help="stereo baseline in metres (0: no stereo)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["goodpoint_small", "mdnet_small", "orb"],
        help="goodpoint-eval method specs, e.g. goodpoint_small:PATH,detection_threshold=0 orb",
    )
    p.add_argument("--modes", default="rgbd,stereo,mono")
    p.add_argument("--max-keypoints", type=int, default=1000)
    p.add_argument("--ratio", type=float, default=None, help="Lowe ratio on top of MNN (default: MNN only)")
    p.add_argument("--ransac-px", type=float, default=2.0, help="odometry RANSAC threshold (node: vo_ransac_px)")
    p.add_argument(
        "--all-points",
        action="store_true",
        help="metric pose from every point (before 2026-12-06); default: from those above the detector's "
        "threshold when there are enough, as the node does",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=int, default=5, help="runs per method, each with its own sensor noise")
    p.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma in grey levels (0: none)")
    p.add_argument("--write-bag", metavar="PATH", help="write the rendered sequence as a ROS 2 bag (mcap) and go on")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    modes = [m for m in a.modes.split(",") if m and (m != "stereo" or a.baseline > 0)]
    t0 = time.perf_counter()
    seq = render_sequence(a.frames, a.width, a.height, baseline=a.baseline if "stereo" in modes or a.write_bag else 0)
    print(f"rendered {a.frames} frames {a.width}x{a.height} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if a.write_bag:
        write_bag(seq, a.write_bag)
        print(f"wrote {a.write_bag}", file=sys.stderr)
    print(
        f"\n{a.frames} frames {a.width}x{a.height}, {a.max_keypoints} keypoints, MNN ratio={a.ratio}, "
        f"RANSAC {a.ransac_px} px, metric pose from {'every point' if a.all_points else 'confident points'}; median [min-max] of {a.runs} runs, sensor noise sigma {a.noise}"
    )
    print(
        "| features | mode | ATE (m) | RPE t (m/frame) | RPE rot (deg/frame) | median inliers | failures | extract ms |"
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for method in a.methods:
        fn = feature_fn(method, a.device, a.max_keypoints)
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        ms = []
        for run in range(a.runs):
            rng = np.random.default_rng(run)
            t0 = time.perf_counter()
            feats = [fn(noisy(f.rgb, a.noise, rng)) for f in seq.frames]
            right = [fn(noisy(f.rgb, a.noise, rng)) for f in seq.right] if "stereo" in modes else None
            ms.append(1000 * (time.perf_counter() - t0) / (len(feats) + len(right or [])))
            for mode in modes:
                runs[mode].append(run_vo(seq, feats, right, mode, a.ratio, a.ransac_px, not a.all_points))
        for mode in modes:  # rows as they come: a slow model still leaves the others' results
            rs = runs[mode]
            ate = [r["ate"] for r in rs]
            rng_txt = f" [{min(ate):.3f}-{max(ate):.3f}]" if len(rs) > 1 else ""
            print(
                f"| {method} | {mode} | {np.median(ate):.3f}{rng_txt} | {np.median([r['rpe_t'] for r in rs]):.4f} "
                f"| {np.median([r['rpe_r'] for r in rs]):.3f} | {np.median([r['inliers'] for r in rs]):.0f} "
                f"| {sum(r['failures'] for r in rs)} | {np.median(ms):.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
