"""The viewer converts a frame at the size it draws it: box-filtered in scene-linear, then OCIO's display
transform. Checked against OCIO's own processor on a real image read through OpenImageIO (with highlights
pushed into the tone curve's shoulder), and in the real viewer: fitted, a frame converts at a fraction of its
size; at 1:1 every pixel is OCIO's exact conversion and is what the screen shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import PyOpenColorIO as OCIO
import pytest
import torch
from PySide6 import QtCore

import doublure.nodes  # noqa: F401  (registers Read)
from doublure.app.display import DisplaySettings, display_pixels, display_resolution
from doublure.engine import Image, colour, imageio

from test_app_support import window  # noqa: F401

STILL = Path(__file__).resolve().parents[2] / "shared" / "media" / "stills" / "astronaut.png"


@pytest.fixture(scope="module")
def scene() -> Image:
    """The astronaut (512x512 sRGB PNG) in ACEScg, its right half 6 stops brighter (values up to ~60, in the
    ACES tone curve's shoulder and beyond display white)."""
    pixels = imageio.read_image(STILL).pixels[..., :3].copy()
    linear = colour.convert(pixels, "srgb", colour.DEFAULT_WORKING_SPACE)
    linear[:, 256:] *= 64.0
    return Image(torch.from_numpy(np.ascontiguousarray(linear.transpose(2, 0, 1))))


def ocio_display(linear_hwc: np.ndarray) -> np.ndarray:
    """OCIO's CPU processor, ACEScg to the default display and view, as 8-bit codes (H, W, 3)."""
    processor = colour.config().getProcessor(colour.DEFAULT_WORKING_SPACE, colour.DEFAULT_DISPLAY,
                                             colour.DEFAULT_VIEW, OCIO.TRANSFORM_DIR_FORWARD)
    out = np.ascontiguousarray(linear_hwc, dtype=np.float32).copy()
    h, w, c = out.shape
    processor.getDefaultCPUProcessor().apply(OCIO.PackedImageDesc(out, w, h, c))
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def box(pixels: np.ndarray, n: int) -> np.ndarray:
    """The mean of each n x n block of (H, W, C) pixels."""
    h, w, c = pixels.shape
    return pixels.reshape(h // n, n, w // n, n, c).mean(axis=(1, 3))


def test_display_resolution_is_the_power_of_two_at_or_above_the_zoom():
    assert display_resolution(1.0) == display_resolution(3.0) == 1.0
    assert display_resolution(0.229) == 0.25   # a 1080x1920 plate fitted into a 1054x447 viewer
    assert display_resolution(0.25) == 0.25 and display_resolution(0.26) == 0.5
    assert display_resolution(0.001) == 1 / 16


def test_full_resolution_is_ocio_exactly(scene):
    linear = scene.tensor.permute(1, 2, 0).numpy()
    assert np.array_equal(display_pixels(scene, DisplaySettings())[..., :3], ocio_display(linear))


def test_reduced_resolution_is_ocio_on_the_scene_linear_mean(scene):
    fast = display_pixels(scene, DisplaySettings(resolution=0.25))
    assert fast.shape == (128, 128, 4)
    linear = scene.tensor.permute(1, 2, 0).numpy().astype(np.float64)
    exact = ocio_display(box(linear, 4))
    # the same transform on the same means (float32 mean in torch against float64 here): at most one code
    assert np.abs(fast[..., :3].astype(int) - exact).max() <= 1
    # Against the full-size conversion averaged in display codes (what filtering the converted frame, the viewer
    # before, gave): not a transform error but the order of filtering. Averaging light is brighter where a 4x4
    # block holds dark and bright detail (stars, the visor's reflections, the pushed highlights): measured
    # +3.0 codes on average (|mean| 3.2), 62 at the 99th percentile on this image.
    codes = box(ocio_display(linear).astype(np.float64), 4)
    signed = fast[..., :3] - codes
    assert 2.0 < signed.mean() < 4.0 and np.abs(signed).mean() < 4.0


def test_proxy_frames_are_reduced_relative_to_their_own_size(scene):
    """An image evaluated at proxy 0.5 drawn at a quarter of full resolution converts at half its own size."""
    assert display_pixels(scene, DisplaySettings(resolution=0.25), proxy=0.5).shape == (256, 256, 4)
    assert display_pixels(scene, DisplaySettings(resolution=0.5), proxy=0.5).shape == (512, 512, 4)


def test_viewer_converts_at_the_drawn_size_and_at_one_to_one_shows_every_pixel(qtbot, window):
    graph, viewer = window.graph, window.viewer
    read = graph.create("Read", file=str(STILL))
    viewer.set_input(1, read)
    canvas = viewer.canvas
    qtbot.waitUntil(viewer.is_current, timeout=60000)
    canvas.zoom = 0.3   # zoomed out (as a wheel turn does): drawn at 154x154
    qtbot.waitUntil(lambda: viewer.is_current() and canvas.frame_a.rgba.shape[:2] == (256, 256), timeout=60000)
    fitted = canvas.frame_a   # converted at half size
    assert canvas.frame_size(fitted) == QtCore.QSizeF(512, 512)   # drawn at the image's size all the same
    # 1:1: converted again (from the engine's cache: nothing recomputes) at full size, OCIO's exact pixels
    computes = graph.cache.stats.computes
    canvas.one_to_one()
    qtbot.waitUntil(lambda: viewer.is_current() and canvas.frame_a.rgba.shape[:2] == (512, 512), timeout=60000)
    assert graph.cache.stats.computes == computes
    full = canvas.frame_a
    linear = full.image.tensor.permute(1, 2, 0).numpy()
    assert np.array_equal(full.rgba[..., :3], ocio_display(linear))
    # ...and the screen shows them pixel for pixel (centred so image pixels fall on whole widget pixels)
    canvas.center = QtCore.QPointF(256 + canvas.width() % 2 / 2, 256 + canvas.height() % 2 / 2)
    canvas.repaint()
    grabbed = canvas.grab().toImage()
    for x, y in ((256, 256), (100, 300), (400, 120)):
        p = canvas.to_widget(QtCore.QPointF(x + 0.5, y + 0.5))
        colour_on_screen = grabbed.pixelColor(int(p.x()), int(p.y()))
        assert (colour_on_screen.red(), colour_on_screen.green(), colour_on_screen.blue()) == tuple(full.rgba[y, x, :3])
    # zoomed out again: the half-size frame is still cached, shown without converting again
    canvas.zoom = 0.4
    qtbot.waitUntil(viewer.is_current, timeout=1000)
    assert canvas.frame_a is fitted
