"""Training on two small MEAD facesets (W009 as plate actor A, M030 as target actor B) with a tiny 64 px model:
the loss falls, save -> load is identical, resume is exact and refuses other shapes, a NaN rolls back,
SIGTERM leaves a loadable checkpoint, pretraining feeds --from."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from doublure.engine.errors import DoublureError
from doublure.faces.extract import ExtractOptions, extract_faceset
from doublure.models.dbm import (load_model, model_card, optimizer_from_files, optimizer_to_files, read_meta,
                                 read_training_state, rights_record, zip_model)
from doublure.models.data import FaceData, ProcessBatchLoader, augment_batch
from doublure.models.distributed import DistEnv, batch_indices
from doublure.models.memory import TrainingMemory, check_training_memory, host_memory_bytes
from doublure.models.train import TrainConfig, Trainer, make_optimizer

RIGHTS = rights_record("M030", "M030 (the actor)", "2024-01-10", "AGR-0042", "film", "2099-12-31")
TINY = dict(res=64, width=0.125, batch=4, lr=5e-4, warmup=20, threads=2, workers=1)


@pytest.fixture(scope="module")
def facesets(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("facesets")
    a, b = str(root / "w009"), str(root / "m030")
    extract_faceset([str(media_dir / "mead/W009_front_happy_level3_001.mp4")], a, size=64, every=4)
    extract_faceset([str(media_dir / "mead/M030_front_happy_level3_001.mp4")], b, size=64, every=4)
    return a, b


def config(facesets, out, **kw):
    a, b = facesets
    opts = dict(TINY, out=str(out), source=[a], target=[b], checkpoint_minutes=60.0,
                first_checkpoint_minutes=60.0, preview_every=0, log_every=10, rights=RIGHTS)
    opts.update(kw)
    return TrainConfig(**opts)


def log_records(out):
    path = str(out)[:-4] + ".training/loss.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def trained(facesets, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny.dbm"
    events = []
    trainer = Trainer(config(facesets, out, iters=240, preview_every=120), progress=events.append)
    summary = trainer.run()
    return trainer, out, events, summary


def test_loss_falls(trained):
    trainer, out, events, summary = trained
    steps = [r for r in log_records(out) if "loss" in r]
    assert [r["iteration"] for r in steps] == list(range(10, 241, 10))
    first = np.mean([r["loss"] for r in steps[:3]])
    last = np.mean([r["loss"] for r in steps[-3:]])
    assert last < 0.75 * first, (first, last)
    assert summary["iteration"] == 240 and summary["rollbacks"] == 0
    step_events = [e for e in events if e["event"] == "step"]
    assert step_events[-1]["its_per_s"] > 0 and 0 <= step_events[-1]["data_wait_fraction"] < 1
    assert step_events[-1]["samples_per_s"] == pytest.approx(step_events[-1]["its_per_s"] * 8)
    assert events[-1]["event"] == "done"
    # the random warp is off for the last 20% of the iterations
    assert step_events[0]["warp"] and not step_events[-1]["warp"]
    preview = trainer.latest_preview()
    assert preview.shape == (4 * 64, 5 * 64, 3) and preview.dtype == np.uint8
    assert os.path.isfile(str(out)[:-4] + ".training/preview.png")


def test_worker_processes_make_the_batches_the_trainer_would(trained):
    """On a GPU the Trainer's faces and augmentation draws come from forked worker processes and the
    augmentation runs in the training process, on the device: the same batches, in iteration order, as
    made whole in the training process; a producer's error reaches the caller with its type."""
    trainer = trained[0]
    loader = ProcessBatchLoader(trainer._produce_raw, 7, prefetch=4, workers=2)
    try:
        for iteration in range(7, 12):
            got, want = augment_batch(loader.next()), trainer._produce(iteration)
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    finally:
        loader.close()

    def unreadable(iteration):
        raise DoublureError(f"faceset unreadable at iteration {iteration}")

    loader = ProcessBatchLoader(unreadable, 3, workers=1)
    with pytest.raises(DoublureError, match="unreadable at iteration 3"):
        loader.next()
    loader.close()


def test_blur_and_compression_reach_the_input_only(facesets):
    """The draws that degrade a face come after its other draws: the same seed gives the same targets, warp
    and colour with or without them, and only the inputs of the faces drawn change."""
    from doublure.models.augment import AugmentSettings
    from doublure.models.data import make_raw_batch

    a, b = FaceData([facesets[0]], 64), FaceData([facesets[1]], 64)
    clean = make_raw_batch(a, b, 8, 3, 0, True, AugmentSettings(blur=0, compression=0))
    harsh = make_raw_batch(a, b, 8, 3, 0, True, AugmentSettings(blur=1, compression=1))
    assert "a_blur" not in clean and bool((harsh["a_blur"] > 0).all()) and bool((harsh["b_quality"] > 0).all())
    got, want = augment_batch(harsh), augment_batch(clean)
    for name in ("a", "b"):
        assert torch.equal(got[f"{name}_target"], want[f"{name}_target"])
        assert torch.equal(got[f"{name}_masks"], want[f"{name}_masks"])
        assert float((got[f"{name}_in"] - want[f"{name}_in"]).abs().mean()) > 2e-3


def test_save_load_identical(trained, tmp_path):
    trainer, out, _, _ = trained
    loaded = load_model(str(out), trainer.device)  # beside the trained model: the same device, the same kernels
    x = trainer.data_a.batch([0, 1, 2])[0].to(trainer.device).contiguous(memory_format=torch.channels_last)
    trainer.model.eval()
    with torch.no_grad():
        want = trainer.model.swap(x)
        got = loaded.model.swap(x)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    zipped = str(tmp_path / "tiny_zip.dbm")
    zip_model(str(out), zipped)
    with torch.no_grad():
        assert torch.equal(load_model(zipped, trainer.device).model.swap(x)[0], want[0])
    meta = read_meta(str(out))
    assert meta["training"]["iterations"] == 240 and meta["face_type"] == "whole_face"
    assert meta["facesets"]["a"][0]["items"] > 10 and len(meta["facesets"]["b"][0]["digest"]) == 64
    assert meta["rights"]["agreement"] == "AGR-0042" and loaded.rights_warning == ""
    card = model_card(str(out))
    assert "240 iterations" in card and "AGR-0042" in card


def test_resume_is_exact_and_continues_the_log(facesets, tmp_path):
    straight, split = tmp_path / "straight.dbm", tmp_path / "split.dbm"
    # the warp schedule depends on the budget, so it is kept on here to compare a 30 with a 15 + 15 run
    Trainer(config(facesets, straight, iters=30, warp_until=1.0)).run()
    Trainer(config(facesets, split, iters=15, warp_until=1.0)).run()
    resumed = Trainer(config(facesets, split, iters=30, resume=True, res=None, warp_until=1.0))
    resumed.run()
    a, b = load_model(str(straight)).model.state_dict(), load_model(str(split)).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert read_training_state(str(split))[0]["iteration"] == 30
    steps = [r["iteration"] for r in log_records(split) if "loss" in r]
    assert steps == [10, 20, 30]   # iteration 10 from the first run, 20 and 30 from the resumed one
    losses_straight = [r["loss"] for r in log_records(straight) if "loss" in r]
    losses_split = [r["loss"] for r in log_records(split) if "loss" in r]
    np.testing.assert_allclose(losses_split, losses_straight, rtol=1e-3)


def test_resume_refuses_a_different_shape(trained, facesets):
    _, out, _, _ = trained
    with pytest.raises(DoublureError, match="different shape: res 64 in the model vs 96 asked"):
        Trainer(config(facesets, out, iters=250, resume=True, res=96)).run()
    with pytest.raises(DoublureError, match="different shape: arch df"):
        Trainer(config(facesets, out, iters=250, resume=True, arch="liae")).run()
    with pytest.raises(DoublureError, match="pass --resume"):
        Trainer(config(facesets, out, iters=250)).run()
    with pytest.raises(DoublureError, match="compile mode 'fast' is not one of default, reduce-overhead"):
        Trainer(config(facesets, out, iters=250, resume=True, compile_mode="fast")).run()
    with pytest.raises(DoublureError, match="--shared-expression needs a liae model .*tiny.dbm is df"):
        Trainer(config(facesets, out, iters=250, resume=True, shared_expression=True)).run()


def test_shared_expression_is_on_for_a_liae_identity_model_and_recorded(trained, facesets, tmp_path):
    """A liae identity model trains with it unless told not to; a df model (``trained``) has no private code."""
    assert read_meta(str(trained[1]))["training"]["hyper"]["shared_expression"] is False
    for asked, recorded in ((None, True), (False, False)):
        out = tmp_path / f"liae_{asked}.dbm"
        Trainer(config(facesets, out, iters=5, arch="liae", shared_expression=asked)).run()
        meta = read_meta(str(out))
        assert meta["training"]["iterations"] == 5 and meta["training"]["hyper"]["shared_expression"] is recorded


def test_resume_a_shipped_model_continues_its_iterations(trained, facesets, tmp_path):
    _, out, _, _ = trained
    shipped = tmp_path / "shipped.dbm"
    zip_model(str(out), str(shipped))            # weights and card alone: no optimiser, no training state
    before = load_model(str(shipped)).model.state_dict()
    events = []
    Trainer(config(facesets, shipped, iters=250, resume=True, res=None), progress=events.append).run()
    state, opt = read_training_state(str(shipped))
    assert state["iteration"] == 250 and opt is not None
    assert read_meta(str(shipped))["training"]["iterations"] == 250
    # the fresh optimiser warms up from iteration 240: the step logged at 250 ran at half the learning rate
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["lr"] == pytest.approx(TINY["lr"] * 10 / TINY["warmup"])
    after = load_model(str(shipped)).model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_balanced_expressions_draw_rare_expressions_more_often(facesets):
    data = FaceData([facesets[0]], 64)
    weights = data.expression_weights()
    assert weights.shape == (len(data),) and float(weights.sum()) == pytest.approx(1.0)
    # the faces alone in their (mouth, eyes) bin against those of the most crowded bin
    rare, common = weights == weights.max(), weights == weights.min()
    assert weights.max() > 2 * weights.min() and rare.sum() >= 1 and common.sum() >= 4
    env = DistEnv()

    def rare_over_common(w):
        counts = torch.bincount(torch.cat([batch_indices(len(data), 4, it, 0, env, w) for it in range(600)]),
                                minlength=len(data)).double()
        return float(counts[rare].mean() / counts[common].mean())

    assert rare_over_common(None) < 1.3 < 1.6 < rare_over_common(weights)
    drawn = batch_indices(len(data), 4, 7, 0, env, weights)
    assert torch.equal(drawn, batch_indices(len(data), 4, 7, 0, env, weights))     # the stream is repeatable
    assert len(set(drawn.tolist())) == 4                                          # no face twice in a batch


def test_nan_rolls_back_to_the_last_checkpoint(facesets, tmp_path):
    out = tmp_path / "nan.dbm"
    poisoned = []

    def poison(info):
        # right after a checkpoint, blow up a weight: the next step's loss is NaN
        if info["event"] == "checkpoint" and info["iteration"] == 12 and not poisoned:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))
            poisoned.append(info["iteration"])

    trainer = Trainer(config(facesets, out, iters=20, checkpoint_minutes=0.0, log_every=5), progress=poison)
    summary = trainer.run()
    assert poisoned == [12] and summary["rollbacks"] == 1 and summary["iteration"] == 20
    events = [r for r in log_records(out) if r.get("event") == "rollback"]
    assert events == [{"event": "rollback", "iteration": 12, "restored": 12}]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(np.isfinite(r["loss"]) for r in log_records(out) if "loss" in r)
    assert all(torch.isfinite(t).all() for t in load_model(str(out)).model.state_dict().values())


def test_a_nan_batch_between_checkpoints_rolls_back_and_drops_the_step_queued_after_it(facesets, tmp_path):
    """The host reads a step's values once the next step is queued: the NaN step at iteration 7 is seen after
    step 8 ran, and the roll-back (to the starting weights: no checkpoint yet) replaces step 8's update."""
    out = tmp_path / "nan_batch.dbm"
    trainer = Trainer(config(facesets, out, iters=14, log_every=1))
    produce = trainer._produce_raw    # what the loader calls on a GPU, and _produce on the CPU

    def poisoned(iteration):
        raw = produce(iteration)
        if iteration == 7:
            raw["b_faces"][0] = float("nan")
        return raw

    trainer._produce_raw = poisoned
    summary = trainer.run()
    assert summary["rollbacks"] == 1 and summary["iteration"] == 14
    records = log_records(out)
    assert [r for r in records if r.get("event") == "rollback"] == [{"event": "rollback", "iteration": 7, "restored": 0}]
    # the logged steps: every one but the NaN step and the step queued after it, all finite
    logged = [r["iteration"] for r in records if "loss" in r]
    assert logged == [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert all(torch.isfinite(t).all() for t in load_model(str(out)).model.state_dict().values())


def test_a_non_finite_step_leaves_weights_and_optimiser_untouched_without_waiting_for_the_host():
    """With the fused optimiser the skip happens on the device (no read of the values needed)."""
    from doublure.models.arch import IdentityModel, config_for
    from doublure.models.losses import LossWeights, ssim_window
    from doublure.models.train import train_step

    torch.manual_seed(0)
    model = IdentityModel(config_for(64, "df", 0.125))
    optimizer = make_optimizer(model, 1e-3, (0.5, 0.999))
    batch = {k: torch.rand(2, 3, 64, 64) for k in ("a_in", "a_target", "b_in", "b_target", "a_masks", "b_masks")}
    assert train_step(model, batch, optimizer, weights=LossWeights(), window=ssim_window(64)).result().finite
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    batch["a_in"][0, 0, 0, 0] = float("inf")
    pending = train_step(model, batch, optimizer, weights=LossWeights(), window=ssim_window(64))
    assert not pending.result().finite
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for p, saved in zip(model.parameters(), moments):
        assert all(torch.equal(optimizer.state[p][k], v) for k, v in saved.items())   # step count included


def start_training(facesets, out, until, *extra):
    """A real ``doublure.models.train`` process on the tiny model, returned once its log holds ``until``."""
    a, b = facesets
    log = str(out)[:-4] + ".training/loss.jsonl"
    cmd = [sys.executable, "-m", "doublure.models.train", "--source", a, "--target", b, "--out", str(out),
           "--res", "64", "--width", "0.125", "--batch", "4", "--iters", "100000", "--threads", "1",
           "--log-every", "2", "--checkpoint-minutes", "60", "--preview-every", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(log) and any(until in line for line in open(log)):
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        raise AssertionError(proc.stdout.read().decode())
    return proc


def test_sigterm_leaves_a_loadable_checkpoint(facesets, tmp_path):
    out = tmp_path / "term.dbm"
    proc = start_training(facesets, out, '"loss"')
    try:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    state, opt = read_training_state(str(out))
    assert state["iteration"] >= 2 and opt is not None
    loaded = load_model(str(out))
    assert loaded.meta["training"]["iterations"] == state["iteration"]
    assert "no rights record" in loaded.rights_warning


def test_pretrain_then_from(facesets, tmp_path):
    a, b = facesets
    base = tmp_path / "base.dbm"
    Trainer(TrainConfig(out=str(base), pretrain=[a, b], iters=10, **TINY)).run()
    meta = read_meta(str(base))
    assert meta["training"]["pretrain"] and len(meta["facesets"]["pretrain"]) == 2
    out = tmp_path / "from.dbm"
    trainer = Trainer(config(facesets, out, iters=5, from_model=str(base), res=None))
    trainer.run()
    meta = read_meta(str(out))
    assert meta["training"]["iterations"] == 5 and meta["training"]["from"].startswith("base")
    with pytest.raises(DoublureError, match="different shape"):
        Trainer(config(facesets, tmp_path / "x.dbm", iters=5, from_model=str(base), res=128)).run()
    with pytest.raises(DoublureError, match="--pretrain trains on its own facesets"):
        Trainer(TrainConfig(out=str(tmp_path / "y.dbm"), pretrain=[a], source=[a], target=[b], iters=1)).run()


def test_fused_adam_resumes_channels_last_moments_exactly():
    """The moments come back from a checkpoint contiguous; the fused kernel needs the parameters' strides."""
    def conv_and_optimizer():
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(4, 6, 3).to(memory_format=torch.channels_last)
        return conv, make_optimizer(conv, 1e-2, (0.9, 0.99))

    def step(conv, optimizer, seed):
        optimizer.zero_grad()
        conv(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))).square().mean().backward()
        optimizer.step()

    straight, straight_opt = conv_and_optimizer()
    assert straight_opt.param_groups[0]["fused"]
    for seed in range(4):
        step(straight, straight_opt, seed)
    first, first_opt = conv_and_optimizer()
    for seed in range(2):
        step(first, first_opt, seed)
    resumed, resumed_opt = conv_and_optimizer()
    resumed.load_state_dict(first.state_dict())
    resumed_opt.load_state_dict(optimizer_from_files(*optimizer_to_files(first_opt.state_dict())))
    for seed in range(2, 4):
        step(resumed, resumed_opt, seed)
    assert torch.equal(resumed.weight, straight.weight)


def test_a_run_killed_after_its_early_first_checkpoint_resumes_from_it(facesets, tmp_path):
    """kill -9 soon after the start: the first checkpoint comes early (--first-checkpoint-minutes), not after
    --checkpoint-minutes, so there is something to resume."""
    out = tmp_path / "killed.dbm"
    proc = start_training(facesets, out, '"checkpoint"', "--first-checkpoint-minutes", "0.002")
    proc.kill()
    proc.communicate()
    iteration = read_training_state(str(out))[0]["iteration"]
    assert iteration >= 1
    resumed = Trainer(config(facesets, out, iters=iteration + 2, resume=True, res=None))
    assert resumed.run()["iteration"] == iteration + 2


def test_a_run_that_fails_writes_a_checkpoint_of_its_steps(facesets, tmp_path, caplog):
    out = tmp_path / "failed.dbm"
    trainer = Trainer(config(facesets, out, iters=50))
    produce = trainer._produce_raw

    def faceset_gone(iteration):
        if iteration == 6:
            raise OSError("the faceset's server went away")
        return produce(iteration)

    trainer._produce_raw = faceset_gone
    with pytest.raises(OSError, match="went away"):
        trainer.run()
    assert read_training_state(str(out))[0]["iteration"] == 6
    assert "checkpoint written, --resume continues from it" in caplog.text
    assert all(torch.isfinite(t).all() for t in load_model(str(out)).model.state_dict().values())


def test_resume_with_weights_or_optimiser_of_another_shape_says_so(facesets, tmp_path, capsys):
    from doublure.app import cli

    a, b = facesets
    small, wide = tmp_path / "small.dbm", tmp_path / "wide.dbm"
    Trainer(config(facesets, small, iters=2)).run()
    Trainer(config(facesets, wide, iters=2, width=0.25)).run()
    args = ["train", "--source", a, "--target", b, "--iters", "4", "--resume", "--threads", "1"]
    for name in ("optimizer.safetensors", "train_state.json"):   # another model's optimiser state
        (small / name).write_bytes((wide / name).read_bytes())
    assert cli.main(args + ["--out", str(small)]) == 1
    err = capsys.readouterr().err
    assert f"the optimiser state in {small} does not fit its weights" in err and "Traceback" not in err
    card = json.loads((wide / "model.json").read_text())   # a card that does not describe its weights
    card["architecture"]["e_ch"] = 8
    (wide / "model.json").write_text(json.dumps(card))
    assert cli.main(args + ["--out", str(wide)]) == 1
    err = capsys.readouterr().err
    assert "weights.safetensors weights: tensor encoder.blocks.0.conv.weight is (16, 3, 5, 5), but the card's " \
           "architecture makes it (8, 3, 5, 5)" in err and "Traceback" not in err


def test_a_faceset_too_small_to_learn_from_is_refused_and_a_thin_one_warned(facesets, tmp_path, caplog):
    import json
    import shutil

    small = tmp_path / "five_faces"
    shutil.copytree(facesets[0], small)
    index = json.loads((small / "index.json").read_text())
    index["items"] = index["items"][:5]
    (small / "index.json").write_text(json.dumps(index))
    with pytest.raises(DoublureError, match=r"faceset .*five_faces holds 5 faces: at least 8 are needed"):
        Trainer(config(facesets, tmp_path / "x.dbm", iters=1, source=[str(small)])).run()
    thin = json.loads(open(os.path.join(facesets[0], "index.json")).read())
    thin["items"] = thin["items"][:12]
    (small / "index.json").write_text(json.dumps(thin))
    Trainer(config(facesets, tmp_path / "y.dbm", iters=1, source=[str(small)])).run()
    assert "holds only 12 faces" in caplog.text
@pytest.fixture(scope="module")
def faceset_512(media_dir, tmp_path_factory):
    """A few 512 px crops (the MEAD faces are about 100 px: the size filter is off to keep them)."""
    path = str(tmp_path_factory.mktemp("fs512") / "m030")
    extract_faceset([str(media_dir / "mead/M030_front_neutral_level1_001.mp4")], path, size=512, every=40,
                    options=ExtractOptions(min_face_ratio=0.0))
    return path


# The child reports its own peak (VmHWM: the high-water mark of its memory since exec). Neither os.wait4's nor
# RUSAGE_CHILDREN's maxrss will do: Linux counts into them what the child held between fork and exec, a share
# of this test process (about 7 GB late in the whole suite).
_REPORT_PEAK = """import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        print("PEAK_KB", next(line for line in status if line.startswith("VmHWM:")).split()[1], file=sys.stderr)
atexit.register(report)
runpy.run_module("doublure.models.train", run_name="__main__", alter_sys=True)
"""


def run_train(*args):
    """``python -m doublure.models.train ARGS`` in a child process: its exit status and output, and ``maxrss``,
    its own peak memory in bytes."""
    from types import SimpleNamespace

    proc = subprocess.run([sys.executable, "-c", _REPORT_PEAK, *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    peak = re.search(r"^PEAK_KB (\d+)$", proc.stderr, re.M)
    return SimpleNamespace(returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr,
                           maxrss=int(peak[1]) * 1024 if peak else None)


def test_training_at_1024_px_past_the_memory_budget_is_refused_before_anything_is_allocated(faceset_512, tmp_path):
    out = tmp_path / "big.dbm"
    proc = run_train("--source", faceset_512, "--target", faceset_512, "--out", out, "--res", 1024,
                     "--memory-gb", 12, "--threads", 1)
    assert proc.returncode == 1, proc.stderr
    found = re.search(r"error: training df at 1024 px \(batch 8, width 1\) would need about ([0-9.]+) GiB of memory "
                      r"\(model and optimiser [0-9.]+ GiB, one step's activations ([0-9.]+) GiB, batches [0-9.]+ GiB, "
                      r"decoded faces [0-9.]+ GiB, the process so far [0-9.]+ GiB\), "
                      r"more than the 12.0 GiB budget \(the 12 GiB of --memory-gb\): "
                      r"lower --res, --batch or --width, or give a larger --memory-gb", proc.stderr)
    assert found, proc.stderr
    assert float(found[1]) > 50 and float(found[2]) > 50   # a 1024 px step saves about 100 GiB for its backward
    # the 512 px crops are upscaled twice: allowed, with a warning
    assert "holds 512 px crops: training at 1024 px upscales them 2x" in proc.stderr
    assert not out.exists()
    # refused before the network (283M parameters, 1.1 GB of weights alone) or a face was allocated
    assert proc.maxrss < 2 * 2**30


def test_crops_much_smaller_than_the_resolution_are_refused_through_the_command(facesets, tmp_path):
    a, b = facesets
    proc = run_train("--source", a, "--target", b, "--out", tmp_path / "up.dbm", "--res", 1024)
    assert proc.returncode == 1
    assert re.search(r"error: faceset .*w009 holds 64 px crops: training at 1024 px would upscale them 16x "
                     r"\(at most 2x\); extract at --size 512 or more, or train a new model at --res 128 or less",
                     proc.stderr)
    assert not (tmp_path / "up.dbm").exists()


def test_the_default_budget_is_a_share_of_this_machine_and_names_the_option():
    half = host_memory_bytes() // 2
    check_training_memory(TrainingMemory(parameters=half // 2, activations=half // 2, batches=0, faces=0),
                          torch.device("cpu"), "run")
    past = TrainingMemory(parameters=half, activations=half, batches=0, faces=2**30)
    with pytest.raises(DoublureError, match=r"run would need about [0-9.]+ GiB of memory .* budget \(80% of this "
                                            r"machine's [0-9.]+ GiB; --memory-gb sets it\)"):
        check_training_memory(past, torch.device("cpu"), "run")
    check_training_memory(past, torch.device("cpu"), "run", budget_gib=past.total / 2**30 + 1)


def test_continuing_a_model_on_facesets_of_another_face_type_is_refused_naming_the_faceset(facesets, media_dir,
                                                                                          tmp_path):
    from doublure.app.cli import main

    full = str(tmp_path / "w009_full")
    assert main(["extract", str(media_dir / "mead/W009_front_happy_level3_001.mp4"), "--out", full, "--size", "64",
                 "--every", "8", "--face-type", "full"]) == 0
    assert json.load(open(os.path.join(full, "index.json")))["face_type"] == "full"
    model = tmp_path / "m030.dbm"
    Trainer(config(facesets, model, iters=2)).run()
    refused = (rf"faceset {full} holds full crops but model {model} was trained on whole_face crops: extract it "
               r"again with `doublure extract --face-type whole_face`")
    # adapting it to a shot (its target from its card), continuing it on other faces: each kept its weights
    # and wrote the card's face type over with the new facesets'
    with pytest.raises(DoublureError, match=refused):
        Trainer(config(facesets, tmp_path / "adapted.dbm", iters=3, from_model=str(model), source=[full],
                       target=[], res=None)).run()
    with pytest.raises(DoublureError, match=refused):
        Trainer(config(facesets, model, iters=3, resume=True, res=None, source=[full], target=[full])).run()
    assert read_meta(str(model))["face_type"] == "whole_face" and read_training_state(str(model))[0]["iteration"] == 2
    # a new model from facesets of two framings: the first faceset of the other framing named
    with pytest.raises(DoublureError, match=rf"faceset {full} holds full crops but {facesets[0]} holds whole_face "
                                            r"crops: a model learns one framing"):
        Trainer(config(facesets, tmp_path / "mixed.dbm", iters=1, target=[full])).run()
