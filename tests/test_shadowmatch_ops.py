"""ShadowMatch maths on known shading: identity at strength 0, a shading ramp and a hard shadow reproduced."""
import numpy as np
import pytest
import torch

from doublure.engine import ops
from doublure.finish.colour import working_to_xyz_matrix
from doublure.finish import shading as sm

LUMA = torch.tensor(working_to_xyz_matrix("ACEScg")[1])


def _texture(seed, h=160, w=200, mean=(0.30, 0.22, 0.18)):
    """Skin-like albedo: a colour times fine random detail, flat at low frequency."""
    g = torch.Generator().manual_seed(seed)
    detail = ops.gaussian_blur(torch.randn(1, h, w, generator=g), 1.2) * 0.35 + 1.0
    return torch.tensor(mean).view(3, 1, 1) * detail


def _full_weight(t):
    return torch.ones(1, *t.shape[-2:])


def test_strength_zero_is_identity():
    swap, plate = _texture(1), _texture(2) * 0.5
    out = sm.shadow_match(swap, plate, _full_weight(swap), 12.0, 0.0, preserve_colour=True, luma_weights=LUMA)
    assert torch.equal(out, swap)


@pytest.mark.parametrize("preserve_colour", [True, False])
def test_strength_one_reproduces_a_shading_ramp(preserve_colour):
    swap, albedo = _texture(1), _texture(2)
    ramp = torch.linspace(0.25, 1.5, swap.shape[-1]).view(1, 1, -1)
    plate = albedo * ramp
    out = sm.shadow_match(swap, plate, _full_weight(swap), 10.0, 1.0, preserve_colour=preserve_colour,
                          luma_weights=LUMA)
    gain = (out / swap)[:, 30:-30, 30:-30]
    expect = ramp.expand_as(out)[:, 30:-30, 30:-30]
    rel = (gain / expect - 1).abs()
    assert rel.mean() < 0.02 and rel.max() < 0.06
    # the swap's own detail is kept: the high-frequency residual still correlates with the swap's texture
    detail_out = (out / ops.gaussian_blur(out, 3.0))[0, 30:-30, 30:-30].flatten()
    detail_swap = (swap / ops.gaussian_blur(swap, 3.0))[0, 30:-30, 30:-30].flatten()
    assert np.corrcoef(detail_out.numpy(), detail_swap.numpy())[0, 1] > 0.98


def test_preserve_colour_keeps_swap_chroma_while_per_channel_takes_the_light_colour():
    swap, albedo = _texture(3), _texture(4)
    light = torch.tensor([1.2, 0.9, 0.6]).view(3, 1, 1)  # a warm light on the plate
    plate = albedo * light
    weight = _full_weight(swap)
    kept = sm.shadow_match(swap, plate, weight, 10.0, 1.0, preserve_colour=True, luma_weights=LUMA)
    tinted = sm.shadow_match(swap, plate, weight, 10.0, 1.0, preserve_colour=False, luma_weights=LUMA)
    ratio = lambda img: (img[0] / img[2]).median()
    assert abs(ratio(kept) / ratio(swap) - 1) < 0.01
    assert abs(ratio(tinted) / ratio(swap) - 2.0) < 0.06


def test_weight_keeps_background_out_of_the_shading():
    swap = _texture(5)
    plate = _texture(6).clone()
    weight = torch.zeros(1, *swap.shape[-2:])
    weight[:, :, :100] = 1.0
    plate[:, :, 100:] = 50.0  # a blown-out background beside the face
    out = sm.shadow_match(swap, plate, weight, 15.0, 1.0, preserve_colour=True, luma_weights=LUMA)
    gain = (out / swap)[:, 20:-20, 60:95]
    assert (gain - 1).abs().mean() < 0.03


def test_sharp_shadows_keeps_a_hard_shadow_edge():
    swap, albedo = _texture(7), _texture(8)
    shadow = torch.ones(1, 1, swap.shape[-1])
    shadow[..., :100] = 0.3  # hard shadow boundary at x = 100
    plate = albedo * shadow
    weight = _full_weight(swap)
    soft = sm.shadow_match(swap, plate, weight, 12.0, 1.0, preserve_colour=True, luma_weights=LUMA)
    sharp = sm.shadow_match(swap, plate, weight, 12.0, 1.0, preserve_colour=True, luma_weights=LUMA,
                            sharp_shadows=True)
    near_edge = slice(92, 108)
    expect = shadow.expand(3, swap.shape[1], -1)[:, 20:-20, near_edge]
    err = lambda out: ((out / swap)[:, 20:-20, near_edge] / expect - 1).abs().mean()
    assert err(sharp) < 0.1
    assert err(sharp) < 0.5 * err(soft)
