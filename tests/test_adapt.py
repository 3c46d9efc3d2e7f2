"""Adapting a SwapModel's identity model to its shot (``app/adapt.py``, ``doublure adapt``): the plan found from
the project, the shot's faces read through its Read, the run that continues the model, and the SwapModel
pointed at the result; on real MEAD footage with a tiny 64 px model."""
import dataclasses
import json
import os
import re

import pytest

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.app.adapt import adaptation_config, extract_shot, plan_adaptation, use_adapted
from doublure.app.cli import main
from doublure.engine.errors import DoublureError
from doublure.models.dbm import read_meta


def shot_project(tmp_path, media_dir, model, swaps=1, last=12):
    """A saved project: a W009 plate (a clip the model never saw) -> FaceDetect -> SwapModel(s)."""
    graph = engine.Graph()
    read = graph.create("Read", file=str(media_dir / "mead/W009_front_surprised_level3_001.mp4"))
    graph.set_knob(read, "last", last)
    detect = graph.create("FaceDetect", inputs=[read])
    for _ in range(swaps):
        graph.create("SwapModel", inputs=[detect], model=model)
    path = str(tmp_path / "shot" / "sh010.dbl")
    os.makedirs(os.path.dirname(path))
    graph.save(path)
    return engine.load(path), path


def test_the_plan_names_the_shot_the_model_and_where_the_result_goes(identity_model, media_dir, tmp_path):
    model, target = identity_model
    graph, path = shot_project(tmp_path, media_dir, model)
    plan = plan_adaptation(graph)
    assert (plan.swap, plan.read) == ("SwapModel1", "Read1")
    assert plan.model == os.path.abspath(model) and plan.plate.endswith("W009_front_surprised_level3_001.mp4")
    assert plan.frames == (1, 12, 1) and plan.frame_count == 12
    assert plan.target == [os.path.normpath(target)]   # from the model's card
    shot_dir = os.path.dirname(path)
    assert plan.out == os.path.join(shot_dir, "m030_W009_front_surprised_level3_001.dbm")
    assert plan.faceset == os.path.join(shot_dir, "W009_front_surprised_level3_001_faces")
    assert plan.crop == 128
    config = adaptation_config(plan, minutes=3)
    assert (config.from_model, config.source, config.target) == (plan.model, [plan.faceset], plan.target)
    assert config.minutes == 3 and config.checkpoint_minutes == 1.5 and not config.resume
    # it continues at the model's own learning rate and batch (the tiny model's 5e-4 and 4), warmed up briefly
    assert (config.lr, config.batch, config.warmup) == (5e-4, 4, 50)


def test_bad_plans_say_what_is_wrong(identity_model, media_dir, tmp_path):
    model, _ = identity_model
    graph, _ = shot_project(tmp_path, media_dir, model, swaps=2)
    with pytest.raises(DoublureError, match="2 SwapModel nodes .SwapModel1, SwapModel2.: name one"):
        plan_adaptation(graph)
    with pytest.raises(DoublureError, match="FaceDetect1 is a FaceDetect, not a SwapModel"):
        plan_adaptation(graph, "FaceDetect1")
    with pytest.raises(DoublureError, match="would replace"):
        plan_adaptation(graph, "SwapModel1", out=model)
    graph.set_knob("SwapModel2", "model", "")
    with pytest.raises(DoublureError, match="SwapModel2 has no model .knob 'model'."):
        plan_adaptation(graph, "SwapModel2")
    graph.disconnect("SwapModel1", 0)
    with pytest.raises(DoublureError, match="no Read upstream of SwapModel1"):
        plan_adaptation(graph, "SwapModel1")
    card = json.load(open(os.path.join(model, "model.json")))
    gone = str(tmp_path / "gone.dbm")
    os.makedirs(gone)
    # a copy of the model whose card's target faceset is not on this machine: refused before any extraction
    for name in os.listdir(model):
        if os.path.isfile(os.path.join(model, name)):
            with open(os.path.join(model, name), "rb") as src, open(os.path.join(gone, name), "wb") as dst:
                dst.write(src.read())
    graph.set_knob("SwapModel2", "model", gone)
    graph.connect(graph.node("FaceDetect1"), graph.node("SwapModel2"), 0)
    with pytest.raises(DoublureError, match="target facesets .* are not here; give the target's faces"):
        plan_adaptation(graph, "SwapModel2")
    assert card["facesets"]["b"]


def test_the_shot_faces_come_through_the_read(identity_model, media_dir, tmp_path):
    model, _ = identity_model
    graph, _ = shot_project(tmp_path, media_dir, model, last=6)
    graph.set_knob("Read1", "frame_offset", 100)   # the shot sits at timeline frames 101-106
    plan = plan_adaptation(graph)
    assert plan.frames == (101, 106, 1)
    seen = []
    summary = extract_shot(graph, plan, progress=lambda done, total, name: seen.append((done, total, name)))
    index = json.load(open(os.path.join(plan.faceset, "index.json")))
    assert summary["items"] == len(index["items"]) >= 5 and index["size"] == 128
    assert {it["source"] for it in index["items"]} == {plan.plate}
    assert {it["frame"] for it in index["items"]} <= set(range(101, 107))
    assert seen[-1] == (6, 6, plan.plate)


def test_doublure_adapt_continues_the_model_on_the_shot_and_applies_it(identity_model, media_dir, tmp_path,
                                                                       capsys):
    model, _ = identity_model
    graph, path = shot_project(tmp_path, media_dir, model, last=24)
    assert main(["adapt", path, "--minutes", "0.02", "--apply"]) == 0
    out = capsys.readouterr().out
    plan = plan_adaptation(graph)
    assert f"adapted model written to {plan.out}" in out and "SwapModel1 now uses it" in out
    meta, base = read_meta(plan.out), read_meta(model)
    assert meta["rights"] == base["rights"] and meta["training"]["from"].startswith("m030")
    assert meta["training"]["iterations"] >= 1
    assert [os.path.basename(fs["path"]) for fs in meta["facesets"]["a"]] == [os.path.basename(plan.faceset)]
    assert [fs["digest"] for fs in meta["facesets"]["b"]] == [fs["digest"] for fs in base["facesets"]["b"]]
    reloaded = engine.load(path)
    assert reloaded.node("SwapModel1").path("model") == plan.out
    assert reloaded.node("SwapModel1").value("model") == os.path.basename(plan.out)   # relative to the project


def test_use_adapted_is_one_undoable_edit(identity_model, media_dir, tmp_path):
    model, _ = identity_model
    graph, _ = shot_project(tmp_path, media_dir, model)
    plan = plan_adaptation(graph)
    use_adapted(graph, plan)
    assert graph.node("SwapModel1").path("model") == plan.out
    graph.undo()
    assert graph.node("SwapModel1").path("model") == os.path.abspath(model)


def test_a_model_shipped_without_its_facesets_gets_them_again_from_its_clips(identity_model, media_dir, tmp_path):
    """A model whose card names its target's clips, shipped beside them (as the bundled demo model is): the
    adaptation extracts the target's faceset again, once, instead of refusing."""
    import shutil

    model, target = identity_model
    shipped = tmp_path / "library" / "m030.dbm"
    shutil.copytree(model, shipped)
    card = read_meta(str(shipped))
    assert card["facesets"]["b"][0]["clips"] == ["M030_front_happy_level3_001.mp4"]
    assert card["facesets"]["b"][0]["every"] == 6
    os.makedirs(tmp_path / "library" / "media")
    # the card's faceset path is relative to the model: moved, it points nowhere
    graph, path = shot_project(tmp_path, media_dir, str(shipped), last=4)
    with pytest.raises(DoublureError, match=r"nor are its clips \['M030_front_happy_level3_001.mp4'\] beside"):
        plan_adaptation(graph)
    os.symlink(media_dir / "mead/M030_front_happy_level3_001.mp4",
               tmp_path / "library" / "media" / "M030_front_happy_level3_001.mp4")
    plan = plan_adaptation(graph)
    rebuilt = os.path.join(os.path.dirname(path), "m030_m030")
    assert plan.target == [rebuilt] and [r.size for r in plan.rebuild] == [64]
    clips_seen = set()
    extract_shot(graph, plan, progress=lambda done, total, clip: clips_seen.add(os.path.basename(clip)))
    assert clips_seen == {"M030_front_happy_level3_001.mp4", os.path.basename(plan.plate)}
    index = json.load(open(os.path.join(rebuilt, "index.json")))
    original = json.load(open(os.path.join(target, "index.json")))
    assert (index["size"], index["every"], len(index["items"])) == (64, 6, len(original["items"]))


def test_the_shot_faces_are_extracted_in_the_models_face_type(identity_model, media_dir, tmp_path):
    import shutil

    from doublure.models.train import Trainer

    model, target = identity_model
    full = str(tmp_path / "m030_full.dbm")   # a model of the other framing (its card says so)
    shutil.copytree(model, full)
    card = json.load(open(os.path.join(full, "model.json")))
    card["face_type"] = "full"
    json.dump(card, open(os.path.join(full, "model.json"), "w"))
    graph, _ = shot_project(tmp_path, media_dir, full, last=24)
    plan = plan_adaptation(graph, target=[target])
    assert plan.face_type == "full"
    extract_shot(graph, plan)
    assert json.load(open(os.path.join(plan.faceset, "index.json")))["face_type"] == "full"
    Trainer(adaptation_config(plan, target=[plan.faceset], minutes=0.05, iters=1, workers=1, threads=2)).run()
    assert read_meta(plan.out)["face_type"] == "full"
    # the whole-face model on those faces (an earlier shot's folder, used as it is): refused, naming it
    plan = dataclasses.replace(plan, model=os.path.abspath(model), out=str(tmp_path / "whole.dbm"))
    with pytest.raises(DoublureError, match=rf"faceset {plan.faceset} holds full crops but model {plan.model} was "
                                            r"trained on whole_face crops"):
        Trainer(adaptation_config(plan, minutes=0.05, iters=1, workers=1, threads=2)).run()


def test_a_shot_too_short_to_adapt_to_says_so_in_the_shots_terms(identity_model, media_dir, tmp_path, capsys):
    model, _ = identity_model
    _, path = shot_project(tmp_path, media_dir, model, last=5)
    assert main(["adapt", path, "--minutes", "0.02"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"adapt: only [1-7] usable faces in Read1's frames 1-5 \(.*W009_front_surprised_level3_001.mp4\); "
                     r"adapting needs at least 8 \(a longer frame range gives more\)", err), err
    assert "Traceback" not in err
