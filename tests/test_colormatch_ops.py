"""ColorMatch's colour spaces and transfers against colour-science, numpy and closed forms."""
import colour
import numpy as np
import pytest
import scipy.linalg
import torch

from doublure.finish import colour as match_colour
from doublure.finish import colour_transfer

D65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]


@pytest.fixture(scope="module")
def acescg_samples():
    rng = np.random.default_rng(7)
    return rng.uniform(0.0, 1.5, (2000, 3))


def test_working_space_matrix_is_colour_science_acescg_bradford_d65():
    ref = colour.RGB_to_XYZ(np.eye(3), colour.RGB_COLOURSPACES["ACEScg"], illuminant=D65,
                            chromatic_adaptation_transform="Bradford").T
    np.testing.assert_allclose(match_colour.working_to_xyz_matrix("ACEScg"), ref, atol=2e-6)


def test_lab_matches_colour_science(acescg_samples):
    m = match_colour.working_to_xyz_matrix("ACEScg")
    lab = match_colour.to_match_space(torch.from_numpy(acescg_samples.T.copy()), "lab", m).numpy().T
    xyz = colour.RGB_to_XYZ(acescg_samples, colour.RGB_COLOURSPACES["ACEScg"], illuminant=D65,
                            chromatic_adaptation_transform="Bradford")
    np.testing.assert_allclose(lab, colour.XYZ_to_Lab(xyz, D65), atol=2e-3)


def test_oklab_matches_colour_science(acescg_samples):
    xyz = acescg_samples @ match_colour.working_to_xyz_matrix("ACEScg").T
    ok = match_colour.xyz_to_oklab(torch.from_numpy(xyz.T.copy())).numpy().T
    np.testing.assert_allclose(ok, colour.XYZ_to_Oklab(xyz), atol=2e-6)


@pytest.mark.parametrize("space", match_colour.SPACES)
def test_match_space_round_trips_including_negatives(space):
    rng = np.random.default_rng(2)
    rgb = torch.from_numpy(rng.uniform(-0.05, 4.0, (3, 500)))
    m = match_colour.working_to_xyz_matrix("ACEScg")
    back = match_colour.from_match_space(match_colour.to_match_space(rgb, space, m), space, m)
    torch.testing.assert_close(back, rgb, atol=1e-9, rtol=1e-9)


def test_meanstd_matches_numpy_formula():
    rng = np.random.default_rng(0)
    src = rng.normal([50, 10, 20], [8, 3, 5], (4000, 3)).T
    ref = rng.normal([60, 14, 18], [5, 4, 2], (3000, 3)).T
    x = rng.normal([50, 10, 20], [8, 3, 5], (100, 3)).T
    out = colour_transfer.meanstd_transfer(torch.from_numpy(x), torch.from_numpy(src), torch.from_numpy(ref)).numpy()
    expect = (x - src.mean(1, keepdims=True)) / src.std(1, keepdims=True) * ref.std(1, keepdims=True) \
        + ref.mean(1, keepdims=True)
    np.testing.assert_allclose(out, expect, rtol=1e-10, atol=1e-10)


def test_mkl_closed_forms():
    # Diagonal covariances: the map is the per-axis ratio of standard deviations.
    t = colour_transfer.mkl_matrix(torch.diag(torch.tensor([4.0, 1.0, 0.25])), torch.diag(torch.tensor([1.0, 9.0, 1.0])))
    torch.testing.assert_close(t, torch.diag(torch.tensor([0.5, 3.0, 2.0], dtype=torch.float64)), atol=1e-7, rtol=0)
    # Identity source: T is the principal square root of the target covariance.
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 3))
    r = a @ a.T + 0.1 * np.eye(3)
    t = colour_transfer.mkl_matrix(torch.eye(3, dtype=torch.float64), torch.from_numpy(r)).numpy()
    np.testing.assert_allclose(t, scipy.linalg.sqrtm(r).real, atol=1e-6)
    # General case: Pitie's closed form (scipy sqrtm), T S T = R, T symmetric positive definite.
    b = rng.normal(size=(3, 3))
    s = b @ b.T + 0.1 * np.eye(3)
    t = colour_transfer.mkl_matrix(torch.from_numpy(s), torch.from_numpy(r)).numpy()
    s_half = scipy.linalg.sqrtm(s).real
    s_inv_half = np.linalg.inv(s_half)
    np.testing.assert_allclose(t, s_inv_half @ scipy.linalg.sqrtm(s_half @ r @ s_half).real @ s_inv_half, atol=1e-5)
    np.testing.assert_allclose(t @ s @ t, r, atol=1e-5)
    np.testing.assert_allclose(t, t.T, atol=1e-9)
    assert np.all(np.linalg.eigvalsh(t) > 0)


def test_mkl_transfer_moves_samples_onto_target_gaussian():
    rng = np.random.default_rng(5)
    src = rng.multivariate_normal([0.2, 0.3, 0.1], [[0.02, 0.01, 0], [0.01, 0.03, 0.005], [0, 0.005, 0.01]], 20000).T
    ref = rng.multivariate_normal([0.5, 0.2, 0.3], [[0.01, -0.004, 0], [-0.004, 0.02, 0], [0, 0, 0.04]], 20000).T
    out = colour_transfer.mkl_transfer(torch.from_numpy(src), torch.from_numpy(src), torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(out.mean(1), ref.mean(1), atol=1e-9)
    np.testing.assert_allclose(np.cov(out, bias=True), np.cov(ref, bias=True), rtol=1e-4, atol=1e-7)


def test_max_gain_bounds_the_linear_transfers_along_every_direction():
    """The plate's skin can vary far more than the swap's for reasons that are not light (glasses, stubble):
    the linear maps then stretch the swap's colours by up to 3.6 (people/d13). With ``max_gain`` the map's
    gains are held within [1 / g, g] along its own directions; the means still meet."""
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    t = q @ np.diag([0.2, 1.1, 3.6]) @ q.T
    limited = colour_transfer.limit_gain(torch.from_numpy(t), 1.5).numpy()
    np.testing.assert_allclose(np.linalg.eigvalsh(limited), [1 / 1.5, 1.1, 1.5], atol=1e-12)
    np.testing.assert_allclose(limited @ q[:, 1], 1.1 * q[:, 1], atol=1e-12)   # directions kept
    inside = q @ np.diag([0.8, 1.1, 1.3]) @ q.T
    np.testing.assert_allclose(colour_transfer.limit_gain(torch.from_numpy(inside), 1.5).numpy(), inside, atol=1e-12)

    src = rng.multivariate_normal([0.7, 0.06, 0.05], np.diag([0.05, 0.01, 0.006]) ** 2, 20000).T
    ref = rng.multivariate_normal([0.6, 0.05, 0.05], np.diag([0.095, 0.011, 0.021]) ** 2, 20000).T
    for method in ("mkl", "meanstd"):
        out = colour_transfer.transfer(method, torch.from_numpy(src), torch.from_numpy(src), torch.from_numpy(ref), max_gain=1.5)
        out = out.numpy()
        np.testing.assert_allclose(out.mean(1), ref.mean(1), atol=1e-9)
        gains = out.std(1) / src.std(1)
        assert gains.max() <= 1.5 + 1e-6 and gains[2] > 1.45, (method, gains)   # b: 3.5 unlimited
        free = colour_transfer.transfer(method, torch.from_numpy(src), torch.from_numpy(src), torch.from_numpy(ref)).numpy()
        assert free.std(1)[2] / src.std(1)[2] > 3.0


def _two_blobs(rng, n, centres, scale):
    k = rng.integers(0, len(centres), n)
    return (np.asarray(centres)[k] + rng.normal(0, scale, (n, 3))).T


def test_sot_sliced_distance_falls():
    rng = np.random.default_rng(6)
    src = torch.from_numpy(_two_blobs(rng, 6000, [[20, 0, 0], [60, 10, 30]], 4.0))
    ref = torch.from_numpy(_two_blobs(rng, 6000, [[40, -10, 5], [70, 20, 10], [50, 0, 40]], 3.0))
    before = colour_transfer.sliced_wasserstein(src, ref, seed=1)
    few = colour_transfer.sliced_wasserstein(colour_transfer.sot_transfer(src, src, ref, iterations=3), ref, seed=1)
    many = colour_transfer.sliced_wasserstein(colour_transfer.sot_transfer(src, src, ref, iterations=30), ref, seed=1)
    assert before > 10.0
    assert few < 0.5 * before
    assert many < few and many < 0.05 * before
    # and it is deterministic
    torch.testing.assert_close(colour_transfer.sot_transfer(src, src, ref, iterations=5), colour_transfer.sot_transfer(src, src, ref, iterations=5))


def test_histogram_transfer_matches_marginals():
    rng = np.random.default_rng(8)
    src = torch.from_numpy(rng.gamma(2.0, 1.0, (3, 10000)))
    ref = torch.from_numpy(rng.normal(5.0, 2.0, (3, 10000)))
    out = colour_transfer.histogram_transfer(src, src, ref).numpy()
    q = np.linspace(0.02, 0.98, 25)
    np.testing.assert_allclose(np.quantile(out, q, axis=1), np.quantile(ref.numpy(), q, axis=1), atol=0.05)


def test_quantile_map_identity_ties_and_extrapolation():
    q = torch.tensor([[0.0, 1.0, 1.0, 2.0]])
    v = torch.tensor([[-1.0, 0.5, 1.0, 1.5, 3.0]])
    out = colour_transfer.quantile_map(v, q, q + 10.0)
    torch.testing.assert_close(out, v + 10.0)
    assert torch.isfinite(out).all()


def test_sot_on_large_input_uses_lattice_close_to_exact():
    rng = np.random.default_rng(9)
    src = torch.from_numpy(_two_blobs(rng, 4000, [[20, 0, 0], [60, 10, 30]], 4.0))
    ref = torch.from_numpy(_two_blobs(rng, 4000, [[40, -10, 5], [70, 20, 10]], 3.0))
    x = torch.from_numpy(_two_blobs(rng, 40000, [[20, 0, 0], [60, 10, 30]], 4.0))
    exact = colour_transfer.sot_transfer(x, src, ref, iterations=10, lut_size=10**6)
    lattice = colour_transfer.sot_transfer(x, src, ref, iterations=10, lut_size=33)
    err = (exact - lattice).norm(dim=0)
    assert err.median() < 0.3 and err.mean() < 0.5  # Lab units: well under a just-noticeable difference


def test_constant_matrices_and_luma_weights_reach_a_device_once():
    """On a GPU each copy of a constant from pageable host memory waits for the stream, so the colour
    spaces' matrices and the luma weights go to a device once. (The meta device stands for a GPU.)"""
    from doublure.finish.colour import luma_weights

    x = torch.zeros(3, 8, device="meta")
    match_colour._matrix_on.cache_clear()
    match_colour.xyz_to_oklab(x)
    match_colour.xyz_to_oklab(x)
    info = match_colour._matrix_on.cache_info()
    assert (info.misses, info.hits) == (2, 2)
    assert luma_weights("ACEScg", "meta") is luma_weights("ACEScg", torch.device("meta"))
    assert luma_weights("ACEScg").device.type == "cpu"
