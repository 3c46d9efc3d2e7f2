"""SwapModel's ``temporal_align = flow`` on real footage: the neighbours' decoded faces are moved onto this
frame's face by the plate's residual optical flow between the two crops before the temporal blend, and a
neighbour's pixels where the flow cannot be trusted (occlusion, flow failure) count for nothing."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.faces.detect import working_to_srgb8
from doublure.faces.temporal import aligned_blend, crop_flow, crop_flow_side, flow_warp, temporal_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import metrics as M  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parents[1] / "resources" / "demo" / "demo_model.dbm"
INNER = (slice(16, 112), slice(16, 112))   # away from the crop's edge, where a warp repeats the border


@pytest.fixture(scope="module")
def face_crop(media_dir) -> np.ndarray:
    """(128, 128, 3) uint8: a real face (W009, frame 30) filling the crop as an aligned crop does."""
    from doublure.faces.extract import iter_video_frames

    rgb = next(rgb for i, rgb in iter_video_frames(str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"))
               if i == 30)
    return cv2.resize(rgb[40:216, 40:216], (128, 128), interpolation=cv2.INTER_AREA)


def warped(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``image`` with pixel x moved to about x + field(x) (a smooth field: sampled at x - field(x))."""
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    return cv2.remap(image, xx - field[..., 0], yy - field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def smile_field(side: int = 128) -> np.ndarray:
    """A non-rigid motion no similarity follows: waves of 2-2.5 px across the face (crop pixels)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    return np.stack([2.5 * np.sin(2 * np.pi * yy / 64), 2.0 * np.cos(2 * np.pi * xx / 80)], -1)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def test_aligned_blend_of_a_non_rigidly_moved_face_is_this_frames_face(face_crop):
    """Neighbours whose face moved by known non-rigid fields: each, moved back by the measured flow, is
    this frame's face again, so the blend averages the same face points instead of ghosting."""
    field = smile_field()
    frames = {-1: warped(face_crop, -0.5 * field), 0: face_crop, 1: warped(face_crop, field)}
    flows, decoded = [], []
    for d in (-1, 0, 1):
        decoded.append((as_tensor(frames[d]), torch.ones(1, 128, 128)))
        if d == 0:
            flows.append(None)
            continue
        ab, trust, _, _ = crop_flow(grey(face_crop), grey(frames[d]))
        expect = field if d == 1 else -0.5 * field
        assert np.linalg.norm(ab - expect, axis=-1)[INNER].mean() < 0.7     # the field, within DIS's precision
        assert trust[INNER].mean() > 0.95
        flows.append((torch.from_numpy(ab), torch.from_numpy(trust)))
    weights = temporal_weights([-1, 0, 1], 1)
    rgb, mask = aligned_blend(decoded, weights, flows)
    plain = sum(float(w) * c for w, (c, _) in zip(weights, decoded))
    this = as_tensor(face_crop)
    aligned_error = (rgb - this)[:, INNER[0], INNER[1]].abs().mean()
    plain_error = (plain - this)[:, INNER[0], INNER[1]].abs().mean()
    assert aligned_error < 0.006                 # of 1: about 1.5 code values, the resampling's blur
    assert aligned_error < 0.35 * plain_error
    assert torch.allclose(mask, torch.ones_like(mask), atol=1e-5)


def test_a_large_face_is_compared_at_its_own_size(media_dir):
    """Two crops of a 240 px plate face are compared at 192 px, not 96: on a real face moved by a known non-rigid
    field (plate pixels), the flow measured at that side lands nearer the field (the references' landmarks are
    carried by it over several hops); small faces stay at 96, a model crop larger than that is kept."""
    from doublure.faces.extract import iter_video_frames

    assert [crop_flow_side(64, s) for s in (60, 100, 150, 240, 900)] == [96, 96, 160, 192, 192]
    assert crop_flow_side(256, 100) == 256 and crop_flow_side(512, 100) == 256
    rgb = next(rgb for i, rgb in iter_video_frames(str(media_dir / "people" / "d12.mp4")) if i == 5)
    face = cv2.resize(grey(rgb[120:420, 110:410]), (240, 240), interpolation=cv2.INTER_AREA)
    field = smile_field(240) * 0.6
    moved = warped(face, field)
    errors = {}
    for side in (96, crop_flow_side(64, 240)):
        a, b = (cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA) for x in (face, moved))
        ab = crop_flow(a, b)[0] * (240 / side)                                   # plate pixels
        truth = cv2.resize(field, (side, side), interpolation=cv2.INTER_AREA)
        inner = slice(side // 8, side - side // 8)
        errors[side] = float(np.linalg.norm(ab - truth, axis=-1)[inner, inner].mean())
    assert errors[192] < 0.7 * errors[96], errors


def test_an_occluded_neighbour_counts_for_nothing_where_it_is_covered(face_crop):
    """Something covers the face's middle in the neighbour only: its pixels there get no weight (the flow
    there fails the checks), the blend there is this frame's face, and elsewhere the neighbour still counts."""
    field = smile_field()
    neighbour = warped(face_crop, field)
    neighbour[40:80, 44:84] = cv2.resize(np.ascontiguousarray(np.fliplr(face_crop[0:40, 80:120])), (40, 40))
    ab, trust, _, _ = crop_flow(grey(face_crop), grey(neighbour))
    covered = (slice(46, 74), slice(50, 78))
    assert trust[covered].mean() < 0.1
    assert trust[90:112, 20:110].mean() > 0.9
    this, other = as_tensor(face_crop), as_tensor(neighbour)
    ones = torch.ones(1, 128, 128)
    rgb, _ = aligned_blend([(this, ones), (other, ones)], np.array([0.5, 0.5]),
                           [None, (torch.from_numpy(ab), torch.from_numpy(trust))])
    assert (rgb - this)[:, covered[0], covered[1]].abs().mean() < 0.01
    moved = flow_warp(other, torch.from_numpy(ab))
    below = (slice(92, 110), slice(24, 104))
    expect = 0.5 * this + 0.5 * moved           # where the neighbour is trusted: the plain weights
    assert torch.allclose(rgb[:, below[0], below[1]], expect[:, below[0], below[1]], atol=0.02)
    assert (other - this)[:, covered[0], covered[1]].abs().mean() > 0.05     # the cover is really different


def test_flow_aligned_swap_sticks_to_a_turning_head(media_dir):
    """On a real, fast-turning head (people/d12): after taking out the plate's motion (its optical flow), the
    flow-aligned swap changes less from frame to frame than the plain blend; the knob enters the hash, the
    plate is kept bit for bit outside the mask, and with ``temporal`` 0 the knob changes nothing."""
    g = engine.Graph(first=1, last=14)
    read = g.create("Read", file=str(media_dir / "people/d12.mp4"), first=1, last=14)
    fd = g.create("FaceDetect", inputs=[read])
    fd.action_track(g)
    sw = g.create("SwapModel", model=str(DEMO_MODEL), inputs=[fd])
    assert sw["temporal_align"] == "flow"       # the default
    sw["references"] = "off"                    # the model's decoded faces are what the flow aligns
    frames = range(4, 12)
    plates = [g.evaluate(fd, frame=f) for f in frames]
    ws = g.settings["working_space"]
    plates8 = [working_to_srgb8(p.tensor[:3], ws) for p in plates]
    hulls = [M.region_mask(p.faces[0], "face_hull", plates8[0].shape[:2]) for p in plates]

    def flow_ratio(align: str) -> float:
        sw["temporal_align"] = align
        results = [working_to_srgb8(g.evaluate(sw, frame=f).tensor[:3], ws) for f in frames]
        return M.stability(plates8, results, hulls)["ratio_flow"]

    plain, aligned = flow_ratio("none"), flow_ratio("flow")
    assert aligned < 0.9 * plain
    ctx = engine.EvalContext(frame=7)
    flow_hash = g.hash_of(sw, ctx)
    sw["temporal_align"] = "none"
    assert g.hash_of(sw, ctx) != flow_hash
    sw["temporal_align"] = "flow"
    out = g.evaluate(sw, frame=7).tensor
    sw["output"] = "mask"
    outside = g.evaluate(sw, frame=7).tensor[0] == 0
    assert 0.3 < float(outside.float().mean()) < 0.98
    assert torch.equal(out[:, outside], plates[3].tensor[:, outside])
    sw["output"], sw["temporal"] = "composite", 0
    alone = g.evaluate(sw, frame=7).tensor
    sw["temporal_align"] = "none"
    assert torch.equal(g.evaluate(sw, frame=7).tensor, alone)
