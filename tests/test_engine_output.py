"""The file-writing node contract (``engine.output.FileOutputNode``) and the frames a render publishes in flight
(``engine.in_flight.FramesInFlight``): what the renderer, ``doublure info`` and the farm ask a node that writes."""
import threading
from pathlib import Path

import pytest

import doublure.nodes  # noqa: F401  (registers Write)
import engine_nodes  # noqa: F401  (registers TestConstant)
from doublure import engine
from doublure.app import cli
from doublure.engine import FileOutputNode, FrameJob, Node, knobs as K, node_types, register_node
from doublure.engine.in_flight import COMPUTING, WRITING, FramesInFlight
from doublure.engine.render import executable_nodes


class MeanTextOutput(FileOutputNode):
    """Writes one text file per frame holding the input's mean; records what it saw in flight."""

    type_name = "TestTextOutput"
    knob_specs = (K.File("file", "", sequence=True, save=True),)
    seen: list = []

    def stage(self, ctx):
        in_flight = self.graph.test_in_flight

        def entry():
            return next((f for f in in_flight.snapshot() if f.frame == ctx.frame), None) if in_flight else None

        staged = entry()
        mean = float(self.graph.evaluate_node(self.input_nodes[0], ctx).tensor.mean())
        path = self.outputs([ctx.frame]).pop()

        def run():
            writing = entry()
            MeanTextOutput.seen.append((ctx.frame, staged, writing, threading.get_ident()))
            Path(path).write_text(f"{mean:.3f}")

        return FrameJob(run)


class ExecuteOnly(Node):
    """Has an ``execute`` method but is no FileOutputNode: a render must not guess it writes files."""

    type_name = "TestExecutes"

    def execute(self, ctx):
        raise AssertionError("executed")


for _cls in (MeanTextOutput, ExecuteOnly):
    if _cls.type_name not in node_types():
        register_node(_cls)


def _graph(tmp_path, in_flight=None):
    graph = engine.Graph(first=1, last=3)
    constant = graph.create("TestConstant")
    out = graph.create("TestTextOutput", file=str(tmp_path / "mean.####.txt"))
    out.set_input(0, constant)
    graph.create("TestExecutes")
    graph.test_in_flight = in_flight
    return graph, out


def test_a_file_output_node_renders_through_the_base_contract(tmp_path):
    MeanTextOutput.seen.clear()
    in_flight = FramesInFlight()
    graph, out = _graph(tmp_path, in_flight)
    report = engine.render(graph, None, "1-3", in_flight=in_flight)
    assert report.written == [("TestTextOutput1", f) for f in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"mean.000{f}.txt" for f in (1, 2, 3)]
    assert out.execute(graph.context(4)) is True and (tmp_path / "mean.0004.txt").exists()
    assert executable_nodes(graph) == [out]  # the node with only an `execute` method is not one
    with pytest.raises(engine.DoublureError, match="TestExecutes1 is a TestExecutes, not a node that writes"):
        executable_nodes(graph, "TestExecutes1")
    assert out.renders_as_one_file() is False
    assert out.describe([1, 2]) == str(tmp_path / "mean.0001.txt")


def test_a_render_publishes_its_frames_in_flight(tmp_path):
    """While a frame stages it is the oldest in flight, computing on the staging thread; while its file job runs
    it is writing on the writer thread; a finished render leaves nothing in flight."""
    MeanTextOutput.seen.clear()
    in_flight = FramesInFlight()
    graph, _ = _graph(tmp_path, in_flight)
    engine.render(graph, "TestTextOutput1", "1-3", in_flight=in_flight)
    assert [frame for frame, *_ in MeanTextOutput.seen] == [1, 2, 3]
    for frame, staged, writing, writer_thread in MeanTextOutput.seen:
        assert staged.stage == COMPUTING and staged.threads == (threading.get_ident(),)
        assert writing.stage == WRITING and writing.threads == (writer_thread,)
        assert writer_thread != threading.get_ident()
    assert in_flight.snapshot() == []


def test_info_describes_the_writes_through_the_base(tmp_path, capsys):
    graph, _ = _graph(tmp_path)
    graph.save(str(tmp_path / "shot.dbl"))
    assert cli.main(["info", str(tmp_path / "shot.dbl")]) == 0
    lines = capsys.readouterr().out.splitlines()
    writes = lines[lines.index("writes:") + 1:]
    assert writes == [f"  {'TestTextOutput1':<16} {tmp_path / 'mean.0001.txt'}"]


def test_a_movie_write_renders_as_one_file_a_sequence_does_not(tmp_path):
    graph = engine.Graph(first=1, last=3)
    movie = graph.create("Write", file=str(tmp_path / "out.mov"))
    typed = graph.create("Write", file=str(tmp_path / "out.bin"), file_type="mp4")
    frames = graph.create("Write", file=str(tmp_path / "out.####.exr"))
    assert movie.renders_as_one_file() and typed.renders_as_one_file() and not frames.renders_as_one_file()
    assert movie.outputs([1, 2, 3]) == {str(tmp_path / "out.mov")}
    assert frames.outputs([1, 2]) == {str(tmp_path / "out.0001.exr"), str(tmp_path / "out.0002.exr")}


def test_a_one_file_output_says_what_a_farm_needs_to_render_it_in_parts(tmp_path):
    """The farm renders a movie in parts through the base's interface, not Write's knobs: the one file, the
    version a part records, and a render redirected into a part (the joined file is signed once)."""
    graph = engine.Graph(first=1, last=3)
    movie = graph.create("Write", file=str(tmp_path / "out.mov"))
    assert movie.one_file() == str(tmp_path / "out.mov")
    ctx = graph.context(1)
    assert movie.version_of(ctx, [1, 2]) == movie.version_of(ctx, (1, 2)) != movie.version_of(ctx, [1, 2, 3])
    movie.render_into_part(str(tmp_path / ".out.mov.part1-2.mov"))
    assert movie.path("file") == str(tmp_path / ".out.mov.part1-2.mov") and not movie.sign_movies
    base = engine.FileOutputNode
    assert base.version_of(movie, ctx, [1]) is None   # the default: parts are not marked
    with pytest.raises(NotImplementedError):
        base.one_file(movie)
