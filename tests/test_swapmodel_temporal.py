"""SwapModel's temporal stability on real footage: the crop transform carried by the plate's own motion
(``stabilise``), the decoded faces blended over neighbouring frames (``temporal``), and the hash that covers
the frames they read."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.faces.detect import working_to_srgb8
from doublure.faces.temporal import PlateFaces, carried_to_crop, placed_face, skin_motion, temporal_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import metrics as M  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parents[1] / "resources" / "demo" / "demo_model.dbm"


def similarity(angle_deg: float, scale: float, tx: float, ty: float, centre=(0.0, 0.0)) -> np.ndarray:
    """(3, 3) rotation and scale about ``centre``, then a translation."""
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.asarray(centre, dtype=np.float64)
    return np.vstack([np.concatenate([r, (c - r @ c + (tx, ty))[:, None]], 1), [0.0, 0.0, 1.0]])


def test_skin_motion_recovers_a_known_move_of_a_real_face(media_dir):
    from doublure.faces.extract import iter_video_frames

    rgb = next(rgb for i, rgb in iter_video_frames(str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"))
               if i == 30)
    prev = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    move = similarity(1.5, 1.02, 2.6, -1.8, centre=(128, 128))     # prev pixel -> cur pixel
    cur = cv2.warpAffine(prev, move[:2], (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    region = np.zeros((256, 256), bool)
    region[70:200, 80:180] = True                                   # the face
    found = skin_motion(prev, cur, region)                          # cur pixel -> prev pixel
    points = np.stack(np.nonzero(region)[::-1], 1)[::50].astype(np.float64)
    ph = np.concatenate([points, np.ones((len(points), 1))], 1)
    error = np.linalg.norm((ph @ found.T)[:, :2] - (ph @ np.linalg.inv(move).T)[:, :2], axis=1)
    assert error.mean() < 0.15


def test_carried_transform_averages_fit_noise_without_lag():
    rng = np.random.default_rng(0)
    frames = range(10)
    # a head that accelerates and turns: plate pixels at frame f = place[f] @ reference pixels
    place = {f: similarity(0.8 * f * f / 9, 1 + 0.004 * f, 3.0 * f * f / 9, -1.5 * f) for f in frames}
    true_to_crop = {f: (np.array([[0.01, 0, -1.0], [0, 0.01, -0.8], [0, 0, 1]]) @ np.linalg.inv(place[f]))[:2]
                    for f in frames}
    motions = {f: place[f - 1] @ np.linalg.inv(place[f]) for f in frames if f > 0}
    at = 5
    exact = carried_to_crop(at, {f: true_to_crop[f] for f in range(1, 10)}, motions)
    assert np.abs(exact - true_to_crop[at]).max() < 1e-9        # no lag, even on an accelerating head
    errors_fit, errors_carried = [], []
    for _ in range(50):
        noisy = {f: true_to_crop[f] + np.hstack([np.zeros((2, 2)), rng.normal(0, 0.003, (2, 1))]) for f in frames}
        errors_fit.append(np.abs(noisy[at] - true_to_crop[at])[:, 2].mean())
        got = carried_to_crop(at, {f: noisy[f] for f in range(1, 10)}, motions)
        errors_carried.append(np.abs(got - true_to_crop[at])[:, 2].mean())
    assert np.mean(errors_carried) < 0.5 * np.mean(errors_fit)  # nine fits: about a third of the noise
    assert np.allclose(temporal_weights([-2, -1, 0, 1, 2], 2), np.array([1, 2, 3, 2, 1]) / 9)
    assert np.allclose(temporal_weights([0, 1, 2], 2), np.array([3, 2, 1]) / 6)   # the shot's first frame


def swap_graph(clip: Path, last: int, track: bool):
    g = engine.Graph(first=1, last=last)
    read = g.create("Read", file=str(clip), first=1, last=last)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    sw = g.create("SwapModel", model=str(DEMO_MODEL))
    sw.set_input(0, fd)
    if track:
        fd.action_track(g)
    return g, fd, sw


def test_temporal_blend_steadies_the_decoded_face(media_dir):
    g, fd, sw = swap_graph(media_dir / "mead/W009_front_happy_level3_001.mp4", 10, track=True)
    sw["output"] = "swapped crop"
    sw["stabilise"] = 2     # the same crop transforms either way: only the decoded faces' blend differs
    sw["temporal_align"] = "none"   # the plain blend (flow-aligned, the crop moves as the plate's face does:
                                    # tests/test_swapmodel_flow_align.py measures it after the plate's flow)
    sw["references"] = "off"        # the model's decoded faces are what is blended (the references are warped)

    def change(temporal: int) -> float:
        sw["temporal"] = temporal
        crops = [g.evaluate(sw, frame=f).tensor for f in range(4, 8)]
        return float(np.mean([(b - a).abs().mean().item() for a, b in zip(crops, crops[1:])]))

    alone, blended = change(0), change(2)
    assert blended < 0.8 * alone


def test_the_memos_hold_the_window_of_a_sequential_render(media_dir, monkeypatch):
    from doublure.engine.cache import Memo
    from doublure.faces import temporal
    from doublure.models import infer

    monkeypatch.setattr(infer, "decode_memo", Memo(2))
    for name in ("_grey_memo", "_flow_memo"):
        monkeypatch.setattr(temporal, name, Memo(2))
    g, fd, sw = swap_graph(media_dir / "mead/W009_front_happy_level3_001.mp4", 10, track=True)
    sw["temporal"] = 3
    g.evaluate(sw, frame=5)
    # one face: the 7 frames blended and the one the window slides to next; flows both ways
    assert infer.decode_memo.size == 8 and temporal._grey_memo.size == 8 and temporal._flow_memo.size == 16
    assert len(infer.decode_memo) == 7


def test_stabilised_swap_sticks_to_a_fast_moving_head(media_dir):
    """people/d12 turns its head fast: after taking out the plate's motion (its optical flow), the swap
    changes less from frame to frame when its crop follows the skin than with the tracker's fit alone, and
    everything outside the mask is still the plate bit for bit."""
    g, fd, sw = swap_graph(media_dir / "people/d12.mp4", 14, track=True)
    sw["temporal"] = 0
    frames = range(5, 11)
    plates = [g.evaluate(fd, frame=f) for f in frames]
    ws = g.settings["working_space"]
    plates8 = [working_to_srgb8(p.tensor[:3], ws) for p in plates]
    hw = plates8[0].shape[:2]
    hulls = [M.region_mask(p.faces[0], "face_hull", hw) for p in plates]

    def flow_ratio(stabilise: int) -> float:
        sw["stabilise"] = stabilise
        results = [working_to_srgb8(g.evaluate(sw, frame=f).tensor[:3], ws) for f in frames]
        return M.stability(plates8, results, hulls)["ratio_flow"]

    tracked, stabilised = flow_ratio(0), flow_ratio(4)
    assert stabilised < 0.85 * tracked
    out = g.evaluate(sw, frame=7)
    sw["output"] = "mask"
    outside = g.evaluate(sw, frame=7).tensor[0] == 0
    assert 0.3 < float(outside.float().mean()) < 0.98
    assert torch.equal(out.tensor[:, outside], plates[2].tensor[:, outside])
    assert out.metadata["doublure/synthetic_face"] is True
    # the faces passed on are where the swap was placed: same landmarks in the crop, another crop transform
    passed, tracked = out.faces[0], plates[2].faces[0]
    assert np.abs(passed.to_crop - tracked.to_crop).max() > 1e-4
    assert np.allclose(passed.landmarks_in_crop(64), tracked.landmarks_in_crop(64), atol=1e-3)
    sw["stabilise"] = 0
    assert np.array_equal(g.evaluate(sw, frame=7).faces[0].landmarks, tracked.landmarks)


def test_placed_face_moves_every_pixel_quantity_with_the_crop(media_dir):
    g, fd, _ = swap_graph(media_dir / "mead/W009_front_happy_level3_001.mp4", 3, track=False)
    face = g.evaluate(fd, frame=2).faces[0]
    move = similarity(2.0, 1.1, 4.0, -3.0, centre=(128, 128))           # plate pixel -> plate pixel
    placed = placed_face(face, (np.vstack([face.to_crop, [0, 0, 1]]) @ np.linalg.inv(move))[:2])
    expect = face.landmarks[:, :2] @ move[:2, :2].T + move[:2, 2]
    assert np.allclose(placed.landmarks[:, :2], expect, atol=1e-3)
    assert np.allclose(placed.landmarks[:, 2], face.landmarks[:, 2] * 1.1, atol=1e-3)
    assert np.allclose(placed.iris[:, 2], face.iris[:, 2] * 1.1, atol=1e-4)
    assert np.allclose(placed.landmarks_in_crop(64), face.landmarks_in_crop(64), atol=1e-3)
    assert placed.box[0] == pytest.approx(float(expect[:, 0].min()), abs=1e-3)
    assert placed.track_id == face.track_id and placed.pose == face.pose


def keyable_plate_graph(media_dir, last: int):
    """Read -> Merge (of the plate with itself: its mix keys edit the plate at chosen frames) -> FaceDetect ->
    SwapModel (stabilise 2, temporal 1). Returns (graph, merge, swap)."""
    g = engine.Graph(first=1, last=last)
    read = g.create("Read", file=str(media_dir / "mead/W009_front_happy_level3_001.mp4"), first=1, last=last)
    merge = g.create("Merge", inputs=[read, read])
    fd = g.create("FaceDetect", inputs=[merge])
    return g, merge, g.create("SwapModel", model=str(DEMO_MODEL), inputs=[fd], stabilise=2, temporal=1)


def test_hash_covers_the_frames_read_around(media_dir):
    g, merge, sw = keyable_plate_graph(media_dir, 12)
    sw["holds"] = False    # what a held frame reads as well: the next test
    ctx = engine.EvalContext(frame=5)
    before = g.hash_of(sw, ctx)
    sw["temporal"] = 0
    assert g.hash_of(sw, ctx) != before
    sw["temporal"] = 1
    assert g.hash_of(sw, ctx) == before
    g.set_key(merge, "mix", 7, 1.0)        # keys that keep every frame as it was
    g.set_key(merge, "mix", 8, 1.0)
    assert g.hash_of(sw, ctx) == before
    g.set_key(merge, "mix", 9, 0.5)        # an edit of the plate at frame 9 only: outside 5 +- 3
    assert g.hash_of(sw, ctx) == before
    g.set_key(merge, "mix", 8, 0.9)        # ... and at frame 8: inside, the output at 5 reads it
    assert g.hash_of(sw, ctx) != before
    sw["stabilise"], sw["temporal"] = 0, 0
    flat = g.hash_of(sw, ctx)
    g.set_key(merge, "mix", 8, 0.8)
    assert g.hash_of(sw, ctx) == flat      # reading frame 5 alone, nothing around it enters the hash


def test_a_run_of_neighbours_ends_where_the_id_passes_to_another_face(media_dir):
    """Without the Track analysis a frame's faces are numbered by size, so id 0 can be another person on the
    next frame: the frames read around a face stop where the face with its id is somewhere else."""
    import dataclasses

    g, fd, sw = swap_graph(media_dir / "mead/W009_front_happy_level3_001.mp4", 12, track=False)
    faces = {f: g.evaluate(fd, frame=f).faces[0] for f in range(3, 10)}
    elsewhere = dataclasses.replace(faces[8], box=tuple(v + 400.0 for v in faces[8].box))

    def around(frame):   # the faces FaceDetect would pass on, with another face taking id 0 at frame 8
        return g.evaluate(fd, frame=frame).replace(faces=[elsewhere if frame == 8 else faces[frame]])

    plate_faces = PlateFaces(around, lambda frame: g.hash_of(fd, engine.EvalContext(frame=frame)),
                             (g.settings["first"], g.settings["last"]))
    near = plate_faces.track(6, faces[6], 3)
    assert sorted(near) == [3, 4, 5, 6, 7]


def test_hash_reads_back_over_the_frames_a_held_frame_may_repeat(media_dir):
    g, merge, sw = keyable_plate_graph(media_dir, 14)
    ctx = engine.EvalContext(frame=8)
    before = g.hash_of(sw, ctx)
    g.set_key(merge, "mix", 2, 1.0)        # keys that keep every frame as it was
    g.set_key(merge, "mix", 4, 1.0)
    assert g.hash_of(sw, ctx) == before
    g.set_key(merge, "mix", 3, 0.5)        # frame 3 only: 8 - 3 - 2, read when 7 and 8 repeat frame 6
    assert g.hash_of(sw, ctx) != before
    sw["holds"] = False
    flat = g.hash_of(sw, ctx)
    g.set_key(merge, "mix", 3, 0.7)
    assert g.hash_of(sw, ctx) == flat      # without holds the output at 8 reads 5..11 only
    sw["holds"] = True
    held = g.hash_of(sw, ctx)
    g.set_key(merge, "mix", 2, 0.5)        # frames 1 and 2 are beyond any repeat
    assert g.hash_of(sw, ctx) == held
