"""ColorMatch on a real MEAD face recoloured and blurred by a known transform."""
import colour
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.faces.masks import render_mask
from doublure.finish import colour as match_colour

import finish_nodes  # noqa: F401  (registers TestFinishRecolour)
from doublure.engine import Node, Port, knobs as K, node_types, register_node


class TestHoldPatchFlicker(Node):
    """Frame ``hold`` of the input every frame, with the left part of the face (x < its box's centre - 10%)
    brightened by ``amount`` on odd frames: a swap whose skin changes in one place from frame to frame."""

    type_name = "TestHoldPatchFlicker"
    inputs = (Port("input"),)
    knob_specs = (K.Int("hold", 20), K.Float("amount", 0.0))

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame % 2).update(self.input_hash(0, ctx.at(self.value("hold"))))

    def compute(self, ctx, inputs):
        img = inputs.get(0, frame=self.value("hold"))
        out = img.tensor[:3].clone()
        x0, _, x1, _ = img.faces[0].box
        edge = int((x0 + x1) / 2 - 0.1 * (x1 - x0))
        out[:, :, :edge] *= 1 + self.value("amount") * (ctx.frame % 2)
        return img.replace(tensor=out)


if TestHoldPatchFlicker.type_name not in node_types():
    register_node(TestHoldPatchFlicker)

M = match_colour.working_to_xyz_matrix("ACEScg")


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
    return match_colour.to_match_space(t[:3].float().cpu(), "lab", M).permute(1, 2, 0).numpy()


def _skin(face, hw):
    return render_mask([face], "skin", hw, grow=-3)[0].numpy() > 0.99


def _delta_e(a, b, face):
    m = _skin(face, a.shape[-2:])
    return colour.delta_E(_lab(a)[m], _lab(b)[m], method="CIE 2000").mean()


@pytest.mark.parametrize("method,space", [("mkl", "lab"), ("mkl", "oklab"), ("sot", "lab"), ("histogram", "lab"),
                                          ("meanstd", "rgb")])
def test_colormatch_brings_skin_delta_e_below_one(shot, method, space):
    g, plate, swap = shot
    node = g.create("ColorMatch", inputs=[swap, plate], method=method, space=space, window=1)
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
    node = g.create("ColorMatch", inputs=[swap, plate], method="meanstd", space="lab", window=1)
    p = g.evaluate(plate, 20)
    assert _delta_e(g.evaluate(node, 20).tensor, p.tensor, p.faces[0]) < 1.2


def test_matched_face_flickers_no_more_than_the_plate(shot):
    g, plate, swap = shot
    flickering = g.create("TestFinishRecolour", flicker=0.05)
    flickering.set_input(0, plate)
    # pool "reference": the swap's statistics per frame, which evens out a swap's colour flicker
    node = g.create("ColorMatch", inputs=[flickering, plate], window=2, pool="reference")
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
    node = g.create("ColorMatch", inputs=[swap, plate], window=0)
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
    node = g.create("ColorMatch", inputs=[swap, plate], window=2)
    h2 = g.hash_of(node, g.context(20))
    node["window"] = 3
    assert g.hash_of(node, g.context(20)) != h2


def test_pooled_transfer_keeps_a_local_change_local(shot):
    # the swap's left cheek brightens every other frame; the rest of its face holds still. Matched per frame,
    # that change moves the whole face's colour; pooled on both sides the transfer barely moves.
    g, plate, _ = shot
    still = g.create("TestHoldPatchFlicker", amount=0.0)
    still.set_input(0, plate)
    patchy = g.create("TestHoldPatchFlicker", amount=0.15)
    patchy.set_input(0, plate)
    change = {}
    for pool in ("both", "reference"):
        node = g.create("ColorMatch", inputs=[patchy, still], window=3, pool=pool)
        p = g.evaluate(still, 30)
        face = p.faces[0]
        x0, _, x1, _ = face.box
        right = _skin(face, p.tensor.shape[-2:])
        right[:, : int((x0 + x1) / 2 + 0.05 * (x1 - x0))] = False
        labs = [_lab(g.evaluate(node, f).tensor)[right] for f in range(30, 36)]
        change[pool] = np.mean([np.abs(b - a).mean() for a, b in zip(labs, labs[1:])])
    assert change["reference"] > 0.3, change  # the per-frame match really moves the still half
    assert change["both"] < 0.35 * change["reference"], change


def test_hash_covers_the_source_frames_pooled(shot):
    g, plate, swap = shot
    node = g.create("ColorMatch", inputs=[swap, plate], window=2)
    before = g.hash_of(node, g.context(20))
    swap["gain"] = (1.2, 0.95, 0.7)  # the source changes at every frame, the pooled ones included
    assert g.hash_of(node, g.context(20)) != before
    node["pool"] = "reference"
    assert g.hash_of(node, g.context(20)) != before
