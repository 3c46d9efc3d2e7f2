"""Small node types and fixtures the app tests share (registered once, prefixed ``AppTest``).

They stand in for library nodes only where a test needs a cheap, exactly known image; the tests also drive
the real Read node on real footage.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from PySide6 import QtCore

from doublure.engine import EvalContext, Graph, Hasher, Image, Node, Port, knobs as K, mask_image, register_node
from doublure.engine.node import node_types
from doublure.faces.face import Face


def _register(cls):
    return cls if cls.type_name in node_types() else register_node(cls)


@_register
class AppTestConstant(Node):
    """A flat colour that brightens with the frame (so frames differ)."""

    type_name = "AppTestConstant"
    category = "Image"
    inputs = ()
    knob_specs = (
        K.Color("color", (0.18, 0.18, 0.18)),
        K.Int("width", 64, min=1),
        K.Int("height", 48, min=1),
        K.Float("ramp", 0.01, tooltip="added per frame"),
    )

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.frame).update(ctx.proxy)

    def compute(self, ctx, inputs) -> Image:
        w = max(1, round(self.value("width", ctx.frame) * ctx.proxy))
        hgt = max(1, round(self.value("height", ctx.frame) * ctx.proxy))
        rgb = torch.tensor(self.value("color", ctx.frame), dtype=torch.float32) + self.value("ramp", ctx.frame) * ctx.frame
        return Image(rgb.view(3, 1, 1).expand(3, hgt, w).contiguous())


@_register
class AppTestGain(Node):
    """Multiply the image."""

    type_name = "AppTestGain"
    category = "Finish"
    inputs = (Port("source"),)
    knob_specs = (K.Float("gain", 1.0, min=0.0, soft_max=4.0),)

    def compute(self, ctx, inputs) -> Image:
        src = inputs.get(0)
        return src.replace(tensor=src.tensor * self.value("gain", ctx.frame))


def synthetic_face(width: int, height: int) -> Face:
    """A face in the middle of a frame: its crop is the centred square of side height/2."""
    side = height / 2
    x0, y0 = (width - side) / 2, (height - side) / 2
    grid = np.stack(np.meshgrid(np.linspace(x0, x0 + side, 22), np.linspace(y0, y0 + side, 22)), -1).reshape(-1, 2)
    landmarks = np.zeros((478, 3), np.float32)
    landmarks[:, :2] = grid[np.arange(478) % len(grid)]
    iris = np.array([[x0 + side * 0.65, y0 + side * 0.4, side * 0.05], [x0 + side * 0.35, y0 + side * 0.4, side * 0.05]],
                    np.float32)
    to_crop = np.array([[1 / side, 0, -x0 / side], [0, 1 / side, -y0 / side]])
    from_crop = np.array([[side, 0, x0], [0, side, y0]])
    return Face(track_id=0, box=(x0, y0, x0 + side, y0 + side), landmarks=landmarks, iris=iris, pose=(0.0, 0.0, 0.0),
                to_crop=to_crop, from_crop=from_crop)


@_register
class AppTestFaces(Node):
    """Attach one synthetic face in the middle of the frame."""

    type_name = "AppTestFaces"
    category = "Face"
    inputs = (Port("source"),)

    def compute(self, ctx, inputs) -> Image:
        src = inputs.get(0)
        return src.replace(faces=[synthetic_face(src.width, src.height)])


@_register
class AppTestStrokeMask(Node):
    """Rasterise strokes (hard discs along the path, in face crop space) into a mask."""

    type_name = "AppTestStrokeMask"
    category = "Finish"
    inputs = (Port("source"),)
    output_type = "Mask"
    knob_specs = (K.Strokes("strokes"),)

    def compute(self, ctx, inputs) -> Image:
        src = inputs.get(0)
        mask = torch.zeros(src.height, src.width)
        ys, xs = torch.meshgrid(torch.arange(src.height, dtype=torch.float32),
                                torch.arange(src.width, dtype=torch.float32), indexing="ij")
        for stroke in self.value("strokes", ctx.frame):
            face = next(f for f in src.faces if f.track_id == stroke["track_id"])
            scale = float(np.sqrt(abs(np.linalg.det(face.from_crop[:, :2]))))
            for u, v in stroke["points"]:
                x, y = face.from_crop @ np.array([u, v, 1.0])
                inside = (xs - x) ** 2 + (ys - y) ** 2 <= (stroke["radius"] * scale) ** 2
                value = stroke["opacity"] if stroke["mode"] == "add" else 0.0
                mask = torch.where(inside, torch.tensor(value), mask)
        return mask_image(mask, faces=src.faces)


def constant_chain(graph: Graph, **constant_knobs) -> tuple[Node, Node]:
    const = graph.create("AppTestConstant", **constant_knobs)
    gain = graph.create("AppTestGain", inputs=[const], position=(0, 120))
    return const, gain


def test_support_nodes_evaluate():
    g = Graph(first=1, last=10)
    const, gain = constant_chain(g)
    g.set_knob(gain, "gain", 2.0)
    img = g.evaluate(gain, 3)
    assert img.tensor.shape == (3, 48, 64)
    assert torch.allclose(img.tensor[:, 0, 0].cpu(), torch.full((3,), (0.18 + 0.03) * 2))


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """A main window over an empty 5-frame graph, with settings and autosaves in ``tmp_path``."""
    from doublure.app.main_window import MainWindow

    monkeypatch.setenv("DOUBLURE_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    graph = Graph(first=1, last=5)
    w = MainWindow(graph, settings=settings, autosave_s=3600)
    # The pointer starts off the window, so keys follow the focus; a test routing by pointer moves it.
    w.key_router.pointer = lambda: QtCore.QPoint(-10000, -10000)
    w.show()
    yield w
    w.graph.undo_stack.set_clean()  # closing asks about unsaved changes otherwise
    w.close()
    w.deleteLater()


def test_qt_binding_does_not_leak_references_to_none(qtbot):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on every void method call (harmless on 3.12+,
    where None is immortal): a session then dies with "deallocating None" after some thousand repaints.
    The project pins PySide6 below 6.12; this guards the pin."""
    import sys

    from PySide6 import QtWidgets

    widget = QtWidgets.QSpinBox()
    qtbot.addWidget(widget)
    before = sys.getrefcount(None)
    for i in range(500):
        widget.update()
        widget.setValue(i % 90)
    assert sys.getrefcount(None) - before > -50
