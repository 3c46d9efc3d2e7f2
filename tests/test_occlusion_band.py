"""The occlusion matte's eye band head on real footage: a glasses wire traced with a fine brush teaches the band
head only, is found on a frame that was not painted, and both heads travel in one matte file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.engine import DoublureError
from doublure.engine.device import cpu_has_native_bf16
from doublure.faces.occlusion import (BAND_RES, BAND_ROWS, MATTE_RES, OcclusionMatte, OcclusionNet, apply_matte,
                                      crop_to_plate, crop_window, for_inference, load_matte, max_pool2,
                                      predict_crops, sample_crop, save_matte, training_sample, upsample2)
from doublure.faces.paint import plate_points_to_stroke

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from occlusion_bench import GLASSES_STROKES, glasses_frame_truth, glasses_strokes  # noqa: E402


def detect_graph(clip: Path, last: int):
    g = engine.Graph()
    read = g.create("Read", file=str(clip), first=1, last=last)
    return g, g.create("FaceDetect", inputs=[read])


def test_the_band_is_rows_of_the_crop_both_ways(media_dir):
    g, detect = detect_graph(media_dir / "people" / "d9.mp4", 3)
    img = g.evaluate(detect, 2)
    face = img.faces[0]
    band = sample_crop(img.tensor, face, BAND_RES, BAND_ROWS)
    assert band.shape == (3, BAND_ROWS[1] - BAND_ROWS[0], BAND_RES)
    torch.testing.assert_close(band, sample_crop(img.tensor, face, BAND_RES)[:, BAND_ROWS[0]:BAND_ROWS[1]],
                               atol=1e-5, rtol=0)
    window = crop_window(face, MATTE_RES, (img.height, img.width))
    rows = torch.zeros(BAND_RES, BAND_RES)
    rows[BAND_ROWS[0]:BAND_ROWS[1]] = 1.0
    np.testing.assert_allclose(crop_to_plate(torch.ones(band.shape[1:]), face, window, BAND_ROWS[0]),
                               crop_to_plate(rows, face, window), atol=1e-5)


def test_a_fine_stroke_teaches_the_band_head_only(media_dir):
    g, detect = detect_graph(media_dir / "people" / "d9.mp4", 3)
    img = g.evaluate(detect, 2)
    face = img.faces[0]
    eye = face.landmarks[33, :2]   # an eye corner: inside the band
    fine = plate_points_to_stroke(face, [eye, eye + [30, 0]], 0.6, hardness=1.0, mode="add", frames={"only": 2})
    broad = plate_points_to_stroke(face, [eye, eye + [30, 0]], 6, hardness=1.0, mode="add", frames={"only": 2})
    thin = training_sample(img.tensor, face, [fine], 2)
    assert not thin.occluder.any() and 20 < thin.band_occluder.sum() < 120
    wide = training_sample(img.tensor, face, [broad], 2)
    assert wide.occluder.any() and wide.band_occluder.sum() > thin.band_occluder.sum()
    # a fine wire with the face painted only away from the band: neither head has both classes, and it says so
    node = g.create("Occlusion", hands=False, far_side=False, inputs=[detect])
    chin = plate_points_to_stroke(face, [face.landmarks[152, :2] - [0, 10]], 6, mode="erase", frames={"only": 2})
    node["strokes"] = [fine, chin]
    with pytest.raises(DoublureError, match="Occlusion1: the occluder is traced with a fine brush"):
        node.action_train(g)
    assert node.value("matte") is None


def test_matte_files_hold_either_head_and_old_files_read(tmp_path):
    band = OcclusionNet(6, centred=True).eval()
    save_matte(str(tmp_path / "band.safetensors"), OcclusionMatte(None, band), {"strokes_key": "s"})
    loaded, meta = load_matte(str(tmp_path / "band.safetensors"))
    assert loaded.coarse is None and meta["heads"] == {"band": 6} and meta["strokes_key"] == "s"
    x = torch.rand(1, 3, BAND_ROWS[1] - BAND_ROWS[0], BAND_RES)
    torch.testing.assert_close(predict_crops(loaded.band, x), predict_crops(band, x), atol=0.02, rtol=0)
    # a matte trained before the band head: the coarse network's weights alone
    coarse = OcclusionNet(12).eval()
    save_file(coarse.state_dict(), str(tmp_path / "old.safetensors"),
              metadata={"doublure": json.dumps({"schema": "doublure.occlusion/1", "width": 12, "res": 128})})
    old, _ = load_matte(str(tmp_path / "old.safetensors"))
    assert old.band is None and old.widths() == {"coarse": 12}
    x = torch.rand(1, 3, MATTE_RES, MATTE_RES)
    torch.testing.assert_close(predict_crops(old.coarse, x), predict_crops(coarse, x), atol=0.02, rtol=0)


def test_a_loaded_matte_applies_in_bf16_where_the_cpu_runs_it_natively_and_saves_fp32(tmp_path):
    """Applying: bf16 channels-last weights on a CPU with native bf16 (fp32 elsewhere), the probability within
    0.02 of fp32's; a matte saved after being made ready for applying still stores fp32 weights."""
    torch.manual_seed(3)
    trained = OcclusionMatte(OcclusionNet(12), OcclusionNet(6, centred=True))
    save_matte(str(tmp_path / "m.safetensors"), trained, {})
    loaded, _ = load_matte(str(tmp_path / "m.safetensors"))
    want = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert {p.dtype for p in loaded.parameters()} == {want}
    assert loaded.coarse.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    bf16 = for_inference(OcclusionMatte(OcclusionNet(12), OcclusionNet(6, centred=True)), bf16=True)
    bf16.load_state_dict(trained.state_dict())
    crops = torch.rand(2, 3, MATTE_RES, MATTE_RES)
    fp32 = predict_crops(trained.coarse.eval(), crops)
    assert fp32.dtype == torch.float32 and float(fp32.std()) > 1e-3
    torch.testing.assert_close(predict_crops(bf16.coarse, crops), fp32, atol=0.02, rtol=0)
    save_matte(str(tmp_path / "again.safetensors"), bf16, {})
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(tmp_path / "again.safetensors")).values()} == {torch.float32}


def test_applying_pools_and_upsamples_to_the_values_training_does():
    """Applying, a head pools with maxima of strided views and upsamples in float32 (both faster in bf16
    channels-last); the values are those of max_pool2d and the dtype's own bilinear kernel, bit for bit, so an
    applied head is the trained one."""
    torch.manual_seed(5)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 6, 24, 40).to(dtype).contiguous(memory_format=torch.channels_last)
        pooled = max_pool2(x)
        assert torch.equal(pooled, F.max_pool2d(x, 2)) and pooled.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(max_pool2(x.contiguous()), pooled)   # another layout: copied, the same values
        assert torch.equal(upsample2(x), F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        net = OcclusionNet(4, centred=True).to(dtype, memory_format=torch.channels_last)
        crops = torch.rand(1, 3, 32, 48).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            as_trained = net.train()(crops)
            applied = net.eval()(crops)
        assert float(as_trained.std()) > 0 and torch.equal(applied, as_trained)


def test_a_traced_glasses_wire_is_found_on_a_frame_not_painted(media_dir):
    """people/d9's thin metal frames, traced on frame 1 only (a short training): on frame 45 the matte holds
    most of the wire's pixels (drawn from the plate) and leaves the lenses' insides to the swap."""
    spec = dict(GLASSES_STROKES["d9"], frames=(1,))
    g, detect = detect_graph(media_dir / "people" / "d9.mp4", 45)
    node = g.create("Occlusion", hands=False, far_side=False, steps=160, inputs=[detect])
    node["strokes"] = glasses_strokes(spec, g, detect)
    node.action_train(g)
    assert set(node.value("matte")["losses"]) == {"band"}   # the wire is too fine for the coarse head
    img = g.evaluate(node, 45)
    face = img.faces[0]
    window = face.occlusion.window
    matte = face.occlusion.alpha[0].numpy()
    wire = glasses_frame_truth(g.evaluate(detect, 45).tensor, face, window, spec)
    assert wire.sum() > 300 and matte[wire].mean() > 0.6
    from occlusion_bench import crop_polygons_to_plate

    lenses = [np.mean(r, 0) + 0.6 * (np.asarray(r) - np.mean(r, 0)) for r in spec["rims"][:2]]
    inside = crop_polygons_to_plate(lenses, face, window) > 0.5
    assert inside.sum() > 1000 and matte[inside].mean() < 0.05
    # the same through apply_matte (what the bench times)
    net = node._learned_net(45)
    np.testing.assert_array_equal(apply_matte(net, img.tensor, [face], [window])[0], matte)
