"""What ``pip install .`` ships, read from a real wheel.

A top-level ``training`` package in site-packages collides with any other module of that name and
ships training code under a generic name; setup.py installs it as ``goodpoint_ros.training``. The
wheel is built from a copy of the files git knows (tracked, or new and not ignored), so stale
``build/`` folders of the checkout neither leak into it nor hide a mistake.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setup.py reads; the rest of the checkout (tests, benches, data, runs) is not packaged.
PACKAGED = ("setup.py", "setup.cfg", "pyproject.toml", "package.xml", "resource", "launch", "config")
PACKAGED += ("goodpoint_ros", "training")
NOT_PACKAGED = ("resume/",)  # example run folders, data rather than code


def _source_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of the package's source files")
    return [
        f
        for f in out.splitlines()
        if f.split("/")[0] in PACKAGED and not f.startswith(NOT_PACKAGED) and (ROOT / f).is_file()
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (path,) = out.glob("goodpoint_ros-*.whl")
    return path


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_only_goodpoint_ros_at_the_top_level(wheel):
    tops = {n.split("/")[0] for n in _names(wheel)}
    extra = {t for t in tops if t != "goodpoint_ros" and not t.endswith((".dist-info", ".data"))}
    assert not extra, f"the wheel installs top-level {sorted(extra)} into site-packages"
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in z.namelist() if n.endswith(".dist-info/top_level.txt"))
        assert z.read(info).decode().split() == ["goodpoint_ros"]


def test_training_ships_under_the_package_with_its_configs(wheel):
    names = set(_names(wheel))
    assert "goodpoint_ros/training/train.py" in names and "goodpoint_ros/training/evaluate.py" in names
    configs = {p.name for p in (ROOT / "training" / "configs").glob("*.yaml")}
    assert configs and {f"goodpoint_ros/training/configs/{c}" for c in configs} <= names
    weights = {p.name for p in (ROOT / "goodpoint_ros" / "weights").glob("*.pt")}
    assert {f"goodpoint_ros/weights/{w}" for w in weights} <= names
    assert not any(n.startswith("goodpoint_ros/data/") for n in names)


def test_console_scripts_point_into_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        lines = z.read(info).decode().splitlines()
    scripts = dict(line.split(" = ") for line in lines if " = " in line)
    assert scripts["goodpoint-train"] == "goodpoint_ros.cli.entry_points:train"
    assert scripts["extractor"] == "goodpoint_ros.cli.entry_points:extractor"
    names = set(_names(wheel))
    assert "goodpoint_ros/cli/entry_points.py" in names
    from goodpoint_ros.cli import entry_points

    assert entry_points.train.target == "goodpoint_ros.training.train:main"
    for script in scripts.values():
        door_module, door = script.split(":")
        assert door_module == "goodpoint_ros.cli.entry_points"
        module, func = getattr(entry_points, door).target.split(":")
        path = module.replace(".", "/")
        assert f"{path}.py" in names or f"{path}/__init__.py" in names, script
        assert callable(getattr(importlib.import_module(module), func)), script


def test_a_missing_dependency_is_one_line_not_a_traceback():
    """``ros2 run goodpoint_ros extractor`` on a machine without PyTorch (rosdep installs no
    torch): one line naming the package, exit status 2."""
    code = "import sys; sys.modules['torch'] = None\nfrom goodpoint_ros.cli.entry_points import extractor\nextractor()"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "'torch' is not installed" in lines[0] and lines[0].startswith("goodpoint_extractor:")


@pytest.mark.slow
def test_installed_training_imports_and_finds_its_configs(wheel, tmp_path):
    """The unpacked wheel first on the path, run outside the checkout: the relative imports of
    training/ resolve inside goodpoint_ros.training and a shipped config is found by name."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = (
        "import goodpoint_ros.training.train as t, goodpoint_ros.training.evaluate as e\n"
        "print(t.__file__); print(e.__file__); print(t.config_path('goodpoint_small'))\n"
        "print(t.load_config('mdnet_small.yaml', [])['model']['name'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.split()
    assert all(Path(p).is_relative_to(site) for p in lines[:3]), lines
    assert lines[2].endswith("goodpoint_ros/training/configs/goodpoint_small.yaml") and lines[3] == "mdnet_small"
