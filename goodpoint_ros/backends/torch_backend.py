"""The ``torch`` backend: a learned model (by name or checkpoint) run by torch on CPU or CUDA.

The network runs under the chosen precision (``device.resolve_precision``), NMS, top-k and
descriptor sampling in fp32 (``features.extract_batch``), the same code training and evaluation use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from goodpoint_ros.device import choose_precision, keep_freed_memory, resolve_device
from goodpoint_ros.models import DEFAULT_MODEL
from goodpoint_ros.models.base import fold_batchnorm
from goodpoint_ros.models.checkpoint import load_model
from goodpoint_ros.models.features import extract_batch, prepare_image, to_numpy
from goodpoint_ros.models.fusion import fuse_for_cpu


class TorchExtractor:
    """A learned model run by torch (CPU, or CUDA): model by name or checkpoint, device, precision."""

    def __init__(
        self,
        model: str | None = None,
        weights: str | None = "default",
        device: str = "auto",
        conf: dict | None = None,
        channels_last: bool = True,
        precision: str = "auto",
    ) -> None:
        """``precision``: auto | fp32 | bf16 | fp16 (``device.resolve_precision``; int8 runs in
        the onnxruntime backend)."""
        model = model or DEFAULT_MODEL

        self.device = resolve_device(device)
        self.precision = choose_precision(precision, self.device, "torch")
        if self.precision == "int8":
            raise ValueError("precision int8 runs in the onnxruntime backend (backend: onnxruntime)")
        self.model = fold_batchnorm(load_model(model, weights, conf=conf).to(self.device).eval())
        if self.device.type == "cpu":
            keep_freed_memory()  # no fresh pages per frame for the activations (device.keep_freed_memory)
            self.model = fuse_for_cpu(self.model)  # conv+activation in one oneDNN call (models.fusion)
            if channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def detection_keys(self) -> tuple[str, ...]:
        return self.model.detection_keys

    @property
    def confident_score(self) -> float:
        return self.model.confident_score

    def set_detection(self, **kwargs: Any) -> None:
        self.model.set_detection(**kwargs)

    @torch.inference_mode()
    def extract(self, image: Any) -> dict[str, torch.Tensor]:
        """Features of one image as tensors on the model's device."""
        return self.extract_many([image])[0]

    @torch.inference_mode()
    def extract_many(self, images: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        ims = [prepare_image(im, self.model.in_channels, self.device) for im in images]
        return extract_batch(self.model, ims, self.precision)  # features come out float32

    def extract_numpy(self, image: Any) -> dict[str, np.ndarray]:
        """Features of one image as numpy arrays (float32, detector uint8)."""
        return to_numpy(self.extract(image))
