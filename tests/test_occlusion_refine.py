"""The occlusion matte's edge refinement at plate resolution: the colour guided filter against a float64
reference of He, Sun and Tang's equations, and the refinement moving a coarse, misplaced edge onto the
plate's own edge, where only a colour guide sees it."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from doublure.engine import ops
from doublure.faces.occlusion import encode_for_matte, refine_matte_edge


def reference_guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. 2010, eq. 19-21, in float64 with numpy's 3x3 solve: (H, W, 3) guide, (H, W) src."""
    box = lambda x: cv2.blur(x, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT_101)  # noqa: E731
    mean_i = np.stack([box(guide[..., c]) for c in range(3)], -1)
    mean_p = box(src)
    cov = np.stack([box(guide[..., c] * src) for c in range(3)], -1) - mean_i * mean_p[..., None]
    var = np.empty(guide.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(3):
            var[..., i, j] = box(guide[..., i] * guide[..., j]) - mean_i[..., i] * mean_i[..., j]
    a = np.linalg.solve(var + eps * np.eye(3), cov[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(-1)
    return (np.stack([box(a[..., c]) for c in range(3)], -1) * guide).sum(-1) + box(b)


def test_colour_guided_filter_matches_the_papers_equations():
    rng = np.random.default_rng(3)
    guide = rng.random((50, 64, 3)) * 0.2
    guide[15:35, 20:45] += [0.6, 0.2, 0.5]
    src = np.zeros((50, 64))
    src[13:37, 18:47] = 1.0
    src = cv2.GaussianBlur(src, (7, 7), 2.0) + rng.normal(0, 0.05, src.shape)
    for radius, eps in ((2, 1e-2), (3, 1e-3), (4, 1e-4)):
        ref = reference_guided_filter(guide, src, radius, eps)
        out = ops.guided_filter_color(torch.from_numpy(guide).permute(2, 0, 1).float(),
                                      torch.from_numpy(src)[None].float(), radius, eps)
        assert out.shape == (1, 50, 64)
        assert np.abs(out[0].numpy() - ref).max() < 1e-4


def disc_plate(hw=(90, 100), centre=(52, 47), radius=22.0):
    """A plate: skin-coloured background, a disc of another hue but the same luminance, a little noise.
    Returns the (H, W, 3) linear plate and the disc's (H, W) bool mask."""
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]]
    disc = np.hypot(xs - centre[0], ys - centre[1]) < radius
    skin, prop = np.array([0.45, 0.25, 0.18]), np.array([0.2, 0.3, 0.33])   # luminances within 2 %
    plate = np.where(disc[..., None], prop, skin) + np.random.default_rng(0).normal(0, 0.004, hw + (3,))
    return plate.astype(np.float32), disc


def chw(plate: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) numpy plate as the (3, H, W) tensor view the refinement takes."""
    return torch.from_numpy(plate).permute(2, 0, 1)


def test_refinement_moves_a_coarse_edge_onto_the_plates_edge_and_leaves_the_rest():
    plate, disc = disc_plate()
    # the network's view: the disc seen at a third of the resolution, a pixel off each way, upsampled
    shifted = np.roll(disc, (1, -1), (0, 1)).astype(np.float32)
    small = cv2.resize(shifted, (34, 30), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (100, 90), interpolation=cv2.INTER_LINEAR)
    coarse[:6] = 0.0   # a sure band far from the edge
    refined = refine_matte_edge(coarse, chw(plate), radius=3)

    def iou(m):
        return ((m > 0.5) & disc).sum() / ((m > 0.5) | disc).sum()

    assert iou(coarse) < 0.93 and iou(refined) > 0.98
    assert refined.min() >= 0.0 and refined.max() <= 1.0
    # the grey guide would not see this edge: the disc's luminance is the skin's
    grey = encode_for_matte(plate).mean(2)
    grey_refined = ops.guided_filter(torch.from_numpy(grey), torch.from_numpy(coarse)[None], 3, 1e-3)[0].numpy()
    assert iou(grey_refined) < 0.95
    # far from any edge the probability passes unchanged, and radius 0 is no refinement
    assert np.array_equal(refined[:6], coarse[:6])
    assert refine_matte_edge(coarse, chw(plate), radius=0) is coarse


def test_a_matte_without_an_occluders_edge_is_returned_as_it_came():
    """Nothing to refine (a face with no occluder costs no filtering): an empty matte, and specks of doubt
    (a network unsure in places) with no occluder pixel near them."""
    plate, _ = disc_plate()
    empty = np.zeros(plate.shape[:2], np.float32)
    assert refine_matte_edge(empty, chw(plate), radius=3) is empty
    doubt = empty.copy()
    doubt[10:14, 10:14] = doubt[50:53, 70:72] = 0.4
    assert refine_matte_edge(doubt, chw(plate), radius=3) is doubt
    doubt[53:60, 66:74] = 1.0   # an occluder beside the second speck: now its edge is refined
    assert not np.array_equal(refine_matte_edge(doubt, chw(plate), radius=3), doubt)


def test_fast_colour_guided_filter_fits_on_a_coarser_grid_and_both_paths_agree():
    """The fits on a grid ``subsample`` pixels apart: OpenCV's float32 CPU path and torch's (float64 here)
    give the same planes, odd sizes included; the result keeps its size and its edges where the exact
    filter's are."""
    rng = np.random.default_rng(5)
    guide = rng.random((47, 61, 3)) * 0.2
    guide[12:33, 17:44] += [0.6, 0.2, 0.5]
    src = np.zeros((2, 47, 61))
    src[:, 10:35, 15:46] = 1.0
    src[1] = cv2.GaussianBlur(src[1], (7, 7), 2.0)
    g, s = torch.from_numpy(guide).permute(2, 0, 1), torch.from_numpy(src)
    exact = ops.guided_filter_color(g.float(), s.float(), 4, 1e-3)
    for subsample in (1, 2, 3):
        cpu = ops.guided_filter_color(g.float(), s.float(), 4, 1e-3, subsample)
        other = ops.guided_filter_color(g, s, 4, 1e-3, subsample)   # float64: the torch path
        assert cpu.shape == (2, 47, 61) and cpu.dtype == torch.float32
        assert (cpu - other.float()).abs().max() < 1e-4
        assert ((cpu > 0.5) == (exact > 0.5)).float().mean() > 0.98   # the edges where the exact filter's are
    assert not torch.equal(ops.guided_filter_color(g.float(), s.float(), 4, 1e-3, 2), exact)


def test_refinement_with_its_fits_on_the_networks_grid_still_finds_the_plates_edge():
    plate, disc = disc_plate()
    shifted = np.roll(disc, (1, -1), (0, 1)).astype(np.float32)
    coarse = cv2.resize(cv2.resize(shifted, (34, 30), interpolation=cv2.INTER_AREA), (100, 90),
                        interpolation=cv2.INTER_LINEAR)
    refined = refine_matte_edge(coarse, chw(plate), radius=3, subsample=3)   # a network pixel: 3 plate pixels

    def iou(m):
        return ((m > 0.5) & disc).sum() / ((m > 0.5) | disc).sum()

    assert iou(coarse) < 0.93 and iou(refined) > 0.98
