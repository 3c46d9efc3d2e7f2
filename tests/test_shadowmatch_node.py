"""ShadowMatch on a real MEAD face lit by a known light."""
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.faces.masks import render_mask

import finish_nodes  # noqa: F401


@pytest.fixture(scope="module")
def shot(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "M030_front_neutral_level1_001.mp4"), first=1, last=50)
    swap = g.create("FaceDetect")  # the face as it is: evenly lit, standing in for the swap
    swap.set_input(0, read)
    plate = g.create("TestFinishShade")  # the same face under a known light ramp
    plate.set_input(0, swap)
    node = g.create("ShadowMatch")
    node.set_input(0, swap)
    node.set_input(1, plate)
    return g, swap, plate, node


def _gain_on_skin(g, node, swap, frame=5):
    s = g.evaluate(swap, frame)
    out = g.evaluate(node, frame).tensor
    skin = render_mask(s.faces, "skin", (s.height, s.width), grow=-6)[0] > 0.99
    return (out / s.tensor.clamp_min(1e-4))[1][skin], skin


def test_strength_one_reproduces_the_light_ramp_on_the_face(shot):
    g, swap, plate, node = shot
    gain, skin = _gain_on_skin(g, node, swap)
    w = skin.shape[1]
    expect = torch.linspace(0.4, 1.4, w, device=gain.device).expand_as(skin)[skin]
    rel = (gain / expect - 1).abs()
    assert rel.median() < 0.04 and rel.mean() < 0.06


def test_strength_zero_and_mix_zero_are_identity(shot):
    g, swap, plate, node = shot
    node["strength"] = 0.0
    assert g.hash_of(node, g.context(5)) == g.hash_of(swap, g.context(5))
    assert torch.equal(g.evaluate(node, 5).tensor, g.evaluate(swap, 5).tensor)
    node["strength"] = 1.0
    node["mix"] = 0.0
    assert g.hash_of(node, g.context(5)) == g.hash_of(swap, g.context(5))
    node["mix"] = 1.0


def test_hard_shadow_across_the_face(shot):
    g, swap, plate, node = shot
    face = g.evaluate(swap, 5).faces[0]
    edge = int((face.box[0] + face.box[2]) / 2)
    plate["left"], plate["right"], plate["shadow"], plate["edge"] = 1.0, 1.0, 0.35, edge
    try:
        errs = {}
        for sharp in (False, True):
            node["sharp_shadows"] = sharp
            s = g.evaluate(swap, 5)
            gain = (g.evaluate(node, 5).tensor / s.tensor.clamp_min(1e-4))[1]
            skin = render_mask(s.faces, "skin", (s.height, s.width), grow=-6)[0] > 0.99
            rows = skin[:, edge - 8 : edge + 9].all(dim=1)  # cheek rows crossing the edge
            profile = gain[rows][:, edge - 8 : edge + 9].median(dim=0).values
            expect = torch.where(torch.arange(edge - 8, edge + 9, device=profile.device) < edge, 0.35, 1.0)
            errs[sharp] = float((profile / expect - 1).abs().mean())
        assert errs[True] < 0.12 and errs[True] < 0.6 * errs[False], errs
    finally:
        plate["left"], plate["right"], plate["shadow"], plate["edge"] = 0.4, 1.4, 1.0, 0
        node["sharp_shadows"] = False


def test_outside_the_face_is_untouched(shot):
    g, swap, plate, node = shot
    s = g.evaluate(swap, 5)
    out = g.evaluate(node, 5).tensor
    x0 = int(s.faces[0].box[0]) - 25
    assert torch.equal(out[:, :, :x0], s.tensor[:, :, :x0])
