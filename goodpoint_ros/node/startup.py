"""Start-up checks for the node (ROS-free): each returns one line naming the problem, or None.

The node turns a problem into ``StartupError(parameter, problem)``, printed as one line on stderr
with exit code 2, instead of a traceback from deep inside torch after half the node was built.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from goodpoint_ros import registry

# The API floor of the code, not a tested version: torch.load(weights_only=True) (checkpoint.py)
# and Tensor.scatter_reduce (matching.py) arrived in torch 1.13. Ubuntu Jammy's python3-torch is
# 1.8.1, which is why package.xml keeps torch out of rosdep's hands (see the comment there).
MIN_TORCH = (1, 13)
SHIPPED_WEIGHTS = ("default", "random")


class StartupError(RuntimeError):
    """An invalid start-up parameter (or, with ``parameter`` None, environment): one-line ``problem``."""

    def __init__(self, parameter: str | None, problem: str) -> None:
        super().__init__(f"parameter '{parameter}': {problem}" if parameter else problem)
        self.parameter = parameter
        self.problem = problem


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:2])


def torch_problem(version: str | None = None) -> str | None:
    """Why the installed torch cannot run the package (missing or older than ``MIN_TORCH``)."""
    if version is None:
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed: pip install torch (see the README's native install)"
        import torch

        version = torch.__version__
    if _version_tuple(version) < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        return f"PyTorch {version} is older than {need} (weights_only loading, scatter_reduce): pip install 'torch>={need}'"
    return None


def device_problem(device: str, backend: str = "torch") -> str | None:
    """A CUDA device asked for on a machine without one (torch backend; onnxruntime falls back itself)."""
    if backend != "torch" or not str(device).startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return f"'{device}' requested but CUDA is not available on this machine (use auto or cpu)"
    index = str(device).partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        return f"'{device}' requested but only {torch.cuda.device_count()} CUDA device(s) exist"
    return None


def weights_problem(weights: str, model_names: tuple[str, ...] = ()) -> str | None:
    """A weights path that cannot be a checkpoint: missing, not a file, unreadable or empty."""
    if weights in SHIPPED_WEIGHTS or weights in model_names:
        return None
    p = Path(weights).expanduser()
    if not p.exists():
        return f"{weights}: no such file"
    if not p.is_file():
        return f"{weights}: not a file"
    try:
        with p.open("rb") as f:
            head = f.read(1)
    except OSError as e:
        return f"{weights}: cannot be read ({e.strerror or e})"
    if not head:
        return f"{weights}: empty file"
    return None


def precision_problem(precision: str, backend: str) -> str | None:
    """A precision the chosen backend does not run (int8 is onnxruntime's quantised graph)."""
    p = str(precision).lower()
    if p == "auto" or p in registry.backend(backend).precisions:
        return None
    runs = [b.name for b in registry.BACKENDS if p in b.precisions]
    where = f"the {' or '.join(runs)} backend" if runs else "no backend"
    return f"{p} runs in {where} (set backend to {' or '.join(runs) or '-'}, or another precision)"


def pyramid_problem(pyramid_min_size: int, backend: str) -> str | None:
    """An image pyramid asked of a backend whose exported graph runs one scale."""
    if pyramid_min_size > 0 and registry.backend(backend).name != "torch":
        return f"backend '{backend}' runs one scale; use backend torch for the image pyramid, or 0"
    return None


def backend_problem(backend: str) -> str | None:
    """A backend whose optional Python package is not installed (onnxruntime)."""
    needs = registry.backend(backend).needs
    if needs and importlib.util.find_spec(needs) is None:
        return f"'{backend}' needs the {needs} package (pip install {needs}, or {needs}-gpu)"
    return None
