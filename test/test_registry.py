"""The registry is the one table of names: everything that offers a model, backend or precision
derives it from there, and every entry is what its code does."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

from goodpoint_ros import registry
from goodpoint_ros.backends import make_extractor
from goodpoint_ros.cli.common import add_front_end_args
from goodpoint_ros.models import MODELS
from goodpoint_ros.params import DEFAULTS, TABLE


def test_params_and_command_lines_offer_exactly_the_registry():
    assert TABLE["model"].choices == registry.MODEL_NAMES
    assert set(TABLE["backend"].choices) == {a for b in registry.BACKENDS for a in (b.name, *b.aliases)}
    assert TABLE["precision"].choices == registry.PRECISIONS == ("auto", "fp32", "bf16", "fp16", "int8")
    assert DEFAULTS["model"] == registry.DEFAULT_MODEL and DEFAULTS["backend"] == registry.DEFAULT_BACKEND
    assert set(MODELS) == set(registry.NETWORKS)
    p = argparse.ArgumentParser()
    add_front_end_args(p)
    choices = {a.dest: a.choices for a in p._actions}
    assert choices["model"] == registry.MODEL_NAMES and choices["precision"] == registry.PRECISIONS


def test_the_registry_imports_no_torch():
    code = "import sys, goodpoint_ros.registry, goodpoint_ros.params, goodpoint_ros.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", registry.NETWORKS)
def test_network_entries_describe_their_model(name, photo):
    entry = registry.front_end(name)
    ex = make_extractor("torch", name, "random", "cpu", {"detection_threshold": 0.0, "max_keypoints": 64}, "fp32")
    assert type(ex.model) is entry.load()
    f = ex.extract_numpy(photo)
    assert f["descriptors"].shape == (64, entry.descriptor_dim)
    assert len(np.unique(f["detector"])) == entry.detector_sets


@pytest.mark.parametrize("name", registry.OPENCV_FRONT_ENDS)
def test_opencv_entries_describe_their_descriptors_also_on_an_empty_frame(name, photo):
    entry = registry.front_end(name)
    ex = make_extractor(model=name, conf={"max_keypoints": 200})
    assert type(ex) is entry.load() and ex.name == name
    full = ex.extract_numpy(photo)
    empty = ex.extract_numpy(np.zeros((120, 160), np.uint8))  # nothing to detect
    assert len(full["keypoints"]) > 50 and len(empty["keypoints"]) == 0
    assert full["descriptors"].shape[1] == empty["descriptors"].shape[1] == entry.descriptor_dim


def test_a_new_front_end_is_one_class_and_one_registry_line(monkeypatch, photo):
    """A registered OpenCV front end (BRISK here) is built by name with no other change."""
    import cv2

    from goodpoint_ros.backends.classical import ClassicalExtractor

    class BRISK(ClassicalExtractor):
        name, binary = "brisk", True

        def create(self, max_keypoints: int):
            return cv2.BRISK_create()

    monkeypatch.setattr(sys.modules[__name__], "BRISK", BRISK, raising=False)
    entry = registry.FrontEnd("brisk", registry.OPENCV, f"{__name__}:BRISK", "OpenCV BRISK", 512)
    monkeypatch.setitem(registry.BY_NAME, "brisk", entry)
    ex = make_extractor(model="brisk", conf={"max_keypoints": 100})
    f = ex.extract_numpy(photo)
    assert 0 < len(f["keypoints"]) <= 100 and f["descriptors"].shape[1] == 512


def test_unknown_names_say_what_exists():
    with pytest.raises(KeyError, match="networks: goodpoint, goodpoint_small, mdnet, mdnet_small; OpenCV: orb"):
        registry.front_end("superpoint")
    with pytest.raises(ValueError, match=r"unknown backend 'tflite' \(available: torch, onnxruntime\)"):
        registry.backend("tflite")
    assert registry.backend("ORT").name == "onnxruntime"


def test_the_docs_show_the_current_table():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert registry.markdown() in doc, "regenerate with: python -m goodpoint_ros.registry"
