"""Inference-time rewrites for the CPU: each convolution fused with the activation after it, and
2x2 max-pooling as strided maxima.

Why: on a CPU our small models are bound by memory traffic, not arithmetic. In eager PyTorch a
LeakyReLU/ReLU and a max-pool are each a separate pass over a full-resolution activation: on
goodpoint_small at 640x480 in bf16 they took 45% of the network's time (torch.profiler, 2 Xeon
AMX cores), the convolutions the rest. oneDNN applies the activation inside the convolution
(``mkldnn::_convolution_pointwise``, the kernel PyTorch's own compiler emits for this pattern),
and two elementwise maxima of strided views pool without the index bookkeeping of
``max_pool2d``. Both are exact rewrites up to rounding: the same weights, trained as before.

Only the torch backend calls ``fuse_for_cpu``, after ``fold_batchnorm``; training and ONNX export
keep the plain modules (onnxruntime fuses by itself). Where the oneDNN kernel is missing (a torch
built without it) or refuses its inputs, a layer falls back to the plain convolution and
activation, once, for good.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast would run a convolution in on ``device_type``, or None when it is off."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # torch < 2.4 spells these per device
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
    return None


class ConvAct(nn.Module):
    """A Conv2d and the activation after it (``relu`` or ``leaky_relu``) as one oneDNN call."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.act = conv, act
        if isinstance(act, nn.LeakyReLU):
            self.attr, self.scalars = "leaky_relu", [float(act.negative_slope)]
        elif isinstance(act, nn.ReLU):
            self.attr, self.scalars = "relu", []
        else:
            raise TypeError(f"no fused kernel for {type(act).__name__}")
        self.fused = hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and x.device.type == "cpu" and not torch.is_grad_enabled():
            dtype = _autocast_dtype("cpu") or x.dtype
            c = self.conv  # weights cast per call, as autocast does: under 1 MB a layer
            w = c.weight.to(dtype).contiguous(memory_format=torch.channels_last)
            b = None if c.bias is None else c.bias.to(dtype)
            try:
                return torch.ops.mkldnn._convolution_pointwise(
                    x.to(dtype), w, b, list(c.padding), list(c.stride), list(c.dilation), c.groups,
                    self.attr, self.scalars, "",
                )  # fmt: skip
            except RuntimeError:
                self.fused = False  # this torch's oneDNN refused: the plain path from now on
        return self.act(self.conv(x))


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` on even sizes (our inputs are padded to multiples of 8) as the maximum
    of four strided views: the same values, without computing the indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            return F.max_pool2d(x, 2)
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _is_pool2x2(m: nn.Module) -> bool:
    def two(v) -> bool:
        return v in (2, (2, 2))

    return (
        isinstance(m, nn.MaxPool2d)
        and two(m.kernel_size)
        and two(m.stride)
        and m.padding in (0, (0, 0))
        and m.dilation in (1, (1, 1))
        and not m.ceil_mode
        and not m.return_indices
    )


def fuse_for_cpu(model: nn.Module) -> nn.Module:
    """Rewrite ``model`` in place for CPU inference and return it: inside every ``nn.Sequential``,
    a Conv2d followed by a ReLU/LeakyReLU (``Identity`` in between, as ``fold_batchnorm`` leaves
    it) becomes one ``ConvAct``; a 2x2 max-pool becomes ``MaxPool2x2``. Call after
    ``fold_batchnorm`` (a BatchNorm between them blocks the fusion) and ``model.eval()``."""
    if model.training:
        raise RuntimeError("fuse_for_cpu is for inference: call model.eval() first")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i, m in enumerate(seq):
            if _is_pool2x2(m):
                seq[i] = MaxPool2x2()
            if not isinstance(m, nn.Conv2d):
                continue
            j = i + 1
            while j < len(seq) and isinstance(seq[j], nn.Identity):
                j += 1
            if j < len(seq) and isinstance(seq[j], (nn.ReLU, nn.LeakyReLU)):
                seq[i], seq[j] = ConvAct(m, seq[j]), nn.Identity()
    return model
