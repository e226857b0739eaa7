"""Latency of a backend end to end (image in, host features out), and torch's stage split.

``time_backend`` is what ``bench/export_speed.py`` (and any other bench) calls, so every figure
comes from ``make_extractor``: the same objects the node runs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from goodpoint_ros import registry
from goodpoint_ros.backends import make_extractor
from goodpoint_ros.models.features import pad_to_multiple, prepare_image, to_numpy


def test_image(height: int, width: int) -> np.ndarray:
    """A real photo (scikit-image's astronaut), resized: NMS and top-k see real structure."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"ms_median": float(np.median(ms)), "ms_min": float(ms.min()), "fps": float(1e3 / np.median(ms))}


def time_backend(
    backend: str,
    model: str,
    height: int = 240,
    width: int = 320,
    runs: int = 10,
    warmup: int = 2,
    threads: int = 2,
    weights: str | None = "default",
    max_keypoints: int = 1000,
    image: np.ndarray | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Median/min latency and fps of ``make_extractor(backend, model)`` on one HxW photo.

    Torch gets ``torch.set_num_threads(threads)``, onnxruntime ``num_threads=threads``. The
    detection threshold is 0 so every run fills the same keypoint budget (worst case for
    post-processing). Export time (onnxruntime, first run) is excluded by the warm-up.
    """
    torch.set_num_threads(threads)
    if registry.backend(backend).name == "onnxruntime":
        kwargs.setdefault("num_threads", threads)
    ex = make_extractor(backend, model, weights, "cpu", **kwargs)
    ex.set_detection(max_keypoints=max_keypoints, detection_threshold=0.0)
    img = image if image is not None else test_image(height, width)
    for _ in range(warmup):
        ex.extract_numpy(img)
    times = []
    c0 = time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        feats = ex.extract_numpy(img)
        times.append(time.perf_counter() - t0)
    # CPU seconds of this process per frame (all its threads): on a shared machine wall time
    # includes waiting for the cores, this does not (a lower bound for an idle machine's latency
    # x threads).
    cpu_ms = (time.process_time() - c0) / runs * 1e3
    return {"backend": backend, "model": model, "size": f"{width}x{height}", "threads": threads,
            "keypoints": len(feats["scores"]), "cpu_ms": cpu_ms, **_stats(times)}  # fmt: skip


@torch.inference_mode()
def time_torch_stages(
    model: str, height: int = 480, width: int = 640, runs: int = 5, threads: int = 2, max_keypoints: int = 1000
) -> dict[str, Any]:
    """Torch CPU split: prepare (+pad), network, post-processing (NMS, borders, top-k, descriptor
    sampling, host copy). The target is post <= 10% of network."""
    torch.set_num_threads(threads)
    ex = make_extractor("torch", model, "default", "cpu", precision="fp32")
    ex.set_detection(max_keypoints=max_keypoints, detection_threshold=0.0)
    m, img = ex.model, test_image(height, width)
    stages: dict[str, list[float]] = {"prepare": [], "network": [], "post": []}
    for i in range(runs + 1):
        t0 = time.perf_counter()
        batch, sizes = pad_to_multiple([prepare_image(img, m.in_channels, ex.device)], m.pad_to)
        t1 = time.perf_counter()
        dense = m(batch)
        t2 = time.perf_counter()
        to_numpy(m.detect(dense, sizes)[0])
        t3 = time.perf_counter()
        if i:  # the first run warms up
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
                stages[key].append(dt)
    out = {k: float(np.median(v)) * 1e3 for k, v in stages.items()}
    return {"model": model, "size": f"{width}x{height}", "threads": threads,
            **{f"{k}_ms": v for k, v in out.items()}, "post_share": out["post"] / out["network"]}  # fmt: skip
