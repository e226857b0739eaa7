"""Checkpoints are data, never code: save, validate and load model weights.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``: ``{"format", "model", "conf", "state_dict", ...}``. It records
the architecture config so loading never guesses. Shipped weights live in
``goodpoint_ros/weights/<name>.pt`` and load by name.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from goodpoint_ros.errors import one_line
from goodpoint_ros.models import MODELS, BaseModel, build_model

FORMAT = "goodpoint_ros/1"  # weights files: model.pt, best_model.pt, shipped weights
TRAIN_FORMAT = (
    "goodpoint_ros/train/1"  # training checkpoints (checkpoint.pt): goodpoint_ros.training.train resumes them
)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


class CheckpointError(RuntimeError):
    """A weights file that is missing, corrupt, truncated or does not fit the model.

    Its message is always one line, ``<path>: <problem>``, and never repeats torch's advice to
    load with ``weights_only=False`` (the one thing not to do with a stranger's file)."""


def shipped_weights(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


# ``.<name>.tmp-<pid>-<hex>`` from atomic_torch_save, and ``.<name>.<8 chars>`` from its older
# mkstemp version: what a kill during a write leaves behind.
_TEMPORARY = re.compile(r"^\.(?P<name>.+\.pt)\.(tmp-\d+-[0-9a-f]+|[a-z0-9_]{8})$")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a kill never leaves half a
    file at ``path`` (only a temporary that ``remove_temporaries`` deletes), a failed write removes
    its temporary, and the file gets the usual mode (0666 less the umask, not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries that writes killed mid-way left in ``folder``; returns them. Only
    call it where no other process is writing (a run folder when its run starts)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file())
    for p in found:
        p.unlink(missing_ok=True)
    return found


def saved_state(state_dict: dict, half: bool = False) -> dict:
    """A state dict as files hold it: detached CPU tensors (fp16 if ``half``), contiguous, so that a
    channels_last training model saves the same bytes as any other."""
    return {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state_dict.items()
    }


def weights_dict(name: str, arch_conf: dict, state_dict: dict, half: bool = False, **meta: Any) -> dict:
    """The weights-file dict (``FORMAT``) for a state dict: also used to write ``model.pt`` from the
    very tensors a training checkpoint holds."""
    return {"format": FORMAT, "model": name, "conf": arch_conf, "state_dict": saved_state(state_dict, half), **meta}


def save_weights(model: BaseModel, path: str | Path, half: bool = False, **meta: Any) -> None:
    """Save a model's weights with its name and architecture config (fp16 tensors if ``half``)."""
    atomic_torch_save(weights_dict(model.name, model.arch_conf, model.state_dict(), half, **meta), path)


def load_data(path: str | Path, what: str = "weights file") -> Any:
    """``torch.load(weights_only=True)`` of ``path``, every failure turned into one CheckpointError
    line saying what is wrong with the file: missing, empty, truncated, corrupt (zip CRC), not a
    torch file, or pickled Python objects/code that a weights file must not hold."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a {what}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":  # torch's zip format: check it is whole before unpickling
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{path}: truncated or corrupt {what} ({size} bytes; zip archive: {e})") from None
        if bad is not None:
            raise CheckpointError(f"{path}: corrupt {what} (member '{bad}' fails its CRC check)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for the user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python objects ({found.group(1)}), not plain tensors; "
                f"goodpoint_ros loads weights as data only, never code"
            ) from None
        raise CheckpointError(f"{path}: not a torch {what} (unreadable pickle data)") from None
    except EOFError:
        raise CheckpointError(f"{path}: truncated {what} ({size} bytes)") from None
    except Exception as e:  # anything else torch or pickle raise on foreign bytes
        detail = one_line(e, 160)
        kind = type(e).__name__
        raise CheckpointError(f"{path}: not a torch {what} ({kind}{'' if detail == kind else ': ' + detail})") from None


def read_checkpoint(path: str | Path, training: bool = False) -> dict:
    """Load a weights file (``FORMAT``), or with ``training`` a training checkpoint
    (``TRAIN_FORMAT``: weights plus optimiser, step, config and RNG states), safely
    (``weights_only``) and checked, or raise one clear CheckpointError. The one reading path for
    both: either kind given where the other is expected says so."""
    path = Path(path)
    what, want = ("training checkpoint", TRAIN_FORMAT) if training else ("weights file", FORMAT)
    ckpt = load_data(path, what)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == TRAIN_FORMAT and not training:
        raise CheckpointError(f"{path}: a training checkpoint, not weights: use model.pt or best_model.pt of that run")
    if fmt == FORMAT and training:
        raise CheckpointError(f"{path}: a weights file, not a training checkpoint: resume from the run's checkpoint.pt")
    if fmt != want or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a goodpoint_ros {what} (expected format '{want}')")
    bad = [k for k, v in ckpt["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry '{bad[0]}' is not a tensor")
    if not isinstance(ckpt.get("conf", {}), dict) or not isinstance(ckpt.get("detection", {}), dict):
        raise CheckpointError(f"{path}: its architecture config is not a dict")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | Path, name: str | None = None, conf: dict | None = None) -> BaseModel:
    """Build the architecture the checkpoint records and load its weights strictly."""
    saved = ckpt.get("model")
    if not isinstance(saved, str) or saved not in MODELS:
        raise CheckpointError(f"{path}: records unknown model '{saved}'")
    if name is not None and MODELS[name][0] is not MODELS[saved][0]:
        raise CheckpointError(f"{path}: holds a '{saved}' model, but '{name}' was requested")
    # "detection" holds tuned run-time defaults (threshold...) that a model card documents.
    try:
        model = build_model(saved, {**ckpt.get("conf", {}), **ckpt.get("detection", {}), **(conf or {})})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: records an unusable '{saved}' config ({type(e).__name__}: {one_line(e, 160)})"
        ) from None
    own = model.state_dict()
    state = ckpt["state_dict"]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        detail = "; ".join(
            x
            for x in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch {shapes[:3]}" if shapes else "",
            )
            if x
        )
        raise CheckpointError(f"{path}: weights do not match model '{saved}': {detail}")
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{path}: holds non-finite weights (NaN/inf) in '{nonfinite[0]}'")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


def load_model(name: str, weights: str | Path | None = "default", conf: dict | None = None) -> BaseModel:
    """A model by registry ``name`` with ``weights``: ``"default"`` (the shipped file for
    ``name``; refused if none ships, since random weights give no usable features),
    ``None``/``"random"`` (an untrained network, for tests and training), a shipped name, or a
    path. ``conf`` may only change detection parameters of a checkpoint."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    if weights in (None, "", "random", "none"):
        return build_model(name, conf)
    if weights == "default":
        path = shipped_weights(name)
        if not path.is_file():
            trained = ", ".join(n for n in MODELS if shipped_weights(n).is_file())
            raise CheckpointError(
                f"no trained weights ship for model '{name}' (trained: {trained}); "
                "give a weights file, or weights 'random' for an untrained network"
            )
    elif isinstance(weights, str) and weights in MODELS:
        path = shipped_weights(weights)
    else:
        path = Path(weights)
    model = model_from_checkpoint(read_checkpoint(path), path, name, conf)
    return model.eval()
