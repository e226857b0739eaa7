"""Build a reproducible training set of real photographs that are available offline.

Sources (DESIGN section 4): Debian packages fetched with ``apt-get download`` into a cache and
unpacked with ``dpkg -x`` (no root install needed; a package that is already installed is read
from its installed files instead), optionally the photos packed in gcompris-qt-data's Qt ``.rcc``
bundles, and scikit-image's bundled photos.

Pipeline: collect jpg/png/webp -> decode -> keep min side >= ``--min-side`` -> drop non-photos
(transparent cut-outs and cartoons, too few distinct grey levels or corners: logos, diagrams,
flat wallpapers) -> drop duplicates
(exact content hash, then a 64-bit difference hash of the image within a Hamming radius, which
also catches the same wallpaper at several resolutions) -> resize to max side ``--max-side`` ->
deterministic split into ``train/`` and ``heldout/`` by a hash of a *group* key, so that stereo
pairs, left/right sequences and wallpaper variants never straddle the split -> ``manifest.csv``.

    .venv/bin/python training/build_dataset.py --out data/photos
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PACKAGES = (
    "opencv-doc",
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
    "sway-backgrounds",
    "gnome-backgrounds",
    "mrpt-common",
    "gcompris-qt-data",
)
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")
# Paths that hold documentation figures, text, synthetic shapes, ground-truth maps, screenshots,
# puzzles pasted over paintings: not photographs (checked by looking at montages of the output).
SKIP_PATTERNS = (
    r"/opencv4/html/",
    r"/examples/text/",
    r"/shape/data/",
    r"/trimaps/",
    r"gt\.png$",
    r"/(digits|cards|ml|ellipses|detect_blob|pic\d|text\w*|imagetext\w*)\.\w+$",
    r"/screenshots?[./]",
    r"/icons?/",
    r"logo",
    r"babyshapes",
    r"^/usr/share/doc/html/",  # application manuals: screenshots
)
# scikit-image files that are synthetic or not natural images.
SKIMAGE_SKIP = {"logo", "phantom", "chessboard_GRAY", "chessboard_RGB", "color", "horse", "text", "clock_motion"}


@dataclass
class Candidate:
    package: str
    source: str  # path inside the package (or resource path inside an .rcc bundle)
    data: bytes


class DatasetError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- collection


def installed_files(package: str) -> list[Path] | None:
    """Files of an installed Debian package (``dpkg -L``), or None if it is not installed."""
    try:
        res = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    if res.returncode != 0:
        return None
    return [Path(p) for p in res.stdout.splitlines() if Path(p).is_file()]


def unpack_package(package: str, cache: Path) -> Path | None:
    """Download ``package``'s .deb into ``cache`` (once) and unpack it; None if unavailable."""
    root = cache / "unpacked" / package
    if (root / ".done").exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        res = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True, check=False)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            print(f"  {package}: apt-get download failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
    (root / ".done").touch()
    return root


def rcc_files(data: bytes) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file in a Qt binary resource bundle (``rcc -binary`` format).

    Layout (Qt's rcc.cpp): magic ``qres``, then big-endian u32 version, tree, data and names
    offsets. A tree node is 14 bytes (v1) or 22 (v2+: plus a u64 modification time): name
    offset u32, flags u16, then for a directory child count u32 + first child u32, for a file
    locale u32 + data offset u32. Names are u16 length, u32 hash, UTF-16BE; data is u32 length
    then bytes, zlib-compressed with a u32 size prefix when flag 1 is set (flag 4 = zstd: skipped).
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle")
    version, tree, payload, names = (int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(4))
    node_size = 14 if version == 1 else 22

    def u32(off: int) -> int:
        return int.from_bytes(data[off : off + 4], "big")

    def name(off: int) -> str:
        n = int.from_bytes(data[names + off : names + off + 2], "big")
        return data[names + off + 6 : names + off + 6 + 2 * n].decode("utf-16-be", errors="replace")

    out: list[tuple[str, bytes]] = []
    stack = [(0, "")]
    while stack:
        node, prefix = stack.pop()
        base = tree + node * node_size
        flags = int.from_bytes(data[base + 4 : base + 6], "big")
        path = f"{prefix}/{name(u32(base))}" if node else ""
        if flags & 2:  # directory
            count, first = u32(base + 6), u32(base + 10)
            stack += [(first + i, path) for i in range(count)]
            continue
        off = payload + u32(base + 10)
        blob = data[off + 4 : off + 4 + u32(off)]
        if flags & 4:
            continue
        if flags & 1:
            try:
                blob = zlib.decompress(blob[4:])
            except zlib.error:
                continue
        out.append((path, blob))
    return out


def collect_package(package: str, cache: Path) -> list[Candidate]:
    files = installed_files(package)
    root = Path("/")
    if files is None:
        unpacked = unpack_package(package, cache)
        if unpacked is None:
            return []
        root = unpacked
        files = [p for p in unpacked.rglob("*") if p.is_file()]
    out = []
    for f in sorted(files):
        rel = "/" + str(f.relative_to(root)).lstrip("/")
        if f.suffix.lower() == ".rcc":
            try:
                members = rcc_files(f.read_bytes())
            except (ValueError, IndexError) as exc:
                print(f"  {package}: skipping {rel}: {exc}", file=sys.stderr)
                continue
            out += [
                Candidate(package, f"{rel}:{p}", b)
                for p, b in members
                if p.lower().endswith(IMAGE_EXT) and not any(re.search(s, p.lower()) for s in SKIP_PATTERNS)
            ]
        elif f.suffix.lower() in IMAGE_EXT and not any(re.search(s, rel.lower()) for s in SKIP_PATTERNS):
            out.append(Candidate(package, rel, f.read_bytes()))
    return out


def collect_skimage() -> list[Candidate]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [
        Candidate("scikit-image", f.name, f.read_bytes())
        for f in sorted(root.iterdir())
        if f.suffix.lower() in IMAGE_EXT and f.stem not in SKIMAGE_SKIP
    ]


def collect_folder(folder: Path) -> list[Candidate]:
    """Photos of a local folder (recursively), e.g. a robot's own recordings."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    return [
        Candidate(f"folder:{folder.name}", "/" + str(f.relative_to(folder)), f.read_bytes())
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.suffix.lower() in IMAGE_EXT
    ]


# ----------------------------------------------------------------------------- filtering


def decode(data: bytes) -> tuple[np.ndarray | None, float]:
    """Bytes -> (HxW or HxWx3 uint8 with alpha dropped and 16-bit scaled, or None if
    undecodable; the fraction of transparent pixels, > 0 for cut-outs and cartoons)."""
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if im is None or im.ndim not in (2, 3):
        return None, 0.0
    if im.dtype == np.uint16:
        im = (im / 257.0).round().astype(np.uint8)
    elif im.dtype != np.uint8:
        return None, 0.0
    transparent = 0.0
    if im.ndim == 3:
        if im.shape[2] == 4:
            transparent = float((im[:, :, 3] < 250).mean())
            im = im[:, :, :3]
        elif im.shape[2] == 1:
            im = im[:, :, 0]
    if im.ndim == 3 and np.array_equal(im[:, :, 0], im[:, :, 1]) and np.array_equal(im[:, :, 1], im[:, :, 2]):
        im = im[:, :, 0]
    return im, transparent


def resize_max(im: np.ndarray, max_side: int) -> np.ndarray:
    s = max_side / max(im.shape[:2])
    if s >= 1.0:
        return im
    size = (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s)))
    return cv2.resize(im, size, interpolation=cv2.INTER_AREA)


def gray(im: np.ndarray) -> np.ndarray:
    return im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)


def photo_reason(g: np.ndarray, min_levels: int, min_corners: int) -> str | None:
    """Why a (resized) grey image is not a useful photo, or None if it is."""
    levels = int(np.count_nonzero(np.bincount(g.ravel(), minlength=256) > g.size * 1e-4))
    if levels < min_levels:
        return f"only {levels} grey levels"
    corners = len(cv2.FastFeatureDetector_create(threshold=20).detect(g))
    if corners < min_corners:
        return f"only {corners} corners"
    return None


def dhash(g: np.ndarray) -> np.ndarray:
    """64-bit difference hash (horizontal gradient signs of a 9x8 thumbnail) as 64 bools."""
    t = cv2.resize(g, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    return (t[:, 1:] > t[:, :-1]).ravel()


def group_key(c: Candidate) -> str:
    """Images that show the same scene share a key: stereo/sequence numbering and left/right
    are stripped from the file stem; wallpaper packages group by their wallpaper folder."""
    p = c.source.split(":")[-1]
    if "/contents/images" in p:  # plasma: <name>/contents/images/<WxH>.png
        return f"{c.package}:{p.split('/contents/')[0]}"
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    stem = re.sub(r"(?<=[a-z0-9])[LRAB]$", "", Path(p).stem)  # aloeL/aloeR, leuvenA/leuvenB
    stem = re.sub(r"(left|right|\d+|[-_ .])", "", stem.lower())  # left01/right01 -> "" (one group)
    return f"{c.package}:{parent}:{stem}"


# ----------------------------------------------------------------------------- main


def build(args: argparse.Namespace) -> dict:
    out, cache = Path(args.out), Path(args.cache)
    candidates: list[Candidate] = []
    for pkg in args.packages:
        got = collect_package(pkg, cache)
        print(f"{pkg}: {len(got)} candidate files")
        candidates += got
    if not args.no_skimage:
        got = collect_skimage()
        print(f"scikit-image: {len(got)} candidate files")
        candidates += got
    for folder in args.folders:
        got = collect_folder(Path(folder))
        print(f"{folder}: {len(got)} candidate files")
        candidates += got
    if not candidates:
        raise DatasetError("no images found (no package could be downloaded or found installed, no folder given)")

    # Wallpaper folders ship one picture at many resolutions: keep the largest file per folder.
    best: dict[str, Candidate] = {}
    for c in candidates:
        key = c.source.rsplit("/", 1)[0] if "/contents/images" in c.source else f"{c.package}|{c.source}"
        if key not in best or len(c.data) > len(best[key].data):
            best[key] = c
    candidates = sorted(best.values(), key=lambda c: (c.package, c.source))

    kept: list[tuple[Candidate, np.ndarray, str]] = []
    seen_sha: set[str] = set()
    hashes: list[np.ndarray] = []
    drops: dict[str, int] = {}
    for c in candidates:
        sha = hashlib.sha1(c.data).hexdigest()
        reason = None
        im, transparent = decode(c.data)
        if sha in seen_sha:
            reason = "duplicate file"
        elif im is None:
            reason = "undecodable"
        elif transparent > args.max_transparent:
            reason = "cut-out (transparent pixels)"
        elif min(im.shape[:2]) < args.min_side:
            reason = "too small"
        else:
            im = resize_max(im, args.max_side)
            g = gray(im)
            reason = photo_reason(g, args.min_levels, args.min_corners)
            if reason is None:
                h = dhash(g)
                if hashes and int((np.stack(hashes) != h).sum(1).min()) <= args.hash_radius:
                    reason = "near duplicate"
                else:
                    hashes.append(h)
        seen_sha.add(sha)
        if reason is not None:
            key = "not a photo (" + reason.split(" ", 2)[2] + ")" if reason.startswith("only") else reason
            drops[key] = drops.get(key, 0) + 1
            if args.verbose:
                print(f"  drop {c.package}:{c.source}: {reason}")
            continue
        kept.append((c, im, sha))

    # Split by group: groups are taken in the order of their key's hash until the held-out
    # share is reached, so the split depends only on the set of images, not on the file order.
    groups: dict[str, list[int]] = {}
    for i, (c, _, _) in enumerate(kept):
        groups.setdefault(group_key(c), []).append(i)
    order = sorted(groups, key=lambda k: hashlib.sha1(f"{args.seed}:{k}".encode()).hexdigest())
    if not kept:
        raise DatasetError(f"no image passed the filters (dropped: {drops})")
    # At least --min-heldout images held out, but never more than half: training keeps the rest.
    target = min(max(args.min_heldout, round(args.heldout * len(kept))), len(kept) // 2)
    heldout: set[int] = set()
    for k in order:
        if len(heldout) >= target:
            break
        heldout.update(groups[k])

    if out.exists() and args.clean:
        for sub in ("train", "heldout"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for sub in ("train", "heldout"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (c, im, sha) in enumerate(kept):
        split = "heldout" if i in heldout else "train"
        stem = re.sub(r"[^A-Za-z0-9]+", "_", f"{c.package}_{Path(c.source.split(':')[-1]).stem}")[:60]
        name = f"{stem}_{sha[:8]}.{args.format}"
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if args.format == "jpg" else []
        if not cv2.imwrite(str(out / split / name), im, params):
            raise DatasetError(f"could not write {out / split / name}")
        rows.append(
            {
                "split": split,
                "file": f"{split}/{name}",
                "package": c.package,
                "source": c.source,
                "sha1": sha,
                "group": group_key(c),
                "height": im.shape[0],
                "width": im.shape[1],
            }
        )
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {
        "train": sum(r["split"] == "train" for r in rows),
        "heldout": sum(r["split"] == "heldout" for r in rows),
        "groups": len(groups),
        "dropped": drops,
        "per_package": {p: sum(r["package"] == p for r in rows) for p in sorted({r["package"] for r in rows})},
    }
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/photos", help="output folder (train/, heldout/, manifest.csv)")
    p.add_argument("--cache", default="data/deb_cache", help="where .deb files are downloaded and unpacked")
    p.add_argument("--packages", nargs="*", default=list(PACKAGES), help="Debian packages to read photos from")
    p.add_argument("--no-skimage", action="store_true", help="leave out scikit-image's bundled photos")
    p.add_argument("--folders", nargs="*", default=[], help="extra local folders of photos (searched recursively)")
    p.add_argument("--min-side", type=int, default=240, help="drop images whose shorter side is smaller")
    p.add_argument("--max-side", type=int, default=640, help="downscale so the longer side is at most this")
    p.add_argument("--min-levels", type=int, default=48, help="drop images with fewer distinct grey levels")
    p.add_argument("--min-corners", type=int, default=100, help="drop images with fewer FAST corners")
    p.add_argument("--max-transparent", type=float, default=0.01, help="drop images with more transparent pixels")
    p.add_argument("--hash-radius", type=int, default=4, help="dHash Hamming distance that counts as duplicate")
    p.add_argument("--heldout", type=float, default=0.18, help="share of images held out from training")
    p.add_argument("--min-heldout", type=int, default=30, help="hold out at least this many images")
    p.add_argument("--seed", default="goodpoint", help="salt of the split hash")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="output format (jpg: quality 95)")
    p.add_argument("--clean", action="store_true", help="delete existing train/ and heldout/ first")
    p.add_argument("-v", "--verbose", action="store_true", help="print every dropped file and why")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0.0 < args.heldout < 1.0:
        print("error: --heldout must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        summary = build(args)
    except (DatasetError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"train {summary['train']}, heldout {summary['heldout']} images ({summary['groups']} groups) in {args.out}; "
        f"per package {summary['per_package']}; dropped {summary['dropped']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
