"""Turn a training run into shipped package weights with a model card.

    python -m goodpoint_ros.training.ship_weights runs/goodpoint_small_photos --name goodpoint_small \
        [--detection detection_threshold=0.02] [--eval out/eval_heldout/results.md]

Writes ``goodpoint_ros/weights/<name>.pt`` (data-only checkpoint: architecture config, tuned
detection defaults, step count) and ``<name>.md`` (data, steps, config, metrics).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from goodpoint_ros.models.checkpoint import WEIGHTS_DIR, CheckpointError, load_model, read_checkpoint, save_weights


def _value(text: str):
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run directory holding model.pt and config.yaml")
    p.add_argument("--name", required=True, help="shipped name (a registry model name)")
    p.add_argument("--detection", nargs="*", default=[], help="key=value detection defaults")
    p.add_argument("--eval", default=None, help="results.md of goodpoint-eval to include in the card")
    p.add_argument("--half", action="store_true", help="store fp16 tensors (half the size)")
    args = p.parse_args(argv)
    run = Path(args.run)
    try:
        ckpt = read_checkpoint(run / "model.pt")
        model = load_model(args.name, run / "model.pt")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    detection = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.detection)}
    model.set_detection(**detection)
    steps = int(ckpt.get("step", ckpt.get("steps", 0)))
    out = WEIGHTS_DIR / f"{args.name}.pt"
    save_weights(model, out, half=args.half, steps=steps, detection=detection, source=str(run.name))
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else "(not recorded)"
    card = [
        f"# {args.name}: model card",
        "",
        f"- Architecture: `{model.name}` ({sum(t.numel() for t in model.parameters()) / 1e6:.2f} M parameters), "
        f"config `{model.arch_conf}`.",
        f"- Training: {steps} steps of the project's own self-supervised training (`training/train.py`), "
        f"run `{run.name}`, on the CPU of a 2-core machine.",
        "- Data: `scripts/build_dataset.py` training split (real photos from Debian packages and scikit-image; "
        "the held-out split was never seen).",
        f"- Detection defaults stored in the checkpoint: `{detection or 'model defaults'}`.",
        "- Limits: far fewer steps than the papers (tens of thousands on GPUs); see docs/results.md in the source repository.",
        "",
        "## Metrics (held-out photos, `goodpoint-eval`)",
        "",
        Path(args.eval).read_text() if args.eval and Path(args.eval).is_file() else "(not evaluated)",
        "",
        "## Training config",
        "",
        "```yaml",
        config.rstrip(),
        "```",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(card))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
