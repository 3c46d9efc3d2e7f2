"""The viewer's first picture of a frame not computed yet (issue 23 item 8): on a jump or a step, the plate at
the video previews' scale at once, drawn marked as provisional, and the full picture once the playhead has
rested; stepping on before that starts no full frame; an edit at a rested frame keeps the old picture."""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtGui

import doublure.nodes  # noqa: F401  (registers Read)
from doublure.app.provisional import PROVISIONAL_COLOUR, PROVISIONAL_PROXY

from test_app_support import window  # noqa: F401

MEAD = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "mead" / "M030_front_angry_level3_001.mp4"


def amber_pixels(widget) -> int:
    image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
    target = PROVISIONAL_COLOUR.rgb() & 0xFFFFFF
    return sum(1 for y in range(0, image.height(), 2) for x in range(0, image.width(), 2)
               if image.pixel(x, y) & 0xFFFFFF == target)


def test_a_jump_shows_the_plate_marked_provisional_then_the_full_picture(qtbot, window):
    graph, viewer = window.graph, window.viewer
    graph.set_setting("last", 60)
    read = graph.create("Read", file=str(MEAD), first=1, last=98)
    gain = graph.create("AppTestGain", inputs=[read], gain=2.0)
    viewer._refine_timer.setInterval(1500)  # long enough that the first picture surely comes first here
    shown = []
    viewer.canvas.painted.connect(lambda: shown.append((graph.current_frame, viewer.picture_state(),
                                                        viewer.canvas.provisional)))
    viewer.set_input(1, gain)
    qtbot.waitUntil(lambda: viewer.picture_state() == "full", timeout=60000)

    viewer.set_frame(40)
    qtbot.waitUntil(lambda: viewer.picture_state() == "provisional", timeout=20000)
    viewer.canvas.repaint()
    frame = viewer.canvas.frame_a
    assert frame.frame == 40 and frame.proxy == PROVISIONAL_PROXY and frame.rgba.shape[:2] == (64, 64)
    assert not graph.is_cached(gain, 40), "the full frame was computed before the playhead rested"
    assert "PROVISIONAL" in viewer.canvas.provisional and "Read1" in viewer.canvas.provisional \
        and "AppTestGain1" in viewer.canvas.provisional
    assert amber_pixels(viewer.canvas) > 200, "the first picture is not drawn marked"
    assert not viewer.is_current()

    qtbot.waitUntil(lambda: viewer.picture_state() == "full", timeout=60000)
    viewer.canvas.repaint()
    assert viewer.canvas.frame_a.frame == 40 and viewer.canvas.frame_a.proxy == 1.0
    # once the first picture is up, it stays until the full one replaces it (no older frame in between)
    after_jump = shown[next(i for i, (f, state, _) in enumerate(shown) if f == 40 and state == "provisional"):]
    assert {state for _, state, _ in after_jump} == {"provisional", "full"}, after_jump
    assert viewer.canvas.provisional == "" and amber_pixels(viewer.canvas) == 0
    at_40 = [state for f, state, _ in shown if f == 40]
    assert at_40.index("provisional") < at_40.index("full")


def test_stepping_on_before_the_playhead_rests_computes_no_full_frame(qtbot, window):
    graph, viewer = window.graph, window.viewer
    graph.set_setting("last", 60)
    read = graph.create("Read", file=str(MEAD), first=1, last=98)
    gain = graph.create("AppTestGain", inputs=[read], gain=2.0)
    viewer.set_input(1, gain)
    qtbot.waitUntil(lambda: viewer.picture_state() == "full", timeout=60000)
    viewer._refine_timer.setInterval(1500)
    viewer.canvas.setFocus()
    for _ in range(5):   # Right over the viewer, faster than the playhead rests
        qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_Right)
        qtbot.waitUntil(lambda: viewer.picture_state() == "provisional", timeout=20000)
    assert graph.current_frame == 6
    qtbot.waitUntil(lambda: viewer.picture_state() == "full", timeout=60000)
    assert graph.is_cached(gain, 6)
    assert not any(graph.is_cached(gain, f) for f in range(2, 6)), "a frame stepped over was computed in full"

    # An edit where the playhead rests computes the full picture, keeping the old one meanwhile: no
    # provisional plate in place of the comp being adjusted.
    states = []
    viewer.canvas.painted.connect(lambda: states.append(viewer.picture_state()))
    graph.set_knob(gain, "gain", 3.0)
    qtbot.waitUntil(viewer.is_current, timeout=60000)
    assert "provisional" not in states


def test_a_frame_being_prefetched_is_delivered_to_the_lane_that_asks_for_it_not_made_twice(qtbot, monkeypatch):
    """Playback asks lane A for the frame the prefetch lane is making, then prefetches the next: A gets that
    frame when done, converted for display once, and the next prefetch does not cancel it."""
    from doublure.app import evaluator as evaluator_module
    from doublure.app.evaluator import FrameEvaluator
    from doublure.app.display import CHANNEL_MODES, DisplaySettings
    from doublure.engine import Graph, colour
    from test_app_support import constant_chain

    graph = Graph(first=1, last=5)
    _, gain = constant_chain(graph, width=4000, height=3000)   # slow enough to be still running when A asks
    settings = DisplaySettings(display=colour.DEFAULT_DISPLAY, view=colour.DEFAULT_VIEW, exposure=0.0, gamma=1.0,
                               channels=CHANNEL_MODES[0], working_space=graph.settings["working_space"])
    conversions = []
    convert = evaluator_module.display_pixels
    monkeypatch.setattr(evaluator_module, "display_pixels",
                        lambda image, s, proxy: (conversions.append(image), convert(image, s, proxy))[1])
    evaluator = FrameEvaluator(graph)
    delivered = []
    evaluator.frame_ready.connect(lambda lane, frame: delivered.append((lane, frame.frame)))
    try:
        assert evaluator.request("prefetch", gain, 2, 1.0, settings) is None
        qtbot.waitUntil(lambda: bool(evaluator._running), timeout=5000)
        ready = evaluator.request("A", gain, 2, 1.0, settings)
        evaluator.request("prefetch", gain, 3, 1.0, settings)
        qtbot.waitUntil(lambda: ("prefetch", 3) in delivered, timeout=60000)
    finally:
        evaluator.shutdown()
    assert ready is None and ("A", 2) in delivered and ("prefetch", 2) in delivered, delivered
    assert len(conversions) == 2, "a frame was converted for display twice"


def test_playback_computes_the_next_two_frames_at_once_each_once(qtbot, monkeypatch):
    """With two workers, the prefetch and ahead lanes (the next two frames) compute at the same time; when
    playback moves on, A joins the frame being made and the prefetch lane joins the one ahead: no frame is
    evaluated or converted twice."""
    from doublure.app import evaluator as evaluator_module
    from doublure.app.evaluator import FrameEvaluator
    from doublure.app.display import DisplaySettings
    from doublure.engine import Graph
    from test_app_support import constant_chain

    graph = Graph(first=1, last=5)
    _, gain = constant_chain(graph, width=4000, height=3000)
    settings = DisplaySettings(working_space=graph.settings["working_space"])
    conversions = []
    convert = evaluator_module.display_pixels
    monkeypatch.setattr(evaluator_module, "display_pixels",
                        lambda image, s, proxy: (conversions.append(image), convert(image, s, proxy))[1])
    evaluator = FrameEvaluator(graph, workers=2)
    delivered = []
    evaluator.frame_ready.connect(lambda lane, frame: delivered.append((lane, frame.frame)))
    try:
        evaluator.request("prefetch", gain, 2, 1.0, settings)
        evaluator.request("ahead", gain, 3, 1.0, settings)
        qtbot.waitUntil(lambda: len(evaluator._running) == 2, timeout=5000)   # both at once
        assert evaluator.request("A", gain, 2, 1.0, settings) is None          # playback shows frame 2...
        evaluator.request("prefetch", gain, 3, 1.0, settings)                  # ...and looks ahead again
        evaluator.request("ahead", gain, 4, 1.0, settings)
        qtbot.waitUntil(lambda: ("ahead", 4) in delivered, timeout=60000)
        qtbot.waitUntil(lambda: not evaluator.busy(), timeout=60000)
    finally:
        evaluator.shutdown()
    assert {("A", 2), ("prefetch", 3), ("ahead", 4)} <= set(delivered), delivered
    assert len(conversions) == 3, "a frame was evaluated and converted twice"
