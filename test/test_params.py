"""The one parameter table: the YAML, the launch arguments, the bag tool and the core agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from goodpoint_ros import params
from goodpoint_ros.params import DEFAULTS, PARAMS, TABLE, check, first_problem, parse_text, render_yaml

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "config" / "extractor.yaml"


def test_checked_in_params_file_is_the_generated_one():
    assert YAML.read_text() == render_yaml(), "regenerate: python -m goodpoint_ros.params --write config/extractor.yaml"
    assert params.main(["--check", str(YAML)]) == 0


def test_params_file_names_and_defaults_equal_the_table():
    values = yaml.safe_load(YAML.read_text())["/**"]["ros__parameters"]
    assert list(values) == [p.name for p in PARAMS]
    for p in PARAMS:
        assert type(values[p.name]) is p.type and values[p.name] == p.default, p.name


def test_a_changed_params_file_is_caught(tmp_path):
    edited = tmp_path / "extractor.yaml"
    edited.write_text(YAML.read_text().replace("max_keypoints: 1000", "max_keypoints: 999"))
    assert params.main(["--check", str(edited)]) == 1


def test_every_default_is_valid_and_typed():
    assert first_problem(DEFAULTS) is None
    for p in PARAMS:
        assert p.type in (bool, int, float, str), p.name
        if p.min is not None:
            assert p.type in (int, float) and type(p.min) is p.type and type(p.max) is p.type, p.name
        assert p.description and (p.read_only or p.dynamic)
    assert {"precision", "qos"} <= set(TABLE) and TABLE["precision"].read_only
    assert DEFAULTS["qos"] == "auto" and DEFAULTS["precision"] == "auto"


@pytest.mark.parametrize(
    "name, value, ok",
    [
        ("max_keypoints", 1, True),
        ("max_keypoints", 0, False),
        ("max_keypoints", True, False),
        ("match_ratio", 1, True),  # an int for a float parameter is fine
        ("match_ratio", 1.5, False),
        ("verification_method", "essential", True),
        ("verification_method", "magic", False),
        ("device", "cuda:1", True),
        ("device", "gpu", False),
        ("precision", "bf16", True),
        ("precision", "fp64", False),
        ("compressed", "true", False),
        ("no_such_parameter", 1, False),
    ],
)
def test_check_ranges_choices_and_types(name, value, ok):
    assert (check(name, value) is None) == ok


def test_parse_text_turns_launch_strings_into_typed_values():
    assert parse_text("compressed", "True") is True
    assert parse_text("max_keypoints", "500") == 500
    assert parse_text("sync_slop", "0.05") == 0.05
    for name, text in [("compressed", "yes"), ("max_keypoints", "many"), ("input_mode", "quad"), ("bogus", "1")]:
        with pytest.raises(ValueError, match=name):
            parse_text(name, text)


def test_bag_tool_flags_are_the_node_parameters_with_their_defaults():
    from goodpoint_ros.cli.bag import FLAG_KEYS, parse_args

    a = parse_args(["in", "out", "--topic", "/t"])
    assert {k: getattr(a, k) for k in FLAG_KEYS} == {k: DEFAULTS[k] for k in FLAG_KEYS}
    assert {"detection_threshold", "nms_radius", "subpixel_radius", "precision", "num_threads"} <= set(FLAG_KEYS)
    old = parse_args(["in", "out", "--topic", "/t", "--verification", "none", "--threshold", "2.5"])  # older names
    assert (old.verification_method, old.verification_threshold) == ("none", 2.5)


def test_launch_overrides_are_table_parameters_and_quote_their_defaults():
    from goodpoint_ros.node.launch_logic import LAUNCH_ARGUMENTS, OVERRIDES

    args = {a.name: a for a in LAUNCH_ARGUMENTS}
    for name in OVERRIDES:
        assert name in TABLE and args[name].default == ""  # empty: the params file decides
        assert repr(DEFAULTS[name]) in args[name].description


def test_node_fills_sparse_frames_while_the_offline_tools_keep_the_models_detection_on_a_pyramid(tmp_path, capsys):
    # The node (and goodpoint-bag, the node offline) feeds odometry and tracks at 30 Hz: its default
    # fills a 320x240 frame to 4000 points per megapixel, at one scale. goodpoint-extract / -match
    # keep the model's own detection (the threshold alone), which pairs and COLMAP prefer, on an
    # image pyramid for scale changes (docs/decisions.md).
    import cv2

    from goodpoint_ros.cli.bag import parse_args
    from goodpoint_ros.cli.extract import main as extract_main
    from goodpoint_ros.io.image_files import sample_photo
    from goodpoint_ros.settings import EXTRACTOR_KEYS, ExtractorSettings, params_from_args

    photo = cv2.resize(sample_photo("astronaut"), (320, 240))
    node = {k: DEFAULTS[k] for k in EXTRACTOR_KEYS} | {"device": "cpu", "precision": "fp32"}
    bag = params_from_args(
        parse_args(["in", "out", "--topic", "/image", "--device", "cpu", "--precision", "fp32"]), EXTRACTOR_KEYS
    )
    assert bag == node

    def count(p: dict) -> int:
        return len(ExtractorSettings.from_params(p).build()[0].extractor.extract(photo)["keypoints"])

    n_node, n_threshold = count(node), count(node | {"min_keypoints_per_mpx": 0.0})
    n_offline = count(node | {"min_keypoints_per_mpx": 0.0, "pyramid_min_size": 160, "pyramid_levels_up": 1})
    assert n_node >= 300 > 2 * n_threshold  # here 308 and 144
    assert n_offline > 2 * n_threshold  # here 506: the enlarged and the smaller levels join the input
    cv2.imwrite(str(tmp_path / "a.png"), photo[:, :, ::-1])
    assert extract_main([str(tmp_path / "a.png"), "-o", str(tmp_path / "a.npz"), "--device", "cpu",
                         "--precision", "fp32"]) == 0  # fmt: skip
    assert f"{n_offline} keypoints" in capsys.readouterr().out
    assert extract_main([str(tmp_path / "a.png"), "-o", str(tmp_path / "a.npz"), "--device", "cpu",
                         "--precision", "fp32", "--pyramid-min-size", "0"]) == 0  # fmt: skip
    assert f"{n_threshold} keypoints" in capsys.readouterr().out


def test_offline_tools_take_each_models_own_pyramid(tmp_path):
    # goodpoint gains from the level above the input, mdnet loses (docs/experiments/pyramid_merge):
    # goodpoint-extract / -match take the model's offline_conf for the pyramid flags not given, and
    # one scale on the onnxruntime backend, which cannot run the pyramid
    import argparse

    from goodpoint_ros.cli.common import add_front_end_args, build_front_end

    def pyramid(*argv: str) -> tuple[int, int]:
        parser = argparse.ArgumentParser()
        add_front_end_args(parser)
        conf = build_front_end(parser.parse_args(["--device", "cpu", *argv])).model.conf
        return conf["pyramid_min_size"], conf["pyramid_levels_up"]

    assert pyramid() == (160, 1)
    assert pyramid("--model", "mdnet_small") == (160, 0)
    assert pyramid("--model", "mdnet_small", "--pyramid-levels-up", "1") == (160, 1)
    assert pyramid("--pyramid-levels-up", "0", "--pyramid-min-size", "200") == (200, 0)
    assert pyramid("--pyramid-min-size", "0")[0] == 0
    pytest.importorskip("onnxruntime")
    assert pyramid("--backend", "onnxruntime", "--precision", "fp32")[0] == 0
