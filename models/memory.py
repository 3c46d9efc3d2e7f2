"""What a training run will hold in memory, estimated before any of it is allocated (issue 26, item 9).

``doublure train --res 1024`` on a CPU used to build its network, decode its faces and start stepping until
the machine ran out of memory. :func:`training_memory` sizes the run from its configuration alone: the
network is built on PyTorch's ``meta`` device (shapes, no storage) and one training step's forward and loss
run there, counting the bytes autograd saves for the backward pass; the rest follows from the parameter
count, the batch and the faceset index. :func:`check_training_memory` refuses a run past the budget with the
figure it needs and the options that change it.
"""
from __future__ import annotations

import dataclasses
import os

import torch

from doublure.engine.errors import DoublureError

from .arch import IdentityModel, ModelConfig
from .data import MASK_CHANNELS
from .losses import LossWeights, identity_loss, ssim_window

#: bytes per parameter a run holds: fp32 weights, their gradients and Adam's two moments (16), and the
#: roll-back copy of the weights and moments kept until the next good checkpoint (12)
BYTES_PER_PARAMETER = 28
#: the share of the machine's memory a run may take when no budget is given (the rest: the system, the app)
DEFAULT_BUDGET_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class TrainingMemory:
    """Bytes a training run holds at its peak, by part.

    Attributes:
        parameters: weights, gradients, optimiser moments and the roll-back copy.
        activations: what one step's forward and loss save for the backward pass, both identities.
        batches: the step's batch and the batches made ahead of it.
        faces: the decoded faces the facesets' caches keep (crops, masks) at the model's resolution.
        process: what the process held before (Python, torch's libraries: about 0.5 GiB).
    """

    parameters: int
    activations: int
    batches: int
    faces: int
    process: int = 0

    @property
    def device(self) -> int:
        """What lives on the training device: the network, its step and its batch."""
        return self.parameters + self.activations + self.batches

    @property
    def host(self) -> int:
        """What lives in host memory beside the device's share: the decoded faces and the process itself."""
        return self.faces + self.process

    @property
    def total(self) -> int:
        return self.device + self.host

    def describe(self) -> str:
        return (f"model and optimiser {_gib(self.parameters)}, one step's activations {_gib(self.activations)}, "
                f"batches {_gib(self.batches)}, decoded faces {_gib(self.faces)}, the process so far "
                f"{_gib(self.process)}")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def decoded_face_bytes(res: int) -> int:
    """Bytes one decoded face takes in a faceset's cache at ``res``: a 16-bit RGB crop, 8-bit masks and its
    landmarks (see ``FaceData.get``)."""
    return 3 * res * res * 2 + len(MASK_CHANNELS) * res * res + 478 * 2 * 4


def step_activation_bytes(cfg: ModelConfig, batch: int, shared_expression: bool = False) -> tuple[int, int]:
    """(parameter count, bytes saved for the backward pass) of one training step of ``batch`` faces of each
    identity, measured on the ``meta`` device: nothing is allocated, and a 1024 px model costs well under a
    second. fp32 figures: mixed precision saves less, so they bound it."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.device("meta"):
        model = IdentityModel(cfg)
        params = sum(p.numel() for p in model.parameters())
        faces = torch.empty(batch, 3, cfg.res, cfg.res).contiguous(memory_format=torch.channels_last)
        mask = torch.empty(batch, 1, cfg.res, cfg.res)
        window = ssim_window(cfg.res)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            for rgb, matte in model(faces, faces, shared_expression):
                identity_loss(rgb, matte, faces, mask, mask, LossWeights(), window)
    return params, sum(saved.values())


def training_memory(cfg: ModelConfig, batch: int, faces: list[int], cache_bytes: int, prefetch: int,
                    data_copies: int = 1, shared_expression: bool = False, process: int = 0) -> TrainingMemory:
    """The peak memory of training ``cfg`` (see :class:`TrainingMemory`).

    Args:
        cfg: the model's configuration (resolution, widths).
        batch: faces of each identity a step.
        faces: the number of faces of each ``FaceData`` the run decodes (one per identity, or one shared).
        cache_bytes: the most one ``FaceData`` keeps decoded.
        prefetch: batches made ahead of the step.
        data_copies: processes each holding its own decoded faces (the batch-making workers on a GPU run).
        process: bytes the process holds already (:func:`resident_bytes`).

    Checked against ``doublure train`` at 128 px, width 0.5, fp32 on the CPU: batches of 4 and 16 estimated
    at 0.9 and 2.2 GiB plus the process (0.3-0.5 GiB), measured peaks 1.38 and 2.78 GiB.
    """
    params, activations = step_activation_bytes(cfg, batch, shared_expression)
    # a step's batch: for each identity the warped input, the target and the masks, in fp32
    one_batch = 2 * batch * (3 + 3 + len(MASK_CHANNELS)) * cfg.res * cfg.res * 4
    decoded = sum(min(n * decoded_face_bytes(cfg.res), cache_bytes) for n in faces)
    return TrainingMemory(parameters=params * BYTES_PER_PARAMETER, activations=activations,
                          batches=one_batch * (1 + prefetch), faces=decoded * max(1, data_copies), process=process)


def resident_bytes() -> int:
    """The resident memory of this process now (Linux's /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource   # not on Windows; macOS gives bytes, not kB

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def host_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budgets(device: torch.device) -> tuple[int, int]:
    """(host, device) budgets in bytes when none is given: 80% of the machine's memory, and on a GPU 80%
    of its memory (on a CPU the device is the host: the same figure)."""
    host = int(host_memory_bytes() * DEFAULT_BUDGET_FRACTION)
    if device.type == "cuda":
        return host, int(torch.cuda.get_device_properties(device).total_memory * DEFAULT_BUDGET_FRACTION)
    return host, host


def check_training_memory(estimate: TrainingMemory, device: torch.device, what: str,
                          budget_gib: float | None = None) -> None:
    """Raise DoublureError naming ``what`` (the run: resolution, batch, width) when ``estimate`` passes the
    budget: ``budget_gib`` (``--memory-gb``) for everything on a CPU, for each of host and GPU memory on a
    GPU; by default :func:`default_budgets`."""
    if budget_gib is not None:
        host = gpu = int(budget_gib * 2**30)
        source = f"the {budget_gib:g} GiB of --memory-gb"
    else:
        host, gpu = default_budgets(device)
        source = (f"{DEFAULT_BUDGET_FRACTION:.0%} of this machine's {_gib(host_memory_bytes())}; --memory-gb "
                  f"sets it")
    if device.type == "cuda":
        over = [(needed, budget, where) for needed, budget, where in
                ((estimate.device, gpu, f"GPU memory on {device}"), (estimate.host, host, "host memory"))
                if needed > budget]
    else:
        over = [(estimate.total, host, "memory")] if estimate.total > host else []
    if over:
        needed, budget, where = over[0]
        raise DoublureError(
            f"{what} would need about {_gib(needed)} of {where} ({estimate.describe()}), more than the "
            f"{_gib(budget)} budget ({source}): lower --res, --batch or --width, or give a larger --memory-gb")
