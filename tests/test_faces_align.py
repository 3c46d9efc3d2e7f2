"""Alignment: similarity fit, anti-aliased batched warps against OpenCV, and the crop round trip on a real plate."""
import cv2
import numpy as np
import pytest
import torch

from doublure.faces.align import (TEMPLATE_2D, estimate_to_crop, template_in_crop, umeyama_2d, warp_affine,
                                  warp_from_crop, warp_to_crop)
from doublure.faces.detect import MediapipeBackend
from doublure.faces.face import Face, apply_affine, faces_from_json, faces_to_json, invert_affine, scale_faces
from doublure.faces.masks import render_mask
from doublure.faces.track import make_face

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 2))
    ang, s, t = 0.7, 2.5, np.array([3.0, -4.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = s * src @ rot.T + t
    m = umeyama_2d(src, dst)
    np.testing.assert_allclose(m[:, :2], s * rot, atol=1e-10)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-10)


def test_estimate_to_crop_puts_the_template_on_its_framing():
    # the template itself, scaled/rotated/shifted into "plate" pixels, must land on template_in_crop
    m = np.array([[80.0, -10.0, 300.0], [10.0, 80.0, 200.0]])
    lm = np.concatenate([apply_affine(m, TEMPLATE_2D), np.zeros((478, 1))], axis=1)
    for ft in ("whole_face", "full"):
        to_crop, from_crop = estimate_to_crop(lm, ft)
        np.testing.assert_allclose(apply_affine(to_crop, lm), template_in_crop(ft), atol=1e-9)
        np.testing.assert_allclose(invert_affine(to_crop), from_crop, atol=1e-12)
    # full holds the whole mesh, forehead included; whole_face holds brows to chin and cheek to cheek
    assert template_in_crop("full").min() > 0.0 and template_in_crop("full").max() < 1.0
    whole = template_in_crop("whole_face")
    for i in (152, 234, 454, 105, 334):          # chin, cheeks, brows
        assert 0.0 < whole[i].min() and whole[i].max() < 1.0
    assert whole[10, 1] < 0.0                    # the top of the forehead is cut off
    # full includes the forehead: the same face is smaller in the crop
    assert np.ptp(template_in_crop("full")[:, 1]) < np.ptp(template_in_crop("whole_face")[:, 1])


def _bilinear_reference(img: np.ndarray, m: np.ndarray, hw) -> np.ndarray:
    """Closed-form bilinear resampling with zeros outside: out[y, x] = img at m @ (x, y, 1)."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]

    def tap(yy, xx):
        ok = ((xx >= 0) & (xx < w) & (yy >= 0) & (yy < h))[..., None]
        return np.where(ok, img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)

    return ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
            + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))


@pytest.mark.parametrize("device", DEVICES)
def test_warp_is_exact_bilinear_when_not_shrinking(device):
    rng = np.random.default_rng(1)
    img = rng.random((60, 80, 3)).astype(np.float32)
    # output -> source map at 0.8 source px per output px (enlarging): plain bilinear
    m = np.array([[0.8 * np.cos(0.3), -0.8 * np.sin(0.3), 20.0], [0.8 * np.sin(0.3), 0.8 * np.cos(0.3), 5.0]])
    ref = _bilinear_reference(img, m, (40, 50))
    out = warp_affine(torch.from_numpy(img).permute(2, 0, 1).to(device), m[None], (40, 50))[0]
    assert np.abs(out.permute(1, 2, 0).cpu().numpy() - ref).max() < 1e-5
    # and OpenCV agrees to its 1/32 px fixed-point weights
    cv = cv2.warpAffine(img, m, (50, 40), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.abs(cv - ref)[2:-2, 2:-2].mean() < 1e-2


def test_shrinking_is_anti_aliased_like_an_area_filter():
    # a one-pixel checkerboard shrunk 8x must come out flat grey (point sampling would alias to 0 or 1)
    y, x = np.mgrid[0:512, 0:512]
    board = ((x + y) % 2).astype(np.float32)
    m = np.array([[[8.0, 0.0, 3.5], [0.0, 8.0, 3.5]]])     # output pixel centre i -> source 8 i + 3.5
    out = warp_affine(torch.from_numpy(board)[None], m, (64, 64))[0, 0].numpy()
    assert abs(out.mean() - 0.5) < 1e-3 and out.std() < 1e-3
    # on a smooth image, an 8x shrink equals OpenCV's area resize
    smooth = cv2.GaussianBlur(np.random.default_rng(2).random((512, 512)).astype(np.float32), (0, 0), 6)
    ref = cv2.resize(smooth, (64, 64), interpolation=cv2.INTER_AREA)
    out = warp_affine(torch.from_numpy(smooth)[None], m, (64, 64))[0, 0].numpy()
    assert np.abs(out - ref)[2:-2, 2:-2].max() < 2e-3


def test_batched_warp_equals_one_by_one():
    img = torch.rand(3, 120, 160)
    mats = np.stack([np.array([[0.01 * (i + 1), 0.001 * i, -0.2], [-0.001 * i, 0.01 * (i + 1), -0.3]])
                     for i in range(5)])
    batch = warp_to_crop(img, mats, 64)
    for i in range(5):
        torch.testing.assert_close(batch[i:i + 1], warp_to_crop(img, mats[i], 64))


@pytest.fixture(scope="module")
def plate_face(media_dir):
    from doublure.engine.video import VideoReader

    with VideoReader(media_dir / "plates_1080" / "demo1_video.mp4") as reader:
        rgb = (reader.read(0) * 255 + 0.5).astype(np.uint8)
    with MediapipeBackend("short+full", video=False) as backend:
        (raw,) = backend.detect(rgb)
    return rgb, make_face(0, raw.landmarks, raw.confidence, "whole_face")


@pytest.mark.parametrize("device", DEVICES)
def test_crop_round_trip_reproduces_the_plate_inside_the_face(plate_face, device):
    rgb, face = plate_face
    plate = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).to(device)
    # the face is ~230 px wide in the 1080x1920 plate: a 512 px crop holds all its detail
    crop = warp_to_crop(plate, face.to_crop, 512)
    back, coverage = warp_from_crop(crop, face.from_crop, plate.shape[-2:])
    inside = (render_mask([face], "face_hull", plate.shape[-2:], grow=-2)[0] > 0.999).to(device)
    inside &= coverage[0, 0] > 0.999
    assert inside.sum() > 20000
    err = (back[0] - plate).abs()[:, inside].mean().item()
    assert err < 1 / 255, err
    assert coverage.min() >= 0 and coverage.max() <= 1 + 1e-6
    assert coverage[0, 0, 0, 0] == 0        # the crop does not reach the plate's corner


def test_face_json_and_proxy_scaling_round_trip(plate_face):
    _, face = plate_face
    (back,) = faces_from_json(faces_to_json([face]))
    np.testing.assert_allclose(back.landmarks, face.landmarks, atol=1e-3)
    np.testing.assert_allclose(back.to_crop, face.to_crop)
    (half,) = scale_faces([face], 0.5)
    # the crop of the half-resolution plate frames the same content: unit coords of a landmark agree
    np.testing.assert_allclose(apply_affine(half.to_crop, half.landmarks), apply_affine(face.to_crop, face.landmarks),
                               atol=1e-9)
    np.testing.assert_allclose(half.from_crop, invert_affine(half.to_crop), atol=1e-9)
