"""Grain analysis and synthesis on synthetic noise with known statistics."""
import numpy as np
import torch

from doublure.engine import ops
from doublure.nodes import colormatch, grain

LUMA = torch.tensor(colormatch.working_to_xyz_matrix("ACEScg")[1])


def _scene(h=256, w=384, seed=0):
    """A smooth luminance ramp with some structured patches (which the analysis must avoid)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    base = 0.05 + 0.6 * xx / w + 0.1 * yy / h
    img = torch.stack([base * 1.1, base, base * 0.8])
    g = torch.Generator().manual_seed(seed)
    texture = ops.gaussian_blur(torch.randn(1, 96, 96, generator=g, dtype=torch.float64), 1.5) * 0.3
    img[:, 40:136, 40:136] += texture  # a textured object
    img[:, 150:230, 250:330] *= (1 + 0.5 * torch.sin(xx[150:230, 250:330] / 2.0))  # stripes
    return img


def test_analysis_recovers_white_noise_std_per_channel():
    sigma = torch.tensor([0.010, 0.020, 0.015], dtype=torch.float64).view(3, 1, 1)
    frames = []
    for k in range(3):
        g = torch.Generator().manual_seed(10 + k)
        frames.append(_scene() + sigma * torch.randn(3, 256, 384, generator=g, dtype=torch.float64))
    a = grain.analyse_grain(frames, LUMA, tile=32)
    measured = np.asarray(a["std"]).mean(axis=0)
    np.testing.assert_allclose(measured, sigma.flatten().numpy(), rtol=0.05)
    np.testing.assert_allclose(np.asarray(a["correlation"]), np.eye(3), atol=0.05)
    # white: flat, except the DC bin and the lowest ring, which the per-tile plane fit partly removes
    spectrum = np.asarray(a["spectrum"])[:, 2:]
    assert np.abs(spectrum / spectrum.mean(axis=1, keepdims=True) - 1).max() < 0.15


def test_analysis_follows_luminance_dependent_grain():
    scene = _scene(seed=1)
    lum = torch.einsum("c,chw->hw", LUMA.double(), scene)[None]
    k = torch.tensor([0.03, 0.04, 0.05], dtype=torch.float64).view(3, 1, 1)
    g = torch.Generator().manual_seed(3)
    frames = [scene + k * lum.clamp_min(0).sqrt() * torch.randn(3, 256, 384, generator=g, dtype=torch.float64)
              for _ in range(3)]
    a = grain.analyse_grain(frames, LUMA, bands=4, tile=32)
    assert len(a["log2_lum"]) == 4 and a["log2_lum"] == sorted(a["log2_lum"])
    for centre, std in zip(a["log2_lum"], a["std"]):
        expect = k.flatten().numpy() * np.sqrt(2.0**centre)
        np.testing.assert_allclose(std, expect, rtol=0.05)


def _gaussian_radial_power(sigma_px, bins=grain.RADIAL_BINS):
    f = (np.arange(bins) + 0.5) * 0.5 / bins
    return np.exp(-((2 * np.pi * f * sigma_px) ** 2))  # |FT of a Gaussian blur|^2


def test_analysis_measures_grain_size_and_synthesis_reproduces_it():
    g = torch.Generator().manual_seed(4)
    white = torch.randn(3, 256, 384, generator=g, dtype=torch.float64)
    coarse = ops.gaussian_blur(white, 1.0)
    coarse = coarse / coarse.std() * 0.02
    a = grain.analyse_grain([_scene(seed=2) + coarse], LUMA, tile=32)
    expect = _gaussian_radial_power(1.0)
    for row in np.asarray(a["spectrum"]):
        assert np.corrcoef(row[2:], expect[2:])[0, 1] > 0.97  # past the detrended lowest ring
    # synthesise on a flat grey plate and measure it again
    flat_lum = torch.full((1, 256, 384), 0.3, dtype=torch.float64)
    synth = grain.synthesise_grain(flat_lum, a, seed=7)
    b = grain.analyse_grain([flat_lum.expand(3, -1, -1) + synth], LUMA, tile=32)
    np.testing.assert_allclose(np.asarray(b["std"]).mean(0), np.asarray(a["std"]).mean(0), rtol=0.06)
    for row_a, row_b in zip(a["spectrum"], b["spectrum"]):
        assert np.corrcoef(row_a[2:], row_b[2:])[0, 1] > 0.97


def test_synthesis_keeps_channel_correlation_and_is_seeded():
    g = torch.Generator().manual_seed(5)
    shared = torch.randn(1, 256, 384, generator=g, dtype=torch.float64)
    own = torch.randn(3, 256, 384, generator=g, dtype=torch.float64)
    noise = (0.8 * shared + 0.6 * own) * 0.02  # channel correlation 0.64
    a = grain.analyse_grain([_scene(seed=3) + noise], LUMA, tile=32)
    corr = np.asarray(a["correlation"])
    assert abs(corr[0, 1] - 0.64) < 0.05 and abs(corr[1, 2] - 0.64) < 0.05
    lum = torch.full((1, 128, 128), 0.3)
    s1, s2 = grain.synthesise_grain(lum, a, 11), grain.synthesise_grain(lum, a, 11)
    assert torch.equal(s1, s2)
    assert not torch.allclose(s1, grain.synthesise_grain(lum, a, 12))
    c = np.corrcoef(s1.reshape(3, -1).numpy())
    assert abs(c[0, 1] - 0.64) < 0.05
