"""Every field read from a file is checked: fuzzed projects, stored analyses, track files, faceset indexes
and image headers end in one message naming the file and the field, never a traceback or a hang
(issue 26, item 5)."""
import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import engine_nodes  # noqa: F401  (registers the test node types)
import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.app import cli
from doublure.engine import DoublureError, ProjectError, imageio
from doublure.engine.node import node_types
from doublure.engine.project import graph_from_dict, graph_to_dict
from doublure.faces.trackfile import load_tracks, save_tracks
from doublure.models.data import read_index

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def every_node_project() -> dict:
    """One node of every library type in a chain, every knob written out (animatable ones keyed)."""
    g = engine.Graph()
    previous = None
    for name in sorted(node_types()):
        if name.startswith(("Test", "Bench")):
            continue
        ports = node_types()[name].inputs
        feeds = previous is not None and ports and ports[0].type == previous.output_type
        previous = g.create(name, inputs=[previous] if feeds else [])
    data = graph_to_dict(g)
    for entry, node in zip(data["nodes"], g.nodes):
        entry["knobs"] = {name: knob.to_json() for name, knob in node.knobs.items()}
        animatable = [name for name, knob in node.knobs.items() if knob.spec.animatable]
        if animatable:
            value = entry["knobs"][animatable[0]]
            entry["knobs"][animatable[0]] = {"keys": [[1, value, "linear"], [10, value, "smooth"]]}
        if node.type_name == "Write":
            entry["knobs"]["file"] = "render/out.####.exr"
        if node.type_name == "Read":
            entry["knobs"]["file"] = "plates/plate.####.exr"
    return data


BASES = [
    json.loads((ROOT / "resources" / "demo" / "demo.dbl").read_text()),
    json.loads((FIXTURES / "project_v0.dbl").read_text()),
    every_node_project(),
]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "ACEScg", "linear", "smooth", "keys", "class", "Read", "../x.exr", "-1e999"]))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(
        ["keys", "class", "type", "name", "uuid", "file", "first", "last", "key", "a"]), children, max_size=4)),
    max_leaves=8)


def field_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from field_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from field_paths(item, path + (index,))


@st.composite
def mutated_projects(draw):
    """A real project with one to three fields replaced by arbitrary JSON, or removed."""
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(field_paths(data))[1:]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_value)
    return data


def info(path) -> tuple[int, str]:
    """``doublure info`` in this process: (exit code, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["info", str(path)])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_projects())
def test_fuzzed_projects_load_or_say_what_is_wrong(fuzz_dir, data):
    path = fuzz_dir / "shot.dbl"
    path.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes and reads them
    try:
        graph = graph_from_dict(copy.deepcopy(data), str(path))
    except ProjectError as exc:
        assert str(path) in str(exc) and "Traceback" not in str(exc)
        assert info(path)[0] == 1
        return
    for node in graph.nodes:  # a loaded project hashes (what a render does first) or says why not
        try:
            graph.hash_of(node, graph.context(graph.settings["first"]))
        except DoublureError:
            pass
    code, printed = info(path)
    assert code in (0, 1) and "Traceback" not in printed


def node_entry(data, type_name):
    return next(e for e in data["nodes"] if e["type"] == type_name)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(nodes=[1, 2]), r"nodes: expected an object, got \[1, 2\]"),
    (lambda d: d["nodes"]["Grade"].pop("class"), r"nodes.Grade: no \"class\""),
    (lambda d: d["nodes"]["Grade"].update(pos="x"), r"node Grade.position: expected a list of 2, got 'x'"),
    (lambda d: d["nodes"]["Grade"].update(inputs=3), r"nodes.Grade.inputs: expected a list, got 3"),
    (lambda d: d["nodes"]["Grade"].update(inputs=[{"a": 1}]), r"Grade input 0 names a node that is not in"),
    (lambda d: d.update(fps=float("nan")), r"fps: bad value nan"),
    (lambda d: d.update(fps=float("inf")), r"fps: bad value inf"),
    (lambda d: d.update(last_frame=10**12), r"last: frame 1000000000000 is beyond"),
    (lambda d: d["nodes"]["Grade"]["knobs"].update(gain={"keys": [[float("inf"), 1.0, "linear"]]}),
     r"Grade.gain keys\[0\]: expected a finite number, got inf"),
    (lambda d: d["nodes"]["Grade"]["knobs"].update(gain={"keys": [[1, 1.0]]}),
     r"Grade.gain keys\[0\]: expected a list of 3"),
    (lambda d: d["nodes"]["Grade"]["knobs"].update(gain={"keys": [[1, 1.0, "bouncy"]]}),
     r"expected one of linear, smooth, constant, got 'bouncy'"),
])
def test_the_issues_broken_projects_get_one_message(tmp_path, change, message):
    data = json.loads((FIXTURES / "project_v0.dbl").read_text())
    change(data)
    path = tmp_path / "shot.dbl"
    path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match=message) as caught:
        engine.load(str(path))
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize("analysis, message", [
    ([1, 2], r"analysis: expected an object, got \[1, 2\]"),
    ({"file": "x.npz", "key": "k", "first": 1}, r"analysis: no 'last'"),
    ({"file": "x.npz", "key": "k", "first": 5, "last": 1}, r"analysis: last: expected a whole number from 5"),
    ({"file": 3, "key": "k", "first": 1, "last": 2}, r"analysis: file: expected a string, got 3"),
])
def test_a_stored_face_analysis_is_checked(tmp_path, analysis, message):
    data = copy.deepcopy(BASES[0])
    node_entry(data, "FaceDetect")["knobs"]["analysis"] = analysis
    with pytest.raises(ProjectError, match=r"FaceDetect1.analysis: bad value .*" + message):
        graph_from_dict(data, str(tmp_path / "shot.dbl"))


def test_a_grain_analysis_of_the_wrong_shape_is_refused(tmp_path):
    data = copy.deepcopy(BASES[0])
    node_entry(data, "Grain")["knobs"]["analysis"] = {"schema": "doublure.grain/2", "log2_lum": [0.1, 0.2],
                                                      "std": [[0.1, 0.1, 0.1]], "spectrum": [[1.0]],
                                                      "correlation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    with pytest.raises(ProjectError, match=r"Grain1.analysis: .*std must have one row of 3 per log2_lum band"):
        graph_from_dict(data, str(tmp_path / "shot.dbl"))


def test_a_set_key_at_an_infinite_frame_is_refused():
    g = engine.Graph()
    gain = g.create("TestGain")
    with pytest.raises(engine.KnobError, match="a key at frame inf"):
        g.set_key(gain, "gain", math.inf, 2.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["black", "nearest"])
def test_a_read_over_a_hundred_million_frames_answers_at_once(tmp_path, policy):
    """A missing frame of a 10^8-frame range: black sizes itself, nearest finds its frame, from one
    listing of the folder (it used to test a file name per frame number: no exit in 90 s)."""
    plates = tmp_path / "plates"
    plates.mkdir()
    imageio.write_image(str(plates / "plate.0005.exr"), np.full((4, 6, 3), 0.5, np.float32), file_type="exr")
    g = engine.Graph(first=1, last=10**8)
    read = g.create("Read", file=str(plates / "plate.####.exr"), first=1, last=10**8, on_missing=policy)
    image = g.evaluate(read, 10**8 - 3)
    assert (image.width, image.height) == (6, 4)
    assert float(image.tensor.max()) == (0.0 if policy == "black" else 0.5)


def faces_for_track():
    from doublure.faces.face import Face

    landmarks = np.random.default_rng(0).uniform(10, 50, (478, 3)).astype(np.float32)
    return Face(track_id=0, box=(10.0, 10.0, 50.0, 50.0), landmarks=landmarks, iris=landmarks[:2],
                pose=(0.0, 0.0, 0.0), to_crop=np.eye(2, 3), from_crop=np.eye(2, 3), confidence=0.9)


def test_truncated_and_doctored_track_files_name_the_file(tmp_path):
    path = str(tmp_path / "FaceDetect1.npz")
    save_tracks(path, [1, 2], [[faces_for_track()], [faces_for_track()]], {"key": "k", "width": 64, "height": 64})
    meta, faces = load_tracks(path)
    assert sorted(faces) == [1, 2]
    whole = Path(path).read_bytes()
    Path(path).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DoublureError, match=f"{path}: cannot read track file"):
        load_tracks(path)
    arrays = {"frame": np.array([1]), "meta": np.array(json.dumps({"schema": "doublure.tracks/1", "width": 64}))}
    np.savez(path, **arrays)
    with pytest.raises(DoublureError, match=f"{path}: track file lacks the 'track_id' array"):
        load_tracks(path)
    save_tracks(path, [1], [[faces_for_track()]], {"key": "k", "width": float("nan"), "height": 64})
    with pytest.raises(DoublureError, match=r"meta.width: expected a finite number, got nan"):
        load_tracks(path)


def test_a_faceset_index_with_bad_fields_names_the_field(tmp_path):
    index = {"schema": "doublure.faceset/1", "size": 256, "face_type": "whole_face",
             "items": [{"file": "000001.png", "source": "a.mp4", "frame": 0, "landmarks": [[1.0, 2.0]] * 478,
                        "pose": [0, 0, 0], "blur": 10.0, "expression": {"mouth_open": 0.1}, "luma": 0.4}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert read_index(str(tmp_path))["size"] == 256
    for change, message in [
        (lambda i: i["items"][0].update(file="../../etc/passwd"), r"items\[0\].file: expected a file name"),
        (lambda i: i["items"][0].update(landmarks=[[1, 2]] * 10), r"items\[0\].landmarks: expected 478 points"),
        (lambda i: i["items"][0].update(pose="up"), r"items\[0\].pose: expected a list"),
        (lambda i: i.update(size=10**9), r"size: expected a whole number from 16 to 8192"),
        (lambda i: i["items"][0]["expression"].update(mouth_open=[1]), r"expression.mouth_open: expected a"),
    ]:
        broken = copy.deepcopy(index)
        change(broken)
        (tmp_path / "index.json").write_text(json.dumps(broken))
        with pytest.raises(DoublureError, match=message):
            read_index(str(tmp_path))


def test_an_exr_header_with_invalid_utf8_still_reads(tmp_path):
    path = tmp_path / "bad.exr"
    spec = oiio.ImageSpec(4, 4, 3, oiio.HALF)
    spec.attribute("comments", "MARKMARK")
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(np.zeros((4, 4, 3), np.float16))
    out.close()
    path.write_bytes(path.read_bytes().replace(b"MARKMARK", b"\xff\xfe\xfa\xc3(\xa0\xe2\x82"))
    image = imageio.read_image(str(path))
    assert image.pixels.shape == (4, 4, 3) and "comments" not in image.metadata


def test_the_command_line_on_a_broken_project_prints_one_message(tmp_path, capsys):
    data = json.loads((FIXTURES / "project_v0.dbl").read_text())
    data["nodes"] = [1, 2]
    path = tmp_path / "shot.dbl"
    path.write_text(json.dumps(data))
    expected = f"doublure: error: {path}: nodes: expected an object, got [1, 2]"
    for command in (["info", str(path)], ["render", str(path)]):
        assert cli.main(command) == 1
        assert capsys.readouterr().err.strip() == expected
    # and as a process: one line on stderr, exit status 1
    result = subprocess.run([sys.executable, "-m", "doublure.app.cli", "render", str(path)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert (result.returncode, result.stderr.strip()) == (1, expected)
