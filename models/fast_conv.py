"""A CPU training convolution whose weight gradient is chosen, per layer shape, by measuring.

oneDNN's backward-weights kernels are slow for some shapes, and which ones depends on the CPU and dtype
(2-core AMD EPYC, 2026-11-29): with AVX-512 BF16 the 5x5 stride-2 encoder layers' weight gradients ran
at 13-29 GFLOP/s against 80-200 for a matmul; with oneDNN held to AVX2 in fp32, the full-resolution
128-channel 3x3 layers ran at 7-11 against 35-45. The same gradient written as one matrix product, the
output gradient times the input's patches (im2col, gathered from the channels-last input), ran 2-3x
faster there and slower elsewhere. So the first backward of each layer shape times both and keeps the
faster one for the rest of the process.

Only the weight gradient's formulation changes: the forward and the input gradient are torch's own
kernels, and the patch product sums the same terms (so ``torch.utils.flop_counter`` counts the same
FLOPs for it as for torch's convolution backward).
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

# the patches are gathered a few samples at a time, so a full-resolution layer does not copy its input
# k*k times at once (128 channels at 128 px, 3x3: 75 MB per fp32 sample)
PATCH_CHUNK_ELEMENTS = 1 << 24

_choices: dict[tuple, bool] = {}       # layer key -> True when the patch product is faster
_choices_lock = threading.Lock()
_reference = threading.local()


@contextlib.contextmanager
def reference_convolutions() -> Iterator[None]:
    """Inside, :class:`TunedConv2d` runs torch's own convolution and backward (for FLOP counting and
    tests); per thread."""
    previous = getattr(_reference, "on", False)
    _reference.on = True
    try:
        yield
    finally:
        _reference.on = previous


def patch_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: int, stride: int,
                      padding: int) -> torch.Tensor:
    """The gradient of a convolution's loss with respect to its weight, as patches times output gradient.

    Args:
        x: (N, C, H, W) the convolution's input.
        grad_out: (N, O, Ho, Wo) the gradient of its output.
        kernel, stride, padding: the convolution's (square) geometry; dilation 1, one group.

    Returns:
        (O, C, kernel, kernel) channels-last, in ``x``'s dtype (summed over sample chunks in float32).
    """
    n, c = x.shape[:2]
    o, ho, wo = grad_out.shape[1:]
    padded = F.pad(x, (padding,) * 4).contiguous(memory_format=torch.channels_last)
    hp, wp = padded.shape[2:]
    # (N, Ho, Wo, kh, kw, C) view of the padded channels-last input: row (n, i, j) of the patch matrix
    patches = padded.as_strided((n, ho, wo, kernel, kernel, c),
                                (hp * wp * c, stride * wp * c, stride * c, wp * c, c, 1))
    grad_rows = grad_out.permute(0, 2, 3, 1)                     # (N, Ho, Wo, O)
    chunk = max(1, PATCH_CHUNK_ELEMENTS // (ho * wo * kernel * kernel * c))

    def product(start: int, stop: int) -> torch.Tensor:          # (O, kh * kw * C)
        cols = patches[start:stop].reshape(-1, kernel * kernel * c)
        return grad_rows[start:stop].reshape(-1, o).t() @ cols

    if chunk >= n:
        total = product(0, n)
    else:
        total = sum(product(start, start + chunk).float() for start in range(0, n, chunk)).to(x.dtype)
    return total.view(o, kernel, kernel, c).permute(0, 3, 1, 2)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class _PatchGradConv2d(torch.autograd.Function):
    """conv2d(x, weight, bias) whose backward may compute the weight gradient by :func:`patch_weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        kernel = weight.shape[-1]
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)

        def torch_grads(input_grad: bool, weight_grad: bool, bias_grad: bool):
            return torch.ops.aten.convolution_backward(
                grad_out, x, weight, [grad_out.shape[1]], [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
                [input_grad, weight_grad, bias_grad])

        def patch_grad() -> torch.Tensor:
            return patch_weight_grad(x, grad_out, kernel, stride, padding)

        need_input, need_weight = ctx.needs_input_grad[:2]
        need_bias = ctx.has_bias and ctx.needs_input_grad[2]
        key = (tuple(x.shape), tuple(weight.shape), stride, padding, x.dtype)
        use_patches = _choices.get(key)
        if need_weight and use_patches is None:
            # tune: time each formulation twice (the machine may be shared) and keep the faster
            torch_time = min(_seconds(lambda: torch_grads(False, True, False)) for _ in range(2))
            patch_time = min(_seconds(patch_grad) for _ in range(2))
            use_patches = patch_time < torch_time
            with _choices_lock:
                _choices[key] = use_patches
        if not (need_weight and use_patches):
            grad_x, grad_w, grad_b = torch_grads(need_input, need_weight, need_bias)
            return grad_x, grad_w, grad_b, None, None
        grad_x = torch_grads(True, False, False)[0] if need_input else None
        grad_b = grad_out.sum((0, 2, 3)) if need_bias else None
        return grad_x, patch_grad(), grad_b, None, None


class TunedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters and forward maths) that trains on the CPU through
    :class:`_PatchGradConv2d`; elsewhere, without gradients or inside :func:`reference_convolutions`, it is
    a plain ``nn.Conv2d``. Square kernels, equal stride and padding on both axes, zero padding, one group.

    Shapes: (N, C_in, H, W) -> (N, C_out, H_out, W_out).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros" or isinstance(self.padding, str)
                or len({*self.kernel_size}) != 1 or len({*self.stride}) != 1 or len({*self.padding}) != 1):
            raise ValueError("TunedConv2d takes square kernels, equal strides and paddings, zero padding, one group")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or not torch.is_grad_enabled() or not self.weight.requires_grad
                or getattr(_reference, "on", False)):
            return super().forward(x)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):
            # what autocast does for conv2d, outside the Function so that autograd casts the gradients back
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _PatchGradConv2d.apply(x, weight, bias, self.stride[0], self.padding[0])
