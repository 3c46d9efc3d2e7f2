"""engine/ops.py image helpers checked against OpenCV."""
import cv2
import numpy as np
import pytest
import torch

from doublure.engine import ops


@pytest.fixture
def plane():
    rng = np.random.default_rng(3)
    return rng.random((3, 41, 57)).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.8, 2.0, 5.5])
def test_gaussian_blur_matches_opencv(plane, sigma):
    out = ops.gaussian_blur(torch.from_numpy(plane), sigma).numpy()
    k = 2 * int(np.ceil(3 * sigma)) + 1
    ref = np.stack([cv2.GaussianBlur(p, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101) for p in plane])
    np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("radius", [1, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])   # float32 on the CPU runs OpenCV, float64 torch's
def test_box_filter_matches_opencv(plane, radius, dtype):
    out = ops.box_filter(torch.from_numpy(plane.astype(dtype)), radius).numpy()
    k = 2 * radius + 1
    ref = np.stack([cv2.blur(p, (k, k), borderType=cv2.BORDER_REFLECT_101) for p in plane])
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_box_filter_of_views_matches_torchs_path(plane):
    """A plate window (a sliced view) and a transposed view through OpenCV, as through torch's convolutions."""
    t = torch.from_numpy(plane)
    for view in (t[:, 3:-4, 5:-2], t.transpose(1, 2)):
        torch.testing.assert_close(ops.box_filter(view, 2), ops.box_filter(view.double(), 2).float(), atol=1e-6, rtol=0)


def test_resize_up_matches_opencv_linear(plane):
    out = ops.resize(torch.from_numpy(plane), (82, 114)).numpy()
    ref = np.stack([cv2.resize(p, (114, 82), interpolation=cv2.INTER_LINEAR) for p in plane])
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_resize_down_matches_area_on_smooth_and_does_not_alias():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    smooth = (np.sin(xx / 7.0) + np.cos(yy / 5.0))[None].astype(np.float32)
    out = ops.resize(torch.from_numpy(smooth), (32, 32)).numpy()[0]
    ref = cv2.resize(smooth[0], (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(out - ref).max() < 0.05  # triangle vs box filter: 2.5% of the range
    checker = ((xx + yy) % 2)[None].astype(np.float32)  # Nyquist pattern: must average to grey
    small = ops.resize(torch.from_numpy(checker), (16, 16)).numpy()
    np.testing.assert_allclose(small, 0.5, atol=3e-3)  # corners: truncated filter


def test_fast_gaussian_blur_close_to_exact():
    yy, xx = np.mgrid[0:200, 0:240].astype(np.float32)
    img = (np.sin(xx / 9.0) * np.cos(yy / 13.0) + (xx > 120)).astype(np.float32)[None]
    t = torch.from_numpy(img)
    exact = ops.gaussian_blur(t, 16.0)
    fast = ops.fast_gaussian_blur(t, 16.0)
    inner = (slice(None), slice(40, -40), slice(40, -40))
    assert (fast - exact)[inner].abs().max() < 0.02


def test_normalized_blur_ignores_outside_weight():
    img = torch.zeros(1, 50, 50)
    img[:, :, 25:] = 100.0  # background we must not pull in
    img[:, :, :25] = 2.0
    w = torch.zeros(1, 50, 50)
    w[:, :, :25] = 1.0
    out = ops.normalized_blur(img, w, 6.0)
    assert torch.allclose(out[:, :, :25], torch.full((1, 50, 25), 2.0), atol=1e-4)


def test_guided_filter_keeps_guide_edge_and_smooths_noise():
    rng = np.random.default_rng(1)
    guide = np.zeros((1, 40, 40), np.float32)
    guide[:, :, 20:] = 1.0
    src = guide + rng.normal(0, 0.1, guide.shape).astype(np.float32)
    out = ops.guided_filter(torch.from_numpy(guide), torch.from_numpy(src), 4, 1e-3).numpy()
    assert np.abs(out - guide).std() < 0.03
    assert out[0, :, 17].mean() < 0.1 and out[0, :, 22].mean() > 0.9
