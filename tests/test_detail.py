"""The detail stage: its network and loss against direct references, its place in the .dbm, its training on
real reference faces, and SwapModel drawing plate faces through it."""
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from doublure.engine.errors import DoublureError
from doublure.faces.extract import extract_faceset
from doublure.models.arch import IdentityModel, ModelConfig
from doublure.models.dbm import (ModelFileError, load_model, model_card, model_digest, read_meta, save_detail,
                                 save_model, zip_model)
from doublure.models.detail import (DetailConfig, DetailNet, auto_scale, detail_reconstruction_loss, enhance,
                                    image_gradients)
from doublure.models.detail_train import DetailTrainConfig, DetailTrainer, native_side
from doublure.models.train import train_main

RIGHTS = {"subject": "MEAD actor M030", "consent_given_by": "MEAD participants", "consent_date": "2020-08-23",
          "agreement": "MEAD terms", "allowed_uses": ["research"], "expiry": "2030-12-31"}
CLIP = "mead/M030_front_happy_level3_001.mp4"


def tiny_identity(res=64):
    torch.manual_seed(0)
    return IdentityModel(ModelConfig(arch="liae", res=res, e_ch=8, d_ch=8, d_mask_ch=4, ae_dims=16))


@pytest.fixture(scope="module")
def faceset(media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("detail_faces") / "M030_256"
    extract_faceset([str(media_dir / CLIP)], str(out), size=256, every=4)
    return str(out)


@pytest.fixture
def model_path(tmp_path):
    path = str(tmp_path / "m.dbm")
    save_model(path, tiny_identity(), {"name": "tiny M030", "rights": RIGHTS, "face_type": "whole_face"})
    return path


def test_network_starts_as_the_bilinear_enlargement_and_keeps_its_shapes():
    for scale in (2, 4, 8):
        net = DetailNet(DetailConfig(res=32, scale=scale, channels=16, blocks=1))
        x = torch.rand(2, 3, 32, 32)
        expected = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        assert torch.equal(net(x), expected)
        # fully convolutional: a patch trains it as a whole face does
        assert net(x[..., :16, :16]).shape == (2, 3, 16 * scale, 16 * scale)


def test_config_and_scale_rules():
    with pytest.raises(DoublureError, match="scale"):
        DetailConfig(res=64, scale=3)
    with pytest.raises(DoublureError, match="channels"):
        DetailConfig(res=64, channels=4096)
    with pytest.raises(DoublureError, match="integer"):
        DetailConfig.from_json({"res": 64, "scale": "4"})
    with pytest.raises(DoublureError, match="unknown"):
        DetailConfig.from_json({"res": 64, "scale": 4, "depth": 1})
    assert DetailConfig(res=64, scale=8, channels=48).stage_channels() == [48, 24, 16, 16]
    assert auto_scale(64, 70) == 0            # references barely larger than the crop: nothing to learn
    assert auto_scale(64, 189) == 4           # MEAD's faces: 256 px holds their detail, 128 would not
    assert auto_scale(64, 110) == 2
    assert auto_scale(128, 3000) == 8         # capped


def test_loss_matches_a_direct_reference():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    weight = torch.rand(2, 1, 8, 8, generator=g)
    p, t, w = pred.numpy().astype(np.float64), target.numpy().astype(np.float64), weight.numpy().astype(np.float64)
    norm = w.mean()
    l1 = (np.abs(p - t) * w).mean() / norm
    gx = (np.abs(np.diff(p, axis=3) - np.diff(t, axis=3)) * w[..., :, 1:]).mean()
    gy = (np.abs(np.diff(p, axis=2) - np.diff(t, axis=2)) * w[..., 1:, :]).mean()
    expected = l1 + 0.5 * (gx + gy) / norm
    got = detail_reconstruction_loss(pred, target, weight, gradient_weight=0.5)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    dx, dy = image_gradients(pred)
    assert dx.shape == (2, 3, 8, 7) and dy.shape == (2, 3, 7, 8)


def test_detail_stage_lives_in_the_model_file(model_path, tmp_path):
    before = model_digest(model_path)
    assert load_model(model_path).detail is None
    net = DetailNet(DetailConfig(res=64, scale=2, channels=16, blocks=1))
    with torch.no_grad():
        net.tail.bias.fill_(0.01)
    meta = save_detail(model_path, net, {"training": {"iterations": 5}, "facesets": []})
    assert meta["detail"]["identity_sha256"] == meta["weights_sha256"]
    assert meta["rights"] == RIGHTS                       # one rights record, kept
    assert model_digest(model_path) != before             # a SwapModel's hash follows the stage
    loaded = load_model(model_path)
    assert loaded.detail is not None and loaded.detail.cfg.scale == 2
    assert torch.equal(loaded.detail.tail.bias, net.tail.bias)
    card = model_card(model_path)
    assert "detail stage: 64 -> 128 px" in card and "5 iterations" in card
    zipped = str(tmp_path / "m.zip")
    zip_model(model_path, zipped)
    assert load_model(zipped).detail is not None
    # a detail stage into a zipped model stays a zip
    save_detail(zipped, net, {"training": {"iterations": 6}})
    assert os.path.isfile(zipped) and read_meta(zipped)["detail"]["training"]["iterations"] == 6


def test_stale_or_broken_detail_stage(model_path, caplog):
    net = DetailNet(DetailConfig(res=64, scale=2, channels=16, blocks=1))
    save_detail(model_path, net, {})
    # the identity part retrained in place: the stage learned other renderings, so it is left out, loudly
    meta_path = os.path.join(model_path, "model.json")
    meta = json.loads(open(meta_path).read())
    meta["detail"]["identity_sha256"] = "0" * 64
    open(meta_path, "w").write(json.dumps(meta))
    loaded = load_model(model_path)
    assert loaded.detail is None and "other identity weights" in loaded.detail_note
    assert "other identity weights" in caplog.text
    # a detail file that is not what model.json says
    meta["detail"]["identity_sha256"] = meta["weights_sha256"]
    open(meta_path, "w").write(json.dumps(meta))
    with open(os.path.join(model_path, "detail.safetensors"), "r+b") as f:
        f.seek(200)
        f.write(b"\0\0\0\0")
    with pytest.raises(ModelFileError, match="detail.safetensors"):
        load_model(model_path)


def test_training_on_real_reference_faces(model_path, faceset):
    assert native_side([faceset]) > 150                   # MEAD's 256 px frames: about 190 px across a crop
    events = []
    summary = DetailTrainer(DetailTrainConfig(out=model_path, target=[faceset], iters=6, batch=4, channels=16,
                                              blocks=1, gan_after=0.5), progress=events.append).run()
    assert summary["iteration"] == 6 and summary["out_res"] == 256
    assert {e["event"] for e in events} >= {"setup", "step", "done"}
    loaded = load_model(model_path)
    assert loaded.detail.cfg.scale == 4                   # picked from the faces' native size
    detail = read_meta(model_path)["detail"]
    assert detail["facesets"][0]["path"] == "M030_256"    # a name, not this machine's path
    # it learned something: no longer the plain enlargement
    x = torch.rand(1, 3, 64, 64)
    plain = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    assert (enhance(loaded.detail, x) - plain.clamp(0, 1)).abs().max() > 1e-4
    # --resume goes on from the stored iteration count, and adds its own time to the stored time once
    first_elapsed = detail["training"]["elapsed_s"]
    started = time.monotonic()
    DetailTrainer(DetailTrainConfig(out=model_path, target=[faceset], iters=8, batch=4, resume=True,
                                    checkpoint_minutes=0.0)).run()
    resumed = read_meta(model_path)["detail"]["training"]
    assert resumed["iterations"] == 8
    assert first_elapsed <= resumed["elapsed_s"] <= first_elapsed + time.monotonic() - started + 0.1


def test_command_line_and_bad_input(model_path, faceset, tmp_path, capsys):
    assert train_main(["--detail", "--out", model_path, "--target", faceset, "--iters", "2", "--batch", "2",
                       "--detail-channels", "16", "--detail-blocks", "1", "--detail-scale", "2"]) == 0
    assert read_meta(model_path)["detail"]["architecture"]["scale"] == 2
    # a faceset from before the index recorded the faces' native size
    old = tmp_path / "old_faceset"
    shutil.copytree(faceset, old)
    index = json.loads((old / "index.json").read_text())
    for item in index["items"]:
        del item["native_side"]
    (old / "index.json").write_text(json.dumps(index))
    with pytest.raises(DoublureError, match="old_faceset.*native size"):
        DetailTrainer(DetailTrainConfig(out=model_path, target=[str(old)], iters=1)).run()
    # too few faces
    index["items"] = index["items"][:5]
    (old / "index.json").write_text(json.dumps(index))
    with pytest.raises(DoublureError, match="5 faces"):
        DetailTrainer(DetailTrainConfig(out=model_path, target=[str(old)], iters=1, scale=2)).run()
    with pytest.raises(DoublureError, match="--iters or --minutes"):
        DetailTrainer(DetailTrainConfig(out=model_path, target=[faceset]))
    # references no larger than the model's crop
    small = tmp_path / "small"
    shutil.copytree(faceset, small)
    index = json.loads((small / "index.json").read_text())
    for item in index["items"]:
        item["native_side"] = 60.0
    (small / "index.json").write_text(json.dumps(index))
    with pytest.raises(DoublureError, match="no larger than the model's 64 px"):
        DetailTrainer(DetailTrainConfig(out=model_path, target=[str(small)], iters=1)).run()


def test_swapmodel_draws_large_plate_faces_through_the_detail_stage(media_dir, model_path):
    import doublure.nodes  # noqa: F401  (registers the node library)
    from doublure import engine

    net = DetailNet(DetailConfig(res=64, scale=4, channels=16, blocks=1))
    with torch.no_grad():
        net.tail.weight.normal_(0.0, 0.05)      # not the plain enlargement: its detail shows in the output
    save_detail(model_path, net, {})
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead/W009_front_angry_level3_001.mp4"), first=1, last=3)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    sw = g.create("SwapModel", model=model_path, output="swapped crop", temporal=0, stabilise=0)
    sw.set_input(0, fd)
    # MEAD's faces span about 190 plate pixels across the 64 px crop: the stage draws them at 256 px
    assert tuple(g.evaluate(sw, frame=2).tensor.shape) == (3, 256, 256)
    sw["output"] = "composite"
    with_detail = g.evaluate(sw, frame=2)
    sw["detail_amount"] = 0.0                    # the enlargement at the stage's size: nearly the plain swap
    faded = g.evaluate(sw, frame=2)
    sw["detail_amount"] = 1.0
    sw["detail"] = "off"
    plain = g.evaluate(sw, frame=2)
    sw["output"] = "swapped crop"
    assert tuple(g.evaluate(sw, frame=2).tensor.shape) == (3, 64, 64)
    plate = g.evaluate(fd, frame=2)
    changed = (with_detail.tensor - plain.tensor).abs().sum(0) > 1e-4
    # the detail stage changes the face and nothing outside what the swap covers
    assert 0.01 < float(changed.float().mean()) < 0.6
    assert (faded.tensor - plain.tensor).abs().mean() < 0.2 * (with_detail.tensor - plain.tensor).abs().mean()
    # ... only on the face: within its box grown by a fifth
    x0, y0, x1, y1 = plate.faces[0].box
    grow = 0.2 * max(x1 - x0, y1 - y0)
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert xs.min() >= x0 - grow and xs.max() <= x1 + grow and ys.min() >= y0 - grow and ys.max() <= y1 + grow


def test_continuing_the_identity_part_keeps_the_detail_stage(model_path, caplog):
    net = DetailNet(DetailConfig(res=64, scale=2, channels=16, blocks=1))
    save_detail(model_path, net, {"training": {"iterations": 3}})
    meta = read_meta(model_path)
    meta.pop("schema")
    # what `doublure train --resume` does with the card: more identity iterations, new weights
    meta["training"] = {"iterations": 500}
    adapted = tiny_identity()
    with torch.no_grad():
        next(adapted.parameters()).add_(0.01)
    written = save_model(model_path, adapted, meta)
    assert written["detail"]["identity_sha256"] == written["weights_sha256"]
    assert load_model(model_path).detail is not None
    assert "trained at identity iteration 0, identity now at 500" in model_card(model_path)
    # a card naming a stage whose file is gone: the stage is left out, said in the log
    os.unlink(os.path.join(model_path, "detail.safetensors"))
    meta = read_meta(model_path)
    meta.pop("schema")
    assert "detail" not in save_model(model_path, adapted, meta)
    assert "not in the model any more" in caplog.text


def test_adapting_a_model_to_a_shot_keeps_its_card_and_detail_stage(faceset, media_dir, tmp_path):
    from doublure.models.train import TrainConfig, Trainer

    base = str(tmp_path / "actor.dbm")
    save_model(base, tiny_identity(), {"name": "tiny M030", "rights": RIGHTS, "face_type": "whole_face",
                                       "facesets": {"b": [{"path": faceset}]}})
    save_detail(base, DetailNet(DetailConfig(res=64, scale=2, channels=16, blocks=1)), {})
    shot = str(tmp_path / "shot_faces")
    extract_faceset([str(media_dir / "mead/W009_front_happy_level3_001.mp4")], shot, size=64, every=6)
    out = str(tmp_path / "actor_sh010.dbm")
    # no --target: the facesets the model was trained on, as its card records them
    Trainer(TrainConfig(out=out, from_model=base, source=[shot], iters=3, batch=2, threads=2, workers=1,
                        checkpoint_minutes=60.0, preview_every=0)).run()
    meta = read_meta(out)
    assert meta["rights"] == RIGHTS and meta["name"] == "tiny M030"
    assert meta["training"]["from"].startswith("tiny M030") and meta["training"]["iterations"] == 3
    assert load_model(out).detail is not None
    assert "detail stage trained on tiny M030" in model_card(out) and "continued 3 iterations since" in model_card(out)
    assert read_meta(base)["weights_sha256"] != meta["weights_sha256"]    # the base model is left as it was
    gone = str(tmp_path / "moved.dbm")
    save_model(gone, tiny_identity(), {"face_type": "whole_face", "facesets": {"b": [{"path": "/nowhere/faces"}]}})
    with pytest.raises(DoublureError, match="not here; give the target's faces with --target"):
        Trainer(TrainConfig(out=str(tmp_path / "x.dbm"), from_model=gone, source=[shot], iters=1)).run()


def test_a_detail_stage_with_nan_weights_is_refused_naming_the_tensor(model_path):
    net = DetailNet(DetailConfig(res=64, scale=2, channels=16, blocks=1))
    with torch.no_grad():
        net.tail.bias[1] = float("nan")
    save_detail(model_path, net, {})
    with pytest.raises(ModelFileError, match="tensor tail.bias holds 1 NaN"):
        load_model(model_path)


def test_a_detail_stage_that_is_not_this_models_is_refused_or_left_out_with_a_message(media_dir, model_path,
                                                                                       tmp_path, caplog):
    import doublure.nodes  # noqa: F401  (registers the node library)
    from doublure import engine

    save_detail(model_path, DetailNet(DetailConfig(res=64, scale=4, channels=16, blocks=1)), {})
    torch.manual_seed(1)
    other = str(tmp_path / "other.dbm")
    save_model(other, IdentityModel(ModelConfig(arch="liae", res=64, e_ch=8, d_ch=8, d_mask_ch=4, ae_dims=16)),
               {"name": "other", "face_type": "whole_face"})
    save_detail(other, DetailNet(DetailConfig(res=64, scale=4, channels=32, blocks=2)), {})
    # another model's detail.safetensors copied into this one: its card names other weights
    swapped_file = str(tmp_path / "swapped_file.dbm")
    shutil.copytree(model_path, swapped_file)
    shutil.copy(os.path.join(other, "detail.safetensors"), os.path.join(swapped_file, "detail.safetensors"))
    with pytest.raises(ModelFileError, match=r"swapped_file.dbm: detail.safetensors is not the detail stage "
                                             r"model.json records \(its checksum differs: another model's"):
        load_model(swapped_file)
    # a card whose detail architecture is not its weights': the tensor and both shapes named, no torch dump
    wrong_card = str(tmp_path / "wrong_card.dbm")
    shutil.copytree(model_path, wrong_card)
    meta = json.loads(open(os.path.join(wrong_card, "model.json")).read())
    meta["detail"]["architecture"]["channels"] = 48
    open(os.path.join(wrong_card, "model.json"), "w").write(json.dumps(meta))
    with pytest.raises(ModelFileError) as err:
        load_model(wrong_card)
    assert str(err.value) == (f"model file {wrong_card}: detail.safetensors is unusable: weights: tensor head.weight "
                              f"is (16, 3, 3, 3), but the card's architecture makes it (48, 3, 3, 3)")
    # another model's detail stage, card and file: trained on other identity weights, so the swap runs without
    # it, and says so on the node where it draws a face larger than its crop
    stale = str(tmp_path / "stale.dbm")
    shutil.copytree(model_path, stale)
    shutil.copy(os.path.join(other, "detail.safetensors"), os.path.join(stale, "detail.safetensors"))
    meta = json.loads(open(os.path.join(stale, "model.json")).read())
    meta["detail"] = read_meta(other)["detail"]
    open(os.path.join(stale, "model.json"), "w").write(json.dumps(meta))
    assert "the swap runs without it; train one for these weights with `doublure train --detail" in model_card(stale)
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead/W009_front_angry_level3_001.mp4"), first=1, last=3)
    fd = g.create("FaceDetect", inputs=[read])
    sw = g.create("SwapModel", inputs=[fd], model=stale, temporal=0, stabilise=0, output="swapped crop")
    out = g.evaluate(sw, frame=2)
    assert tuple(out.tensor.shape) == (3, 64, 64)           # the identity part's own rendering
    warning = engine.warnings_of(out)["SwapModel1"]
    assert warning.startswith("SwapModel1: frame 2: face 0 spans ") and "drawn at 64 px" in warning
    assert "its detail stage was trained on other identity weights" in warning
    assert "the swap runs without its detail stage" in caplog.text


def test_detail_training_on_a_faceset_of_another_face_type_is_refused_naming_it(model_path, faceset, tmp_path):
    full = tmp_path / "full_faces"
    shutil.copytree(faceset, full)
    index = json.loads((full / "index.json").read_text())
    index["face_type"] = "full"
    (full / "index.json").write_text(json.dumps(index))
    with pytest.raises(DoublureError, match=rf"faceset {full} holds full crops but model {model_path} was trained "
                                            r"on whole_face crops: extract it again with `doublure extract "
                                            r"--face-type whole_face`"):
        DetailTrainer(DetailTrainConfig(out=model_path, target=[str(full)], iters=1, scale=2)).run()


def test_detail_training_on_crops_far_smaller_than_its_output_names_the_scale_not_the_models_res(model_path,
                                                                                                  media_dir, tmp_path):
    small = str(tmp_path / "m030_32")
    extract_faceset([str(media_dir / CLIP)], small, size=32, every=8)
    with pytest.raises(DoublureError, match=rf"faceset {small} holds 32 px crops: training at 256 px would upscale "
                                            r"them 8x \(at most 2x\); extract at --size 128 or more, or a smaller "
                                            r"--detail-scale$"):
        DetailTrainer(DetailTrainConfig(out=model_path, target=[small], iters=1, scale=4)).run()
