"""Merge against the compositing formulas in numpy; Reformat against OpenImageIO's resize."""
import numpy as np
import OpenImageIO as oiio
import pytest
import torch

import doublure.nodes  # noqa: F401
import engine_nodes  # noqa: F401  (TestConstant, TestMaskFromImage)
from doublure import engine
from doublure.engine import Image, Node, Port, knobs as K, ops, register_node
from doublure.nodes.merge import merge
from doublure.nodes.reformat import reformat_geometry

RNG = np.random.default_rng(3)


def premultiplied(h=6, w=7):
    rgba = RNG.random((4, h, w), dtype=np.float32)
    rgba[:3] *= rgba[3:4]
    return rgba


@register_node
class MergeTestSource(Node):
    """A fixed tensor for these tests (knob ``seed`` picks it; ``alpha`` keeps or drops the alpha plane)."""

    type_name = "MergeTestSource"
    inputs = ()
    knob_specs = (K.Int("seed", 0), K.Bool("alpha", True), K.Int("width", 7), K.Int("height", 6))

    def compute(self, ctx, inputs):
        rng = np.random.default_rng(self.value("seed", ctx.frame))
        t = rng.random((4, self.value("height", ctx.frame), self.value("width", ctx.frame)), dtype=np.float32)
        t[:3] *= t[3:4]
        meta = {"doublure/provenance": {"seed": self.value("seed", ctx.frame)}, "name": f"s{self.value('seed')}"}
        if self.value("alpha", ctx.frame):
            return Image(torch.from_numpy(t), channels=("R", "G", "B", "A"), metadata=meta)
        return Image(torch.from_numpy(t[:3].copy()), metadata=meta)


NUMPY_FORMULAS = {
    "over": lambda a, b: a + b * (1 - a[3:4]),
    "under": lambda a, b: b + a * (1 - b[3:4]),
    "plus": lambda a, b: a + b,
    "multiply": lambda a, b: a * b,
    "difference": lambda a, b: np.abs(a - b),
}


@pytest.mark.parametrize("operation", sorted(NUMPY_FORMULAS))
def test_merge_operations_match_formulas(operation):
    a, b = premultiplied(), premultiplied()
    out = merge(torch.from_numpy(a), torch.from_numpy(b), operation).numpy()
    np.testing.assert_allclose(out, NUMPY_FORMULAS[operation](a, b), atol=1e-6)


def test_over_is_porter_duff_on_straight_colours():
    # A half-transparent red over opaque blue is half red, half blue.
    a = np.array([1.0, 0, 0, 1.0], np.float32).reshape(4, 1, 1) * 0.5
    b = np.array([0, 0, 1.0, 1.0], np.float32).reshape(4, 1, 1)
    out = merge(torch.from_numpy(a), torch.from_numpy(b), "over").numpy().ravel()
    np.testing.assert_allclose(out, [0.5, 0, 0.5, 1.0])


def merge_graph(**knobs):
    g = engine.Graph()
    b = g.create("MergeTestSource", seed=1)
    a = g.create("MergeTestSource", seed=2)
    m = g.create("Merge", **knobs)
    g.connect(b, m, "B")
    g.connect(a, m, "A")
    return g, a, b, m


def test_merge_node_mix_mask_and_provenance():
    g, a, b, m = merge_graph(operation="over", mix=0.25)
    A, B = g.evaluate(a, 1).tensor.cpu().numpy(), g.evaluate(b, 1).tensor.cpu().numpy()
    out = g.evaluate(m, 1)
    np.testing.assert_allclose(out.tensor.cpu().numpy(), B + 0.25 * (NUMPY_FORMULAS["over"](A, B) - B), atol=1e-6)
    assert out.metadata["name"] == "s1" and out.metadata["doublure/provenance"] == {"seed": 2}

    mask = g.create("TestMaskFromImage", inputs=[g.create("TestConstant", width=7, height=6)])
    g.connect(mask, m, "mask")
    mask_plane = g.evaluate(mask, 1).tensor.cpu().numpy()
    np.testing.assert_allclose(g.evaluate(m, 1).tensor.cpu().numpy(),
                               B + 0.25 * mask_plane * (NUMPY_FORMULAS["over"](A, B) - B), atol=1e-6)


def test_merge_pass_through_and_rgb_inputs():
    g, a, b, m = merge_graph(mix=0.0)
    assert g.hash_of(m, g.context(1)) == g.hash_of(b, g.context(1))
    m["mix"] = 1.0
    a["alpha"] = False  # an RGB A is opaque: over shows A alone
    out = g.evaluate(m, 1)
    assert out.channels == ("R", "G", "B", "A")
    np.testing.assert_allclose(out.tensor[:3].cpu().numpy(), g.evaluate(a, 1).tensor.cpu().numpy(), atol=1e-6)
    np.testing.assert_allclose(out.tensor[3].cpu().numpy(), 1.0)
    a["width"] = 3  # a smaller A sits at the top-left, transparent elsewhere
    out = g.evaluate(m, 1).tensor.cpu().numpy()
    B = g.evaluate(b, 1).tensor.cpu().numpy()
    np.testing.assert_allclose(out[:, :, 3:], B[:, :, 3:], atol=1e-6)


def oiio_resize(img: np.ndarray, size, filtername):
    src = oiio.ImageBuf(np.ascontiguousarray(img.transpose(1, 2, 0)))
    roi = oiio.ROI(0, size[1], 0, size[0], 0, 1, 0, img.shape[0])
    if filtername == "impulse":
        dst = oiio.ImageBufAlgo.resample(src, interpolate=False, roi=roi)
    else:
        dst = oiio.ImageBufAlgo.resize(src, filtername=filtername, roi=roi)
    return dst.get_pixels(oiio.FLOAT).transpose(2, 0, 1)


@pytest.mark.parametrize("filter_name,oiio_name", [("impulse", "impulse"), ("bilinear", "triangle"),
                                                   ("bicubic", "catmull-rom"), ("lanczos", "lanczos3")])
@pytest.mark.parametrize("size", [(17, 23), (64, 90), (40, 21)])  # sizes without nearest-pixel ties
def test_resample_matches_oiio_resize(filter_name, oiio_name, size):
    img = np.cumsum(RNG.random((3, 40, 45), dtype=np.float32), axis=2) / 20
    out = ops.resample(torch.from_numpy(img), size, filter_name).numpy()
    np.testing.assert_allclose(out, oiio_resize(img, size, oiio_name), atol=2e-6)


def test_reformat_geometry():
    assert reformat_geometry(200, 100, 100, 100, "width", True) == ((100, 50), (0, 25))
    assert reformat_geometry(200, 100, 100, 100, "fit", False) == ((100, 50), (0, 0))
    assert reformat_geometry(200, 100, 100, 100, "fill", True) == ((200, 100), (-50, 0))
    assert reformat_geometry(200, 100, 100, 100, "height", True) == ((200, 100), (-50, 0))
    assert reformat_geometry(200, 100, 100, 80, "distort", True) == ((100, 80), (0, 0))
    assert reformat_geometry(200, 100, 100, 80, "none", True) == ((200, 100), (-50, -10))


def test_reformat_node_to_format_pads_and_scales():
    g = engine.Graph()
    src = g.create("MergeTestSource", seed=4, width=40, height=20)
    ref = g.create("Reformat", width=30, height=30, resize="fit", filter="lanczos")
    ref.set_input(0, src)
    img = g.evaluate(src, 1).tensor.cpu().numpy()
    out = g.evaluate(ref, 1).tensor.cpu().numpy()
    assert out.shape == (4, 30, 30)
    expected = oiio_resize(img, (15, 30), "lanczos3")
    np.testing.assert_allclose(out[:, 7:22], expected, atol=2e-6)
    assert np.all(out[:, :7] == 0) and np.all(out[:, 22:] == 0)
    assert g.evaluate(ref, 1, proxy=0.5).tensor.shape == (4, 15, 15)
    ref["type"] = "scale"
    ref["scale"] = 0.5
    assert g.evaluate(ref, 1).tensor.shape == (4, 10, 20)


def test_reformat_moves_faces_with_the_pixels():
    from doublure.faces.face import NUM_LANDMARKS, Coverage, Face
    from doublure.nodes.reformat import _affine_faces

    lm = np.zeros((NUM_LANDMARKS, 3), np.float32)
    lm[0] = (10.0, 4.0, 1.0)
    face = Face(track_id=0, box=(10.0, 4.0, 10.0, 4.0), landmarks=lm, iris=np.zeros((2, 3)), pose=(0, 0, 0),
                repeats=1, coverage=Coverage((0, 8, 6, 14), torch.ones(1, 8, 8)))
    moved = _affine_faces([face], 0.5, 0.5, 3, 0)[0]
    assert moved.repeats == 1          # a held frame stays held
    assert moved.coverage is None      # the swap's alpha is in the old pixels: the nodes below use the hull
    # pixel centres align: x -> (x + 0.5) * 0.5 - 0.5 + 3
    np.testing.assert_allclose(moved.landmarks[0, :2], [(10.5 * 0.5) - 0.5 + 3, (4.5 * 0.5) - 0.5])
    np.testing.assert_allclose(moved.from_crop @ np.array([0.3, 0.7, 1.0]),
                               (face.from_crop @ np.array([0.3, 0.7, 1.0]) + 0.5) * 0.5 - 0.5 + [3, 0])


def test_dot_shares_its_input_cache_entry():
    g = engine.Graph()
    src = g.create("MergeTestSource", seed=5)
    dot = g.create("Dot", inputs=[src])
    assert g.hash_of(dot, g.context(1)) == g.hash_of(src, g.context(1))
    g.evaluate(dot, 1)
    computes = g.cache.stats.computes
    g.evaluate(src, 1)
    assert g.cache.stats.computes == computes


@register_node
class MergeTorchSource(Node):
    """A premultiplied frame made by torch (memory Merge may write into when it alone reads it), seeded by the
    ``seed`` knob; ``alpha`` keeps or drops the alpha plane. Records each frame's memory address in ``made``."""

    type_name = "MergeTorchSource"
    inputs = ()
    knob_specs = (K.Int("seed", 0), K.Bool("alpha", True))
    made: dict[str, int] = {}

    def compute(self, ctx, inputs):
        t = torch.rand((4, 6, 7), generator=torch.Generator().manual_seed(self.value("seed", ctx.frame)))
        t = t.to(ctx.device)
        t[:3] *= t[3:4]
        if not self.value("alpha", ctx.frame):
            t = t[:3].clone()
        MergeTorchSource.made[self.name] = t.data_ptr()
        return Image(t, channels=("R", "G", "B", "A")[:t.shape[0]])


def torch_merge_graph(operation, mix, masked, b_alpha, a_alpha):
    g = engine.Graph()
    b = g.create("MergeTorchSource", seed=1, alpha=b_alpha)
    a = g.create("MergeTorchSource", seed=2, alpha=a_alpha)
    m = g.create("Merge", operation=operation, mix=mix, inputs=[b, a])
    if masked:
        g.connect(g.create("TestMaskFromImage", inputs=[g.create("MergeTorchSource", seed=3)]), m, "mask")
    return g, b, a, m


def expected(g, b, a, m, operation, mix, masked):
    """Merge's output by the formulas in numpy, from the inputs' frames (opaque where there is no alpha)."""
    def rgba(node):
        t = g.evaluate(node, 1).tensor.cpu().numpy()
        return t if t.shape[0] == 4 else np.concatenate([t, np.ones_like(t[:1])])
    A, B = rgba(a), rgba(b)
    amount = mix * (g.evaluate(m.input(2), 1).tensor.cpu().numpy()[:1] if masked else 1.0)
    out = B + amount * (NUMPY_FORMULAS[operation](A, B) - B)
    return out if a["alpha"] or b["alpha"] else out[:3]


@pytest.mark.parametrize("operation", sorted(NUMPY_FORMULAS))
@pytest.mark.parametrize("mix,masked", [(1.0, False), (0.25, False), (0.5, True)])
@pytest.mark.parametrize("b_alpha,a_alpha", [(True, True), (False, False), (False, True)])
def test_merge_in_place_gives_the_pixels_of_a_merge_into_new_memory(operation, mix, masked, b_alpha, a_alpha):
    g, b, a, m = torch_merge_graph(operation, mix, masked, b_alpha, a_alpha)
    taken = g.evaluate(m, 1)  # B made for this Merge alone: merged into in place where it has the planes
    assert (taken.tensor.data_ptr() == MergeTorchSource.made[b.name]) == (b_alpha or not a_alpha)
    assert not g.is_cached(b, 1)
    g2, b2, a2, m2 = torch_merge_graph(operation, mix, masked, b_alpha, a_alpha)
    viewed = g2.evaluate(b2, 1)  # B viewed first: cached and held, Merge writes a new frame
    before = viewed.tensor.clone()
    kept = g2.evaluate(m2, 1)
    assert kept.tensor.data_ptr() != viewed.tensor.data_ptr()
    assert torch.equal(viewed.tensor, before) and torch.equal(g2.evaluate(b2, 1).tensor, before)
    assert taken.channels == kept.channels and torch.equal(taken.tensor, kept.tensor)
    np.testing.assert_allclose(kept.tensor.cpu().numpy(), expected(g2, b2, a2, m2, operation, mix, masked), atol=1e-6)


def test_merge_never_writes_a_b_another_node_reads():
    g = engine.Graph()
    b = g.create("MergeTorchSource", seed=1)
    a = g.create("MergeTorchSource", seed=2)
    m = g.create("Merge", inputs=[b, a])
    other = g.create("Merge", operation="plus", inputs=[b, a])   # B also feeds this one
    first = g.evaluate(m, 1)
    plate = g.evaluate(b, 1).tensor.clone()
    assert g.is_cached(b, 1) and first.tensor.data_ptr() != MergeTorchSource.made[b.name]
    second = g.evaluate(other, 1)
    assert torch.equal(g.evaluate(b, 1).tensor, plate)
    A = g.evaluate(a, 1).tensor
    assert torch.equal(first.tensor, merge(A, plate, "over")) and torch.equal(second.tensor, merge(A, plate, "plus"))
