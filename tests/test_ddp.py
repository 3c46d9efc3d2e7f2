"""Data-parallel training on CPU with the gloo backend: 2 processes started with torch.multiprocessing.

- one step's DDP-averaged gradients equal one process's gradients on the concatenated batch;
- a 2-process run resumes from a 1-process checkpoint and continues exactly as a 1-process run would.
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from doublure.models import distributed as D

GLOBAL_BATCH = 4
DATASET = 16
SEED = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(DATASET, 3, 16, 16, generator=g)
    return images, images.flip(-1)  # learn a mirror: any target will do


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 3, 3, padding=1))


def _train(model, optimizer, env, start: int, stop: int) -> None:
    images, targets = _dataset()
    for it in range(start, stop):
        idx = D.batch_indices(DATASET, GLOBAL_BATCH, it, SEED, env)
        optimizer.zero_grad()
        loss = torch.nn.functional.l1_loss(model(images[idx]), targets[idx])
        loss.backward()
        optimizer.step()


def _join(rank: int, world_size: int, port: int) -> D.DistEnv:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    return D.init_distributed(backend="gloo", device="cpu", timeout_s=60)


def _ddp_job(rank: int, world_size: int, port: int, folder: str, iterations: int) -> None:
    """Both checks in one 2-process job (starting processes is the slow part): the first step's
    gradients, then resuming the 1-process checkpoint ``folder/one.pt`` up to ``iterations``."""
    env = _join(rank, world_size, port)
    model = D.wrap(_model(), env)
    images, targets = _dataset()
    idx = D.batch_indices(DATASET, GLOBAL_BATCH, 0, SEED, env)
    torch.nn.functional.l1_loss(model(images[idx]), targets[idx]).backward()
    if env.is_main:
        torch.save({"grads": [p.grad for p in D.unwrap(model).parameters()], "idx": idx},
                   os.path.join(folder, "grads.pt"))

    state = torch.load(os.path.join(folder, "one.pt"), weights_only=True)
    model = _model()
    model.load_state_dict(state["model"])
    model = D.wrap(model, env)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimizer.load_state_dict(state["optimizer"])
    _train(model, optimizer, env, state["iteration"], iterations)
    if env.is_main:
        torch.save(D.unwrap(model).state_dict(), os.path.join(folder, "two.pt"))
    D.shutdown(env)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A 1-process run of 3 iterations checkpointed, then the 2-process job; returns the folder and the
    1-process model and optimiser to continue."""
    folder = tmp_path_factory.mktemp("ddp")
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, optimizer, D.DistEnv(), 0, 3)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": 3},
               folder / "one.pt")
    mp.start_processes(_ddp_job, args=(2, _free_port(), str(folder), 6), nprocs=2, join=True,
                       start_method="spawn")
    return folder, model, optimizer


def test_ddp_gradients_equal_single_process_on_concatenated_batch(ddp_run):
    folder, _, _ = ddp_run
    ddp = torch.load(folder / "grads.pt", weights_only=True)

    model = _model()
    images, targets = _dataset()
    idx = D.batch_indices(DATASET, GLOBAL_BATCH, 0, SEED, D.DistEnv())
    torch.nn.functional.l1_loss(model(images[idx]), targets[idx]).backward()

    assert torch.equal(ddp["idx"], idx[:GLOBAL_BATCH // 2])  # rank 0 had the first half of the same batch
    for g_ddp, p in zip(ddp["grads"], model.parameters()):
        assert g_ddp.abs().sum() > 0
        torch.testing.assert_close(g_ddp, p.grad, rtol=1e-5, atol=1e-6)


def test_two_processes_resume_a_one_process_checkpoint(ddp_run):
    folder, model, optimizer = ddp_run
    resumed_on_two = torch.load(folder / "two.pt", weights_only=True)
    checkpoint = torch.load(folder / "one.pt", weights_only=True)["model"]

    _train(model, optimizer, D.DistEnv(), 3, 6)  # the same 3 iterations continued on one process
    for name, value in model.state_dict().items():
        assert not torch.equal(value, checkpoint[name])  # training moved the weights
        torch.testing.assert_close(resumed_on_two[name], value, rtol=1e-4, atol=1e-5)


def test_uneven_batch_is_refused():
    with pytest.raises(D.DoublureError, match="does not divide"):
        D.shard_bounds(5, D.DistEnv(rank=0, world_size=2))
