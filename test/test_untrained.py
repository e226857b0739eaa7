"""A model without shipped weights is refused by name, never run silently with random weights."""

from __future__ import annotations

import pytest

from goodpoint_ros.models import MODELS
from goodpoint_ros.models.checkpoint import CheckpointError, load_model, shipped_weights


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_weights_load_trained_or_refuse_in_one_line(name: str) -> None:
    if shipped_weights(name).is_file():
        assert load_model(name, "default") is not None
        return
    with pytest.raises(CheckpointError) as err:
        load_model(name, "default")
    text = str(err.value)
    assert "\n" not in text and name in text and "random" in text


def test_random_weights_stay_available_on_request() -> None:
    assert load_model("goodpoint", "random").name == "goodpoint"
