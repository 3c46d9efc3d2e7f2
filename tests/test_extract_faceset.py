"""Faceset extraction on two MEAD clips: index and crops consistent, a deterministic re-run, the report."""
import hashlib
import json
import os

import numpy as np
import OpenImageIO as oiio
import pytest

from doublure.engine.errors import DoublureError, MediaError
from doublure.faces.align import template_in_crop
from doublure.faces.extract import FACESET_SCHEMA, extract_faceset

CLIPS = ("mead/M030_front_happy_level3_001.mp4", "mead/W009_front_surprised_level3_001.mp4")
SIZE = 128


def _digest(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if not name.startswith(".")}


@pytest.fixture(scope="module")
def facesets(media_dir, tmp_path_factory):
    clips = [str(media_dir / c) for c in CLIPS]
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    calls = []
    summary = extract_faceset(clips, str(a), size=SIZE, every=4, progress=lambda d, t, c: calls.append((d, t)))
    extract_faceset(clips, str(b), size=SIZE, every=4)
    return clips, a, b, summary, calls


def test_index_and_crops_are_consistent(facesets):
    clips, a, _, summary, calls = facesets
    index = json.loads((a / "index.json").read_text())
    assert index["schema"] == FACESET_SCHEMA and index["size"] == SIZE and index["face_type"] == "whole_face"
    items = index["items"]
    assert summary["items"] == len(items) > 30
    assert {it["source"] for it in items} == {os.path.abspath(c) for c in clips}
    assert calls[-1][0] == calls[-1][1]
    pngs = sorted(p for p in os.listdir(a) if p.endswith(".png") and not p.startswith("report"))
    assert pngs == [it["file"] for it in items]
    template = template_in_crop("whole_face") * SIZE - 0.5
    for it in items[::7]:
        inp = oiio.ImageInput.open(str(a / it["file"]))
        spec = inp.spec()
        pixels = inp.read_image("float")
        inp.close()
        assert (spec.width, spec.height, spec.nchannels, str(spec.format)) == (SIZE, SIZE, 3, "uint16")
        assert pixels.std() > 0.05
        lm = np.asarray(it["landmarks"])
        assert lm.shape == (478, 2)
        # aligned: the landmarks sit on the canonical template in crop pixels (expressions move the mouth)
        assert np.linalg.norm(lm - template, axis=1).mean() < 0.06 * SIZE
        assert it["frame"] % 4 == 0 and it["track_id"] == 0 and it["blur"] > 0
        assert set(it["expression"]) == {"mouth_open", "eyes_open", "brow_raise"}
    # the surprised clip opens the mouth and raises the brows more than the happy one does
    by_src = {c: [it for it in items if it["source"] == os.path.abspath(c)] for c in clips}
    mouth = [max(it["expression"]["mouth_open"] for it in by_src[c]) for c in clips]
    assert mouth[1] > mouth[0]


def test_rerun_is_identical(facesets):
    _, a, b, _, _ = facesets
    assert _digest(a) == _digest(b)


def test_report(facesets):
    _, a, _, summary, _ = facesets
    html = (a / "report.html").read_text()
    for plot in ("report_pose.png", "report_expression.png", "report_lighting.png", "report_sources.png"):
        assert plot in html and (a / plot).stat().st_size > 1000
    # frontal studio clips: the report says turned heads are missing
    assert any("yaw" in m for m in summary["missing"])
    assert "M030_front_happy_level3_001.mp4" in summary["text"]


def test_duplicates_and_small_faces_are_filtered(media_dir, tmp_path):
    clip = str(media_dir / CLIPS[0])
    # at 1024 px the MEAD faces (about 100 px) would be upscaled 10x: all too small
    summary = extract_faceset([clip], str(tmp_path / "big"), size=1024, every=20)
    assert summary["items"] == 0 and summary["skipped"]["too_small"] > 0


def test_bad_arguments(tmp_path):
    with pytest.raises(MediaError, match="no such clip"):
        extract_faceset([str(tmp_path / "missing.mp4")], str(tmp_path / "out"))
    with pytest.raises(DoublureError, match="--every"):
        extract_faceset([], str(tmp_path / "out"), every=0)
