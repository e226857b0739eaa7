"""What ships: goodpoint, goodpoint_small, mdnet and mdnet_small with their model cards, loaded by "default"; a model
without shipped weights is refused by name, never run silently with random weights."""

from __future__ import annotations

import shutil

import pytest
import torch

import goodpoint_ros.models.checkpoint as checkpoint
from goodpoint_ros.models import DEFAULT_MODEL, MODELS
from goodpoint_ros.models.checkpoint import WEIGHTS_DIR, CheckpointError, load_model, read_checkpoint, shipped_weights

SHIPPED = ("goodpoint", "goodpoint_small", "mdnet", "mdnet_small")  # README: "Four trained models ship"


def test_the_documented_models_ship_with_their_model_cards() -> None:
    assert sorted(p.name for p in WEIGHTS_DIR.glob("*.pt")) == [f"{n}.pt" for n in SHIPPED]
    assert DEFAULT_MODEL in SHIPPED and set(SHIPPED) == set(MODELS)
    for name in SHIPPED:
        ckpt = read_checkpoint(shipped_weights(name))
        assert ckpt["model"] == name and ckpt["steps"] > 0
        card = (WEIGHTS_DIR / f"{name}.md").read_text(encoding="utf-8")
        assert card.startswith(f"# {name}: model card\n"), f"{name}.md is not {name}'s model card"
        assert f"- Training: {ckpt['steps']} steps " in card, f"{name}.md describes other weights"


@pytest.mark.parametrize("name", SHIPPED)
def test_default_weights_are_the_shipped_file(name: str) -> None:
    model = load_model(name, "default")
    assert model.name == name and not model.training
    state = read_checkpoint(shipped_weights(name))["state_dict"]
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(v, state[k].to(v.dtype)) for k, v in own.items())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_without_shipped_weights_is_refused_in_one_line(name: str, tmp_path, monkeypatch) -> None:
    """Every model, even one that ships: a package whose weights file is missing (a partial
    install, a user who deleted it) must refuse it by name rather than run random weights."""
    shutil.copy(shipped_weights(DEFAULT_MODEL), tmp_path)
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)
    if name == DEFAULT_MODEL:
        assert load_model(name, "default").name == name
        return
    with pytest.raises(CheckpointError) as err:
        load_model(name, "default")
    text = str(err.value)
    assert "\n" not in text and f"model '{name}'" in text and "weights 'random'" in text
    assert f"(trained: {DEFAULT_MODEL})" in text  # names what does ship


def test_random_weights_stay_available_on_request() -> None:
    assert load_model("goodpoint", "random").name == "goodpoint"
    random = load_model("goodpoint_small", "random").state_dict()
    trained = load_model("goodpoint_small", "default").state_dict()
    assert not any(torch.equal(v, trained[k]) for k, v in random.items() if k.endswith(".weight") and v.dim() == 4)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_weights_files_detection_defaults_apply_and_yield_to_the_callers(name: str) -> None:
    """The paper-size goodpoint keeps ~990 points at the paper's threshold, so its weights file
    carries its own (model card); a caller's setting still wins over it."""
    stored = read_checkpoint(shipped_weights(name)).get("detection", {})
    if name == "goodpoint":
        assert stored.get("detection_threshold", 0.0) > MODELS[name][0].default_conf["detection_threshold"]
    for key, value in stored.items():
        assert load_model(name, "default").conf[key] == value
        assert load_model(name, "default", {key: value * 2}).conf[key] == value * 2
