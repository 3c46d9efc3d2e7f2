"""Read and Write nodes through the engine, on real files written and read back."""
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401  (registers Read and Write)
from doublure import engine
from doublure.engine import colour, imageio, video
from doublure.engine.errors import DoublureError, MediaError

PROVENANCE = {"synthetic_face": True, "model": "sha256:0123", "rights": "AGR-2024-17"}


def write_plate(folder, frames=range(1, 5), size=(12, 16), provenance=True):
    """An EXR sequence whose frame f is the value f/10 in linear Rec.709, with provenance in the header."""
    folder.mkdir(exist_ok=True)
    meta = {"doublure/provenance": PROVENANCE} if provenance else {}
    for f in frames:
        pixels = np.full((*size, 4), f / 10.0, np.float32)
        pixels[..., 3] = 1.0
        pixels[0, 0, :3] = (1.0, 0.0, 0.0)  # a red pixel: checks the gamut conversion
        imageio.write_image(folder / f"plate.{f:04d}.exr", pixels, metadata=meta)
    return str(folder / "plate.####.exr")


def test_read_exr_sequence_to_acescg(tmp_path):
    g = engine.Graph()
    read = g.create("Read", file=write_plate(tmp_path / "in"), first=1, last=4)
    img = g.evaluate(read, frame=3)
    assert img.channels == ("R", "G", "B", "A") and img.tensor.shape == (4, 12, 16)
    torch.testing.assert_close(img.tensor[:3, 5, 5].cpu(), torch.full((3,), 0.3), atol=1e-3, rtol=0)  # grey stays grey
    red_acescg = colour.convert(np.array([[[1.0, 0.0, 0.0]]], np.float32), "linear", "ACEScg")[0, 0]
    torch.testing.assert_close(img.tensor[:3, 0, 0].cpu(), torch.from_numpy(red_acescg), atol=1e-3, rtol=0)
    assert img.metadata["doublure/provenance"] == PROVENANCE
    assert img.metadata["input/frame"] == 3


def test_read_png_defaults_to_srgb(tmp_path):
    pixels = np.full((4, 4, 3), 0.4613546, np.float32)  # sRGB code value of linear 0.18
    imageio.write_image(tmp_path / "grey.png", pixels, datatype="16 bit")
    g = engine.Graph()
    read = g.create("Read", file=str(tmp_path / "grey.png"))
    torch.testing.assert_close(g.evaluate(read, 1).tensor.cpu(), torch.full((3, 4, 4), 0.18), atol=2e-4, rtol=0)
    read["colorspace"] = "raw"
    torch.testing.assert_close(g.evaluate(read, 1).tensor.cpu(), torch.full((3, 4, 4), 0.4613546), atol=2e-5, rtol=0)


def test_frame_offset_out_of_range_and_missing_policies(tmp_path):
    pattern = write_plate(tmp_path / "in", frames=(1, 2, 4), provenance=False)
    g = engine.Graph()
    read = g.create("Read", file=pattern, first=1, last=4, frame_offset=100)
    value = lambda frame: float(g.evaluate(read, frame).tensor[1, 5, 5])  # noqa: E731
    assert value(102) == pytest.approx(0.2, abs=1e-3)
    assert value(150) == pytest.approx(0.4, abs=1e-3)  # hold the last frame
    read["out_of_range"] = "black"
    assert value(150) == 0.0 and g.evaluate(read, 150).tensor.shape[-2:] == (12, 16)
    read["out_of_range"] = "error"
    with pytest.raises(MediaError, match=r"Read1: frame 150 is out of range: file frame 50 is outside 1-4"):
        g.evaluate(read, 150)
    with pytest.raises(MediaError, match=r"Read1: missing frame 3: .*plate\.0003\.exr"):
        g.evaluate(read, 103)
    read["on_missing"] = "nearest"
    assert value(103) in (pytest.approx(0.2, abs=1e-3), pytest.approx(0.4, abs=1e-3))
    read["on_missing"] = "black"
    assert value(103) == 0.0


def test_truncated_exr_names_node_file_and_frame(tmp_path):
    pattern = write_plate(tmp_path / "in", size=(64, 64))
    victim = tmp_path / "in" / "plate.0002.exr"
    victim.write_bytes(victim.read_bytes()[:900])
    g = engine.Graph()
    read = g.create("Read", file=pattern, first=1, last=4)
    with pytest.raises(MediaError, match=r"Read1: .*plate\.0002\.exr \(frame 2\)"):
        g.evaluate(read, 2)


def test_read_video_exact_frames_and_proxy(media_dir):
    path = media_dir / "mead" / "M030_front_angry_level3_001.mp4"
    g = engine.Graph()
    read = g.create("Read", file=str(path), first=1, last=98)
    with video.VideoReader(path) as reader:
        expected = colour.convert(reader.read(40), "srgb", "ACEScg")
    img = g.evaluate(read, 41)  # file frames count from 1
    torch.testing.assert_close(img.tensor.cpu(), torch.from_numpy(expected.transpose(2, 0, 1).copy()),
                               atol=1e-5, rtol=0)
    assert g.evaluate(read, 41, proxy=0.5).tensor.shape == (3, 128, 128)
    assert read.action_detect_range(g) == (1, 98)


def test_read_hash_follows_the_file(tmp_path):
    pattern = write_plate(tmp_path / "in", provenance=False)
    g = engine.Graph()
    read = g.create("Read", file=pattern, first=1, last=4)
    ctx1, ctx2 = g.context(1), g.context(2)
    h1, h2 = g.hash_of(read, ctx1), g.hash_of(read, ctx2)
    assert h1 != h2
    write_plate(tmp_path / "in", frames=(1,), size=(12, 17), provenance=False)  # the file changes on disk
    os.utime(tmp_path / "in" / "plate.0001.exr", ns=(1, 1))
    g2 = engine.Graph()
    read2 = g2.create("Read", file=pattern, first=1, last=4)
    assert g2.hash_of(read2, g2.context(1)) != h1 and g2.hash_of(read2, g2.context(2)) == h2


def exr_graph(tmp_path, **write_knobs):
    g = engine.Graph(name="sh010", first=1, last=4)
    read = g.create("Read", file=write_plate(tmp_path / "in"), first=1, last=4)
    write = g.create("Write", **write_knobs)
    write.set_input(0, read)
    return g, read, write


def test_write_exr_roundtrip_with_provenance(tmp_path):
    out = tmp_path / "out" / "comp.####.exr"
    g, _, write = exr_graph(tmp_path, file=str(out), compression="piz", datatype="float")
    report = g.render("Write1", frames="1-4")
    assert report.ok and len(report.written) == 4
    for f in range(1, 5):
        src = imageio.read_image(tmp_path / "in" / f"plate.{f:04d}.exr")
        got = imageio.read_image(imageio.frame_path(str(out), f))
        np.testing.assert_allclose(got.pixels, src.pixels, atol=1e-5)  # linear -> ACEScg -> linear
        assert got.metadata["compression"] == "piz"
        assert got.metadata["doublure/provenance"] == PROVENANCE
        assert got.metadata["doublure/graph"] == "sh010" and got.metadata["doublure/frame"] == f
    assert sorted(os.listdir(tmp_path / "out")) == [f"comp.{f:04d}.exr" for f in range(1, 5)]


def test_render_leaves_half_the_cores_to_the_writers_and_gives_them_back(tmp_path, monkeypatch):
    g, _, _ = exr_graph(tmp_path, file=str(tmp_path / "out" / "c.####.exr"))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    previous = torch.get_num_threads()
    torch.set_num_threads(6)
    try:
        during = []
        assert g.render("Write1", frames="1-2", starting=lambda f: during.append(torch.get_num_threads())).ok
        assert during == [4, 4] and torch.get_num_threads() == 6   # half of 8 cores; then as it was
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("name,datatype,bits", [("c.####.dpx", "10 bit", 10), ("c.####.tif", "16 bit", 16),
                                                ("c.####.png", "8 bit", 8)])
def test_write_integer_formats_in_srgb(tmp_path, name, datatype, bits):
    g, _, write = exr_graph(tmp_path, file=str(tmp_path / name), datatype=datatype)
    assert g.render("Write1", frames="2").ok
    got = imageio.read_image(imageio.frame_path(str(tmp_path / name), 2))
    assert got.bits == bits
    srgb = colour.convert(np.full((1, 1, 3), 0.2, np.float32), "linear", "srgb")[0, 0, 0]
    # the plate is half float: 0.2 is stored as 0.19995
    assert got.pixels[5, 5, 1] == pytest.approx(srgb, abs=1.0 / (2 ** bits - 1) + 2e-4)
    assert got.metadata["doublure/provenance"] == PROVENANCE


def test_resumed_render_skips_complete_frames_only(tmp_path):
    out = tmp_path / "out" / "comp.####.exr"
    g, _, _ = exr_graph(tmp_path, file=str(out))
    g.render("Write1", frames="1-4")
    broken = imageio.frame_path(str(out), 3)
    with open(broken, "r+b") as f:
        f.truncate(200)
    report = g.render("Write1", frames="1-4")
    assert report.written == [("Write1", 3)]
    assert sorted(report.skipped) == [("Write1", 1), ("Write1", 2), ("Write1", 4)]
    assert imageio.is_complete_image(broken)


# Begins an atomic write of argv[1] (part of the file written), prints the temporary's path and waits.
_WRITER = """
import sys, time
from doublure.engine.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"part of a frame")
    print(tmp, flush=True)
    time.sleep(600)
"""


def start_atomic_write(target) -> tuple[subprocess.Popen, str]:
    """A real process in the middle of an atomic write of ``target``; returns it and its temporary's path."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    assert os.path.exists(tmp), f"the writer process did not start its write: {proc.poll()}"
    return proc, tmp


def test_resumed_render_removes_temporaries_of_killed_writers_only(tmp_path):
    out = tmp_path / "out" / "comp.####.exr"
    g, _, _ = exr_graph(tmp_path, file=str(out))
    g.render("Write1", frames="1-4")
    os.unlink(imageio.frame_path(str(out), 3))
    killed, killed_tmp = start_atomic_write(imageio.frame_path(str(out), 3))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    other, other_tmp = start_atomic_write(tmp_path / "out" / "notes.txt")  # not an output of this render
    other.send_signal(signal.SIGKILL)
    other.wait()
    live, live_tmp = start_atomic_write(imageio.frame_path(str(out), 2))  # another process still writing
    try:
        assert os.path.exists(killed_tmp)
        report = g.render("Write1", frames="1-4")
        assert report.stale_temps == [killed_tmp] and not os.path.exists(killed_tmp)
        assert report.written == [("Write1", 3)]
        assert os.path.exists(live_tmp) and os.path.exists(other_tmp)
    finally:
        live.kill()
        live.wait()
    assert g.render("Write1", frames="1-4").stale_temps == [live_tmp]
    assert sorted(os.listdir(tmp_path / "out")) == [os.path.basename(other_tmp)] + \
        [f"comp.{f:04d}.exr" for f in range(1, 5)]


def test_a_long_range_names_its_outputs_only_where_temporaries_lie(tmp_path, monkeypatch):
    """The clean-up of killed writers' temporaries names every output of the range only when the output
    folder holds a temporary: a render of 10^7 frames starts at once."""
    import importlib

    render_module = importlib.import_module("doublure.engine.render")   # the package's `render` is the function

    out = tmp_path / "out" / "comp.####.exr"
    g, _, write = exr_graph(tmp_path, file=str(out))
    g.render("Write1", frames="1-2")
    asked: list[int] = []
    real = write.outputs
    monkeypatch.setattr(write, "outputs", lambda frames: asked.append(len(frames)) or real(frames))
    assert render_module.clear_killed_temporaries([write], range(1, 10**7 + 1)) == []
    assert asked == [1]                                       # the first frame's outputs, to find the folder
    killed, killed_tmp = start_atomic_write(imageio.frame_path(str(out), 7))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert render_module.clear_killed_temporaries([write], range(1, 10**4 + 1)) == [killed_tmp]
    assert asked[-1] == 10**4


def test_failed_render_leaves_no_partial_output(tmp_path):
    g, read, write = exr_graph(tmp_path, file=str(tmp_path / "out" / "comp.####.exr"))
    os.unlink(tmp_path / "in" / "plate.0003.exr")
    with pytest.raises(MediaError, match=r"missing frame 3"):
        g.render("Write1", frames="1-4")
    assert sorted(os.listdir(tmp_path / "out")) == ["comp.0001.exr", "comp.0002.exr"]
    write["file"] = str(tmp_path / "movie" / "comp.mov")
    write["codec"] = "prores_422hq"
    with pytest.raises(MediaError, match=r"missing frame 3"):
        g.render("Write1", frames="1-4")
    assert not (tmp_path / "movie").exists() or os.listdir(tmp_path / "movie") == []


@pytest.mark.parametrize("name,codec", [("comp.mp4", "h264"), ("comp.mov", "prores_4444")])
def test_write_video_with_provenance(tmp_path, name, codec):
    g, _, write = exr_graph(tmp_path, file=str(tmp_path / name), codec=codec)
    assert g.render("Write1", frames="1-4").ok
    with video.VideoReader(tmp_path / name) as reader:
        assert (reader.frame_count, reader.width, reader.height, reader.fps) == (4, 16, 12, 25)
        assert reader.metadata["doublure/provenance"] == PROVENANCE
        assert reader.metadata["doublure/graph"] == "sh010"
        srgb = colour.convert(np.full((1, 1, 3), 0.3, np.float32), "linear", "srgb")[0, 0, 0]
        assert reader.read(2)[6, 8, 1] == pytest.approx(srgb, abs=0.02)


@pytest.mark.parametrize("preset,cabac", [("medium", b"cabac=1"), ("ultrafast", b"cabac=0")])
def test_write_h264_preset_reaches_the_encoder(tmp_path, preset, cabac):
    # x264 records its settings in the stream; ultrafast is the preset that turns CABAC off
    g, _, write = exr_graph(tmp_path, file=str(tmp_path / "comp.mp4"), preset=preset)
    assert g.render("Write1", frames="1-4").ok
    assert cabac in (tmp_path / "comp.mp4").read_bytes()


def test_write_refuses_bad_settings(tmp_path):
    g, _, write = exr_graph(tmp_path, file=str(tmp_path / "single.exr"))
    with pytest.raises(DoublureError, match=r"Write1: .*single\.exr has no frame number"):
        g.render("Write1", frames="1-2")
    write["file"] = str(tmp_path / "c.####.png")
    write["file_type"] = "exr"
    with pytest.raises(DoublureError, match=r"Write1: file_type is exr but .*\.png"):
        g.render("Write1", frames="1")
    write["file_type"] = "auto"
    write["datatype"] = "half"
    with pytest.raises(DoublureError, match=r"Write1: png cannot store half"):
        g.render("Write1", frames="1")
    assert os.listdir(tmp_path) == ["in"]


def two_writes(tmp_path):
    """The plate into an EXR sequence (Write1) and an H.264 movie (Write2), as the demo renders."""
    g, read, exr = exr_graph(tmp_path, file=str(tmp_path / "out" / "comp.####.exr"))
    movie = g.create("Write", file=str(tmp_path / "out" / "comp.mp4"), preset="ultrafast")
    movie.set_input(0, read)
    return g


@pytest.mark.parametrize("frame_workers", [1, 3])
def test_each_write_runs_on_a_writer_thread_of_its_own_in_frame_order(tmp_path, monkeypatch, frame_workers):
    g = two_writes(tmp_path)
    files, encoded = [], []
    write_image, encode = imageio.write_image, video.VideoWriter.write

    def recording_write(path, *args, **kwargs):
        files.append((os.path.basename(path), threading.current_thread().name))
        return write_image(path, *args, **kwargs)

    def recording_encode(writer, pixels):
        encoded.append(threading.current_thread().name)
        return encode(writer, pixels)

    monkeypatch.setattr(imageio, "write_image", recording_write)
    monkeypatch.setattr(video.VideoWriter, "write", recording_encode)
    progress = []
    report = g.render(None, "1-4", progress=lambda done, total, frame: progress.append((done, total, frame)),
                      frame_workers=frame_workers)
    assert report.ok and report.written == [(w, f) for f in range(1, 5) for w in ("Write1", "Write2")]
    assert progress == [(f, 4, f) for f in range(1, 5)]
    assert [name for name, _ in files] == [f"comp.{f:04d}.exr" for f in range(1, 5)]
    assert {thread for _, thread in files} == {"doublure-writer-Write1_0"}
    assert set(encoded) == {"doublure-writer-Write2_0"} and len(encoded) == 4
    with video.VideoReader(tmp_path / "out" / "comp.mp4") as reader:  # frames in order: 0.1, 0.2, ...
        greys = [reader.read(i)[6, 8, 1] for i in range(4)]
    assert greys == sorted(greys) and greys[0] < greys[-1]


@pytest.mark.parametrize("frame_workers", [1, 3])
def test_writer_errors_name_write_file_and_frame(tmp_path, frame_workers):
    g = two_writes(tmp_path)
    (tmp_path / "out" / "comp.0003.exr").mkdir(parents=True)  # frame 3 cannot be renamed into place
    with pytest.raises(MediaError, match=r"Write1: frame 3: cannot write .*comp\.0003\.exr"):
        g.render(None, "1-4", frame_workers=frame_workers)
    assert not (tmp_path / "out" / "comp.mp4").exists()  # the movie of a failed render is dropped
    assert {f"comp.{f:04d}.exr" for f in (1, 2)} <= set(os.listdir(tmp_path / "out"))
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".")]  # no temporaries
    report = g.render(None, "1-4", halt_on_error=False, frame_workers=frame_workers)
    assert [(w, f) for w, f, _ in report.failures] == [("Write1", 3)]
    assert "comp.0003.exr" in report.failures[0][2]
    assert ("Write1", 4) in report.written + report.skipped and ("Write2", 4) in report.written


@pytest.mark.parametrize("frame_workers", [1, 3])
def test_a_frame_that_fails_to_compute_is_reported_in_frame_order(tmp_path, frame_workers):
    """Frame 3 of the plate is missing: with frames computing side by side, frame 4 may be done before it,
    yet the render halts on frame 3 with frames 1-2 written, or (not halting) reports frame 3 alone."""
    g = engine.Graph(name="sh010", first=1, last=5)
    read = g.create("Read", file=write_plate(tmp_path / "in", frames=(1, 2, 4, 5)), first=1, last=5)
    exr = g.create("Write", file=str(tmp_path / "out" / "comp.####.exr"))
    exr.set_input(0, read)
    with pytest.raises(MediaError, match=r"Read1: .*plate\.0003\.exr"):
        g.render(None, "1-5", frame_workers=frame_workers)
    assert sorted(os.listdir(tmp_path / "out")) == ["comp.0001.exr", "comp.0002.exr"]
    report = g.render(None, "1-5", halt_on_error=False, frame_workers=frame_workers)
    assert [(w, f) for w, f, _ in report.failures] == [("Write1", 3)] and "plate.0003.exr" in report.failures[0][2]
    assert sorted(report.written + report.skipped) == [("Write1", f) for f in (1, 2, 4, 5)]


def test_frame_workers_must_be_positive(tmp_path):
    g = two_writes(tmp_path)
    with pytest.raises(DoublureError, match="frame_workers must be 1 or more, got 0"):
        g.render(None, "1-4", frame_workers=0)


@pytest.mark.parametrize("frame_workers", [1, 3])
def test_cancelled_render_finishes_handed_over_frames_and_drops_the_movie(tmp_path, frame_workers):
    g = two_writes(tmp_path)
    cancel = engine.CancelToken()

    def cancel_after_two(done, total, frame):
        if done == 2:
            cancel.cancel()

    with pytest.raises(engine.Cancelled):
        g.render(None, "1-4", cancel=cancel, progress=cancel_after_two, frame_workers=frame_workers)
    names = os.listdir(tmp_path / "out")
    assert "comp.mp4" not in names and not [n for n in names if n.startswith(".")]
    for name in names:  # every frame file there is complete
        assert imageio.is_complete_image(tmp_path / "out" / name)
    assert {"comp.0001.exr", "comp.0002.exr"} <= set(names)


def test_cli_render_with_frames_computing_side_by_side(tmp_path, capsys):
    """`doublure render --frame-workers 3` writes every frame, the same pixels as one frame at a time."""
    from doublure.app import cli
    from doublure.engine.project import save_graph

    g = two_writes(tmp_path)
    project = tmp_path / "shot.dbl"
    save_graph(g, str(project))
    assert cli.main(["render", str(project), "-X", "Write1", "-F", "1-4"]) == 0
    one_at_a_time = {f: imageio.read_image(tmp_path / "out" / f"comp.{f:04d}.exr").pixels for f in range(1, 5)}
    for f in range(1, 5):
        os.remove(tmp_path / "out" / f"comp.{f:04d}.exr")
    assert cli.main(["render", str(project), "-X", "Write1", "-F", "1-4", "--frame-workers", "3"]) == 0
    for f in range(1, 5):
        np.testing.assert_array_equal(imageio.read_image(tmp_path / "out" / f"comp.{f:04d}.exr").pixels,
                                      one_at_a_time[f])
    assert "rendered 4 frame(s)" in capsys.readouterr().err
    assert cli.main(["render", str(project), "--frame-workers", "0"]) == 1
    assert "frame_workers must be 1 or more, got 0" in capsys.readouterr().err
