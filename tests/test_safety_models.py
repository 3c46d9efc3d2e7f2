"""Issue 26, identity models: a save killed at any instant loses no model and its leftovers are cleaned at the
next save; cards name no folder of the building machine; files are readable by the studio."""
import logging
import os
import signal
import stat
import multiprocessing
import sys

import pytest
import torch

from doublure.models.arch import IdentityModel, config_for
from doublure.models.dbm import clean_leftovers, load_model, read_meta, save_model

# Every instant of a folder save where a kill can land: writing its files, written, between the renames of a
# save without an atomic exchange, swapped but the old folder not yet removed.
STAGES = ("model-writing", "folder-written", "folder-swapping", "folder-swapped")


def tiny_model(value):
    torch.manual_seed(0)
    model = IdentityModel(config_for(64, "df", 0.125))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


class _ToParent:
    """A stderr that sends each line to the test (how a killed save's process says where it paused)."""

    def __init__(self, conn):
        self.conn = conn

    def write(self, text):
        if text.strip():
            self.conn.send(text.strip())

    def flush(self):
        pass


def _save_and_pause(path, stage, exchange, conn):
    """In a process of its own: save a model of weights 0.5 to ``path``, pausing at ``stage``."""
    os.environ["DOUBLURE_TEST_PAUSE"] = stage
    if not exchange:
        os.environ["DOUBLURE_TEST_NO_EXCHANGE"] = "1"
    sys.stderr = _ToParent(conn)
    save_model(str(path), tiny_model(0.5), {"name": "new"})
    conn.send("saved")


def kill_saves(cases):
    """Real processes saving a model (weights 0.5), each killed (SIGKILL) once it reaches its stage of the save.
    They fork from one server process that has imported torch once (a fresh interpreter takes seconds).

    Args:
        cases: (model path, stage, use the atomic exchange) per process; they run side by side.
    Returns:
        For each case, whether its process reached the stage before it was killed.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["doublure.models.dbm"])
    running = []
    for path, stage, exchange in cases:
        ours, theirs = context.Pipe()
        proc = context.Process(target=_save_and_pause, args=(path, stage, exchange, theirs), daemon=True)
        proc.start()
        running.append((proc, ours, stage))
    reached = []
    for proc, conn, stage in running:
        said = []
        while not said or said[-1] not in (f"paused at {stage}", "saved"):
            if not conn.poll(60):
                break
            said.append(conn.recv())
        reached.append(f"paused at {stage}" in said)
        if "saved" not in said:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL or "saved" in said
    return reached


def weight_value(path):
    with torch.no_grad():
        return float(next(load_model(str(path)).model.parameters()).flatten()[0])


def test_a_model_save_killed_at_any_stage_leaves_a_complete_model(tmp_path, caplog):
    cases = [(tmp_path / f"{stage}-{exchange}" / "actor.dbm", stage, exchange)
             for exchange in (True, False) for stage in STAGES]  # exchange at "folder-swapping": never paused
    for path, _, _ in cases:
        save_model(str(path), tiny_model(0.25), {"name": "old"})
    reached = kill_saves(cases)
    # an atomic exchange has no instant between two renames
    assert [stage for (_, stage, exchange), hit in zip(cases, reached) if not hit] == ["folder-swapping"]
    for (path, stage, exchange), hit in zip(cases, reached):
        # the model loads, as the old version or the new one, never missing or mixed
        assert weight_value(path) in (0.25, 0.5), (stage, exchange)
        with caplog.at_level(logging.WARNING, logger="doublure"):
            caplog.clear()
            done = clean_leftovers(str(path))
        assert os.listdir(path.parent) == ["actor.dbm"], (stage, exchange)
        assert bool(done) == hit and all(line in caplog.text for line in done), (stage, exchange)
        assert weight_value(path) in (0.25, 0.5)


def test_the_next_save_cleans_and_reports_a_killed_saves_leftovers(tmp_path, caplog):
    path = tmp_path / "actor.dbm"
    save_model(str(path), tiny_model(0.25), {"name": "old"})
    assert kill_saves([(path, "model-writing", True)]) == [True]
    assert kill_saves([(path, "folder-swapping", False)]) == [True]
    assert os.path.isdir(tmp_path / ".actor.dbm.new") and not os.path.exists(path)
    assert weight_value(path) == 0.5   # the complete new folder is found before anything is repaired
    with caplog.at_level(logging.WARNING, logger="doublure"):
        save_model(str(path), tiny_model(0.75), {"name": "next"})
    assert "restored" in caplog.text
    assert os.listdir(tmp_path) == ["actor.dbm"] and weight_value(path) == 0.75


def test_a_save_of_the_old_format_killed_between_its_renames_is_restored(tmp_path):
    path = tmp_path / "actor.dbm"
    save_model(str(path), tiny_model(0.25), {})
    os.rename(path, str(path) + ".old")   # what saves before issue 26 left
    assert weight_value(path) == 0.25
    assert clean_leftovers(str(path)) and os.listdir(tmp_path) == ["actor.dbm"]


def test_model_files_are_readable_by_the_studio_and_name_no_folder_of_the_machine(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "models" / "actor.dbm"
        faceset = str(tmp_path / "facesets" / "actor_b")
        save_model(str(path), IdentityModel(config_for(64, "df", 0.125)),
                   {"facesets": {"b": [{"path": faceset, "items": 3, "digest": "ab"}]}})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
        for name in os.listdir(path):
            assert stat.S_IMODE(os.stat(path / name).st_mode) == 0o644, name
        save_model(str(tmp_path / "actor.zip"), IdentityModel(config_for(64, "df", 0.125)), {}, as_zip=True)
        assert stat.S_IMODE(os.stat(tmp_path / "actor.zip").st_mode) == 0o644
    finally:
        os.umask(old)
    card = read_meta(str(path))
    assert card["facesets"]["b"][0]["path"] == os.path.join("..", "facesets", "actor_b")
    assert str(tmp_path) not in (path / "model.json").read_text()
