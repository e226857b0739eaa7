"""package.xml declares a rosdep key for every import of what the package installs.

The sources are parsed (ast), every third-party top-level import is mapped to its rosdep key, and
a key missing from package.xml's exec/run dependencies fails the test. Optional imports are allowed
only when package.xml's comment names them.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# import name -> rosdep key (rosdistro's rosdep/base.yaml and python.yaml, or a ROS package name)
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "skimage": "python3-skimage",
    "tqdm": "python3-tqdm",
    "rosbags": "python3-rosbags-pip",
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "ament_index_python": "ament_index_python",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs",
    "nav_msgs": "nav_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "launch": "launch",
    "launch_ros": "launch_ros",
}
# imports package.xml deliberately leaves out; its comment must say why (name them)
OPTIONAL = {"torch", "onnxruntime", "onnx", "tensorboard", "pycolmap"}
OWN = {"goodpoint_ros", "training"}


def installed_sources() -> list[Path]:
    """What setup.py installs: the goodpoint_ros package, training (while it is installed) and the launch files."""
    files = sorted((ROOT / "goodpoint_ros").rglob("*.py")) + sorted((ROOT / "launch").glob("*.py"))
    if '"training"' in (ROOT / "setup.py").read_text():
        files += sorted((ROOT / "training").rglob("*.py"))
    return files


def third_party_imports(files: list[Path]) -> dict[str, set[str]]:
    """Top-level module -> files importing it (stdlib and the package's own modules left out)."""
    found: dict[str, set[str]] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN:
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def declared(package_xml: str) -> set[str]:
    root = ET.fromstring(package_xml)
    return {e.text.strip() for tag in ("exec_depend", "depend", "run_depend") for e in root.iter(tag) if e.text}


def comments(package_xml: str) -> str:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    root = ET.fromstring(package_xml, parser=parser)
    return " ".join(e.text or "" for e in root.iter() if e.tag is ET.Comment)


def undeclared(package_xml: str, imports: dict[str, set[str]]) -> dict[str, str]:
    """import -> the problem, for every import package.xml does not cover."""
    keys, notes = declared(package_xml), comments(package_xml)
    problems = {}
    for name, where in sorted(imports.items()):
        if name in OPTIONAL:
            if name not in notes:
                problems[name] = f"optional but not named in package.xml's comment ({sorted(where)[0]})"
        elif name not in ROSDEP_KEYS:
            problems[name] = f"no rosdep key known for it ({sorted(where)[0]}): add it to ROSDEP_KEYS and package.xml"
        elif ROSDEP_KEYS[name] not in keys:
            problems[name] = f"<exec_depend>{ROSDEP_KEYS[name]}</exec_depend> missing ({sorted(where)[0]})"
    return problems


@pytest.fixture(scope="module")
def package_xml() -> str:
    return (ROOT / "package.xml").read_text()


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    return third_party_imports(installed_sources())


def test_every_import_of_the_installed_code_has_a_declared_key(package_xml, imports):
    assert {"rclpy", "rcl_interfaces", "ament_index_python", "numpy", "cv2", "rosbags"} <= set(imports)
    assert undeclared(package_xml, imports) == {}


@pytest.mark.parametrize("key", ["rcl_interfaces", "ament_index_python", "python3-rosbags-pip", "python3-opencv"])
def test_removing_a_dependency_fails_the_check(package_xml, imports, key):
    cut = package_xml.replace(f"<exec_depend>{key}</exec_depend>", "")
    assert cut != package_xml
    problems = undeclared(cut, imports)
    assert any(key in p for p in problems.values()), problems


def test_torch_stays_out_with_the_reason(package_xml):
    assert "python3-torch" not in declared(package_xml)
    notes = comments(package_xml)
    assert "Jammy" in notes and "1.13" in notes and "weights_only" in notes


def test_license_file_matches_package_xml(package_xml):
    root = ET.fromstring(package_xml)
    lic = root.find("license")
    assert lic.text == "Apache-2.0" and lic.get("file") == "LICENSE"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_minimum_torch_check_gives_one_line():
    from goodpoint_ros.node.startup import MIN_TORCH, torch_problem

    assert torch_problem("1.8.1") and "1.13" in torch_problem("1.8.1") and "\n" not in torch_problem("1.8.1")
    assert torch_problem("2.13.0+cpu") is None and MIN_TORCH == (1, 13)
    assert torch_problem() is None  # the torch installed here is recent enough
