"""The Occlusion node on real footage: a real object cut from a photograph moved across a real face (the
bench's synthetic occluder, known ground truth), the matte trained from strokes on 3 frames through the
scripting API the CLI calls, stored beside the project and invalidated by changed strokes or plate; SwapModel
composites under it; bad input; hands and a turned head's far side."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.engine import DoublureError
from doublure.faces.occlusion import (MESH_TRIANGLES, HandFinder, crop_to_plate, crop_window, far_side_matte,
                                      hand_matte, occlusion_in_window, stroke_labels)
from doublure.faces.paint import plate_points_to_stroke
from doublure.nodes.occlusion import train_occlusion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from occlusion_bench import iou_inside_crop, paint_synthetic, synthetic_shot  # noqa: E402

DEMO_MODEL = ROOT / "resources" / "demo" / "demo_model.dbm"
PAINTED = [3, 12, 21]


@pytest.fixture(scope="module")
def trained(media_dir, tmp_path_factory):
    """A saved project Read -> BenchOccluder -> FaceDetect -> Occlusion on W009 (256 px), painted on 3 frames
    and trained (60 steps: the prior on unpainted pixels slows the first steps; 30 found nothing) by
    ``train_occlusion``, then loaded again."""
    folder = tmp_path_factory.mktemp("occlusion_shot")
    g, occ, detect, node = synthetic_shot(media_dir / "mead" / "W009_front_happy_level3_001.mp4", 1, 24,
                                          media_dir / "stills" / "astronaut.png")
    node["strokes"] = paint_synthetic(occ, detect, PAINTED)
    node["steps"] = 60
    project = folder / "shot.dbl"
    g.save(str(project))
    path = train_occlusion(str(project), node.name)
    return project, Path(path)


def test_train_stores_the_matte_beside_the_project_and_finds_the_object(trained):
    project, path = trained
    assert path == project.parent / "shot.occlusion" / "Occlusion1.safetensors" and path.exists()
    g = engine.load(str(project))
    node, occ = g.node("Occlusion1"), g.node("BenchOccluder1")
    matte = node.value("matte")
    assert matte["frames"] == PAINTED and matte["file"] == "shot.occlusion/Occlusion1.safetensors"
    assert "trained on frames 3, 12, 21" in node.status()
    for frame in (8, 17):   # not painted
        img = g.evaluate(node, frame)
        (face,) = img.faces
        truth = occ.truth(frame, (img.height, img.width))
        assert iou_inside_crop(img, face, truth) > 0.6
        # the face away from the object is left to the swap
        window = face.occlusion.window
        far = np.zeros_like(truth, dtype=bool)
        far[window[0]:window[1], window[2]:window[3]] = True
        far &= truth == 0
        far[int(occ.geometry(frame)[0][1] - 0.4 * face.height):, :] = False  # above the object only
        assert occlusion_in_window(face, (0, img.height, 0, img.width))[0].numpy()[far].mean() < 0.05


def test_changed_strokes_or_plate_stop_the_matte_and_say_why(trained):
    project, _ = trained
    g = engine.load(str(project))
    node, occ = g.node("Occlusion1"), g.node("BenchOccluder1")
    strokes = node.value("strokes")
    node["strokes"] = strokes[:-1]
    with pytest.raises(DoublureError, match="Occlusion1: the strokes changed since the matte was trained"):
        g.evaluate(node, 8)
    assert "strokes changed" in node.status()
    node["learned"] = False   # switched off, the faces pass without a learned matte
    assert not g.evaluate(node, 8).faces[0].occlusion.alpha.any()
    node["learned"] = True
    node["strokes"] = strokes
    g.evaluate(node, 8)
    occ["y"] = occ.value("y") + 3.0   # another plate under the same strokes
    with pytest.raises(DoublureError, match="Occlusion1: the matte was trained on another plate"):
        g.evaluate(node, 8)


def test_a_copied_project_finds_its_matte(trained, tmp_path_factory):
    """What a farm worker sees: the project and its matte at another root (files by content, not path)."""
    project, _ = trained
    copy = tmp_path_factory.mktemp("elsewhere")   # as deep as the original: its relative media paths still hold
    shutil.copytree(project.parent, copy, copy_function=shutil.copy2, dirs_exist_ok=True)
    g = engine.load(str(copy / "shot.dbl"))
    img = g.evaluate(g.node("Occlusion1"), 8)
    assert img.faces[0].occlusion.alpha.max() > 0.99
    assert g.node("Occlusion1")._stored_path(g.node("Occlusion1").value("matte")).startswith(str(copy))


def test_swap_goes_under_the_occluder(trained):
    project, _ = trained
    g = engine.load(str(project))
    node = g.node("Occlusion1")
    swap = g.create("SwapModel", model=str(DEMO_MODEL), stabilise=0, temporal=0, inputs=[node])
    plate = g.evaluate(node, 8)
    out = g.evaluate(swap, 8)
    face = plate.faces[0]
    occluded = occlusion_in_window(face, (0, plate.height, 0, plate.width))[0] == 1.0
    assert occluded.sum() > 200
    torch.testing.assert_close(out.tensor[:3, occluded], plate.tensor[:3, occluded], atol=1e-6, rtol=0)
    coverage = out.faces[0].coverage
    y0, y1, x0, x1 = coverage.window
    assert coverage.alpha[0][occluded[y0:y1, x0:x1]].max() == 0   # the finishing nodes leave it alone too
    # elsewhere on the face the swap is there
    node["learned"] = False
    without = g.evaluate(swap, 8)
    changed = (without.tensor[:3] - plate.tensor[:3]).abs().amax(0) > 1e-3
    assert (changed & occluded).sum() > 0.5 * occluded.sum()


def test_a_stalled_training_restarts_with_the_derived_seed_and_says_so(media_dir, tmp_path, monkeypatch, caplog):
    """Every check made to find a stall (the threshold below any loss, the check on 12 steps): the coarse head
    restarts once with the seed derived from the node's, the node logs it by name, the matte is that seed's
    training, and the stall check of the restarted training is off (the last try is kept)."""
    from doublure.faces import occlusion as occlusion_lib

    g, occ, detect, node = synthetic_shot(media_dir / "mead" / "W009_front_happy_level3_001.mp4", 1, 24,
                                          media_dir / "stills" / "astronaut.png")
    node["strokes"] = paint_synthetic(occ, detect, PAINTED)
    node["steps"] = 12
    g.save(str(tmp_path / "shot.dbl"))
    samples = node.training_samples(g, node.value("strokes"))
    unchecked, _ = occlusion_lib.train_matte(samples, steps=12, seed=occlusion_lib.restart_seed(7, 1))
    monkeypatch.setattr(occlusion_lib, "STALL_CHECK_MIN_STEPS", 10)
    monkeypatch.setattr(occlusion_lib, "STALL_OCCLUDER_LOSS", -1.0)
    with caplog.at_level("WARNING", logger="doublure.occlusion"):
        path = node.action_train(g, seed=7)
    (record,) = caplog.records
    assert record.getMessage().startswith("Occlusion1: the coarse head's training stalled with seed 7 "
                                          "(painted occluder loss ")
    assert record.getMessage().endswith("at step 5): restarted with seed 1007")
    assert node.value("matte")["seeds"] == {"coarse": 1007}
    assert "the coarse head restarted with seed 1007 after a stall" in node.status()
    restarted, _ = occlusion_lib.load_matte(path)
    for (name, weight), expected in zip(restarted.coarse.state_dict().items(), unchecked.coarse.state_dict().values()):
        assert torch.equal(weight, expected.to(weight.dtype)), name   # loaded for inference: bf16 where native


def test_bad_strokes_say_what_to_paint_and_change_nothing(media_dir, tmp_path):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=10)
    detect = g.create("FaceDetect", inputs=[read])
    node = g.create("Occlusion", hands=False, far_side=False, inputs=[detect])
    face = g.evaluate(detect, 4).faces[0]
    x0, y0, x1, y1 = face.box
    occluder = plate_points_to_stroke(face, [[x0 + 20, y1 - 20]], 8, mode="add", frames={"only": 4})
    skin = plate_points_to_stroke(face, [[x0 + 30, y0 + 30]], 8, mode="erase", frames={"only": 4})
    outside = plate_points_to_stroke(face, [[2, 2]], 1, mode="add", frames={"only": 4})
    for strokes, message in (([], "no strokes painted"),
                             ([occluder], "only occluder strokes"),
                             ([skin], "only face strokes"),
                             ([occluder, skin, outside], "stroke 3 \\(frame 4\\) lies outside any face"),
                             ([dict(occluder, frames=None), dict(skin, frames=None)], "the strokes are not tied to frames")):
        node["strokes"] = strokes
        with pytest.raises(DoublureError, match=f"Occlusion1: {message}"):
            node.action_train(g)
        assert node.value("matte") is None and "Train matte failed" in node.status()
        assert not g.evaluate(node, 4).faces[0].occlusion.alpha.any()   # nothing applied
    g.save(str(tmp_path / "shot.dbl"))   # the CLI says the same, and fails
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "doublure"), "occlusion", str(tmp_path / "shot.dbl"),
                             "-n", "Occlusion1"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Occlusion1: the strokes are not tied to frames" in result.stderr


def test_stroke_labels_land_where_painted(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=5)
    detect = g.create("FaceDetect", inputs=[read])
    face = g.evaluate(detect, 2).faces[0]
    nose = face.landmarks[1, :2]
    add = plate_points_to_stroke(face, [nose], 6, hardness=1.0, mode="add", frames={"only": 2})
    occluder, skin = stroke_labels([add], face, 2)
    u, v = face.to_crop @ np.array([nose[0], nose[1], 1.0])
    assert occluder[int(v * 128), int(u * 128)] and not skin.any()
    assert 10 < occluder.sum() < 400
    assert not stroke_labels([add], face, 3)[0].any()   # painted on frame 2 only


def test_far_side_of_a_turned_head_only(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "people" / "d3.mp4"), first=1, last=30)
    detect = g.create("FaceDetect", inputs=[read])
    turned, frontal = g.evaluate(detect, 26), g.evaluate(detect, 1)
    assert abs(turned.faces[0].pose[0]) > 12 > abs(frontal.faces[0].pose[0])
    face = turned.faces[0]
    window = crop_window(face, 128, (turned.height, turned.width))
    matte = far_side_matte(face, window)
    assert matte.sum() > 50
    # none of it where the mesh is
    import cv2

    y0, y1, x0, x1 = window
    mesh = np.zeros(matte.shape, np.uint8)
    lm = face.landmarks[:, :2].astype(np.float64) - [x0, y0]
    cv2.fillPoly(mesh, [np.round(lm[t]).astype(np.int32) for t in MESH_TRIANGLES], 1)
    mesh = cv2.erode(mesh, np.ones((3, 3), np.uint8)) > 0
    assert matte[mesh].max() == 0
    f = frontal.faces[0]
    assert not far_side_matte(f, crop_window(f, 128, (frontal.height, frontal.width))).any()


def test_hands(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=5)
    from doublure.faces.detect import working_to_srgb8

    plate = g.evaluate(read, 2)
    assert HandFinder().find(working_to_srgb8(plate.tensor, g.settings["working_space"])) == []
    # an open hand, landmarks in mediapipe's order: wrist, then thumb and four fingers of four points each
    wrist = np.array([100.0, 180.0])
    knuckles = [np.array([70.0, 150.0])] + [np.array([80.0 + 14 * i, 120.0]) for i in range(4)]
    hand = [wrist]
    for i, k in enumerate(knuckles):
        tip_dir = (k - wrist) / np.linalg.norm(k - wrist)
        hand += [k + tip_dir * 12 * j for j in range(4 if i == 0 else 4)]
    hand = np.array(hand[:21])
    matte = hand_matte([hand], (0, 200, 0, 200))
    assert matte[140, 100] == 1.0 and matte[20, 20] == 0.0 and matte[190, 190] == 0.0
    node = g.create("Occlusion", inputs=[g.create("FaceDetect", inputs=[read])])
    assert node.value("hands") and node.value("far_side")   # on by default


def test_matte_round_trip_in_plate_space(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=5)
    face = g.evaluate(g.create("FaceDetect", inputs=[read]), 2).faces[0]
    window = crop_window(face, 128, (256, 256))
    ones = crop_to_plate(torch.ones(128, 128), face, window)
    # the crop covers about the face box's area in the plate
    assert 0.6 < ones.sum() / ((face.box[2] - face.box[0]) * (face.box[3] - face.box[1])) < 3.0
    assert ones.max() == pytest.approx(1.0)
