"""Sizes that would take the machine are refused before the memory is asked for, with the figure they
would need; huge frame ranges cost nothing to hold (issue 26, item 9)."""
import contextlib
import io
import json

import numpy as np
import OpenImageIO as oiio
import pytest
import torch

import engine_nodes  # noqa: F401
import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.app import cli
from doublure.engine import MediaError, imageio, ops
from doublure.engine.render import resolve_frames
from doublure.engine.sizes import FrameTooLarge, frame_budget
from doublure.models.data import FaceData


@pytest.mark.parametrize("size", [(9999, 9999), (32768, 32768)])
def test_a_reformat_too_big_for_the_machine_is_refused_with_what_it_needs(size):
    g = engine.Graph()
    src = g.create("TestConstant", width=64, height=32)
    big = g.create("Reformat", inputs=[src], width=size[0], height=size[1])
    with pytest.raises(FrameTooLarge, match=rf"Reformat1: a {size[0]}x{size[1]} image of 3 channels needs "
                                            r"[0-9.]+ GiB, more than the 2.0 GiB one frame may take.*"
                                            r"DOUBLURE_CACHE_HOST_MB to at least \d+"):
        g.evaluate(big, 1)


def test_the_budget_follows_the_host_cache_setting(monkeypatch):
    monkeypatch.setenv("DOUBLURE_CACHE_HOST_MB", "16384")
    assert frame_budget() == 8 * 2**30
    g = engine.Graph()
    src = g.create("TestConstant", width=8, height=8)
    assert g.evaluate(g.create("Reformat", inputs=[src], width=2000, height=1000, filter="bilinear"), 1).width == 2000


def test_the_resample_in_slices_gives_the_same_pixels(monkeypatch):
    image = torch.rand(3, 37, 53)
    larger, smaller = ops.resample(image, (91, 70), "lanczos"), ops.resample(image, (20, 11), "bicubic")
    monkeypatch.setattr(ops, "_GATHER_ELEMENTS", 500)  # a handful of lines at a time
    assert torch.equal(ops.resample(image, (91, 70), "lanczos"), larger)
    assert torch.equal(ops.resample(image, (20, 11), "bicubic"), smaller)


def test_an_exr_declaring_a_huge_display_window_is_refused_before_reading(tmp_path):
    path = str(tmp_path / "huge.exr")
    spec = oiio.ImageSpec(8, 8, 3, oiio.HALF)
    spec.full_width = spec.full_height = 30000
    out = oiio.ImageOutput.create(path)
    out.open(path, spec)
    out.write_image(np.zeros((8, 8, 3), np.float16))
    out.close()
    with pytest.raises(MediaError, match=rf"{path}: a 30000x30000 image of 3 channels needs 20.1 GiB"):
        imageio.read_image(path)
    g = engine.Graph()
    read = g.create("Read", file=path)
    with pytest.raises(MediaError, match="Read1: .*30000x30000"):
        g.evaluate(read, 1)


def test_a_billion_frame_range_is_held_as_a_range_and_info_answers(tmp_path):
    g = engine.Graph(first=1, last=10**9)
    assert resolve_frames(g, None) == range(1, 10**9 + 1)
    assert resolve_frames(g, "1-1000000000x2") == range(1, 10**9 + 1, 2)
    assert resolve_frames(g, "1,5,10-12") == [1, 5, 10, 11, 12]
    assert resolve_frames(g, range(3, 9)) == range(3, 9)  # resolved once more by render: unchanged
    g.create("TestConstant", "Source")
    g.create("Write", "Write1", inputs=[g["Source"]], file=str(tmp_path / "out.####.exr"))
    path = tmp_path / "long.dbl"
    g.save(str(path))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info", str(path)]) == 0
    assert "out.1000000000.exr" in out.getvalue() and "frames   1-1000000000" in out.getvalue()


def test_training_refuses_crops_it_would_upscale_past_twice(tmp_path):
    index = {"schema": "doublure.faceset/1", "size": 64, "face_type": "whole_face",
             "items": [{"file": "000001.png", "source": "a.mp4", "frame": 0, "landmarks": [[1.0, 2.0]] * 478,
                        "pose": [0, 0, 0]}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert len(FaceData([str(tmp_path)], 128)) == 1
    with pytest.raises(engine.DoublureError, match=r"holds 64 px crops: training at 1024 px would upscale them 16x "
                                                   r".*--size 512 or more, or train a new model at --res 128 or less"):
        FaceData([str(tmp_path)], 1024)
