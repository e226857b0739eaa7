"""Precision choice (auto | fp32 | bf16 | fp16 | int8) and parity of the reduced precisions.

Forced precisions run on any CPU (torch emulates bf16 where the CPU has no bf16 units, only
slower), so these tests do not depend on the machine; the CPU-flag detection is forced through
``$GOODPOINT_CPU_FLAGS`` / the ``flags`` argument, never by mocking torch. Parity margins are
generous on purpose: CPUs differ in their bf16/int8 kernels, and a reduced precision is allowed to
flip near-ties at the end of the top-k list; it is not allowed to move or lose many points.
"""

import logging
import platform

import numpy as np
import pytest
import torch

from goodpoint_ros.backends import make_extractor
from goodpoint_ros.backends.parity import feature_parity
from goodpoint_ros.device import CPU_FLAGS_ENV, cpu_flags, resolve_precision

BF16_CPU = ["fpu", "avx2", "avx512f", "avx512_bf16"]
AMX_CPU = ["avx512f", "amx_tile", "amx_bf16", "amx_int8"]
OLD_CPU = ["fpu", "sse2", "avx2", "fma"]


@pytest.mark.parametrize(
    "flags, device, backend, expected",
    [
        (BF16_CPU, "cpu", "torch", "bf16"),
        (AMX_CPU, "cpu", "torch", "bf16"),
        (OLD_CPU, "cpu", "torch", "fp32"),
        ([], "cpu", "torch", "fp32"),
        (OLD_CPU, "cuda", "torch", "fp16"),
        (BF16_CPU, "cpu", "onnxruntime", "fp32"),  # no fast bf16 kernels in ORT's CPU provider
    ],
)
def test_auto_rule(flags, device, backend, expected):
    chosen, why = resolve_precision("auto", device, backend, flags=flags)
    assert chosen == expected and why


def test_forced_precisions_pass_through_and_unknown_ones_raise():
    for p in ("fp32", "bf16", "fp16", "int8"):
        assert resolve_precision(p, "cpu", flags=OLD_CPU) == (p, "requested")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")


# /proc/cpuinfo excerpts: only the first processor's flags line counts; Arm calls it "Features".
CPUINFO = {
    "zen4": "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n"
    "processor\t: 1\nflags\t\t: fpu sse2\n",
    "xeon_amx": "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n",
    "old_x86": "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n",
    "arm": "processor\t: 0\nFeatures\t: fp asimd bf16\n",
}


@pytest.mark.parametrize(
    "cpu, flags, auto",
    [
        ("zen4", {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}, "bf16"),
        ("xeon_amx", {"fpu", "avx512f", "amx_bf16", "amx_tile", "amx_int8"}, "bf16"),
        ("old_x86", {"fpu", "sse2", "avx2", "fma"}, "fp32"),
        ("arm", {"fp", "asimd", "bf16"}, "fp32"),  # no AVX-512 BF16 or AMX
    ],
)
def test_cpuinfo_flags_decide_auto(monkeypatch, tmp_path, cpu, flags, auto):
    monkeypatch.delenv(CPU_FLAGS_ENV, raising=False)
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO[cpu])
    assert cpu_flags(str(path)) == flags
    assert resolve_precision("auto", "cpu", flags=cpu_flags(str(path)))[0] == auto
    assert resolve_precision("auto", "cpu", "onnxruntime", flags=flags)[0] == "fp32"
    assert resolve_precision("auto", "cuda:0", flags=flags)[0] == "fp16"
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()  # no /proc/cpuinfo (macOS, Windows): fp32


def test_cpu_flags_env_override_and_real_cpuinfo(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2, amx_bf16")
    assert cpu_flags() == {"avx2", "amx_bf16"}
    assert resolve_precision("auto", "cpu")[0] == "bf16"  # the override reaches the rule
    monkeypatch.setenv(CPU_FLAGS_ENV, "")
    assert cpu_flags() == frozenset() and resolve_precision("auto", "cpu")[0] == "fp32"
    monkeypatch.delenv(CPU_FLAGS_ENV)
    real = cpu_flags()
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert {"fpu", "sse2"} <= real, sorted(real)  # every x86-64 CPU has them
    expected = "bf16" if real & {"avx512_bf16", "amx_bf16"} else "fp32"  # Zen 4 and Xeon AMX: bf16
    assert resolve_precision("auto", "cpu")[0] == expected


@pytest.mark.parametrize(
    "flags, expected, needle",
    [("avx512_bf16", "bf16", "CPU has avx512_bf16"), ("avx2 fma", "fp32", "without AVX-512 BF16 or AMX")],
)
def test_auto_on_cpu_chooses_by_flags_and_logs_one_line(photo, monkeypatch, caplog, flags, expected, needle):
    monkeypatch.setenv(CPU_FLAGS_ENV, flags)
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.precision"):
        ex = make_extractor(
            "torch", "goodpoint_small", "random", "cpu", {"max_keypoints": 100, "detection_threshold": 0}
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "goodpoint_ros.precision"]
    assert len(lines) == 1 and lines[0].startswith(f"precision auto -> {expected}") and needle in lines[0]
    assert ex.precision == expected
    f = ex.extract(photo[:96, :128])  # and it runs in that precision, features in fp32
    assert f["descriptors"].dtype == torch.float32 and f["scores"].dtype == torch.float32
    assert len(f["scores"]) > 10


def test_int8_in_torch_and_bf16_in_onnxruntime_are_refused_with_the_way_out(tmp_path):
    with pytest.raises(ValueError, match="onnxruntime"):
        make_extractor("torch", "goodpoint_small", "random", "cpu", precision="int8")
    with pytest.raises(ValueError, match="backend torch for bf16"):
        make_extractor("onnxruntime", "goodpoint_small", "random", "cpu", precision="bf16", cache=tmp_path)
    with pytest.raises(ValueError, match="TensorRT"):
        make_extractor("onnxruntime", "goodpoint_small", "random", "cpu", precision="fp16", cache=tmp_path)


def test_mdnet_heatmaps_stay_fp32_under_autocast(photo):
    ex = make_extractor("torch", "mdnet_small", "default", "cpu", precision="fp32")
    x = torch.from_numpy(photo[:64, :96]).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        dense = ex.model(x)
    assert dense["descriptors"].dtype == torch.bfloat16  # the trunk did run in bf16
    heat = dense["heatmaps"]
    assert heat.dtype == torch.float32
    # bf16 sigmoid outputs would hold a few hundred values; fp32 ones are nearly all distinct
    assert heat.unique().numel() > 0.5 * heat.numel()


# Trained small models (shipped weights) and the full-size ones (random weights: flatter maps,
# more near-ties, so a lower overlap floor). Measured on an AMD EPYC (avx512_bf16), printed with -s:
# overlap 0.93 / 0.99 / 1.00 / 0.73, descriptor cosine median >= 0.999 for all four.
@pytest.mark.parametrize(
    "name, weights, conf, min_overlap, crop",
    [
        ("goodpoint_small", "default", {}, 0.75, 240),  # its sharp maps leave ~30 points at 120x160
        ("mdnet_small", "default", {}, 0.75, 120),
        ("goodpoint", "random", {"detection_threshold": 0.0}, 0.5, 120),
        ("mdnet", "random", {"detection_threshold": 0.0}, 0.5, 120),
    ],
)
def test_bf16_parity_with_fp32(photo, name, weights, conf, min_overlap, crop):
    conf = {"max_keypoints": 300, **conf}
    img = photo[:crop, : crop * 4 // 3]
    feats = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(0)  # the same random weights for both
        feats[p] = make_extractor("torch", name, weights, "cpu", conf, precision=p).extract(img)
    r = feature_parity(feats["fp32"], feats["bf16"], radius=1.0)
    print(name, {k: round(v, 4) for k, v in r.items()})
    assert r["keypoints_ref"] > 50, r
    assert r["overlap"] >= min_overlap, r
    assert r["cosine_median"] >= 0.99 and r["cosine_p05"] >= 0.9, r
    assert np.all(np.diff(feats["bf16"]["scores"].numpy()) <= 0), "still sorted by score"


@pytest.mark.slow
def test_int8_parity_and_the_quantised_graph_is_cached(photo, tmp_path, caplog):
    kw = {"cache": tmp_path, "num_threads": 2, "calibration": "skimage", "calibration_count": 4}
    img = photo[:120, :160]
    ref = make_extractor("torch", "goodpoint_small", "default", "cpu", precision="fp32").extract(img)
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.backends"):
        q = make_extractor("onnxruntime", "goodpoint_small", "default", "cpu", precision="int8", **kw)
        feats = q.extract(img)
    assert "int8: calibrating" in caplog.text and q.precision == "int8"
    files = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert len(files) == 2 and any("_int8_" in f for f in files), files
    r = feature_parity(ref, feats)
    # measured ~0.85-0.9 overlap, cosine median > 0.99 (goodpoint-export --int8 prints them)
    assert r["overlap"] >= 0.6 and r["cosine_median"] >= 0.95, r
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.backends"):
        again = make_extractor("onnxruntime", "goodpoint_small", "default", "cpu", precision="int8", **kw)
        again.extract(img)
    assert "calibrating" not in caplog.text and "exporting" not in caplog.text
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == files


def test_calibration_never_reads_held_out_photos(tmp_path):
    from goodpoint_ros.backends.quantize import calibration_images

    held = tmp_path / "photos" / "heldout"
    held.mkdir(parents=True)
    with pytest.raises(ValueError, match="never on the held-out"):
        calibration_images(str(held), 4, 64, 64, 1)


@pytest.mark.slow
def test_export_cli_int8_and_the_trunk_it_quantises(tmp_path, capsys):
    import onnx

    from goodpoint_ros.backends.export import main

    out = tmp_path / "gp_int8.onnx"
    argv = ["--model", "goodpoint_small", "--height", "96", "--width", "128", "--int8"]
    code = main([*argv, "--calibration", "skimage", "--calibration-count", "3", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "int8 vs torch fp32 96x128" in printed and "-> OK" in printed
    nodes = onnx.load(str(out)).graph.node
    dequantised = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    float_convs = {n.name for n in nodes if n.op_type == "Conv" and n.input[1] not in dequantised}
    # the first conv and the two convs whose outputs leave the trunk stay fp32 (the default)
    assert float_convs == {
        "/model/encoder/encoder.0/encoder.0.0/Conv",
        "/model/detector/detector.1/Conv",
        "/model/descriptor/descriptor.1/Conv",
    }
    assert sum(n.op_type == "Conv" for n in nodes) > len(float_convs)
    # post-processing (the NMS max-pools, top-k) never sees a quantised tensor
    post = [n for n in nodes if not n.name.startswith("/model/") and n.op_type in ("MaxPool", "TopK")]
    assert post and not any(i in dequantised for n in post for i in n.input)


def test_eval_method_specs_take_a_precision(capsys, tmp_path):
    from goodpoint_ros.training.evaluate import Method, main

    assert Method("goodpoint_small:random", 100, "torch", "cpu", None).impl.precision == "fp32"  # not auto
    m = Method("goodpoint_small:random,precision=bf16,subpixel_radius=0", 100, "torch", "cpu", None)
    assert m.impl.precision == "bf16" and m.impl.model.conf["subpixel_radius"] == 0
    code = main(["--photos", str(tmp_path), "--methods", "goodpoint_small,precision=fp8"])
    assert code == 2 and "unknown precision 'fp8'" in capsys.readouterr().err


def test_cli_precision_flag(photo, tmp_path, capsys):
    import cv2

    from goodpoint_ros.cli.extract import main as extract_main

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), photo[:96, :128])
    out = tmp_path / "f.npz"
    assert extract_main(["--precision", "bf16", str(img), "-o", str(out)]) == 0
    assert np.load(out)["descriptors_0"].dtype == np.float32
    assert extract_main(["--precision", "int8", str(img), "-o", str(out)]) != 0
    assert "onnxruntime" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_ranges_are_reused_across_sizes_padded_or_not(photo, tmp_path, caplog):
    # keep_float=(): the first conv is quantised too, so its input range must exist for both a
    # padded size (input -> Pad -> Conv) and a multiple of 8 (input -> Conv)
    kw = {"cache": tmp_path, "num_threads": 2, "calibration": "skimage", "calibration_count": 2}
    q = make_extractor("onnxruntime", "goodpoint_small", "default", "cpu", precision="int8", int8_keep_float=(), **kw)
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.backends"):
        for h, w in ((100, 130), (96, 128), (104, 136), (90, 122)):
            assert len(q.extract(photo[:h, :w])["scores"]) > 10
    assert caplog.text.count("int8: calibrating") == 2  # once per kind of size, not per size
    assert len(list(tmp_path.glob("*_ranges.json"))) == 2


def test_forced_bf16_without_the_units_warns_but_runs(photo, monkeypatch, caplog):
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2")
    with caplog.at_level(logging.INFO, logger="goodpoint_ros.precision"):
        ex = make_extractor("torch", "goodpoint_small", "default", "cpu", precision="bf16")
    assert ex.precision == "bf16" and "emulated, slower than fp32" in caplog.text
    assert len(ex.extract(photo[:96, :128])["scores"]) > 10


def test_threads_take_every_core_but_the_spared_unless_asked():
    from goodpoint_ros.device import resolve_threads, usable_cores

    assert resolve_threads(0, cores=2) == (2, "2 cores")
    assert resolve_threads(0, cores=8)[0] == 8 and resolve_threads(0, cores=1)[0] == 1
    assert resolve_threads(3, cores=2) == (3, "requested")
    assert resolve_threads(0)[0] == usable_cores()
    # the node spares a core for its output stage, never the last one; a request is kept as asked
    assert resolve_threads(0, cores=2, spare=1) == (1, "2 cores, 1 left to the node's output stage")
    assert resolve_threads(0, cores=8, spare=1)[0] == 7 and resolve_threads(0, cores=1, spare=1)[0] == 1
    assert resolve_threads(2, cores=2, spare=1) == (2, "requested")


def test_keep_freed_memory_applies_once_on_glibc():
    """The torch backend and training keep freed blocks for reuse (no fresh pages per frame);
    on glibc Linux (this project's CI and every ROS 2 tier-1 platform) it applies, idempotently."""
    import platform

    from goodpoint_ros.device import keep_freed_memory

    applied = keep_freed_memory()
    assert keep_freed_memory() is applied
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
