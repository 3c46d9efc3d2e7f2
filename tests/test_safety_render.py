"""Issue 26, renders: a resumed render keeps only frames of the same graph, outputs are readable by the studio
(umask), and writes go through symbolic links."""
import os
import stat

import pytest

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.app import cli
from doublure.engine import imageio
from doublure.engine.errors import DoublureError
from doublure.engine.atomic import atomic_path, current_umask, write_text_atomic
from doublure.engine.project import save_graph
from doublure.farm.movies import is_complete_movie

from test_read_write import exr_graph


def reformat_shot(tmp_path, scale=0.5, out_name="comp.####.exr"):
    """Read -> Reformat(scale) -> Write, saved as a project: (graph, project path, output pattern)."""
    g, read, write = exr_graph(tmp_path, file=str(tmp_path / "out" / out_name))
    reformat = g.create("Reformat", type="scale", scale=scale)
    reformat.set_input(0, read)
    write.set_input(0, reformat)
    project = tmp_path / "shot.dbl"
    save_graph(g, str(project))
    return g, str(project), str(tmp_path / "out" / out_name)


def test_a_re_render_after_an_edit_renders_the_stale_frames_again_and_says_so(tmp_path, capsys):
    g, project, out = reformat_shot(tmp_path)
    assert cli.main(["render", project, "-X", "Write1", "-F", "1-3"]) == 0
    assert imageio.read_image(imageio.frame_path(out, 1)).pixels.shape[:2] == (6, 8)
    capsys.readouterr()
    assert cli.main(["render", project, "-X", "Write1", "-F", "1-3"]) == 0  # the same graph: kept
    assert "rendered 0 frame(s), skipped 3 already complete" in capsys.readouterr().err

    g["Reformat1"]["scale"] = 1.0
    g.save(project)
    assert cli.main(["render", project, "-X", "Write1", "-F", "1-4"]) == 0
    err = capsys.readouterr().err
    assert "3 existing frame(s) came from another version of the graph: rendered again" in err
    assert "rendered 4 frame(s), skipped 0 already complete" in err
    for frame in range(1, 5):
        assert imageio.read_image(imageio.frame_path(out, frame)).pixels.shape[:2] == (12, 16)

    report = g.render("Write1", frames="1-4")  # now all of this version
    assert report.written == [] and report.outdated == [] and len(report.skipped) == 4


def test_the_frame_hash_follows_what_reaches_the_file(tmp_path):
    g, _, out = reformat_shot(tmp_path)
    g.render("Write1", frames="1-2")
    header = imageio.read_image(imageio.frame_path(out, 1)).metadata
    write = g["Write1"]
    assert header["doublure/graph_hash"] == write.frame_hash(g.context(1))
    assert write.frame_hash(g.context(1)) != write.frame_hash(g.context(2))      # the input differs by frame
    assert write.frame_hash(g.context(1)) != write.frame_hash(g.context(1, proxy=0.5))
    before = write.frame_hash(g.context(1))
    write["datatype"] = "float"
    assert write.frame_hash(g.context(1)) != before
    write["datatype"] = "auto"
    write["skip_existing"] = False   # does not change the file's pixels
    assert write.frame_hash(g.context(1)) == before
    report = g.render("Write1", frames="1-2")
    assert len(report.written) == 2 and report.outdated == []  # skip_existing off: written, not "outdated"


def test_a_complete_frame_without_a_graph_hash_is_rendered_again(tmp_path):
    g, _, out = reformat_shot(tmp_path)
    pixels = imageio.read_image(tmp_path / "in" / "plate.0001.exr").pixels
    imageio.write_image(imageio.frame_path(out, 1), pixels)  # another program's frame
    report = g.render("Write1", frames="1-2")
    assert report.outdated == [("Write1", 1)] and len(report.written) == 2


def test_a_farm_movie_part_of_another_graph_is_not_kept(tmp_path):
    g, _, _ = reformat_shot(tmp_path, out_name="comp.mov")
    write = g["Write1"]
    g.render("Write1", frames="1-4")
    movie = write.path("file")
    expected = write.movie_hash(g.context(1), [1, 2, 3, 4])
    assert is_complete_movie(movie, 4, expected) and is_complete_movie(movie, 4)
    g["Reformat1"]["scale"] = 1.0
    assert not is_complete_movie(movie, 4, write.movie_hash(g.context(1), [1, 2, 3, 4]))


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        g, project, out = reformat_shot(tmp_path)
        g.render("Write1", frames="1")
        write_text_atomic(tmp_path / "notes.txt", "x")
        with atomic_path(tmp_path / "raw.bin") as tmp, open(tmp, "wb") as f:
            f.write(b"x")
        for path in (project, imageio.frame_path(out, 1), tmp_path / "notes.txt", tmp_path / "raw.bin"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask, path
    finally:
        os.umask(old)


def test_an_atomic_write_through_a_symlink_replaces_the_file_it_points_at(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "shot.txt"
    target.write_text("old")
    link = tmp_path / "shot.txt"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "real")) == ["shot.txt"]


def test_a_render_removes_and_reports_what_killed_renders_left(tmp_path, capsys):
    g, project, out = reformat_shot(tmp_path)
    os.makedirs(os.path.dirname(out))
    # what a render killed while writing frame 2 leaves: its temporary, whose lock died with the process
    leftover = os.path.join(os.path.dirname(out), ".comp.0002.exr.k1ll3d_9.tmp.exr")
    with open(leftover, "wb") as f:
        f.write(b"half a frame")
    assert cli.main(["render", project, "-X", "Write1", "-F", "1-2"]) == 0
    assert "removed 1 temporary file(s) that killed renders left" in capsys.readouterr().err
    assert sorted(os.listdir(os.path.dirname(out))) == ["comp.0001.exr", "comp.0002.exr"]


def test_a_render_whose_frames_another_version_replaced_meanwhile_fails(tmp_path):
    """Two versions of a comp rendering to the same files at once: the one whose frames the other replaced
    does not report success over a mixed sequence."""
    g, project, out = reformat_shot(tmp_path)
    other = engine.load(project)
    other["Reformat1"]["scale"] = 1.0
    raced = []

    def other_render_writes_frame_1(done, total, frame):
        if frame == 2 and not raced:
            raced.append(other.render("Write1", frames="1"))

    with pytest.raises(DoublureError, match=r"Write1: 1 frame file\(s\) were replaced during this render by another "
                                            r"version of the graph .*comp.0001.exr"):
        g.render("Write1", frames="1-3", progress=other_render_writes_frame_1)
    assert raced[0].outdated == [("Write1", 1)]   # the other render said so too
    report = g.render("Write1", frames="1-3")      # run again alone: frame 1 back to this version
    assert report.written == [("Write1", 1)] and report.outdated == [("Write1", 1)]
