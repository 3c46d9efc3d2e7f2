"""Image.paste / window / map_pixels: a face node's output shares its input's frame and keeps only the
windows it changed; whatever reads it (a window, the whole frame, a per-pixel map) sees the same pixels as
a copy of the frame with those windows written into it, in order."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from doublure.engine import Image
from doublure.engine.cache import FrameCache

H, W = 40, 60


def frame_and_pastes(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(4, H, W, generator=gen)
    # overlapping windows, one touching the frame's edge, one empty
    windows = [(5, 20, 10, 30), (15, 35, 25, 60), (0, 40, 0, 3), (8, 8, 4, 9), (12, 18, 12, 40)]
    pastes = [(w, torch.rand(4, w[1] - w[0], w[3] - w[2], generator=gen)) for w in windows]
    return base, pastes


def reference(base: torch.Tensor, pastes) -> np.ndarray:
    """The frame copied, each window written in order (numpy)."""
    out = base.numpy().copy()
    for (y0, y1, x0, x1), pixels in pastes:
        out[:, y0:y1, x0:x1] = pixels.numpy()
    return out


def patched(base, pastes) -> Image:
    image = Image(base, channels=("R", "G", "B", "A"), metadata={"doublure/x": 1})
    for window, pixels in pastes:
        image = image.paste(window, pixels)
    return image


def test_window_reads_the_pasted_pixels_without_building_the_frame():
    base, pastes = frame_and_pastes()
    before = base.clone()
    image = patched(base, pastes)
    expected = reference(base, pastes)
    for window in [(0, H, 0, W), (10, 25, 20, 40), (30, 40, 0, 10), (0, 1, 0, 1), (14, 16, 28, 32)]:
        y0, y1, x0, x1 = window
        np.testing.assert_array_equal(image.window(window).numpy(), expected[:, y0:y1, x0:x1])
    assert torch.equal(base, before)  # the shared frame is never written
    # a window no paste touches is a view of the shared frame, not a copy
    assert image.window((36, 40, 40, 50)).untyped_storage().data_ptr() == base.untyped_storage().data_ptr()


def test_tensor_is_the_frame_with_every_window_pasted_in_order():
    base, pastes = frame_and_pastes(1)
    image = patched(base, pastes)
    nbytes = image.nbytes
    assert nbytes == base.nbytes + sum(p.nbytes for _, p in pastes)
    np.testing.assert_array_equal(image.tensor.numpy(), reference(base, pastes))
    assert image.tensor is image.tensor  # built once
    assert image.nbytes == nbytes  # the cache's accounting does not move under it
    assert image.window((5, 20, 10, 30)).untyped_storage().data_ptr() == image.tensor.untyped_storage().data_ptr()
    np.testing.assert_array_equal(base.numpy(), frame_and_pastes(1)[0].numpy())


def test_map_pixels_converts_window_by_window_into_a_tensor_of_its_own():
    base, pastes = frame_and_pastes(2)
    image = patched(base, pastes)
    matrix = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.2, 0.7, 0.1, 0.0], [0.0, 0.1, 0.9, 0.0], [0.0, 0.0, 0.0, 1.0]])

    def convert(pixels):
        return torch.einsum("ij,jhw->ihw", matrix, pixels).pow(0.5)

    expected = np.sqrt(np.einsum("ij,jhw->ihw", matrix.numpy(), reference(base, pastes)))
    np.testing.assert_allclose(image.map_pixels(convert).numpy(), expected, rtol=1e-6, atol=1e-7)
    # an identity map still gives a tensor of its own, and the shared frame stays as it was
    same = image.map_pixels(lambda pixels: pixels)
    np.testing.assert_array_equal(same.numpy(), reference(base, pastes))
    assert same.untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
    np.testing.assert_array_equal(base.numpy(), frame_and_pastes(2)[0].numpy())
    plain = Image(base[:3])  # no pastes: the identity map is still a copy
    assert plain.map_pixels(lambda pixels: pixels).untyped_storage().data_ptr() != base.untyped_storage().data_ptr()


def test_paste_keeps_the_description_and_checks_its_window():
    base, pastes = frame_and_pastes(3)
    image = Image(base, channels=("R", "G", "B", "A"), metadata={"doublure/synthetic": "yes"}, faces=["face"])
    out = image.paste(*pastes[0])
    assert (out.channels, out.metadata, out.faces, out.width, out.height) == \
        (image.channels, image.metadata, image.faces, W, H)
    with pytest.raises(ValueError, match="outside"):
        image.paste((30, 45, 0, 10), torch.zeros(4, 15, 10))
    with pytest.raises(ValueError, match="do not fill"):
        image.paste((0, 10, 0, 10), torch.zeros(3, 10, 10))
    with pytest.raises(ValueError, match="float64"):
        image.paste((0, 10, 0, 10), torch.zeros(4, 10, 10, dtype=torch.float64))
    with pytest.raises(AttributeError, match="immutable"):
        out.faces = []
    # a new whole-frame tensor replaces the pasted windows
    fresh = out.replace(tensor=torch.zeros(4, H, W))
    assert float(fresh.tensor.abs().sum()) == 0.0


def test_a_patched_image_pickles_and_moves_whole():
    base, pastes = frame_and_pastes(4)
    image = patched(base, pastes)
    back = pickle.loads(pickle.dumps(image))
    np.testing.assert_array_equal(back.tensor.numpy(), reference(base, pastes))
    assert back.metadata == image.metadata and back.channels == image.channels
    moved = image.to(torch.device("meta"))
    assert moved.device.type == "meta" and moved.nbytes == image.nbytes


def test_the_cache_counts_a_patched_image_by_its_parts_and_balances_after_it_is_built():
    base, pastes = frame_and_pastes(5)
    image = patched(base, pastes)
    cache = FrameCache(device_budget=1 << 30, host_budget=1 << 30)
    cache.put("plate", Image(base, channels=("R", "G", "B", "A")))
    cache.put("patched", image)
    assert cache.host_bytes == base.nbytes + image.nbytes
    image.tensor  # built while cached: what the cache removes later is what it added
    cache.put("patched", patched(base, pastes[:1]))
    assert cache.host_bytes == base.nbytes + base.nbytes + pastes[0][1].nbytes


def test_rectangles_are_named_in_their_own_order():
    """A Window is rows first (y0, y1, x0, x1), a Box x first (x0, y0, x1, y1): named fields say which, and both
    stay tuples, so code unpacking a plain 4-tuple reads them as before."""
    from doublure.engine import Box, Window
    from doublure.faces.face import Face

    base, pastes = frame_and_pastes()
    image = Image(base, channels=("R", "G", "B", "A"), data_window=(2, 3, 50, 40))
    assert image.data_window == Box(x0=2, y0=3, x1=50, y1=40) == (2, 3, 50, 40)
    assert Image(base[:3]).data_window == Box(0, 0, W, H) and Image(base[:3]).data_window.x1 == W
    window = Window(y0=5, y1=20, x0=10, x1=30)
    pixels = pastes[0][1]
    pasted = Image(base, channels=("R", "G", "B", "A")).paste(window, pixels)
    assert torch.equal(pasted.window(window), pixels)
    assert torch.equal(pasted.window((5, 20, 10, 30)), pixels)   # a plain tuple in the same order
    face = Face(track_id=0, box=(10, 20, 110, 140), landmarks=np.zeros((478, 3)), iris=np.zeros((2, 3)),
                pose=(0, 0, 0))
    assert isinstance(face.box, Box) and (face.box.x1, face.box.y1) == (110.0, 140.0)
    x0, y0, x1, y1 = face.box
    assert (x0, y0, x1, y1) == (10.0, 20.0, 110.0, 140.0)
    assert pickle.loads(pickle.dumps(face)).box == face.box
