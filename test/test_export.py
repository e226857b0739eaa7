"""ONNX export: the fixed-top-k graph matches the torch extractor, and the parity check can fail."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from goodpoint_ros.backends.export import check_parity, export_onnx, main
from goodpoint_ros.backends.graph import OUTPUT_NAMES
from goodpoint_ros.models import build_model


def seeded(name: str, seed: int = 0, **conf):
    torch.manual_seed(seed)
    return build_model(name, conf or None).eval()


@pytest.mark.slow
def test_cli_exports_a_parity_checked_opset17_graph(tmp_path, capsys):
    out = tmp_path / "gp.onnx"
    torch.manual_seed(0)
    code = main(["--model", "goodpoint_small", "--weights", "random", "--height", "96", "--width", "124", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "parity 96x124" in printed and "-> OK" in printed and "heatmap max|d|=" in printed
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 17
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    import onnxruntime as ort

    from goodpoint_ros.backends.export import reference_image

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    res = dict(zip(OUTPUT_NAMES, sess.run(None, {"image": reference_image(96, 124, 1)})))
    assert res["keypoints"].shape == (1, 1000, 2) and res["descriptors"].shape == (1, 1000, 128)
    assert res["heatmap"].shape == (1, 1, 96, 128)  # padded to a multiple of 8 inside the graph


@pytest.mark.slow
def test_parity_check_fails_for_a_graph_of_other_weights(tmp_path):
    path = export_onnx(seeded("goodpoint_small", 0), tmp_path / "a.onnx", 64, 80)
    assert check_parity(seeded("goodpoint_small", 0), path, 64, 80)["ok"]
    bad = check_parity(seeded("goodpoint_small", 1), path, 64, 80)
    assert not bad["ok"] and bad["heatmap_max_abs"] > 1e-3


@pytest.mark.slow
def test_dynamic_graph_agrees_at_two_sizes(tmp_path):
    model = seeded("goodpoint_small", max_keypoints=200)
    path = export_onnx(model, tmp_path / "dyn.onnx", 64, 96, dynamic=True)
    for h, w in ((64, 96), (120, 160)):
        r = check_parity(model, path, h, w)
        assert r["ok"], r
        # counts, not equality: a score within float noise of the threshold may fall either side
        # in onnxruntime's and torch's kernels (they differ between CPUs, e.g. AMX vs AVX-512)
        n_onnx, n_torch = r["keypoints_onnx"], r["keypoints_torch"]
        assert n_torch > 50 and abs(n_onnx - n_torch) <= max(2, 0.02 * n_torch), (n_onnx, n_torch)


@pytest.mark.slow
def test_mdnet_graph_keeps_m_over_n_per_detector(tmp_path):
    import onnxruntime as ort

    from goodpoint_ros.backends.export import reference_image

    model = seeded("mdnet_small", max_keypoints=30, num_detectors=3)
    path = export_onnx(model, tmp_path / "md.onnx", 72, 88)
    assert check_parity(model, path, 72, 88)["ok"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip(OUTPUT_NAMES, sess.run(None, {"image": reference_image(72, 88, 3)})))
    det = out["detector"][0][out["valid"][0]]
    assert out["keypoints"].shape == (1, 30, 2)
    assert np.bincount(det, minlength=3).tolist() == [10, 10, 10]
    assert (out["detector"][0] == np.repeat(np.arange(3), 10)).all()  # one sorted group per detector


def test_bad_export_requests_fail_clearly(tmp_path, capsys):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(seeded("goodpoint_small"), tmp_path / "x.onnx", 64, 64, opset=11)
    assert (
        main(["--model", "goodpoint_small", "--weights", str(tmp_path / "missing.pt"), str(tmp_path / "y.onnx")]) == 2
    )
    assert "no such weights file" in capsys.readouterr().err
    assert not (tmp_path / "y.onnx").exists()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("radius", [1, 2, 3, 4, 6])
def test_cpu_window_max_equals_the_traced_max_pool(radius):
    """The eager CPU NMS (shifted maxima by doubling) and the exported one (MaxPool) keep the
    same points, ties and borders included; the window maxima themselves are equal."""
    from goodpoint_ros.models.features import _window_max, nms_mask

    y = torch.randn(1, 2, 23, 31)
    pooled = F.max_pool2d(y, 2 * radius + 1, stride=1, padding=radius)
    assert torch.equal(_window_max(y, radius), pooled)

    g = torch.Generator().manual_seed(radius)
    x = (torch.rand(2, 3, 37, 53, generator=g) * 20).round() / 20  # many exact ties
    traced = torch.jit.trace(lambda t: nms_mask(t, radius), (x,), check_trace=False)
    assert torch.equal(nms_mask(x, radius), traced(x))
    assert nms_mask(x, radius).sum() > 0
