"""Unreadable weights files: one CheckpointError line naming the file and the problem, never torch's
``weights_only=False`` advice; the CLIs print that line and exit 2. Run folders: atomic saves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from goodpoint_ros.models.checkpoint import WEIGHTS_DIR, CheckpointError, load_model, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHIPPED = WEIGHTS_DIR / "goodpoint_small.pt"


class _Payload:
    """A pickle that would run a command when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the problem its message must name)."""
    good = SHIPPED.read_bytes()
    files: dict[str, tuple[bytes | None, str]] = {
        "empty": (b"", "empty file"),
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "truncated_head": (good[:100], "truncated or corrupt"),
        "random": (np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes(), "not a torch weights file"),
        "text": (b"hello world\n", "not a torch weights file"),
    }
    zeroed = bytearray(good)
    zeroed[len(good) // 2 : len(good) // 2 + 4096] = bytes(4096)
    files["zeroed_4k"] = (bytes(zeroed), "fails its CRC check")
    out = {}
    for name, (blob, reason) in files.items():
        (tmp / f"{name}.pt").write_bytes(blob)
        out[name] = (tmp / f"{name}.pt", reason)
    torch.save({"weights": np.zeros(3)}, tmp / "numpy.pt")
    out["numpy"] = (tmp / "numpy.pt", "holds pickled Python objects")
    torch.save({"x": _Payload(tmp / "pwned")}, tmp / "code.pt")
    out["code"] = (tmp / "code.pt", r"refused: it holds pickled Python objects \(posix.system\)")
    torch.save({"format": "goodpoint_ros/train/1", "state_dict": {}}, tmp / "train.pt")
    out["training_checkpoint"] = (tmp / "train.pt", "a training checkpoint, not weights")
    torch.save({"a": 1}, tmp / "other_dict.pt")
    out["foreign_dict"] = (tmp / "other_dict.pt", "not a goodpoint_ros weights file")
    out["other_model"] = (WEIGHTS_DIR / "mdnet_small.pt", "holds a 'mdnet_small' model, but 'goodpoint_small'")
    ckpt = read_checkpoint(SHIPPED)
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = ckpt["state_dict"][first].clone().fill_(float("nan"))
    torch.save(ckpt, tmp / "nan.pt")
    out["nan"] = (tmp / "nan.pt", "non-finite weights")
    out["missing"] = (tmp / "missing.pt", "no such weights file")
    return out


KINDS = [
    "empty", "truncated", "truncated_head", "random", "text", "zeroed_4k", "numpy", "code",
    "training_checkpoint", "foreign_dict", "other_model", "nan", "missing",
]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_every_unreadable_weights_file_is_one_clear_line(tmp_path: Path, kind: str):
    path, reason = bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=reason) as e:
        load_model("goodpoint_small", path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert "weights_only" not in msg and "Re-run" not in msg, msg
    assert not (tmp_path / "pwned").exists()  # the payload never ran


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


@pytest.mark.slow
def test_clis_print_one_line_and_exit_2(tmp_path: Path, photo):
    import cv2

    files = bad_files(tmp_path)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), photo[..., ::-1])
    code, truncated = str(files["code"][0]), str(files["truncated"][0])
    cases = {
        "goodpoint-extract": (
            "import sys; from goodpoint_ros.cli.extract import main; sys.exit(main(sys.argv[1:]))",
            ["--model", "goodpoint_small", "--weights", code, str(img), "-o", str(tmp_path / "o.npz")],
            code,
        ),
        "goodpoint-match": (
            "import sys; from goodpoint_ros.cli.match import main; sys.exit(main(sys.argv[1:]))",
            ["--model", "goodpoint_small", "--weights", truncated, str(img), str(img)],
            truncated,
        ),
        "goodpoint-export": (
            "import sys; from goodpoint_ros.backends.export import main; sys.exit(main(sys.argv[1:]))",
            [str(tmp_path / "m.onnx"), "--model", "goodpoint_small", "--weights", code],
            code,
        ),
        "goodpoint-eval": (
            "import sys; from goodpoint_ros.training.evaluate import main; sys.exit(main(sys.argv[1:]))",
            [
                "--photos",
                str(tmp_path),
                "--pairs",
                "1",
                "--methods",
                f"goodpoint_small:{truncated}",
                "--output-dir",
                str(tmp_path / "eval"),
            ],
            truncated,
        ),  # fmt: skip
    }
    for tool, (script, argv, path) in cases.items():
        r = run_cli(script, *argv)
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and len(lines) == 1, (tool, r.returncode, r.stderr)
        assert path in lines[0] and "weights_only" not in r.stderr, (tool, lines)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_cli_refuses_an_image_above_max_pixels(tmp_path: Path):
    import cv2

    img = tmp_path / "big.png"
    cv2.imwrite(str(img), np.zeros((100, 120), np.uint8))
    script = "import sys; from goodpoint_ros.cli.extract import main; sys.exit(main(sys.argv[1:]))"
    r = run_cli(script, "--weights", "random", "--max-pixels", "10000", str(img), "-o", str(tmp_path / "o.npz"))
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"error: {img}: PNG 120x100 has 12000 pixels, more than max_pixels 10000 (refused before decoding)"
    ], r.stderr


def test_atomic_save_modes_failed_write_and_no_temporaries(tmp_path: Path):
    from goodpoint_ros.models.checkpoint import atomic_torch_save

    old = os.umask(0o022)
    try:
        atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pt")
        os.umask(0o027)
        atomic_torch_save({"a": torch.ones(2)}, tmp_path / "y.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "x.pt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "y.pt").stat().st_mode & 0o777 == 0o640
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails half-way through the write
        atomic_torch_save({"a": torch.zeros(2), "f": lambda: 0}, tmp_path / "x.pt")
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["a"], torch.ones(2))  # intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt", "y.pt"]  # the temporary is gone


def test_remove_temporaries_takes_only_unfinished_writes(tmp_path: Path):
    from goodpoint_ros.models.checkpoint import remove_temporaries

    stale = [".checkpoint.pt.tmp-123-0a1b2c3d", ".checkpoint.pt.k2j4_x9a", ".checkpoint_0000200.pt.abcdefgh"]
    keep = ["checkpoint.pt", "model.pt", ".checkpoint.pt", ".hidden", "notes.pt.txt", "log.csv"]
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in remove_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_temporaries(tmp_path / "missing") == []
