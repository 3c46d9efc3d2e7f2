"""Held plate frames: people/d12 was converted to 25 fps by repeating frames. Where the plate repeats a frame
the swap, and the finishing nodes below it, must repeat too, not drift on with their neighbours' average."""
from pathlib import Path

import numpy as np
import pytest

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.faces.detect import working_to_srgb8
from doublure.nodes._finish import swap_window
from doublure.faces.temporal import is_held

DEMO_MODEL = Path(__file__).resolve().parents[1] / "resources" / "demo" / "demo_model.dbm"
DEMO_PROJECT = DEMO_MODEL.parent / "demo.dbl"
LAST = 20


def test_is_held_needs_a_small_change_between_larger_ones():
    assert is_held(0.05, 4.0, 6.0)
    assert is_held(0.05, None, 6.0) and is_held(0.05, 6.0, None)     # the shot's first or last pair
    assert not is_held(0.05, None, None)                              # nothing to compare with
    assert not is_held(0.3, 1.0, 1.2)          # a slow shot: every pair changes little
    assert not is_held(0.7, 8.0, 9.0)          # a head slowing down for a frame still moves
    assert is_held(0.05, 0.1, 6.0)             # the second of two repeats: its pair before repeated too


@pytest.fixture(scope="module")
def d12_demo_graph(media_dir, tmp_path_factory):
    """The demo project's chain on the first 20 frames of people/d12, tracked and grain analysed."""
    work = tmp_path_factory.mktemp("holds")
    g = engine.load(str(DEMO_PROJECT))
    g.save(str(work / "d12.dbl"))                 # tracks and relative paths live beside the copy
    read = g["Read1"]
    read["file"], read["first"], read["last"] = str(media_dir / "people" / "d12.mp4"), 1, LAST
    g.set_setting("first", 1)
    g.set_setting("last", LAST)
    g["FaceDetect1"].action_track(g)
    g["Grain1"].action_analyse(g)
    return g


def srgb8(g, node: str, frame: int) -> np.ndarray:
    return working_to_srgb8(g.evaluate(g[node], frame=frame).tensor[:3], g.settings["working_space"]).astype(float)


def test_a_held_plate_frame_holds_the_swap_and_its_finish(d12_demo_graph):
    g = d12_demo_graph
    plates = {f: srgb8(g, "Read1", f) for f in range(1, LAST + 1)}
    change = {f: np.abs(plates[f] - plates[f - 1]).mean() for f in range(2, LAST + 1)}
    # repeated frames, told by the whole frame: in these 20 frames the others change by 0.9 code values or more
    held = [f for f in range(2, LAST + 1) if change[f] < 0.5]
    assert len(held) >= 4 and min(change[f] for f in change if f not in held) > 0.9
    for f in range(4, LAST - 1):
        assert g.evaluate(g["SwapModel1"], frame=f).faces[0].repeats == (1 if f in held else 0), f

    def face_change(frame: int) -> tuple[float, float]:
        """(result's, plate's) mean change from frame - 1 inside the swap's window."""
        y0, y1, x0, x1 = swap_window(g.evaluate(g["SwapModel1"], frame=frame).faces[0], plates[frame].shape[:2])
        result = srgb8(g, "Grain1", frame) - srgb8(g, "Grain1", frame - 1)
        return (float(np.abs(result[y0:y1, x0:x1]).mean()),
                float(np.abs(plates[frame] - plates[frame - 1])[y0:y1, x0:x1].mean()))

    holding = {f: face_change(f) for f in held}
    for f, (result, plate) in holding.items():
        assert result < 1.5 * plate + 0.05, (f, result, plate)   # the whole chain repeats with the plate
    exact = [f for f in held if change[f] < 0.2]  # frame 4 (0.32) changes a little: a slow frame or a noisy repeat
    assert len(exact) >= 3
    g["SwapModel1"]["holds"] = False
    try:
        drifting = {f: face_change(f) for f in exact}
    finally:
        g["SwapModel1"]["holds"] = True
    for f, (result, plate) in drifting.items():
        # without: the face moves on a held frame, several times what the plate's repeat changes
        assert result > max(4 * plate, 4 * holding[f][0], 0.3), (f, result, plate, holding[f])



def test_faces_keep_their_repeats_through_json(d12_demo_graph):
    from doublure.faces.face import Face

    held = next(face for f in range(5, LAST) if (face := d12_demo_graph.evaluate(d12_demo_graph["SwapModel1"],
                                                                                  frame=f).faces[0]).repeats)
    assert Face.from_dict(held.to_dict()).repeats == held.repeats == 1
    tracked = d12_demo_graph.evaluate(d12_demo_graph["FaceDetect1"], frame=5).faces[0]
    assert "repeats" not in tracked.to_dict()      # stored tracks keep their form
