"""ColorMatch on a real MEAD face recoloured and blurred by a known transform."""
import colour
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.faces.masks import render_mask
from doublure.nodes import colormatch as cm

import finish_nodes  # noqa: F401  (registers TestFinishRecolour)

M = cm.working_to_xyz_matrix("ACEScg")


@pytest.fixture(scope="module")
def shot(media_dir):
    g = engine.Graph()
    g.set_setting("last", 100)
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_neutral_level1_001.mp4"), first=1, last=100)
    plate = g.create("FaceDetect")
    plate.set_input(0, read)
    swap = g.create("TestFinishRecolour")
    swap.set_input(0, plate)
    return g, plate, swap


def _lab(t):
    return cm.to_match_space(t[:3].float().cpu(), "lab", M).permute(1, 2, 0).numpy()


def _skin(face, hw):
    return render_mask([face], "skin", hw, grow=-3)[0].numpy() > 0.99


def _delta_e(a, b, face):
    m = _skin(face, a.shape[-2:])
    return colour.delta_E(_lab(a)[m], _lab(b)[m], method="CIE 2000").mean()


@pytest.mark.parametrize("method,space", [("mkl", "lab"), ("mkl", "oklab"), ("sot", "lab"), ("histogram", "lab"),
                                          ("meanstd", "rgb")])
def test_colormatch_brings_skin_delta_e_below_one(shot, method, space):
    g, plate, swap = shot
    node = g.create("ColorMatch", method=method, space=space, window=1)
    node.set_input(0, swap)
    node.set_input(1, plate)
    p = g.evaluate(plate, 20)
    face = p.faces[0]
    before = _delta_e(g.evaluate(swap, 20).tensor, p.tensor, face)
    after = _delta_e(g.evaluate(node, 20).tensor, p.tensor, face)
    assert before > 5.0
    assert after < 1.0, f"{method}/{space}: CIEDE2000 {after:.2f} after the match"


def test_meanstd_in_lab_improves_most_of_the_way(shot):
    # Per-channel mean/std in L*a*b* cannot undo a per-channel linear gain exactly (Lab is not linear in it),
    # but it removes most of the difference.
    g, plate, swap = shot
    node = g.create("ColorMatch", method="meanstd", space="lab", window=1)
    node.set_input(0, swap)
    node.set_input(1, plate)
    p = g.evaluate(plate, 20)
    assert _delta_e(g.evaluate(node, 20).tensor, p.tensor, p.faces[0]) < 1.2


def test_matched_face_flickers_no_more_than_the_plate(shot):
    g, plate, swap = shot
    flickering = g.create("TestFinishRecolour", flicker=0.05)
    flickering.set_input(0, plate)
    node = g.create("ColorMatch", window=2)
    node.set_input(0, flickering)
    node.set_input(1, plate)
    means = {"plate": [], "swap": [], "matched": []}
    for f in range(30, 38):
        p = g.evaluate(plate, f)
        m = _skin(p.faces[0], p.tensor.shape[-2:])
        for key, img in (("plate", p), ("swap", g.evaluate(flickering, f)), ("matched", g.evaluate(node, f))):
            means[key].append(_lab(img.tensor)[m].mean(axis=0))
    std = {k: np.std(np.diff(np.asarray(v), axis=0), axis=0) for k, v in means.items()}
    assert np.all(std["swap"] > 3 * std["plate"])  # the swap really flickers
    assert np.all(std["matched"] <= std["plate"] + 1e-6), std


def test_mask_and_mix_limit_the_change_and_mix_zero_passes_through(shot):
    g, plate, swap = shot
    node = g.create("ColorMatch", window=0)
    node.set_input(0, swap)
    node.set_input(1, plate)
    src = g.evaluate(swap, 20).tensor
    full = g.evaluate(node, 20).tensor
    assert (full - src).abs().amax() > 0.01
    # outside the face nothing changes
    face = g.evaluate(plate, 20).faces[0]
    x0, y0, x1, y1 = (int(v) for v in face.box)
    assert torch.equal(full[:, :, : max(0, x0 - 20)], src[:, :, : max(0, x0 - 20)])
    node["mix"] = 0.5
    half = g.evaluate(node, 20).tensor
    torch.testing.assert_close(half, src + 0.5 * (full - src), atol=1e-5, rtol=0)
    node["mix"] = 0.0
    assert g.hash_of(node, g.context(20)) == g.hash_of(swap, g.context(20))


def test_hash_follows_the_window(shot):
    g, plate, swap = shot
    node = g.create("ColorMatch", window=2)
    node.set_input(0, swap)
    node.set_input(1, plate)
    h2 = g.hash_of(node, g.context(20))
    node["window"] = 3
    assert g.hash_of(node, g.context(20)) != h2
