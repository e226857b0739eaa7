"""Fine-tuning a shipped model on a robot's own bag: ``goodpoint-train --from-bag BAG``.

The recipe is the model's own training config (``configs/<model>.yaml``: same losses, crop,
optimiser) with three changes, after the GoodPoint paper's FIRE experiment (fine-tuning on the
target domain with little else changed): the data is the bag's frames, the weights start from the
shipped ones (``model.init``), and the run is short at a fifth of the learning rate, so it adapts
rather than forgets. The bag's final ``holdout`` fraction of time is never read: it is what
``goodpoint-eval --bag BAG --holdout`` measures the result on. Every key stays overridable.

At the end the run folder holds ``model.pt`` (the node's ``weights:=runs/<name>/model.pt``) and
``model.md``, a short model card (source bag, frames, steps, validation figures).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from goodpoint_ros import registry

MIN_FRAMES = 30  # fewer usable frames in the training range: refused (too little to adapt to)
LR_FACTOR = 0.2  # of the model's own training rate
# Half the pairs are two real frames of the bag (training/frame_pairs.py): what a tracker meets
# between frames (fresh noise, drifting particles, blur) rather than one frame warped twice.
FRAME_PAIRS = 0.5


def bag_config(bag: str, topic: str | None, init: str, holdout: float, steps: int, stride: int) -> dict:
    """What changes in the init model's own config for a fine-tune on ``bag`` (merged over it;
    command-line overrides go on top)."""
    model = init if init in registry.NETWORKS else registry.DEFAULT_MODEL
    source = {
        "type": "bag", "path": str(bag), "topic": topic, "stride": stride, "max_frames": 4000,
        "span": [0.0, round(1.0 - holdout, 6)], "min_frames": MIN_FRAMES,
    }  # fmt: skip
    return {
        "name": f"{model}_{Path(bag).name}",
        "data": {"root": None, "sources": [source], "crop_scale": None, "frame_pairs": FRAME_PAIRS},
        "model": {"name": model, "init": "default" if init in registry.NETWORKS else init},
        "train": {
            "steps": steps,
            "decay_start": 0.5,
            "stage2_step": 0,  # MD-Net: the shipped detector is trained; fine-tune jointly
            "checkpoint_every": 50,
        },
        "eval": {"every": max(steps // 4, 1)},
    }


def config_name(model: str) -> str:
    """The model's own training config (``configs/<model>.yaml``), else the generic bag one."""
    return model if (Path(__file__).resolve().parent / "configs" / f"{model}.yaml").is_file() else "goodpoint_bag"


def write_card(run_dir: Path, conf: dict, result: dict[str, Any]) -> Path:
    """``model.md`` beside ``model.pt``: where the weights came from and how they validated."""
    src = conf["data"]["sources"][0]
    rows = list(csv.DictReader((run_dir / "log.csv").open())) if (run_dir / "log.csv").is_file() else []
    val = [r for r in rows if r.get("val/harmonic_mean")]
    first, last = (val[0], val[-1]) if val else ({}, {})

    def hm(row: dict) -> str:
        return f"{float(row['val/harmonic_mean']):.3f}" if row else "-"

    card = [
        f"# {conf['name']}: fine-tuned model card",
        "",
        f"- Started from: `{conf['model']['name']}` weights `{conf['model'].get('init')}`.",
        f"- Data: bag `{src['path']}`, topic `{src.get('topic') or '(its image topic)'}`, 1 frame in "
        f"{src.get('stride', 1)} of the first {src['span'][1]:.0%} of its duration (the rest is held out "
        "for `goodpoint-eval --bag`).",
        f"- Steps: {result['step']} (lr {conf['train']['lr']:.3g}, crop {conf['data']['crop']}).",
        f"- Validation HM (held-out pairs of the training range): {hm(first)} at step {first.get('step', '-')} "
        f"-> {hm(last)} at step {last.get('step', '-')}.",
        f"- Use: `extractor --ros-args -p model:={conf['model']['name']} -p weights:={run_dir / 'model.pt'}`.",
        "",
    ]
    path = run_dir / "model.md"
    path.write_text("\n".join(card))
    return path
