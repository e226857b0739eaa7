"""``goodpoint-eval --multiview``: the methods as the front end of COLMAP's incremental SfM.

Homography pairs test a detector on planar warps; a reconstruction tests what a map needs: tracks
that survive many real viewpoints. For each image set (a folder of photos of one scene; the
``--multiview`` folder is one set or holds one set per subfolder) and each method, every image is
extracted at ``--max-side`` with the ``--max-keypoints`` budget, every pair is matched by the
project's mutual nearest neighbours (``vo.matching.match_features``, per detector set for MD-Net,
the same path as ``--photos``), and keypoints and matches go into a fresh COLMAP database.
COLMAP then verifies them (two-view geometries) and runs incremental mapping. ``colmap_sift`` is
COLMAP's own SIFT extraction and exhaustive matcher, the usual baseline.

RANSAC and the mapper are random: every figure is the median over ``--seeds`` runs (seeds
``--seed`` .. ``--seed + N - 1``, one thread each unless ``--threads``), plus the min-max of
registered images. Where a set ships reference poses (``poses.txt``: ``NAME QW QX QY QZ TX TY
TZ``, world-to-camera in COLMAP's convention, or a COLMAP model in ``sparse/`` or
``sparse/0/``), the relative pose of every image pair in the largest model is compared with the
reference: AUC of max(rotation error, translation-direction error) at 5/10/20 degrees, an image
missing from the model counting as a failure.

pycolmap is an optional dependency (``pip install goodpoint_ros[eval]``), imported only here.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from types import ModuleType

import numpy as np

from goodpoint_ros.backends.extractor import numpy_to_features
from goodpoint_ros.vo.matching import match_features

from .evaluate import EvalError, Method, Source, _fmt, _scale, build_methods, photo_sources

PYCOLMAP_PIN = "pycolmap==4.2.1"  # constraints.txt and setup.py's "eval" extra carry the same
COLMAP_SIFT = "colmap_sift"
AUC_DEGREES = (5.0, 10.0, 20.0)
MIN_IMAGES = 2


def load_pycolmap() -> ModuleType:
    """pycolmap, quiet, or the one-line error that says how to install it."""
    try:
        import pycolmap
    except ImportError as exc:
        raise EvalError(f"--multiview needs pycolmap ({exc}); pip install {PYCOLMAP_PIN}") from None
    pycolmap.logging.minloglevel = 2  # warnings and errors only: the INFO stream is per image pair
    return pycolmap


# ----------------------------------------------------------------------------- sets and poses


def image_sets(root: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every set: ``root`` itself when it holds images, else its subfolders that do."""
    if not root.is_dir():
        raise EvalError(f"{root}: no such folder")
    if _has_images(root):
        return [(root.resolve().name, root)]
    sets = [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and _has_images(p)]
    if not sets:
        raise EvalError(f"{root}: no images, and no subfolder with images (one folder per image set)")
    return sets


def _has_images(folder: Path) -> bool:
    try:
        return bool(photo_sources(folder))
    except EvalError:
        return False


Pose = tuple[np.ndarray, np.ndarray]  # world-to-camera rotation (3x3) and translation (3)


def reference_poses(folder: Path, pycolmap: ModuleType) -> tuple[str | None, dict[str, Pose]]:
    """The set's reference poses by image name, and where they came from (None: the set has none)."""
    if (folder / "poses.txt").is_file():
        return "poses.txt", read_poses(folder / "poses.txt")
    for model in (folder / "sparse", folder / "sparse" / "0"):
        if (model / "images.bin").is_file() or (model / "images.txt").is_file():
            return str(model.relative_to(folder)), _model_poses(pycolmap.Reconstruction(model))
    return None, {}


def read_poses(path: Path) -> dict[str, Pose]:
    """``NAME QW QX QY QZ TX TY TZ`` per line (world-to-camera); ``#`` starts a comment."""
    poses = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#")[0].split()
        if not fields:
            continue
        try:
            q, t = np.array(fields[1:5], float), np.array(fields[5:8], float)
        except ValueError:
            q = t = np.zeros(0)
        if len(fields) != 8 or len(q) != 4 or len(t) != 3 or not np.linalg.norm(q) > 0:
            raise EvalError(f"{path}:{n}: expected NAME QW QX QY QZ TX TY TZ")
        poses[fields[0]] = (quaternion_matrix(q), t)
    return poses


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion (normalised here)."""
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _model_poses(rec) -> dict[str, Pose]:
    """World-to-camera poses of a pycolmap Reconstruction's registered images."""
    out = {}
    for image in rec.images.values():
        if image.has_pose:
            pose = image.cam_from_world()
            out[image.name] = (pose.rotation.matrix(), np.asarray(pose.translation, float))
    return out


# ----------------------------------------------------------------------------- pose accuracy


def relative_pose_errors(est: dict[str, Pose], ref: dict[str, Pose], names: Sequence[str]) -> np.ndarray:
    """Per pair of images with a reference pose: max(rotation, translation-direction) error of the
    estimated relative pose in degrees, inf when either image has no estimate."""
    errors = []
    for a, b in combinations([n for n in names if n in ref], 2):
        if a not in est or b not in est:
            errors.append(math.inf)
            continue
        r_est, t_est = _relative(est[a], est[b])
        r_ref, t_ref = _relative(ref[a], ref[b])
        errors.append(max(_rotation_angle(r_est @ r_ref.T), _vector_angle(t_est, t_ref)))
    return np.array(errors, float)


def _relative(pose_a: Pose, pose_b: Pose) -> Pose:
    """Camera a -> camera b."""
    (ra, ta), (rb, tb) = pose_a, pose_b
    r = rb @ ra.T
    return r, tb - r @ ta


def _rotation_angle(r: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def _vector_angle(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return math.inf  # no baseline: the direction is undefined
    return math.degrees(math.acos(float(np.clip(u @ v / (nu * nv), -1.0, 1.0))))


def pose_auc(errors: np.ndarray, thresholds: Sequence[float] = AUC_DEGREES) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1] (the
    relative-pose AUC of SuperGlue / LightGlue evaluations)."""
    errors = np.sort(np.asarray(errors, float))
    if not len(errors):
        return [math.nan] * len(thresholds)
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors, recall = np.concatenate([[0.0], errors]), np.concatenate([[0.0], recall])
    aucs = []
    for t in thresholds:
        last = int(np.searchsorted(errors, t))
        x = np.concatenate([errors[:last], [t]])
        y = np.concatenate([recall[:last], [recall[last - 1]]])
        aucs.append(float(np.trapezoid(y, x) / t))
    return aucs


# ----------------------------------------------------------------------------- features into COLMAP


def extract_set(method: Method, sources: Sequence[Source], max_side: int | None) -> dict[str, list]:
    """Features of every image, their keypoints in COLMAP pixels of the file (undoing the
    ``--max-side`` scaling; COLMAP's origin is the top-left corner, ours the first pixel's
    centre), each file's (width, height) and the extraction times in ms."""
    out: dict[str, list] = {"feats": [], "keypoints": [], "sizes": [], "times": []}
    for _, load in sources:
        original = load()
        image, scale = _scale(original, max_side)
        f, ms = method.extract(image)
        out["feats"].append(f)
        out["keypoints"].append(((f["keypoints"] + 0.5) / np.diag(scale)[:2]).astype(np.float32))
        out["sizes"].append(_size(original))
        out["times"].append(ms)
    return out


def match_all(feats: Sequence[dict]) -> dict[tuple[int, int], np.ndarray]:
    """Mutual nearest neighbours of every pair (i < j), as in ``--photos`` (binary ORB included)."""
    tensors = [numpy_to_features(f) for f in feats]
    return {
        (i, j): match_features(tensors[i], tensors[j])[0].cpu().numpy().astype(np.uint32)
        for i, j in combinations(range(len(feats)), 2)
    }


def camera_mode(pycolmap: ModuleType, sizes: Sequence[tuple[int, int]]):
    """One shared camera when every image has the same size (a set is photos from one camera:
    without EXIF make and model COLMAP would give each image its own), else COLMAP's AUTO."""
    return pycolmap.CameraMode.SINGLE if len(set(sizes)) == 1 else pycolmap.CameraMode.AUTO


def import_images(pycolmap: ModuleType, db_path: Path, folder: Path, names: Sequence[str], mode) -> list[int]:
    """A fresh database holding the images (focal length priors from EXIF); returns the image
    ids in the order of ``names``."""
    pycolmap.import_images(db_path, folder, mode, list(names))
    with pycolmap.Database.open(db_path) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
    return [ids[n] for n in names]


def check_sizes(pycolmap: ModuleType, db_path: Path, ids: Sequence[int], sizes: Sequence[tuple[int, int]]) -> None:
    """Our reader and COLMAP's must see the same pixels (an EXIF rotation would swap the sides)."""
    with pycolmap.Database.open(db_path) as db:
        for image_id, (w, h) in zip(ids, sizes):
            cam = db.read_camera(db.read_image(image_id).camera_id)
            if (cam.width, cam.height) != (w, h):
                name = db.read_image(image_id).name
                raise EvalError(f"{name}: COLMAP reads {cam.width}x{cam.height}, we read {w}x{h} (EXIF rotation?)")


def write_features(
    pycolmap: ModuleType,
    db_path: Path,
    ids: Sequence[int],
    keypoints: Sequence[np.ndarray],
    matches: dict[tuple[int, int], np.ndarray],
) -> None:
    """Keypoints and raw matches, the way COLMAP's own matcher leaves them for verification."""
    with pycolmap.Database.open(db_path) as db:
        for image_id, k in zip(ids, keypoints):
            db.write_keypoints(image_id, k)
        for (i, j), m in matches.items():
            if len(m):
                db.write_matches(ids[i], ids[j], m)


def sift_database(
    pycolmap: ModuleType, db_path: Path, folder: Path, sources: Sequence[Source], args: argparse.Namespace
) -> None:
    """COLMAP's SIFT on the same images, cameras, resolution limit and budget (COLMAP may give a
    keypoint a second orientation: up to twice the budget)."""
    opts = pycolmap.FeatureExtractionOptions(num_threads=_threads(args))
    opts.max_image_size = args.max_side or -1
    opts.sift.max_num_features = args.max_keypoints
    mode = camera_mode(pycolmap, [_size(load()) for _, load in sources])
    names = [n for n, _ in sources]
    pycolmap.extract_features(db_path, folder, names, mode, extraction_options=opts, device=pycolmap.Device.cpu)


def _size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def _threads(args: argparse.Namespace) -> int:
    return args.threads or -1  # COLMAP: -1 = all cores


# ----------------------------------------------------------------------------- one reconstruction


def reconstruct(
    pycolmap: ModuleType, base_db: Path, folder: Path, work: Path, seed: int, args: argparse.Namespace, sift: bool
):
    """Verification (after matching, for colmap_sift) and incremental mapping on a copy of
    ``base_db`` with one seed; returns the largest model (None: nothing reconstructed) and the
    number of verified pairs."""
    db_path = work / f"seed{seed}.db"
    shutil.copyfile(base_db, db_path)
    pycolmap.set_random_seed(seed)
    two_view = pycolmap.TwoViewGeometryOptions()
    two_view.ransac.random_seed = seed
    if sift:
        match = pycolmap.FeatureMatchingOptions(num_threads=_threads(args))
        pycolmap.match_exhaustive(db_path, match, verification_options=two_view, device=pycolmap.Device.cpu)
    else:
        verifier = pycolmap.GeometricVerifierOptions(num_threads=_threads(args))
        pycolmap.geometric_verification(db_path, verifier, two_view_geometry_options=two_view)
    with pycolmap.Database.open(db_path) as db:
        verified = db.num_verified_image_pairs()
    models = pycolmap.incremental_mapping(db_path, folder, work / f"seed{seed}", _mapper_options(pycolmap, seed, args))
    largest = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    return largest, verified


def _mapper_options(pycolmap: ModuleType, seed: int, args: argparse.Namespace):
    opts = pycolmap.IncrementalPipelineOptions(num_threads=_threads(args), random_seed=seed)
    opts.mapper.random_seed = seed
    opts.triangulation.random_seed = seed
    opts.min_model_size = 3  # small sets: keep the model, the largest is the one reported
    return opts


def run_stats(model, names: Sequence[str], ref: dict[str, Pose], verified: int) -> dict[str, float]:
    """The figures of one seed's run."""
    if model is None:
        stats = {"registered": 0, "points3D": 0, "track_length": math.nan, "reprojection_error": math.nan}
        est = {}
    else:
        stats = {
            "registered": model.num_reg_images(),
            "points3D": model.num_points3D(),
            "track_length": model.compute_mean_track_length(),
            "reprojection_error": model.compute_mean_reprojection_error(),
        }
        est = _model_poses(model)
    stats["verified_pairs"] = verified
    if ref:
        for t, auc in zip(AUC_DEGREES, pose_auc(relative_pose_errors(est, ref, names))):
            stats[f"auc@{t:g}"] = auc
    return stats


def summarize_runs(runs: Sequence[dict[str, float]]) -> dict:
    """Median of every figure over the seeds (of the seeds that have it: a run without a model has
    no track length), min-max of registered images, and the runs."""
    out = {k: _median([r[k] for r in runs]) for k in runs[0]}
    reg = [r["registered"] for r in runs]
    out["registered_min"], out["registered_max"] = min(reg), max(reg)
    out["runs"] = list(runs)
    return out


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


# ----------------------------------------------------------------------------- per set and method


def evaluate_method(
    pycolmap: ModuleType,
    method: Method | None,
    folder: Path,
    sources: Sequence[Source],
    ref: dict[str, Pose],
    args: argparse.Namespace,
    work: Path,
    keep: Path | None = None,
) -> dict:
    """All seeds of one method (None: colmap_sift) on one set: features and matches once, then
    verification and mapping per seed on a copy of that database (each seed's kept in ``keep``)."""
    names = [n for n, _ in sources]
    base = work / "base.db"
    t0 = time.perf_counter()
    pycolmap.Database.open(base).close()  # COLMAP's import and extraction want the file to exist
    if method is None:
        sift_database(pycolmap, base, folder, sources, args)
    else:
        counts = import_features(pycolmap, base, method, folder, sources, args.max_side)
    prepare_s = time.perf_counter() - t0
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        t = time.perf_counter()
        model, verified = reconstruct(pycolmap, base, folder, work, seed, args, sift=method is None)
        runs.append({**run_stats(model, names, ref, verified), "sfm_s": time.perf_counter() - t})
        if keep is not None:
            keep_run(work, seed, model, keep)
    if method is None:
        counts = database_counts(pycolmap, work / f"seed{args.seed}.db")
    return {**summarize_runs(runs), **counts, "prepare_s": prepare_s}


def keep_run(work: Path, seed: int, model, dest: Path) -> None:
    """One seed's verified database and largest model (``--keep-models``), out of the temporary
    folder: a map built from this front end's features that COLMAP's GUI or pycolmap opens."""
    run = dest / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / f"seed{seed}.db", run / "database.db")
    if model is not None:
        model.write(run)  # cameras.bin, images.bin, points3D.bin


def _slug(method: Method | None) -> str:
    """A method's folder name: its spec with anything but letters, digits, ``_.=-`` as ``_``."""
    return COLMAP_SIFT if method is None else re.sub(r"[^A-Za-z0-9_.=-]+", "_", method.spec)


def import_features(
    pycolmap: ModuleType, db_path: Path, method: Method, folder: Path, sources: Sequence[Source], max_side: int | None
) -> dict[str, float]:
    """Our features and matches into a fresh database; returns their counts and extraction time."""
    x = extract_set(method, sources, max_side)
    ids = import_images(pycolmap, db_path, folder, [n for n, _ in sources], camera_mode(pycolmap, x["sizes"]))
    check_sizes(pycolmap, db_path, ids, x["sizes"])
    matches = match_all(x["feats"])
    write_features(pycolmap, db_path, ids, x["keypoints"], matches)
    return {
        "keypoints": float(np.mean([len(k) for k in x["keypoints"]])),
        "matches": float(np.mean([len(m) for m in matches.values()])),
        "extract_ms": float(np.median(x["times"])),
    }


def database_counts(pycolmap: ModuleType, db_path: Path) -> dict[str, float]:
    """Keypoints per image and raw matches per pair of a database COLMAP filled itself."""
    with pycolmap.Database.open(db_path) as db:
        images, pairs = max(db.num_images(), 1), db.num_images() * (db.num_images() - 1) // 2
        return {"keypoints": db.num_keypoints() / images, "matches": db.num_matches() / max(pairs, 1)}


def set_sources(folder: Path) -> list[Source]:
    """The set's photos; SfM needs two at least."""
    sources = photo_sources(folder)
    if len(sources) < MIN_IMAGES:
        raise EvalError(f"{folder}: {len(sources)} image(s); a set needs at least {MIN_IMAGES}")
    return sources


def evaluate_set(
    pycolmap: ModuleType, name: str, folder: Path, methods: list[tuple[str, Method | None]], args: argparse.Namespace
) -> dict:
    """Every method on one set; each gets a fresh temporary folder (databases, models)."""
    sources = set_sources(folder)
    ref_source, ref = reference_poses(folder, pycolmap)
    results = {}
    for label, method in methods:
        with tempfile.TemporaryDirectory(prefix="goodpoint-multiview-") as tmp:
            keep = Path(args.output_dir) / "models" / name / _slug(method) if args.keep_models else None
            results[label] = evaluate_method(pycolmap, method, folder, sources, ref, args, Path(tmp), keep)
        print(f"  {name} / {label}: {format_summary(results[label], len(sources))}", flush=True)
    return {"path": str(folder), "images": len(sources), "reference_poses": ref_source, "methods": results}


def evaluate_multiview(args: argparse.Namespace) -> dict:
    """The report of every set and method (the results.json of ``--multiview``)."""
    pycolmap = load_pycolmap()
    sets = image_sets(Path(args.multiview))
    for _, folder in sets:  # every set checked before hours of work on the others
        set_sources(folder)
    built = iter(build_methods(args, [s for s in args.methods if s.lower() != COLMAP_SIFT]))
    methods: list[tuple[str, Method | None]] = []
    for spec in args.methods:  # in the order given, colmap_sift (None) included
        m = None if spec.lower() == COLMAP_SIFT else next(built)
        methods.append((m.spec if m else COLMAP_SIFT, m))
    report = {
        "source": f"multiview:{args.multiview}",
        "max_keypoints": args.max_keypoints,
        "max_side": args.max_side,
        "seeds": list(range(args.seed, args.seed + args.seeds)),
        "threads": args.threads,
        "pycolmap": pycolmap.__version__,
        "matching": "mutual nearest neighbours (vo.matching.match_features, per detector set for MD-Net); "
        "colmap_sift: COLMAP's SIFT matcher (ratio 0.8, cross-check)",
        "sets": {},
    }
    for name, folder in sets:
        report["sets"][name] = evaluate_set(pycolmap, name, folder, methods, args)
    return report


# ----------------------------------------------------------------------------- reporting


def format_summary(s: dict, images: int) -> str:
    auc = f", AUC@10 {s['auc@10']:.3f}" if "auc@10" in s else ""
    return (
        f"{s['registered']:.0f}/{images} registered ({s['registered_min']}-{s['registered_max']}), "
        f"{s['points3D']:.0f} points, track length {_fmt(s['track_length'], 2)}, "
        f"reprojection {_fmt(s['reprojection_error'], 2)} px{auc}"
    )


def markdown(report: dict) -> str:
    """One table per set."""
    size = f"max side {report['max_side']}" if report["max_side"] else "images at their own size"
    lines = [
        f"Source: {report['source']}, budget {report['max_keypoints']} keypoints, {size}, "
        f"COLMAP (pycolmap {report['pycolmap']}) incremental mapping, median over seeds {report['seeds']} "
        f"(registered: median and min-max), {report['threads'] or 'all'} thread(s). Matching: {report['matching']}.",
    ]
    for name, s in report["sets"].items():
        lines += ["", *set_table(name, s)]
    return "\n".join(lines) + "\n"


def set_table(name: str, s: dict) -> list[str]:
    ref = s["reference_poses"]
    head = ["method", "registered", "3D points", "track length", "reproj. px"]
    head += [f"AUC@{t:g}" for t in AUC_DEGREES] if ref else []
    head += ["kpts", "matches/pair", "verified pairs", "extract ms", "SfM s"]
    lines = [
        f"### {name} ({s['images']} images; reference poses: {ref or 'none'})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, r in s["methods"].items():
        cells = [label, f"{r['registered']:.0f}/{s['images']} ({r['registered_min']}-{r['registered_max']})"]
        cells += [f"{r['points3D']:.0f}", _fmt(r["track_length"], 2), _fmt(r["reprojection_error"], 2)]
        cells += [_fmt(r[f"auc@{t:g}"]) for t in AUC_DEGREES] if ref else []
        cells += [_fmt(r["keypoints"], 0), _fmt(r["matches"], 0), f"{r['verified_pairs']:.0f}"]
        cells += [_fmt(r.get("extract_ms", math.nan), 0), _fmt(r["sfm_s"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
