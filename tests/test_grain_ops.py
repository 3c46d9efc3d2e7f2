"""Grain analysis and synthesis on synthetic noise with known statistics."""
import math

import numpy as np
import pytest
import torch

from doublure.engine import ops
from doublure.finish import grain
from doublure.finish.colour import working_to_xyz_matrix

LUMA = torch.tensor(working_to_xyz_matrix("ACEScg")[1])


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


def _frame_pairs(renewing: float, sigma=0.02, frames=3, seed=20):
    """(frames, next frames) of the _scene with grain of std ``sigma``, ``renewing`` of its variance new in
    the next frame and the rest a texture that stays."""
    g = torch.Generator().manual_seed(seed)
    stay = torch.randn(3, 256, 384, generator=g, dtype=torch.float64)
    now, then = [], []
    for k in range(frames):
        scene = _scene(seed=k)
        new = [torch.randn(3, 256, 384, generator=g, dtype=torch.float64) for _ in range(2)]
        for out, n in zip((now, then), new):
            out.append(scene + sigma * (math.sqrt(1 - renewing) * stay + math.sqrt(renewing) * n))
    return now, then


def test_renewal_is_one_for_renewing_grain_and_zero_for_texture_that_stays():
    for renewing, tol in ((1.0, 0.08), (0.3, 0.05), (0.01, 0.01)):
        now, then = _frame_pairs(renewing)
        a = grain.analyse_grain(now, LUMA, next_frames=then, tile=32)
        np.testing.assert_allclose(a["renewal"], [renewing] * 3, atol=tol)
    # fully renewing grain: the std is the whole grain's
    frames, following = _frame_pairs(1.0)
    a = grain.analyse_grain(frames, LUMA, next_frames=following, tile=32)
    np.testing.assert_allclose(np.asarray(a["std"]).mean(0), [0.02] * 3, rtol=0.08)
    assert grain.analyse_grain(now, LUMA, tile=32)["renewal"] is None  # no temporal view


def _direct_field(freqs, coefs, to_crop, points):
    """Reference: the attached field summed wave by wave at (N, 2) plate points (x, y), numpy float64."""
    m, t = grain.face_frame(to_crop)
    q = points @ m.T + t
    phase = 2 * np.pi * q @ freqs.numpy().T                               # (N, K)
    return np.real(np.exp(1j * phase) @ coefs.numpy().T).T                # (3, N)


def _to_crop(angle_deg, scale, centre):
    """A face's plate -> crop unit similarity: ``scale`` plate px per crop unit, turned, centred on ``centre``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) / scale
    return np.hstack([rot, (0.5 - rot @ np.asarray(centre, dtype=np.float64))[:, None]])


def _assert_field_close(field: np.ndarray, ref: np.ndarray, bf16: bool) -> None:
    if not bf16:
        np.testing.assert_allclose(field, ref, atol=2e-4)
        return
    # bf16 products, fp32 sums: errors of a few thousandths of the field's unit std, never a wrong pattern
    err = field - ref
    assert np.sqrt(np.mean(err**2)) < 0.006 and np.abs(err).max() < 0.05


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_attached_noise_is_the_wave_sum_and_moves_with_the_face(bf16, monkeypatch):
    # the product runs in bf16 on CPUs that have it natively; both paths are held to the direct sum
    monkeypatch.setattr(grain, "cpu_has_native_bf16", lambda: bf16)
    spectrum = torch.tensor(_gaussian_radial_power(0.8)).repeat(3, 1)
    tc = _to_crop(12.0, 180.0, (70.0, 60.0))
    window = (40, 64, 50, 80)
    field = grain.attached_noise(spectrum, tc, window, seed=3)
    freqs, coefs = grain.attached_waves(spectrum, seed=3)
    ys, xs = np.mgrid[window[0]:window[1], window[2]:window[3]]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    ref = _direct_field(freqs, coefs, tc, pts).reshape(3, *xs.shape)
    _assert_field_close(field.numpy(), ref, bf16)
    # the face moved 7 px right, 3 px up and turned 5 degrees about its centre: each pixel of the moved face
    # carries the grain of the point of the face it came from
    moved = _to_crop(17.0, 180.0, (77.0, 57.0))
    after = grain.attached_noise(spectrum, moved, window, seed=3).numpy().reshape(3, -1)
    from_crop = np.linalg.inv(np.vstack([tc, [0, 0, 1]]))
    origin = (np.hstack([pts, np.ones((len(pts), 1))]) @ np.vstack([moved, [0, 0, 1]]).T) @ from_crop.T
    _assert_field_close(after, _direct_field(freqs, coefs, tc, origin[:, :2]), bf16)


def test_face_grain_changes_from_frame_to_frame_by_its_renewing_part_only():
    g = torch.Generator().manual_seed(6)
    coarse = ops.gaussian_blur(torch.randn(3, 256, 384, generator=g, dtype=torch.float64), 0.8)
    a = grain.analyse_grain([_scene(seed=2) + coarse / coarse.std() * 0.02], LUMA, tile=32)
    std = np.asarray(a["std"]).mean(0)
    lum = torch.full((1, 200, 220), 0.3)
    tc = _to_crop(0.0, 200.0, (110.0, 100.0))  # a face holding still
    window = (0, 200, 0, 220)
    for renewal in (0.0, 0.2, 1.0):
        one = grain.synthesise_face_grain(lum, a, 1, 99, tc, window, renewal)
        two = grain.synthesise_face_grain(lum, a, 2, 99, tc, window, renewal)
        np.testing.assert_allclose(one.std(dim=(1, 2)).numpy(), std, rtol=0.08)
        temporal = ((two - one) / math.sqrt(2)).std(dim=(1, 2)).numpy()
        np.testing.assert_allclose(temporal, math.sqrt(renewal) * std, rtol=0.1, atol=1e-5)
    # the attached part has the analysed grain size
    b = grain.analyse_grain([lum.expand(3, -1, -1) + grain.synthesise_face_grain(lum, a, 1, 99, tc, window, 0.0)],
                            LUMA, tile=32)
    for row_a, row_b in zip(a["spectrum"], b["spectrum"]):
        assert np.corrcoef(row_a[2:], row_b[2:])[0, 1] > 0.95


def test_measured_renewal_splits_the_spectrum_and_an_old_analysis_renews_fully():
    now, then = _frame_pairs(0.25, seed=21)
    a = grain.analyse_grain(now, LUMA, next_frames=then, tile=32)
    share, renewing, attached = grain.grain_parts(a)
    np.testing.assert_allclose(share.numpy(), [0.25] * 3, atol=0.05)
    assert (attached >= 0).all()
    lum = torch.full((1, 160, 160), 0.3)
    tc = _to_crop(0.0, 150.0, (80.0, 80.0))
    one = grain.synthesise_face_grain(lum, a, 1, 5, tc, (0, 160, 0, 160))
    two = grain.synthesise_face_grain(lum, a, 2, 5, tc, (0, 160, 0, 160))
    ratio = ((two - one).std(dim=(1, 2)) / math.sqrt(2) / one.std(dim=(1, 2))).pow(2).numpy()
    np.testing.assert_allclose(ratio, share.numpy(), atol=0.06)
    old = {k: v for k, v in a.items() if k not in ("renewal", "renewing_spectrum", "renewal_tiles")}
    old["schema"] = "doublure.grain/1"
    assert torch.equal(grain.synthesise_face_grain(lum, old, 7, 5, tc, (0, 160, 0, 160)),
                       grain.synthesise_grain(lum, old, 7))
