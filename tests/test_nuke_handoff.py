"""Write's face layers for a hand-off to Nuke: the comp, the swapped face premultiplied by its matte and the
faces' transforms in one EXR, read back channel by channel with OpenImageIO (issue 26, item 10)."""
import json

import numpy as np
import OpenImageIO as oiio
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.engine import Image, Node, register_node
from doublure.engine.node import node_types
from doublure.faces.face import NUM_LANDMARKS, Coverage, Face

H, W = 24, 32


def swapped_faces():
    """Two faces as SwapModel passes them on: each with the alpha it was composited with, overlapping."""
    faces = []
    for track_id, (y0, y1, x0, x1), level in ((0, (4, 14, 6, 16), 0.5), (1, (10, 20, 12, 28), 1.0)):
        alpha = torch.full((1, y1 - y0, x1 - x0), level)
        landmarks = np.zeros((NUM_LANDMARKS, 3), np.float32)
        faces.append(Face(track_id=track_id, box=(float(x0), float(y0), float(x1), float(y1)), landmarks=landmarks,
                          iris=np.zeros((2, 3)), pose=(0, 0, 0), to_crop=np.array([[2.0, 0, -x0], [0, 2.0, -y0]]),
                          from_crop=np.array([[0.5, 0, x0], [0, 0.5, y0]]),
                          coverage=Coverage((y0, y1, x0, x1), alpha)))
    faces.append(Face(track_id=2, box=(0.0, 0.0, 4.0, 4.0), landmarks=np.zeros((NUM_LANDMARKS, 3), np.float32),
                      iris=np.zeros((2, 3)), pose=(0, 0, 0)))  # detected, not swapped
    return faces


class SwappedPlate(Node):
    """A plate whose faces carry the swap's coverage (what SwapModel hands down), a gradient for pixels."""

    type_name = "TestSwappedPlate"
    inputs = ()

    def compute(self, ctx, inputs):
        ramp = torch.linspace(0.1, 0.9, H * W).reshape(1, H, W)
        return Image(torch.cat([ramp, ramp * 0.5, 1 - ramp]), faces=swapped_faces())


if "TestSwappedPlate" not in node_types():
    register_node(SwappedPlate)


def test_write_puts_the_face_its_matte_and_transforms_beside_the_comp(tmp_path):
    g = engine.Graph(first=1, last=1)
    plate = g.create("TestSwappedPlate")
    write = g.create("Write", inputs=[plate], file=str(tmp_path / "comp.####.exr"), file_type="exr",
                     datatype="float", colorspace="ACEScg", face_layers=True)
    g.render([write], "1")
    comp = g.evaluate(plate, 1).tensor.numpy()

    inp = oiio.ImageInput.open(str(tmp_path / "comp.0001.exr"))
    spec = inp.spec()
    pixels = inp.read_image(0, 0, 0, spec.nchannels, "float").reshape(H, W, spec.nchannels)
    inp.close()
    names = list(spec.channelnames)
    assert names == ["R", "G", "B", "face.R", "face.G", "face.B", "face.A"]
    plane = {name: pixels[..., i] for i, name in enumerate(names)}
    np.testing.assert_array_equal(np.stack([plane[c] for c in "RGB"]), comp)

    matte = np.zeros((H, W), np.float32)
    matte[4:14, 6:16] = 0.5
    matte[10:20, 12:28] = 1.0  # 'over': the opaque face covers the other where they overlap
    np.testing.assert_allclose(plane["face.A"], matte)
    for c in "RGB":
        np.testing.assert_allclose(plane[f"face.{c}"], plane[c] * matte, rtol=1e-6)  # premultiplied
    assert plane["face.A"][0:4, 0:4].max() == 0  # the face that was not swapped has no matte

    transforms = json.loads(spec.get_string_attribute("doublure:face_transforms"))
    assert [t["track_id"] for t in transforms] == [0, 1, 2]
    assert [t["swapped"] for t in transforms] == [True, True, False]
    assert transforms[1]["from_crop"] == [[0.5, 0.0, 12.0], [0.0, 0.5, 10.0]]
    assert transforms[0]["box"] == [6.0, 4.0, 16.0, 14.0]


def test_without_face_layers_the_exr_holds_the_comp_only(tmp_path):
    g = engine.Graph(first=1, last=1)
    write = g.create("Write", inputs=[g.create("TestSwappedPlate")], file=str(tmp_path / "comp.####.exr"),
                     file_type="exr")
    g.render([write], "1")
    spec = oiio.ImageInput.open(str(tmp_path / "comp.0001.exr")).spec()
    assert list(spec.channelnames) == ["R", "G", "B"]
    assert spec.get_string_attribute("doublure:face_transforms") == ""
