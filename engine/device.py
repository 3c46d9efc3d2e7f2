"""Which torch device evaluation runs on (CUDA when present, else CPU; ``DOUBLURE_DEVICE`` overrides), and
whether this CPU runs bf16 natively."""
from __future__ import annotations

import functools
import os

import torch

from .errors import DoublureError


@functools.lru_cache(maxsize=None)
def _resolve(requested: str | None) -> torch.device:
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise DoublureError(f"DOUBLURE_DEVICE={requested!r} is not a torch device: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DoublureError(f"DOUBLURE_DEVICE={requested!r} but CUDA is not available on this machine")
    else:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    # With its index: a tensor's device is always "cuda:N", and torch.device("cuda") != torch.device("cuda:0"),
    # so an index-less device would never match the images already on it (Image.to would copy every time) and
    # would key model and memo caches apart from the tensors' own device.
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def default_device() -> torch.device:
    """The evaluation device: ``DOUBLURE_DEVICE`` if set (``cpu``, ``cuda``, ``cuda:1``), else CUDA if present."""
    return _resolve(os.environ.get("DOUBLURE_DEVICE") or None)


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512 BF16 / AMX), where bf16 beats fp32.

    Elsewhere torch emulates bf16 on the CPU, hundreds of times slower than fp32. Read once per process.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        flags = ""
    return (" avx512_bf16" in flags or " amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def upload(tensor: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the device's queue.

    A copy to a GPU from pageable host memory first waits for everything queued on the stream (on an H200 the
    demo graph's per-frame grids, masks and tables did so ~50 times a frame); from page-locked memory the
    copy is queued like a kernel. Elsewhere, and for a tensor already off the host, this is ``tensor.to``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
