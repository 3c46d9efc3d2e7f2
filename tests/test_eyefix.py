"""EyeFix: iris finding and alignment on synthetic eyes, catchlight transfer, and plate eyes with painted
strokes on a real MEAD face."""
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.engine import ops
from doublure.faces.masks import render_mask
from doublure.faces.paint import plate_points_to_stroke
from doublure.finish import eyes

import finish_nodes  # noqa: F401


def _synthetic_eye(cx, cy, r=6.0, h=32, w=48, highlight=None):
    """Sclera-filled almond opening with a dark iris disc; returns (rgb (3,H,W), lum (H,W), opening (H,W))."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    opening = (((xs - 24) / 20) ** 2 + ((ys - 16) / 9) ** 2 <= 1).float()
    d = torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    iris = (r + 0.5 - d).clamp(0, 1)
    lum = 0.15 + 0.45 * opening * (1 - iris) + 0.05 * opening * iris
    if highlight is not None:
        hx, hy = highlight
        lum = lum + 2.0 * ((1.5 - torch.sqrt((xs - hx) ** 2 + (ys - hy) ** 2)).clamp(0, 1))
    return lum.expand(3, -1, -1).clone(), lum, opening


@pytest.mark.parametrize("cx,cy", [(23.3, 15.7), (18.0, 17.2), (30.6, 14.4)])
def test_find_iris_centre_subpixel(cx, cy):
    _, lum, opening = _synthetic_eye(cx, cy)
    x, y = eyes.find_iris_centre(lum, opening, 6.0)
    assert abs(x - cx) < 0.35 and abs(y - cy) < 0.35


def test_shift_inside_moves_content_where_weight_is_one_only():
    img = torch.rand(3, 40, 40)
    weight = torch.zeros(1, 40, 40)
    weight[:, 10:30, 10:30] = 1
    out = eyes.shift_inside(img, weight, 2.0, -1.0)
    torch.testing.assert_close(out[:, 12:28, 12:28], img[:, 13:29, 10:26])
    torch.testing.assert_close(out[:, :8], img[:, :8])


def test_iris_alignment_moves_the_swap_iris_onto_the_plate_iris():
    swap, swap_lum, opening = _synthetic_eye(19.0, 16.5)
    _, plate_lum, _ = _synthetic_eye(27.4, 15.2)
    s = eyes.find_iris_centre(swap_lum, opening, 6.0)
    p = eyes.find_iris_centre(plate_lum, opening, 6.0)
    fade = ops.gaussian_blur(opening[None], 1.5).clamp(0, 1)
    moved = eyes.shift_inside(swap, fade, p[0] - s[0], p[1] - s[1])
    x, y = eyes.find_iris_centre(moved[0], opening, 6.0)
    assert abs(x - 27.4) < 0.6 and abs(y - 15.2) < 0.6
    outside = fade[0] == 0
    torch.testing.assert_close(moved[:, outside], swap[:, outside])


def test_catchlight_layer_holds_the_highlight_only():
    rgb, lum, opening = _synthetic_eye(24, 16, highlight=(26, 14))
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    iris = ((xs - 24) ** 2 + (ys - 16) ** 2 <= 7.2**2).float()
    layer = eyes.catchlight_layer(rgb, lum, iris * opening, 6.0, white_level=0.6)
    assert layer[0, 14, 26] > 1.0
    far = ((xs - 26) ** 2 + (ys - 14) ** 2) > 16
    assert layer[0][far].max() < 0.05


@pytest.fixture(scope="module")
def shot(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "M030_front_happy_level3_001.mp4"), first=1, last=40)
    plate = g.create("FaceDetect")
    plate.set_input(0, read)
    swap = g.create("TestFinishRecolour", gain=(0.8, 1.0, 1.2), blur=1.5)  # a "swap" with dull, soft eyes
    swap.set_input(0, plate)
    node = g.create("EyeFix")
    node.set_input(0, swap)
    node.set_input(1, plate)
    return g, plate, swap, node


def test_plate_eyes_come_back_inside_the_eye_mask_and_nowhere_else(shot):
    g, plate, swap, node = shot
    p, s, out = g.evaluate(plate, 12), g.evaluate(swap, 12), g.evaluate(node, 12)
    hw = (p.height, p.width)
    m = node.eye_mask(p.faces, 12, hw, out.device)
    for cx, cy, _ in p.faces[0].iris:
        assert m[0, int(round(cy)), int(round(cx))] > 0.99  # the irises are fully the plate's
    torch.testing.assert_close(out.tensor, s.tensor * (1 - m) + p.tensor * m, atol=1e-5, rtol=0)
    r = float(p.faces[0].iris[:, 2].mean())
    outside = render_mask(p.faces, "eyes", hw, grow=r * 2.5)[0] == 0
    assert torch.equal(out.tensor[:, outside], s.tensor[:, outside])


def test_painted_erase_stroke_keeps_the_swap_eye_and_follows_the_face(shot):
    g, plate, swap, node = shot
    f10 = g.evaluate(plate, 10).faces[0]
    left = f10.iris[0]
    node["strokes"] = [plate_points_to_stroke(f10, [left[:2]], 4 * left[2], hardness=1.0, mode="erase")]
    try:
        for frame in (10, 30):
            p, s, out = g.evaluate(plate, frame), g.evaluate(swap, frame), g.evaluate(node, frame)
            cx, cy, rr = p.faces[0].iris[0]
            x, y = int(round(cx)), int(round(cy))
            torch.testing.assert_close(out.tensor[:, y, x], s.tensor[:, y, x])  # erased: the swap's eye
            rx, ry, _ = p.faces[0].iris[1]
            torch.testing.assert_close(out.tensor[:, int(round(ry)), int(round(rx))],
                                       p.tensor[:, int(round(ry)), int(round(rx))], atol=1e-5, rtol=0)
    finally:
        node["strokes"] = []


def test_sharpen_catchlight_and_iris_align_change_only_the_eyes(shot):
    g, plate, swap, node = shot
    node["plate_eyes"] = False
    node["sharpen"], node["catchlight"], node["iris_align"] = 1.0, 1.0, True
    try:
        p, s, out = g.evaluate(plate, 12), g.evaluate(swap, 12), g.evaluate(node, 12)
        changed = (out.tensor - s.tensor).abs().amax(0) > 1e-6
        r = float(p.faces[0].iris[:, 2].mean())
        near_eyes = render_mask(p.faces, "eyes", (p.height, p.width), grow=2.5 * r + 3, device=out.device)[0] > 0
        assert changed.any() and not (changed & ~near_eyes).any()
        assert torch.isfinite(out.tensor).all()
        eyes = render_mask(p.faces, "eyes", (p.height, p.width))[0] > 0.5
        hp = lambda t: (t - ops.gaussian_blur(t, 1.0))[:, eyes].abs().mean()  # noqa: E731
        assert hp(out.tensor) > 1.2 * hp(s.tensor)
    finally:
        node["plate_eyes"], node["sharpen"], node["catchlight"], node["iris_align"] = True, 0.0, 0.0, False


def test_everything_off_or_mix_zero_passes_through(shot):
    g, plate, swap, node = shot
    node["mix"] = 0.0
    assert g.hash_of(node, g.context(12)) == g.hash_of(swap, g.context(12))
    node["mix"] = 1.0
    node["plate_eyes"] = False
    assert g.hash_of(node, g.context(12)) == g.hash_of(swap, g.context(12))
    node["plate_eyes"] = True
