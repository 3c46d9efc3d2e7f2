"""Nodes that change only the face work in the face's region of the plate: the region-limited result must
equal the whole-frame one (the same code with the region widened to the frame), so the speed-up cannot
change pixels. Also the 1080p I/O fast paths: Read of video and EXR half writes, bit for bit."""
import dataclasses

import numpy as np
import OpenImageIO as oiio
import pytest
import torch

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.engine import colour, imageio, video
from doublure.faces import align
from doublure.faces.paint import plate_points_to_stroke
from doublure.models.arch import IdentityModel, config_for
from doublure.engine.cache import clear_memos
from doublure.models.dbm import rights_record, save_model
from doublure.nodes import _finish, eyefix, swapmodel

import finish_nodes  # noqa: F401

CLIP = ("mead", "M030_front_happy_level3_001.mp4")


def _whole_frame(*args) -> tuple:
    """Stand-in for a region function (its last argument is the plate's (H, W)): the whole plate, which
    gives the node's whole-frame result."""
    hw = args[-1]
    return 0, hw[0], 0, hw[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("model") / "m.dbm")
    rights = rights_record("M030", "M030 (the actor)", "2024-01-10", "AGR-0042", "film", "2099-12-31")
    save_model(path, IdentityModel(config_for(64, "df", 0.125)), {"name": "m", "rights": rights,
                                                                 "face_type": "whole_face"})
    return path


def _evaluate(build, frame: int):
    """Build a fresh graph (no cache shared between the two runs) and evaluate its last node."""
    g, node = build()
    return g.evaluate(node, frame).tensor


@pytest.mark.parametrize("output", ["composite", "mask"])
def test_swapmodel_window_equals_the_whole_frame(media_dir, model_path, monkeypatch, output):
    def build():
        g = engine.Graph()
        read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=5)
        fd = g.create("FaceDetect", inputs=[read])
        return g, g.create("SwapModel", inputs=[fd], model=model_path, output=output)

    g, sw = build()
    faces = g.evaluate(g["FaceDetect1"], 3).faces
    plate = g.evaluate(g["Read1"], 3).tensor
    y0, y1, x0, x1 = swapmodel.plate_window(np.stack([f.from_crop for f in faces]), 64, tuple(plate.shape[-2:]))
    assert y1 - y0 < plate.shape[-2] and x1 - x0 < plate.shape[-1]  # the face's window, not the frame
    windowed = g.evaluate(sw, 3).tensor
    clear_memos()   # the whole frame's faces decoded again, not found decoded from the window
    monkeypatch.setattr(swapmodel, "plate_window", _whole_frame)
    monkeypatch.setattr(align, "plate_window", _whole_frame)   # the crops SwapModel reads (faces.align.plate_crops)
    whole = _evaluate(build, 3)
    # the two crops of the face differ by float rounding (3e-6: the window's origin moves the affine's arithmetic),
    # which the model's bf16 decode turns into up to 3e-4 in its face and mask; before the memos were cleared here
    # the whole frame's evaluation found the window's decode and matched to 2e-5 only then
    torch.testing.assert_close(windowed, whole, atol=1e-3, rtol=0)
    if output == "composite":
        outside = (whole == plate).all(0)  # where the whole-frame swap kept the plate, the window does too
        assert torch.equal(windowed[:, outside], plate[:, outside])


def test_eyefix_region_equals_the_whole_frame(media_dir, monkeypatch):
    def build():
        g = engine.Graph()
        read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=20)
        plate = g.create("FaceDetect", inputs=[read])
        swap = g.create("TestFinishRecolour", inputs=[plate], gain=(0.8, 1.0, 1.2), blur=1.5)
        return g, g.create("EyeFix", inputs=[swap, plate], iris_align=True, catchlight=1.0, sharpen=1.0)

    g, node = build()
    p = g.evaluate(g["FaceDetect1"], 12)
    y0, y1, x0, x1 = node.region(p.faces, 12, (p.height, p.width))
    assert (y1 - y0) * (x1 - x0) < 0.5 * p.height * p.width
    windowed = g.evaluate(node, 12).tensor
    monkeypatch.setattr(eyefix.EyeFix, "region", lambda self, faces, frame, hw: _whole_frame(hw))
    assert torch.equal(windowed, _evaluate(build, 12))


def test_eyefix_region_holds_a_stroke_painted_off_the_eyes(media_dir, monkeypatch):
    """A stroke added to the mask on the cheek widens the region to hold it, and no further: the result is
    the whole-frame one."""
    def build():
        g = engine.Graph()
        read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=20)
        plate = g.create("FaceDetect", inputs=[read])
        swap = g.create("TestFinishRecolour", inputs=[plate], gain=(0.8, 1.0, 1.2), blur=1.5)
        node = g.create("EyeFix", inputs=[swap, plate])
        face = g.evaluate(plate, 12).faces[0]
        cheek = face.landmarks[205, :2]   # MediaPipe's left cheek, well below the eye
        node["strokes"] = [plate_points_to_stroke(face, [cheek], 6.0, hardness=0.5)]
        return g, node

    g, node = build()
    p = g.evaluate(g["FaceDetect1"], 12)
    y0, y1, x0, x1 = node.region(p.faces, 12, (p.height, p.width))
    cx, cy = p.faces[0].landmarks[205, :2]
    assert y0 <= cy - 6 and cy + 6 < y1 and x0 <= cx - 6 and cx + 6 < x1
    assert (y1 - y0) * (x1 - x0) < 0.5 * p.height * p.width
    windowed = g.evaluate(node, 12).tensor
    monkeypatch.setattr(eyefix.EyeFix, "region", lambda self, faces, frame, hw: _whole_frame(hw))
    assert torch.equal(windowed, _evaluate(build, 12))


def test_eye_mask_of_a_window_is_the_whole_mask_cut_out(media_dir):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=20)
    plate = g.create("FaceDetect", inputs=[read])
    node = g.create("EyeFix", inputs=[plate, plate])
    p = g.evaluate(plate, 12)
    hw = (p.height, p.width)
    whole = node.eye_mask(p.faces, 12, hw, "cpu")
    y0, y1, x0, x1 = node.region(p.faces, 12, hw)
    assert torch.equal(node.eye_mask(p.faces, 12, hw, "cpu", (y0, y1, x0, x1)), whole[:, y0:y1, x0:x1])
    assert whole[:, :y0].max() == 0 and whole[:, y1:].max() == 0  # nothing of the mask lies outside the region
    half = (y0, (y0 + y1) // 2, x0, x1)  # a window cutting through the eyes
    assert torch.equal(node.eye_mask(p.faces, 12, hw, "cpu", half), whole[:, half[0]:half[1], x0:x1])


def test_read_of_video_is_the_reader_frame_converted(media_dir):
    path = str(media_dir.joinpath(*CLIP))
    g = engine.Graph()
    read = g.create("Read", file=path)
    pixels = video.VideoReader(path).read(6)
    expected = colour.convert(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), "srgb", "ACEScg")
    # the same values within float32 rounding of the 3x3 product (OpenCV adds its terms in another order)
    torch.testing.assert_close(g.evaluate(read, 7).tensor.cpu(), expected, rtol=0,
                               atol=4 * torch.finfo(torch.float32).eps)


def test_read_created_with_a_file_covers_its_frames_and_projects_keep_theirs(media_dir, tmp_path):
    path = str(media_dir.joinpath(*CLIP))
    count = video.VideoReader(path).frame_count
    g = engine.Graph()
    read = g.create("Read", file=path)
    assert (read["first"], read["last"]) == (1, count) and count > 50
    assert g.create("Read", file=path, last=10)["last"] == 10  # a value given is kept
    assert (g.create("Read", file=str(tmp_path / "none.####.exr"))["last"]) == 1  # nothing on disk yet
    g.undo()
    g.undo()
    assert [n.name for n in g.nodes] == ["Read1"]
    # A saved project keeps its ranges, the default 1-1 included (it is not written to the file).
    read["last"] = 5
    g.create("Read", file=path, first=1, last=1)
    g.save(str(tmp_path / "shot.dbl"))
    loaded = engine.load(str(tmp_path / "shot.dbl"))
    assert (loaded["Read1"]["first"], loaded["Read1"]["last"]) == (1, 5)
    assert (loaded["Read2"]["first"], loaded["Read2"]["last"]) == (1, 1)


def test_exr_half_is_written_as_oiio_rounds_it(tmp_path):
    rng = np.random.default_rng(3)
    pixels = np.concatenate([rng.standard_normal((64, 64, 3)).astype(np.float32) * s for s in (1e-6, 1, 1e5)])
    pixels[0, :3, 0] = (np.inf, 65519.0, 3e-8)
    path = str(tmp_path / "half.exr")
    imageio.write_image(path, pixels, file_type="exr", datatype="half")
    spec = oiio.ImageSpec(64, 192, 3, "half")
    buf = oiio.ImageBuf(spec)
    buf.set_pixels(oiio.ROI(), pixels)  # OIIO's own float -> half conversion
    written = oiio.ImageInput.open(path).read_image(oiio.HALF)
    assert np.array_equal(written.view(np.uint16), buf.get_pixels(oiio.HALF).view(np.uint16))


def test_remembered_region_masks_equal_fresh_ones_and_are_the_callers_own(media_dir, monkeypatch):
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=20)
    plate = g.create("FaceDetect", inputs=[read])
    face = g.evaluate(plate, 12).faces[0]
    hw = (256, 256)
    window = _finish.swap_window(face, hw)
    monkeypatch.setattr(_finish, "_mask_memo", type(_finish._mask_memo)())
    first = _finish.swap_region(face, window, "cpu")
    first.mul_(0)  # a caller scribbling on its mask must not reach the next caller
    again = _finish.swap_region(face, window, "cpu")
    assert len(_finish._mask_memo) == 1
    w = _finish.face_width(face)
    fresh = _finish._render_region_mask(np.asarray(face.landmarks, np.float64), np.asarray(face.iris, np.float64),
                                        "face_hull", window, "cpu", _finish.REGION_GROW * w,
                                        _finish.REGION_FEATHER * w)
    assert torch.equal(again, fresh) and again.max() == 1
    moved = dataclasses.replace(face, landmarks=face.landmarks + np.float32(1.0))
    assert not torch.equal(_finish.swap_region(moved, window, "cpu"), again)  # keyed on the geometry


def test_swap_region_in_a_wider_window_is_the_same_rendering_placed(media_dir, monkeypatch):
    """ShadowMatch's wider window gets what rendering the region there gives (it is 0 beyond the face's swap
    window), from the one rendering ColorMatch and Grain remember."""
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=20)
    plate = g.create("FaceDetect", inputs=[read])
    face = g.evaluate(plate, 12).faces[0]
    w = _finish.face_width(face)
    monkeypatch.setattr(_finish, "_mask_memo", type(_finish._mask_memo)())
    sizes = ((256, 256), (400, 600), (120, 140))  # the frame clips the wider windows, or both, or none
    for hw in sizes:
        for extra in (0.0, 6.0, 40.0):
            window = _finish.swap_window(face, hw, extra=extra)
            fresh = _finish._render_region_mask(np.asarray(face.landmarks, np.float64),
                                                np.asarray(face.iris, np.float64), "face_hull", window, "cpu",
                                                _finish.REGION_GROW * w, _finish.REGION_FEATHER * w)
            # the same up to the blur's float rounding on another size (bit for bit on the 1080p demo shot)
            torch.testing.assert_close(_finish.swap_region(face, window, "cpu"), fresh, rtol=0, atol=1e-6)
    # one rendering per swap window, whatever the wider windows asked for
    assert len(_finish._mask_memo) == len({_finish.swap_window(face, hw) for hw in sizes})


def test_the_face_chain_shares_the_plates_frame_and_equals_whole_frame_copies(media_dir, model_path, monkeypatch):
    """SwapModel and the finishing nodes paste their windows over the plate's frame (Image.paste) instead of
    each copying the frame: the chain's output still shares the Read's tensor, and it is bit for bit what
    the same nodes give when every input is first built as a whole frame of its own."""
    def build():
        g = engine.Graph()
        g.settings.update(first=1, last=8)
        # 1080p: a face of ~200 px leaves most of the frame outside every node's window
        read = g.create("Read", file=str(media_dir / "plates_1080" / "demo1_video.mp4"), first=1, last=8)
        plate = g.create("FaceDetect", inputs=[read])
        node = g.create("SwapModel", inputs=[plate], model=model_path)
        for kind in ("ColorMatch", "ShadowMatch", "EyeFix"):
            node = g.create(kind, inputs=[node, plate])
        grain = g.create("Grain", inputs=[node, plate])
        grain.action_analyse(g)
        return g, grain

    g, grain = build()
    out = g.evaluate(grain, 4)
    plate = g.evaluate(g["Read1"], 4).tensor
    corner = out.window((0, 1, 0, 1))  # far from the face
    assert corner.untyped_storage().data_ptr() == plate.untyped_storage().data_ptr()
    chained = out.tensor
    assert not torch.equal(chained, plate)
    assert torch.equal(out.tensor, chained) and plate.untyped_storage().data_ptr() != chained.untyped_storage().data_ptr()
    monkeypatch.setattr(engine.Image, "window", lambda self, w: self.tensor[:, w[0]:w[1], w[2]:w[3]].clone())
    assert torch.equal(_evaluate(build, 4), chained)


def test_clear_memos_empties_the_node_memos_and_the_result_comes_back_the_same(media_dir):
    from doublure.engine.cache import clear_memos
    from doublure.nodes import colormatch

    g = engine.Graph()
    read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=20)
    plate = g.create("FaceDetect", inputs=[read])
    swap = g.create("TestFinishRecolour", inputs=[plate])
    node = g.create("ColorMatch", inputs=[swap, plate], window=1)
    first = g.evaluate(node, 12).tensor
    assert len(_finish._mask_memo) > 0 and len(colormatch._sample_memo) > 0
    clear_memos()
    assert len(_finish._mask_memo) == 0 and len(colormatch._sample_memo) == 0
    g.cache.clear()
    assert torch.equal(g.evaluate(node, 12).tensor, first)


def test_memo_reserve_keeps_a_sliding_window_that_a_smaller_lru_would_lose():
    from doublure.engine.cache import Memo

    def misses(memo: Memo) -> int:
        """SwapModel's access pattern: per frame, each of two faces reads its 13 frames in order."""
        missed = 0
        for centre in range(10, 30):
            for face in (0, 1):
                for frame in range(centre - 6, centre + 7):
                    if memo.get((face, frame)) is None:
                        missed += 1
                        memo.put((face, frame), frame)
        return missed

    assert misses(Memo(24)) == 20 * 26      # under the two windows: every access misses
    reserved = Memo(24)
    reserved.reserve(28)
    reserved.reserve(4)                     # never shrinks
    assert reserved.size == 28 and misses(reserved) == 26 + 19 * 2   # each frame computed once per face


def test_swap_region_is_the_swaps_coverage_in_any_window(media_dir):
    """A face SwapModel passed on carries its alpha (Face.coverage): the finishing nodes' region is that
    alpha wherever their window lies, 0 beyond it, and a tensor of their own."""
    from doublure.faces.face import Coverage

    g = engine.Graph()
    read = g.create("Read", file=str(media_dir.joinpath(*CLIP)), first=1, last=5)
    face = g.evaluate(g.create("FaceDetect", inputs=[read]), 3).faces[0]
    alpha = torch.rand(1, 40, 50)
    covered = dataclasses.replace(face, coverage=Coverage((100, 140, 60, 110), alpha))
    whole = torch.zeros(1, 256, 256)
    whole[:, 100:140, 60:110] = alpha
    for window in ((90, 150, 50, 120), (110, 130, 70, 100), (0, 256, 0, 256), (0, 50, 0, 50)):
        y0, y1, x0, x1 = window
        region = _finish.swap_region(covered, window, "cpu")
        assert torch.equal(region, whole[:, y0:y1, x0:x1]), window
    region = _finish.swap_region(covered, (110, 130, 70, 100), "cpu")
    region += 1.0
    assert torch.equal(covered.coverage.alpha, alpha)
    # without coverage (a plate face), the face hull: wider than the swap's own mask would be
    hull = _finish.swap_region(face, (0, 256, 0, 256), "cpu")
    assert hull.max() == 1.0 and not torch.equal(hull, whole)
