"""kill -9 at random instants of the work that writes files (issue 26): a render, a model save, training.
Counts how often the data came through whole.

    .venv/bin/python bench/kill_bench.py [--renders 5] [--saves 6] [--trains 3] [--seed 26]

- **render**: ``doublure render`` of Read (a 6-frame 480x270 EXR sequence of noise made first) -> Reformat
  x2 -> Write (EXR half, zip, 960x540), killed a random 0-1.5 s after its first output file appeared
  (mid-frame as a rule: a frame's write is most of its time). Whole: every visible frame decodes, no temporary is left once the next render has started, and the
  re-run render (exit 0) leaves every frame equal, bit for bit, to a render that was never killed.
- **model save**: a process saving a 58 MB model (128 px df, width 0.5) over and over, alternating two
  versions, killed a random 0.2-2 s after its start-up; both with the atomic exchange and with the side-name renames of file systems
  without it. Whole: the model loads as one of the two versions (weights all of one), and the next save's
  clean-up leaves no other file.
- **train**: ``doublure.models.train`` on two small facesets (first checkpoint after 3 s, then every 6 s),
  killed a random 0-6 s after its set-up.
  Whole: when a checkpoint was reached, the checkpoint loads and ``--resume`` runs 2 more iterations.
  Counted apart: kills that came before the first checkpoint (nothing to resume, nothing lost).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


def kill_after(cmd: list[str], started: Callable[[], bool], seconds: float, env: dict | None = None) -> bool:
    """Run ``cmd``; once ``started()`` (its work has begun: the interpreter's start-up takes seconds on a busy
    machine) wait ``seconds`` more and SIGKILL it. False when it ended before."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    while not started():
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


# ------------------------------------------------------------------------------------------------ render

def render_case(folder: Path, kills: int, rng: random.Random) -> tuple[int, int, int]:
    from doublure import engine
    from doublure.engine import imageio

    import doublure.nodes  # noqa: F401

    plate = folder / "plate"
    plate.mkdir()
    grain = np.random.default_rng(0)
    for f in range(1, 7):
        pixels = grain.random((270, 480, 3), dtype=np.float32) * 0.5 + f / 12
        imageio.write_image(plate / f"p.{f:04d}.exr", pixels)
    graph = engine.Graph(first=1, last=6)
    read = graph.create("Read", file=str(plate / "p.####.exr"), first=1, last=6)
    reformat = graph.create("Reformat", type="scale", scale=2.0)
    reformat.set_input(0, read)
    graph.create("Write", file=str(folder / "ref" / "f.####.exr")).set_input(0, reformat)
    reference = str(folder / "reference.dbl")
    graph.save(reference)
    cmd = [sys.executable, "-m", "doublure.app.cli", "render"]
    assert subprocess.run(cmd + [reference], capture_output=True).returncode == 0
    graph["Write1"]["file"] = str(folder / "out" / "f.####.exr")
    project = str(folder / "shot.dbl")
    graph.save(project)
    whole = mid_frame = done = 0
    out = folder / "out"
    while done < kills:
        for name in os.listdir(out) if out.exists() else []:
            os.remove(out / name)
        if not kill_after(cmd + [project], lambda: out.exists() and bool(os.listdir(out)), rng.uniform(0.0, 1.5)):
            continue   # it finished first: draw again
        done += 1
        visible = [n for n in os.listdir(out) if not n.startswith(".")]
        mid_frame += any(n.startswith(".") for n in os.listdir(out))
        ok = all(imageio.is_complete_image(out / n) for n in visible)
        ok = ok and subprocess.run(cmd + [project], capture_output=True).returncode == 0
        names = sorted(os.listdir(out))
        ok = ok and names == [f"f.{f:04d}.exr" for f in range(1, 7)]
        ok = ok and all(np.array_equal(imageio.read_image(out / n).pixels,
                                       imageio.read_image(folder / "ref" / n).pixels) for n in names)
        whole += ok
    return kills, whole, mid_frame


# -------------------------------------------------------------------------------------------- model save

_SAVER = textwrap.dedent("""
    import sys, torch
    from doublure.models.arch import IdentityModel, config_for
    from doublure.models.dbm import save_model
    torch.manual_seed(0)
    model = IdentityModel(config_for(128, "df", 0.5))
    open(sys.argv[2], "w").close()   # started: the kill's clock runs from here
    version = 0
    while True:
        version = 1 - version
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.25 + version / 4)
        save_model(sys.argv[1], model, {"name": f"v{version}"})
""")


def save_case(folder: Path, kills: int, rng: random.Random, exchange: bool) -> tuple[int, int]:
    import torch

    from doublure.models.dbm import clean_leftovers, load_model

    path = folder / ("exchange" if exchange else "renames") / "actor.dbm"
    env = dict(os.environ)
    if not exchange:
        env["DOUBLURE_TEST_NO_EXCHANGE"] = "1"
    whole = 0
    from doublure.models.arch import IdentityModel, config_for
    from doublure.models.dbm import save_model

    model = IdentityModel(config_for(128, "df", 0.5))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.25)
    save_model(str(path), model, {"name": "v0"})   # a model is there before the first kill
    started = folder / "saver-started"
    for done in range(1, kills + 1):
        started.unlink(missing_ok=True)
        kill_after([sys.executable, "-c", _SAVER, str(path), str(started)], started.exists, rng.uniform(0.2, 2.0), env)
        try:
            values = {float(v) for t in load_model(str(path)).model.state_dict().values()
                      for v in torch.unique(t)}
            ok = values in ({0.25}, {0.5})
        except Exception as exc:   # noqa: BLE001  (counted as a loss, with what happened)
            print(f"  save kill {done}: {exc}", file=sys.stderr)
            ok = False
        clean_leftovers(str(path))
        whole += ok and os.listdir(path.parent) == ["actor.dbm"]
    return kills, whole


# ------------------------------------------------------------------------------------------------- train

def train_case(folder: Path, kills: int, rng: random.Random) -> tuple[int, int, int]:
    from doublure.faces.extract import extract_faceset
    from doublure.models.dbm import load_model, read_training_state
    from doublure.models.train import TrainConfig, Trainer

    a, b = str(folder / "w009"), str(folder / "m030")
    extract_faceset([str(MEDIA / "mead/W009_front_happy_level3_001.mp4")], a, size=64, every=4)
    extract_faceset([str(MEDIA / "mead/M030_front_happy_level3_001.mp4")], b, size=64, every=4)
    whole = early = 0
    for k in range(kills):
        out = folder / f"t{k}.dbm"
        cmd = [sys.executable, "-m", "doublure.models.train", "--source", a, "--target", b, "--out", str(out),
               "--res", "64", "--width", "0.125", "--batch", "4", "--iters", "100000", "--threads", "1",
               "--first-checkpoint-minutes", "0.05", "--checkpoint-minutes", "0.1", "--preview-every", "0"]
        log = folder / f"t{k}.training" / "loss.jsonl"
        kill_after(cmd, log.exists, rng.uniform(0.0, 6.0))
        if not out.exists():
            early += 1
            continue
        try:
            iteration = read_training_state(str(out))[0]["iteration"]
            load_model(str(out))
            resumed = Trainer(TrainConfig(out=str(out), source=[a], target=[b], resume=True, iters=iteration + 2,
                                          batch=4, threads=1, workers=1, preview_every=0))
            whole += resumed.run()["iteration"] == iteration + 2
        except Exception as exc:   # noqa: BLE001
            print(f"  train kill {k}: {exc}", file=sys.stderr)
    return kills, whole, early


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--saves", type=int, default=6)
    parser.add_argument("--trains", type=int, default=3)
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)   # the clean-ups' and rights warnings, once per kill
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="doublure-kill-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        if args.renders:
            (folder / "render").mkdir()
            kills, whole, mid = render_case(folder / "render", args.renders, rng)
            print(f"render killed {kills} times ({mid} left a temporary frame: killed mid-write): "
                  f"{whole}/{kills} whole (visible frames complete, resumed to identical pixels)", flush=True)
        for exchange in (True, False) if args.saves else ():
            kills, whole = save_case(folder, args.saves, rng, exchange)
            print(f"model save ({'exchange' if exchange else 'renames'}) killed {kills} times: {whole}/{kills} "
                  f"whole (loads as one version, leftovers cleaned)", flush=True)
        if args.trains:
            (folder / "train").mkdir()
            kills, whole, early = train_case(folder / "train", args.trains, rng)
            print(f"train killed {kills} times: {whole}/{kills - early} with a checkpoint resumed; {early} before "
                  f"the first checkpoint", flush=True)
        print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
