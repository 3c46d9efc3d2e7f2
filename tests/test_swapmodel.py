"""SwapModel on real footage (Read -> FaceDetect -> SwapModel): plate-sized output, the plate kept bit for bit
outside the feathered mask, faceless frames untouched, provenance, one shared model, clear errors."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.engine.errors import DoublureError
from doublure.models.arch import IdentityModel, config_for
from doublure.models.dbm import model_digest, rights_record, save_model
from doublure.models.infer import shared_model
from doublure.faces.composite import crop_masks

RIGHTS = rights_record("M030", "M030 (the actor)", "2024-01-10", "AGR-0042", "film", "2099-12-31")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("model") / "m030.dbm")
    save_model(path, IdentityModel(config_for(64, "df", 0.125)), {"name": "m030", "rights": RIGHTS,
                                                                   "face_type": "whole_face"})
    return path


def shot(clip, model, last):
    g = engine.Graph()
    read = g.create("Read", file=str(clip), first=1, last=last)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    sw = g.create("SwapModel", model=model)
    sw.set_input(0, fd)
    return g, fd, sw


@pytest.mark.parametrize("blend", ["alpha", "seamless"])
def test_swap_keeps_the_plate_outside_the_mask(media_dir, model_path, blend):
    g, fd, sw = shot(media_dir / "mead/W009_front_angry_level3_001.mp4", model_path, 5)
    sw["blend"] = blend
    plate = g.evaluate(fd, frame=3)
    assert len(plate.faces) == 1
    out = g.evaluate(sw, frame=3)
    assert out.tensor.shape == plate.tensor.shape and out.channels == plate.channels
    sw["output"] = "mask"
    mask = g.evaluate(sw, frame=3).tensor[0]
    outside = mask == 0
    inside = mask > 0.5
    assert 0.2 < float(outside.float().mean()) < 0.95 and inside.any()
    assert torch.equal(out.tensor[:, outside], plate.tensor[:, outside])
    assert (out.tensor[:, inside] - plate.tensor[:, inside]).abs().mean() > 1e-3
    meta = out.metadata
    assert meta["doublure/synthetic_face"] is True and meta["doublure/model"] == "m030"
    assert meta["doublure/model_digest"] == model_digest(model_path)
    assert "AGR-0042" in meta["doublure/rights"] and "doublure/rights_warning" not in meta
    sw["output"] = "swapped crop"
    assert tuple(g.evaluate(sw, frame=3).tensor.shape) == (3, 64, 64)


def test_plate_mouth_keeps_the_plates_mouth_opening(media_dir, model_path):
    """With plate_mouth the plate shows through the placed face's inner lip line (teeth, tongue), bit for
    bit where the hold-out is whole; away from the mouth the output is the swap without it."""
    from doublure.faces.face import affine_scale
    from doublure.nodes._finish import region_mask

    g, fd, sw = shot(media_dir / "mead/W009_front_surprised_level3_001.mp4", model_path, 30)
    frame = 15  # her mouth is wide open
    plate = g.evaluate(fd, frame=frame)
    plain = g.evaluate(sw, frame=frame)
    sw["plate_mouth"] = True
    out = g.evaluate(sw, frame=frame)
    face = out.faces[0]
    hw = (plate.height, plate.width)
    whole = (0, hw[0], 0, hw[1])
    # the hold-out's edge is softened over half a crop pixel: beyond the blur's ceil(3 sigma) radius and the
    # anti-aliased pixel on the line, it is whole (inside) or nothing (outside)
    reach = math.ceil(3 * 0.5 * affine_scale(face.from_crop) / 64) + 2
    held = region_mask(face, "mouth_inner", whole, "cpu", grow=-reach)[0] > 0.999
    assert int(held.sum()) > 30  # the opening is tens of pixels: the test sees a real open mouth
    assert torch.equal(out.tensor[:, held], plate.tensor[:, held])
    assert (plain.tensor[:, held] - plate.tensor[:, held]).abs().mean() > 1e-3
    near = region_mask(face, "mouth_inner", whole, "cpu", grow=reach)[0] > 0
    assert torch.equal(out.tensor[:, ~near], plain.tensor[:, ~near])
    sw["output"] = "mask"
    assert float(g.evaluate(sw, frame=frame).tensor[0][held].max()) == 0.0


def test_frame_without_a_face_is_untouched(media_dir, model_path):
    g, fd, sw = shot(media_dir / "pexels/face_noface.mov", model_path, 169)
    plate = g.evaluate(fd, frame=121)       # the animated part: no human face
    assert plate.faces == []
    out = g.evaluate(sw, frame=121)
    assert torch.equal(out.tensor, plate.tensor)
    assert out.metadata["doublure/synthetic_face"] is False and "doublure/model_digest" in out.metadata
    # a face on the frame, but not on a chosen track: untouched as well
    sw["tracks"] = "7"
    face_plate = g.evaluate(fd, frame=11)
    assert len(face_plate.faces) == 1
    assert torch.equal(g.evaluate(sw, frame=11).tensor, face_plate.tensor)
    sw["tracks"] = "0, x"
    with pytest.raises(DoublureError, match="SwapModel1: knob 'tracks'"):
        g.evaluate(sw, frame=11)


def test_one_shared_model_and_hash_follows_the_file(media_dir, model_path, tmp_path):
    assert shared_model(model_path) is shared_model(model_path)
    path = str(tmp_path / "copy.dbm")
    torch.manual_seed(1)
    model = IdentityModel(config_for(64, "df", 0.125))
    save_model(path, model, {"name": "copy", "face_type": "whole_face"})
    g, fd, sw = shot(media_dir / "mead/W009_front_angry_level3_001.mp4", path, 3)
    ctx = engine.EvalContext(frame=2)
    before = g.hash_of(sw, ctx)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    save_model(path, model, {"name": "copy", "face_type": "whole_face"})
    g.reload()   # the viewer's Reload: hashes are memoised between edits
    assert g.hash_of(sw, ctx) != before
    out = g.evaluate(sw, frame=2)
    assert "no rights record" in out.metadata["doublure/rights_warning"]


def test_bad_model_files_raise_naming_the_file(media_dir, model_path, tmp_path):
    missing = str(tmp_path / "absent.dbm")
    g, fd, sw = shot(media_dir / "mead/W009_front_angry_level3_001.mp4", missing, 3)
    with pytest.raises(DoublureError, match=r"SwapModel1: model file .*absent\.dbm does not exist"):
        g.evaluate(sw, frame=1)
    unknown = str(tmp_path / "unknown.dbm")
    save_model(unknown, IdentityModel(config_for(64, "df", 0.125)), {"face_type": "whole_face"})
    meta = json.load(open(os.path.join(unknown, "model.json")))
    meta["architecture"]["arch"] = "hyperswap"
    json.dump(meta, open(os.path.join(unknown, "model.json"), "w"))
    sw["model"] = unknown
    with pytest.raises(DoublureError, match=r"SwapModel1: .*unknown\.dbm.*unknown model architecture 'hyperswap'"):
        g.evaluate(sw, frame=1)
    corrupt = str(tmp_path / "corrupt.dbm")
    save_model(corrupt, IdentityModel(config_for(64, "df", 0.125)), {"face_type": "whole_face"})
    with open(os.path.join(corrupt, "weights.safetensors"), "r+b") as f:
        f.seek(200)
        f.write(b"garbage!")
    sw["model"] = corrupt
    with pytest.raises(DoublureError, match=r"SwapModel1: .*corrupt\.dbm"):
        g.evaluate(sw, frame=1)
    sw["model"] = ""
    with pytest.raises(DoublureError, match="SwapModel1: no model file set"):
        g.evaluate(sw, frame=1)


def test_crop_masks_erode_feather_and_border():
    hull = torch.zeros(1, 1, 64, 64)
    hull[..., 16:48, 16:48] = 1.0
    pred = torch.ones(1, 1, 64, 64)
    assert torch.equal(crop_masks(pred, hull, "landmark hull", 0, 0), hull)
    eroded = crop_masks(pred, hull, "both", 2, 0)
    assert float(eroded.sum()) == 28 * 28
    grown = crop_masks(pred, hull, "landmark hull", -2, 0)
    assert float(grown.sum()) == 36 * 36
    soft = crop_masks(pred, hull, "landmark hull", 0, 2.0)
    assert 0 < float(soft[0, 0, 32, 14]) < 0.5 < float(soft[0, 0, 32, 18]) < 1
    border = crop_masks(pred, hull, "predicted", 0, 0)
    assert float(border[0, 0, 0].max()) == 0 and float(border[0, 0, 32, 32]) == 1
    # a mask that runs off the crop (a whole_face hull above the forehead) fades over 8% of the crop, so
    # no straight seam is drawn at the crop's edge
    column = border[0, 0, :8, 32]
    assert bool((column[1:] >= column[:-1]).all()) and 0.1 < float(column[2]) < 0.6 and float(column[6]) == 1
    wide = crop_masks(pred, hull, "predicted", 0, 4.0)
    assert float(wide[0, 0, 6, 32]) < 0.9 and float(wide[0, 0, 8, 32]) > 0.999


def test_a_to_a_draws_the_plate_actor_as_the_model_learned_her(media_dir):
    """direction A->A decodes the plate actor as herself: with the demo model (trained on W009 as A) her face
    comes back much nearer the plate than the A->B swap to M030, in the same mask; the provenance says which."""
    model = str(Path(__file__).resolve().parents[1] / "resources/demo/demo_model.dbm")
    g, fd, sw = shot(media_dir / "mead/W009_front_surprised_level3_001.mp4", model, 20)
    frame = 12
    plate = g.evaluate(fd, frame=frame).tensor
    sw["output"] = "mask"
    inside = g.evaluate(sw, frame=frame).tensor[0] > 0.5
    sw["output"] = "composite"
    error = {}
    for direction in ("A->B", "A->A"):
        sw["direction"] = direction
        out = g.evaluate(sw, frame=frame)
        assert out.metadata["doublure/swap_direction"] == direction and out.metadata["doublure/synthetic_face"]
        error[direction] = float((out.tensor[:3, inside] - plate[:3, inside]).abs().mean())
    assert error["A->A"] < 0.6 * error["A->B"], error


def test_a_face_far_smaller_than_the_crop_is_swapped_with_a_warning_naming_node_frame_and_size(media_dir, model_path,
                                                                                              caplog):
    # the 1080p plate at an eighth of its size: a face about 30 px across the model's 64 px crop
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "plates_1080/demo1_video.mp4"), first=1, last=3)
    small = g.create("Reformat", inputs=[read], type="scale", scale=0.125)
    fd = g.create("FaceDetect", inputs=[small])
    sw = g.create("SwapModel", inputs=[fd], model=model_path, temporal=0, stabilise=0)
    plate = g.evaluate(fd, frame=2)
    out = g.evaluate(sw, frame=2)
    warning = engine.warnings_of(out)["SwapModel1"]
    side = int(warning.split("spans only ")[1].split(" px")[0])
    assert 20 < side < 40
    assert warning.startswith("SwapModel1: frame 2: face 0 spans only") and "enlarged" in warning
    assert "SwapModel1: frame 2: face 0 spans only" in caplog.text
    # the swap is still drawn, at the plate's size
    assert out.tensor.shape == plate.tensor.shape and (out.tensor - plate.tensor).abs().amax() > 0.05
    # the same plate at full size is no small face, and the model with no detail stage says its swap is soft
    g.set_knob(small, "scale", 1.0)
    warning = engine.warnings_of(g.evaluate(sw, frame=2))["SwapModel1"]
    assert "spans only" not in warning and "drawn at 64 px" in warning and "has no detail stage" in warning
    # in the viewer at an eighth proxy the face is as small as above, but the render's is not: judged at full size
    warning = engine.warnings_of(g.evaluate(sw, frame=2, proxy=0.125))["SwapModel1"]
    assert "spans only" not in warning and "has no detail stage" in warning
    sw["detail"] = "off"                     # the enlargement chosen: nothing to say
    assert engine.warnings_of(g.evaluate(sw, frame=2)) == {}
