"""Data-parallel training on CPU with the gloo backend: 2 processes started with torch.multiprocessing.

- one step of the identity model's ``train_step``: the DDP-averaged gradients equal one process's gradients
  on the concatenated batch (and the same for a toy model, step by step);
- the real ``Trainer`` resumes a 1-process checkpoint on 2 processes, the ranks stay in sync and only rank 0
  writes; with the toy model, the 2-process continuation equals the 1-process one exactly;
- the ranks agree: a stop on one rank ends both (no hang), a non-finite step on one rank rolls both back to
  the same checkpoint;
- the batch's shards on 2 processes are exactly the 1-process batch, augmented shard by shard or whole.

Starting processes is the slow part, so one 2-process job (``ddp_run``) does all of it.
"""
import dataclasses
import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from doublure.faces.extract import extract_faceset
from doublure.models import distributed as D
from doublure.models.arch import IdentityModel, config_for
from doublure.models.augment import AugmentSettings
from doublure.models.data import FaceData, augment_batch, make_raw_batch
from doublure.models.dbm import load_weights, read_training_state
from doublure.models.losses import LossWeights, ssim_window
from doublure.models.train import TrainConfig, Trainer, train_step

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
    """Set what torchrun sets, then join the group as the Trainer does."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    return D.init_distributed(backend="gloo", device="cpu", timeout_s=120)


ID_BATCH = 4


def _identity_model() -> IdentityModel:
    torch.manual_seed(3)
    return IdentityModel(config_for(64, width=0.25))


def _identity_batch() -> dict[str, torch.Tensor]:
    """A global batch shaped like ``augment_batch``'s: random faces, masks in [0, 1]."""
    g = torch.Generator().manual_seed(5)
    batch = {}
    for name in ("a", "b"):
        batch[f"{name}_in"] = torch.rand(ID_BATCH, 3, 64, 64, generator=g)
        batch[f"{name}_target"] = torch.rand(ID_BATCH, 3, 64, 64, generator=g)
        batch[f"{name}_masks"] = torch.rand(ID_BATCH, 3, 64, 64, generator=g)
    return batch


def _identity_step_gradients(model: torch.nn.Module, env: D.DistEnv) -> list[torch.Tensor]:
    """This rank's share of the global batch through ``train_step`` (no clipping, a step of size 0)."""
    start, stop = D.shard_bounds(ID_BATCH, env)
    shard = {k: v[start:stop] for k, v in _identity_batch().items()}
    optimizer = torch.optim.SGD(D.unwrap(model).parameters(), lr=0.0)
    pending = train_step(model, shard, optimizer, weights=LossWeights(), window=ssim_window(64), clip_grad=0.0)
    assert pending.result().finite
    return [p.grad.clone() for p in D.unwrap(model).parameters()]


def _train_config(folder: str, **changes) -> TrainConfig:
    base = TrainConfig(out=os.path.join(folder, "actor.dbm"), source=[os.path.join(folder, "faces_a")],
                       target=[os.path.join(folder, "faces_b")], res=64, width=0.25, batch=4, warmup=0,
                       lr=1e-3, preview_every=0, log_every=1, checkpoint_minutes=1000.0, precision="fp32",
                       compile=False, prefetch=1, workers=1, threads=1, device="cpu")
    return dataclasses.replace(base, **changes)


def _weights_digest(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


NAN_ITERATION = 1


class _NonFiniteOnRank1(Trainer):
    """A Trainer whose rank 1 alone gets a NaN batch at :data:`NAN_ITERATION`."""

    def _produce(self, iteration: int) -> dict[str, torch.Tensor]:
        batch = super()._produce(iteration)
        if self.env.rank == 1 and iteration == NAN_ITERATION:
            batch["a_in"] = torch.full_like(batch["a_in"], float("nan"))
        return batch


def _ddp_job(rank: int, world_size: int, port: int, folder: str, iterations: int, port2: int) -> None:
    """Everything that needs 2 processes, in one job; rank 0 saves what the tests compare."""
    env = _join(rank, world_size, port)
    results = {"any_rank": (D.any_rank(rank == 1, env), D.any_rank(False, env)),
               "mean": D.all_reduce_mean(float(rank + 1), env)}

    # the identity model's training step
    results["identity_grads"] = _identity_step_gradients(D.wrap(_identity_model(), env), env)

    # a toy model: the first step's gradients, then continuing the 1-process checkpoint ``one.pt``
    model = D.wrap(_model(), env)
    images, targets = _dataset()
    idx = D.batch_indices(DATASET, GLOBAL_BATCH, 0, SEED, env)
    torch.nn.functional.l1_loss(model(images[idx]), targets[idx]).backward()
    results["grads"] = [p.grad for p in D.unwrap(model).parameters()]
    results["idx"] = idx
    state = torch.load(os.path.join(folder, "one.pt"), weights_only=True)
    model = _model()
    model.load_state_dict(state["model"])
    model = D.wrap(model, env)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimizer.load_state_dict(state["optimizer"])
    _train(model, optimizer, env, state["iteration"], iterations)
    results["two"] = D.unwrap(model).state_dict()

    # the real Trainer resuming the 1-process checkpoint of actor.dbm (the process group is already up; the
    # Trainer leaves it at the end)
    trainer = Trainer(_train_config(folder, resume=True, iters=4))
    trainer.run()
    with open(os.path.join(folder, f"trainer_rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(_weights_digest(trainer.model), f)
    if env.is_main:
        torch.save(results, os.path.join(folder, "results.pt"))

    # agreement: a checkpoint every step, a NaN batch on rank 1 only (both roll back to the same file), and
    # rank 1 alone out of budget one iteration early (both stop there)
    _join(rank, world_size, port2)
    trainer = _NonFiniteOnRank1(_train_config(folder, out=os.path.join(folder, "agree.dbm"),
                                              iters=3 if rank == 1 else 4, checkpoint_minutes=0.0))
    trainer.run()
    with open(os.path.join(folder, f"agree_rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump({"digest": _weights_digest(trainer.model), "iteration": trainer.iteration,
                   "rollbacks": trainer.rollbacks}, f)


@pytest.fixture(scope="module")
def facesets(tmp_path_factory):
    """A folder with two small facesets, ``faces_a`` and ``faces_b``."""
    folder = tmp_path_factory.mktemp("ddp")
    media = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "media", "mead")
    for name, clip in (("faces_a", "M030_front_angry_level3_001.mp4"), ("faces_b", "W009_front_angry_level3_001.mp4")):
        extract_faceset([os.path.join(media, clip)], str(folder / name), size=64, every=12)
    return folder


@pytest.fixture(scope="module")
def ddp_run(facesets):
    """A 1-process run of 3 iterations checkpointed, then the 2-process job; returns the folder and the
    1-process model and optimiser to continue."""
    folder = facesets
    Trainer(_train_config(str(folder), iters=2)).run()  # the 1-process checkpoint the 2 processes resume

    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, optimizer, D.DistEnv(), 0, 3)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": 3},
               folder / "one.pt")
    job = mp.start_processes(_ddp_job, args=(2, _free_port(), str(folder), 6, _free_port()), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not job.join(timeout=2):   # raises when a rank failed
        if time.monotonic() > deadline:   # a rank left waiting in a collective: end them all
            for process in job.processes:
                process.kill()
            pytest.fail("the 2-process job hung")
    return folder, model, optimizer


def test_ddp_gradients_equal_single_process_on_concatenated_batch(ddp_run):
    folder, _, _ = ddp_run
    ddp = torch.load(folder / "results.pt", weights_only=True)

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
    resumed_on_two = torch.load(folder / "results.pt", weights_only=True)["two"]
    checkpoint = torch.load(folder / "one.pt", weights_only=True)["model"]

    _train(model, optimizer, D.DistEnv(), 3, 6)  # the same 3 iterations continued on one process
    for name, value in model.state_dict().items():
        assert not torch.equal(value, checkpoint[name])  # training moved the weights
        torch.testing.assert_close(resumed_on_two[name], value, rtol=1e-4, atol=1e-5)


def test_identity_train_step_gradients_equal_single_process(ddp_run):
    folder, _, _ = ddp_run
    ddp = torch.load(folder / "results.pt", weights_only=True)["identity_grads"]
    single = _identity_step_gradients(_identity_model(), D.DistEnv())
    assert len(ddp) == len(single) > 10
    for g_ddp, g_one in zip(ddp, single):
        torch.testing.assert_close(g_ddp, g_one, rtol=1e-4, atol=1e-6)


def test_trainer_resumes_one_process_checkpoint_on_two(ddp_run):
    folder, _, _ = ddp_run
    digests = [json.loads((folder / f"trainer_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert digests[0] == digests[1]  # the ranks hold the same weights after the DDP steps
    train_state, optimizer_state = read_training_state(str(folder / "actor.dbm"))
    assert train_state["iteration"] == 4 and optimizer_state is not None
    _, weights, meta = load_weights(str(folder / "actor.dbm"))
    assert _weights_digest_of(weights) == pytest.approx(digests[0], rel=1e-12)  # rank 0 wrote them
    with open(folder / "actor.training" / "loss.jsonl", encoding="utf-8") as f:
        logged = [json.loads(line).get("iteration") for line in f if line.strip()]
    assert [i for i in logged if i is not None] == [1, 2, 2, 3, 4, 4]  # steps and checkpoints, one writer


def _weights_digest_of(state: dict[str, torch.Tensor]) -> float:
    model = IdentityModel(config_for(64, width=0.25))
    model.load_state_dict(state)
    return _weights_digest(model)


def test_rank_agreement(ddp_run):
    folder, _, _ = ddp_run
    results = torch.load(folder / "results.pt", weights_only=True)
    assert results["any_rank"] == (True, False)  # rank 1's flag reached rank 0
    assert results["mean"] == 1.5


def test_one_rank_stopping_stops_both(ddp_run):
    folder, _, _ = ddp_run
    ranks = [json.loads((folder / f"agree_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["iteration"] for r in ranks] == [3, 3]  # rank 0 had budget for 4 but stopped with rank 1
    assert read_training_state(str(folder / "agree.dbm"))[0]["iteration"] == 3


def test_non_finite_step_on_one_rank_rolls_both_back_to_the_same_checkpoint(ddp_run):
    folder, _, _ = ddp_run
    ranks = [json.loads((folder / f"agree_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rollbacks"] for r in ranks] == [1, 1]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # same roll-back target, so the same weights after
    with open(folder / "agree.training" / "loss.jsonl", encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    rollbacks = [e for e in events if e.get("event") == "rollback"]
    assert rollbacks == [{"event": "rollback", "iteration": NAN_ITERATION, "restored": NAN_ITERATION}]


def test_two_process_batches_equal_the_one_process_batch(facesets):
    data_a = FaceData([str(facesets / "faces_a")], 64)
    data_b = FaceData([str(facesets / "faces_b")], 64)
    settings = AugmentSettings(transfer=0.5)
    one = augment_batch(make_raw_batch(data_a, data_b, 4, 3, SEED, True, settings, D.DistEnv()))
    shards = [augment_batch(make_raw_batch(data_a, data_b, 4, 3, SEED, True, settings,
                                           D.DistEnv(rank=r, world_size=2))) for r in (0, 1)]
    for key, value in one.items():
        assert value.shape[0] == 4
        assert torch.equal(torch.cat([shards[0][key], shards[1][key]]), value), key
    assert not torch.equal(one["a_in"][0], one["a_in"][1])


def test_uneven_batch_is_refused():
    with pytest.raises(D.DoublureError, match="does not divide"):
        D.shard_bounds(5, D.DistEnv(rank=0, world_size=2))
