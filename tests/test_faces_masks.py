"""Masks: anti-aliased coverage equals polygon area, grow/shrink by exact distances, crop and plate agree."""
import cv2
import numpy as np
import pytest
import torch

from doublure.faces.align import warp_to_crop
from doublure.faces.detect import MediapipeBackend
from doublure.faces.masks import REGIONS, rasterize_shapes, region_shapes, render_crop_mask, render_mask
from doublure.faces.track import make_face


def test_polygon_coverage_is_its_area():
    square = np.array([[10.3, 10.6], [40.3, 10.6], [40.3, 30.6], [10.3, 30.6]])   # 30 x 20, off the pixel grid
    cov = rasterize_shapes([square], [], (50, 60))
    assert abs(cov.sum() - 600.0) < 1.0
    # edge pixels hold their covered fraction: column 10 spans x 9.5..10.5 and the edge is at 10.3
    assert abs(cov[20, 10] - 0.2) < 0.1 and abs(cov[20, 40] - 0.8) < 0.1
    assert cov[20, 20] == 1.0 and cov[5, 5] == 0.0
    hole = np.array([[20.0, 15.0], [30.0, 15.0], [30.0, 25.0], [20.0, 25.0]])
    assert abs(rasterize_shapes([square], [hole], (50, 60)).sum() - 500.0) < 1.5


def test_grow_and_shrink_a_disc_by_exact_radii():
    ang = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    disc = np.stack([64 + 20 * np.cos(ang), 64 + 20 * np.sin(ang)], 1)
    for grow, radius in ((0, 20), (5, 25), (-6, 14)):
        area = rasterize_shapes([disc], [], (128, 128), grow=grow).sum()
        assert abs(area - np.pi * radius ** 2) / (np.pi * radius ** 2) < 0.02, (grow, area)


@pytest.mark.parametrize("offset", [(30.3, 31.7), (30.55, 30.12), (30.9, 30.4)])
@pytest.mark.parametrize("radius", [0.8, 3.3, 7.6, 15.2])
def test_grown_and_shrunk_squares_have_their_exact_areas(offset, radius):
    """A square off the pixel grid grown by r covers s^2 + 4 s r + pi r^2 (rounded corners), shrunk
    (s - 2r)^2, and shrunk around a square hole (which grows by r as the shape shrinks) that less the grown
    hole: each within a tenth of a pixel times the outline's length."""
    def square(x, y, a):
        return np.array([[x, y], [x + a, y], [x + a, y + a], [x, y + a]])

    s, x, y = 40.0, *offset
    grown = rasterize_shapes([square(x, y, s)], [], (120, 120), radius).sum()
    assert abs(grown - (s * s + 4 * s * radius + np.pi * radius ** 2)) < 0.1 * (4 * s + 2 * np.pi * radius)
    shrunk = rasterize_shapes([square(x, y, s)], [], (120, 120), -radius).sum()
    assert abs(shrunk - (s - 2 * radius) ** 2) < 0.1 * 4 * (s - 2 * radius)
    r = min(radius, 4.0)
    holed = rasterize_shapes([square(x, y, s)], [square(x + 15, y + 15, 8)], (120, 120), -r).sum()
    hole = (8 + 2 * r) ** 2 - (4 - np.pi) * r * r
    assert abs(holed - ((s - 2 * r) ** 2 - hole)) < 0.1 * (4 * (s - 2 * r) + 32 + 2 * np.pi * r)


@pytest.fixture(scope="module")
def face_and_plate(media_dir):
    from doublure.engine.video import VideoReader

    with VideoReader(media_dir / "people" / "d3.mp4") as reader:
        rgb = (reader.read(0) * 255 + 0.5).astype(np.uint8)
    with MediapipeBackend("short", video=False) as backend:
        (raw,) = backend.detect(rgb)
    return make_face(0, raw.landmarks, raw.confidence, "whole_face"), rgb


def test_regions_on_a_real_face(face_and_plate):
    face, rgb = face_and_plate
    hw = rgb.shape[:2]
    masks = {r: render_mask([face], r, hw)[0].numpy() for r in REGIONS}
    for r, m in masks.items():
        assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
        add, cut = region_shapes(face.landmarks, face.iris, r)
        area = sum(cv2.contourArea(a.astype(np.float32)) for a in add) - \
            sum(cv2.contourArea(c.astype(np.float32)) for c in cut)
        # (a closed mouth's opening has next to no area: within a pixel and a half of it)
        assert abs(m.sum() - area) < max(0.03 * area, 1.5), r
    hull, skin = masks["face_hull"], masks["skin"]
    # skin is inside the hull and excludes eyes and mouth
    assert (skin <= hull + 1e-6).all()
    # ... and the coverages of skin and a hole share their edge pixels without overlapping
    assert (skin + masks["eyes"]).max() < 1.0 + 0.13
    assert (skin + masks["mouth"]).max() < 1.0 + 0.13
    assert ((skin > 0.5) & (masks["eyes"] > 0.5)).sum() == 0
    # the eye masks sit around the iris centres
    for cx, cy, _ in face.iris:
        assert masks["eyes"][int(round(cy)), int(round(cx))] > 0.5
    # anti-aliased: edge pixels take intermediate values
    assert ((hull > 0.05) & (hull < 0.95)).sum() > 100


def test_feather_softens_without_moving_the_edge(face_and_plate):
    face, rgb = face_and_plate
    hard = render_mask([face], "face_hull", rgb.shape[:2])
    soft = render_mask([face], "face_hull", rgb.shape[:2], feather=4.0)
    assert abs(soft.sum() - hard.sum()) / hard.sum() < 0.01
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 3 * ((hard > 0.05) & (hard < 0.95)).sum()


def test_crop_mask_matches_the_warped_plate_mask(face_and_plate):
    face, rgb = face_and_plate
    plate_mask = render_mask([face], "skin", rgb.shape[:2])
    warped = warp_to_crop(plate_mask, face.to_crop, 256)[0, 0]
    crop_mask = render_crop_mask(face, "skin", 256)[0]
    inter = torch.minimum(warped, crop_mask).sum()
    union = torch.maximum(warped, crop_mask).sum()
    assert inter / union > 0.97
