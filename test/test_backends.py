"""Backend selection: torch and onnxruntime give the same features through ``make_extractor``."""

import logging

import numpy as np
import pytest
import torch

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.backends.export import compare_keypoints, descriptor_diff
from goodpoint_ros.models.features import to_numpy


def pair(name: str, tmp_path, conf=None, **kw):
    """A torch and an onnxruntime extractor holding the same (seeded random) weights."""
    # random GoodPoint heatmaps sit near the uniform 1/64, below the default threshold (0.028)
    conf = {"detection_threshold": 0.0, **(conf or {})}
    torch.manual_seed(0)
    t = make_extractor("torch", name, "random", "cpu", conf, precision="fp32")  # auto may be bf16 here
    torch.manual_seed(0)
    o = make_extractor("onnxruntime", name, "random", "cpu", conf, cache=tmp_path, num_threads=2, **kw)
    return t, o


def assert_same_features(a: dict, b: dict) -> None:
    a, b = to_numpy(a), to_numpy(b)
    assert len(a["scores"]) > 20
    agree, unexplained = compare_keypoints(a, b)
    assert unexplained == 0, f"agreement {agree:.3f}"
    # Untrained MD-Net heatmaps are nearly flat: float noise (~1e-7) may flip which of two tied
    # neighbours NMS keeps, so counts may differ slightly; every differing point is a tie.
    assert abs(len(a["scores"]) - len(b["scores"])) <= 0.03 * len(a["scores"])
    assert descriptor_diff(a, b) < 1e-4
    assert np.all(np.diff(b["scores"]) <= 0), "sorted by score like the torch extractor"


@pytest.mark.parametrize("name", ["goodpoint_small", "mdnet_small"])
@pytest.mark.slow
def test_onnxruntime_features_equal_torch_on_a_real_photo(photo, tmp_path, name):
    conf = {"detection_threshold": 0.0, "max_keypoints": 400} if name.startswith("mdnet") else {"max_keypoints": 400}
    t, o = pair(name, tmp_path, conf)
    img = photo[:120, :160]
    a, b = t.extract(img), o.extract(img)
    assert set(b) == {"keypoints", "scores", "descriptors", "detector"}
    assert b["keypoints"].dtype == torch.float32 and b["detector"].dtype == torch.uint8
    assert_same_features(a, b)
    assert o.name == name and o.device == torch.device("cpu")
    assert len(o.extract_many([img, img[:64, :80]])) == 2
    assert set(o.extract_numpy(img)) == {"keypoints", "scores", "descriptors", "detector"}


@pytest.mark.slow
def test_threshold_is_a_post_filter_and_graph_keys_reexport(photo, tmp_path, caplog):
    t, o = pair("goodpoint_small", tmp_path, {"max_keypoints": 300})
    img = photo[:96, :128]
    scores = o.extract(img)["scores"]
    thr = float(scores.median())
    files = set(tmp_path.glob("*.onnx"))
    for e in (t, o):
        e.set_detection(detection_threshold=thr)
    a, b = t.extract(img), o.extract(img)
    assert set(tmp_path.glob("*.onnx")) == files, "a threshold change must not re-export"
    assert 0 < len(b["scores"]) < len(scores) and bool((b["scores"] > thr).all())
    assert_same_features(a, b)
    for e in (t, o):
        e.set_detection(max_keypoints=50)
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.backends"):
        a, b = t.extract(img), o.extract(img)
    assert "exporting" in caplog.text and len(set(tmp_path.glob("*.onnx"))) == len(files) + 1
    assert len(b["scores"]) == len(a["scores"]) <= 50
    with pytest.raises(KeyError, match="not a detection parameter"):
        o.set_detection(descriptor_dim=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["goodpoint_small", "mdnet_small"])
def test_min_keypoints_fills_below_the_threshold_alike_in_both_backends(photo, tmp_path, name):
    """min_keypoints_per_mpx: the thresholded points stay (a prefix, best first) and the best NMS
    maxima below the threshold fill up to the density; onnxruntime's post-filter (no re-export)
    selects the same points as torch."""
    t, o = pair(name, tmp_path, {"max_keypoints": 600})
    img = photo[:120, :160]  # 0.0192 MP
    scores = o.extract(img)["scores"]  # sorted; random weights give near-ties, so cut at a wide gap
    i = 25 + int(torch.argmax(scores[25:80] - scores[26:81]))
    thr = float(scores[i] + scores[i + 1]) / 2
    for e in (t, o):
        e.set_detection(detection_threshold=thr, min_keypoints_per_mpx=0.0)  # the threshold alone
    few = t.extract(img)
    files = set(tmp_path.glob("*.onnx"))
    for e in (t, o):
        e.set_detection(min_keypoints_per_mpx=10000.0)  # 192 points on 160x120
    a, b = t.extract(img), o.extract(img)
    assert set(tmp_path.glob("*.onnx")) == files, "the fill is a post-filter too: no re-export"
    assert len(few["scores"]) < 0.5 * len(a["scores"]) and 180 <= len(a["scores"]) <= 200
    prefix = {tuple(k) for k in a["keypoints"][: len(few["scores"])].tolist()}
    assert prefix == {tuple(k) for k in few["keypoints"].tolist()}  # (ties may swap places)
    assert_same_features(a, b)
    for e in (t, o):
        e.set_detection(min_keypoints_per_mpx=0.0)
    a, b = t.extract(img), o.extract(img)
    assert len(a["scores"]) == len(few["scores"])
    assert_same_features(a, b)


@pytest.mark.slow
def test_cached_graph_is_reused_by_a_new_extractor(photo, tmp_path, caplog):
    _, o = pair("goodpoint_small", tmp_path)
    o.extract(photo[:64, :64])
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.backends"):
        _, o2 = pair("goodpoint_small", tmp_path)
        o2.extract(photo[:64, :64])
    assert "exporting" not in caplog.text


@pytest.mark.slow
def test_dynamic_graph_serves_any_size(photo, tmp_path):
    t, o = pair("goodpoint_small", tmp_path, {"max_keypoints": 300}, dynamic=True)
    for img in (photo[:96, :128], photo[:100, :150]):
        assert_same_features(t.extract(img), o.extract(img))
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_unknown_provider_falls_back_to_cpu_with_one_log_line(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="goodpoint_ros.backends"):
        o = make_extractor(
            "onnx", "goodpoint_small", "random", "cpu", providers=["NoSuchExecutionProvider"], cache=tmp_path
        )
    assert o.active_providers == ["CPUExecutionProvider"]
    lines = [r for r in caplog.records if r.name == "goodpoint_ros.backends"]
    assert len(lines) == 1 and "NoSuchExecutionProvider not available" in lines[0].getMessage()


def test_unknown_backend_and_bad_device_raise_clearly():
    with pytest.raises(ValueError, match=r"unknown backend 'tflite' \(available: torch, onnxruntime\)"):
        make_extractor("tflite", "goodpoint_small", "random")
    with pytest.raises(ValueError, match="unknown device"):
        make_extractor("onnxruntime", "goodpoint_small", "random", device="tpu")
    with pytest.raises(ValueError, match="multi-scale"):
        make_extractor("onnxruntime", "mdnet_small", "random", "cpu", {"pyramid_min_size": 256})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs a CUDA GPU; this machine has none")
def test_torch_fp16_on_cuda_matches_fp32(photo):
    torch.manual_seed(0)
    half = make_extractor("torch", "goodpoint_small", "random", "cuda")
    torch.manual_seed(0)
    full = make_extractor("torch", "goodpoint_small", "random", "cuda", precision="fp32")
    assert half.precision == "fp16" and full.precision == "fp32"
    a, b = full.extract(photo), half.extract(photo)
    assert b["descriptors"].dtype == torch.float32
    agree, _ = compare_keypoints(to_numpy(a), to_numpy(b))
    assert agree > 0.9
