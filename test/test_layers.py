"""The layering rules of docs/architecture.md, read from the source (ast): the core never imports
rclpy, every module under ros/ is an rclpy module, and the package's modules import each other
without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "goodpoint_ros"
ROS_NAMES = ("rclpy", "sensor_msgs", "std_msgs", "nav_msgs", "geometry_msgs", "diagnostic_msgs", "rcl_interfaces")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import statement of ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.col_offset == 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.col_offset == 0))
            out += [(f"{node.module}.{a.name}", node.col_offset == 0) for a in node.names]
    return out


def test_the_core_never_imports_rclpy_and_ros_holds_only_ros_modules():
    for name, path in _modules().items():
        ros = {m.split(".")[0] for m, _ in _imports(path)} & set(ROS_NAMES)
        if name.startswith("goodpoint_ros.ros."):
            assert ros, f"{name} imports no ROS module: it belongs in the core"
        elif name != "goodpoint_ros.ros":
            assert not ros, f"core module {name} imports {sorted(ros)}"


def test_no_import_cycle_among_the_package_modules():
    mods = _modules()
    graph = {
        name: {m for m, top in _imports(path) if top and m in mods and m != name and not name.startswith(m + ".")}
        for name, path in mods.items()
    }
    state: dict[str, int] = {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph[u]):
            assert state.get(v) != 1, "import cycle: " + " -> ".join(stack[stack.index(v) :] + [u, v])
            if v not in state:
                visit(v, stack + [u])
        state[u] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_package_modules_import_each_other_at_the_top():
    """docs/architecture.md: an import inside a function is for an optional heavy dependency, never
    for one of the package's own modules; the exception is ``settings.build``, which imports torch's
    side (the backends, the pipeline) only after the torch version check, so that the parameter
    table's readers stay torch-free."""
    allowed = {
        ("goodpoint_ros.settings", "goodpoint_ros.backends"),
        ("goodpoint_ros.settings", "goodpoint_ros.backends.make_extractor"),
        ("goodpoint_ros.settings", "goodpoint_ros.vo.pipeline"),
        ("goodpoint_ros.settings", "goodpoint_ros.device"),
    }
    late = {
        (name, m)
        for name, path in _modules().items()
        for m, top in _imports(path)
        if not top and m.split(".")[0] == "goodpoint_ros" and m in _modules()
    }
    assert late <= allowed, sorted(late - allowed)


def test_training_is_imported_under_one_name():
    """``training/`` installs as ``goodpoint_ros.training``; importing it as ``training`` from a
    checkout would make a second copy of its task registry."""
    import subprocess

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "training/train.py" in listed
    for path in (ROOT / f for f in listed if (ROOT / f).is_file()):
        names = [m for m, _ in _imports(path)]
        assert not [m for m in names if m.split(".")[0] == "training"], path
