"""Evaluation and the cache, in Gaffer's style: hashes move with every input, pass-through nodes share cache
entries, and counting computes proves the cache works."""
import threading
import time

import pytest
import torch

import engine_nodes
from doublure import engine
from doublure.engine import Cancelled, CancelToken, FrameCache
from doublure.engine.knobs import (Bool, Color, Data, Enum, File, Float, FrameRange, Int, String, Strokes)


def nudged(spec, value):
    """A valid value different from ``value`` for any knob kind."""
    if isinstance(spec, Bool):
        return not value
    if isinstance(spec, Enum):
        return next(c for c in spec.choices if c != value)
    if isinstance(spec, Color):
        lo = spec.min if spec.min is not None else -1e9
        hi = spec.max if spec.max is not None else 1e9
        return tuple(min(hi, c + 0.125) if c + 0.125 <= hi else max(lo, c - 0.125) for c in value)
    if isinstance(spec, (Float, Int)):
        step = 1 if isinstance(spec, Int) else 0.125
        if spec.max is None or value + step <= spec.max:
            return value + step
        return value - step
    if isinstance(spec, FrameRange):
        return "3-4" if value != "3-4" else "5-6"
    if isinstance(spec, File):
        return "nudged/other.0001.exr"
    if isinstance(spec, String):
        return value + "x"
    if isinstance(spec, Strokes):
        return value + [{"track_id": 0, "points": [[0.5, 0.5]], "radius": 0.05}]
    if isinstance(spec, Data):  # the first value the knob's check accepts (a stored analysis has a shape)
        for candidate in ({"nudged": 1}, {"schema": "nudged/1"},
                          {"file": "nudged.npz", "key": "nudged", "first": 1, "last": 2},
                          {"file": "nudged.safetensors", "strokes_key": "n", "plate_key": "n", "frames": [1]}):
            try:
                return spec.validate(candidate)
            except ValueError:
                continue
    raise AssertionError(f"no nudge for {spec!r}")


def _source_for(g, port_type):
    c = g.create("TestConstant")
    return c if port_type == "Image" else g.create("TestMaskFromImage", inputs=[c])


def every_node_type():
    import doublure.nodes  # noqa: F401  (the library registers itself)

    return sorted(engine.node_types())


@pytest.mark.parametrize("type_name", every_node_type())
def test_nudging_any_knob_or_input_changes_the_hash(type_name):
    g = engine.Graph()
    node = g.create(type_name)
    for i, port in enumerate(node.inputs):
        g.connect(_source_for(g, port.type), node, i)
    ctx = g.context(1)
    base = g.hash_of(node, ctx)
    for name, knob in node.knobs.items():
        if name == "disable" or (isinstance(knob.spec, Enum) and len(knob.spec.choices) == 1):
            continue  # a one-choice enum holds one value: there is nothing to nudge
        old = knob.value_at(1)
        node[name] = nudged(knob.spec, old)
        assert g.hash_of(node, ctx) != base, f"{type_name}.{name} does not reach the hash"
        g.undo()
        assert g.hash_of(node, ctx) == base, f"{type_name}.{name}: undo does not restore the hash"
    for i, port in enumerate(node.inputs):
        src = node.input(i)
        upstream = src if port.type == "Image" else src.input(0)
        upstream["width"] = 65
        assert g.hash_of(node, ctx) != base, f"{type_name}: input {port.name} does not reach the hash"
        g.undo()


def test_identical_subgraphs_and_undo_share_cache_entries():
    g = engine.Graph()
    a = g.create("TestGain", gain=2.0, inputs=[g.create("TestConstant")])
    b = g.create("TestGain", gain=2.0, inputs=[g.create("TestConstant")])
    g.evaluate(a, 1)
    computes = g.cache.stats.computes
    assert computes == 2
    g.evaluate(b, 1)
    assert g.cache.stats.computes == computes  # the twin sub-graph hit the same entries
    a["gain"] = 3.0
    g.evaluate(a, 1)
    assert g.cache.stats.computes == computes + 1
    g.undo()
    out = g.evaluate(a, 1)
    assert g.cache.stats.computes == computes + 1
    assert torch.allclose(out.tensor[:, 0, 0].cpu(), torch.tensor([0.2, 0.4, 0.6]))


def test_disabled_and_identity_nodes_share_their_input_entry():
    g = engine.Graph()
    c = g.create("TestConstant")
    gain = g.create("TestGain", gain=5.0, inputs=[c])
    ctx = g.context(1)
    gain["disable"] = True
    assert g.hash_of(gain, ctx) == g.hash_of(c, ctx)
    g.evaluate(c, 1)
    computes = g.cache.stats.computes
    assert g.evaluate(gain, 1).tensor[0, 0, 0].item() == pytest.approx(0.1)
    assert g.cache.stats.computes == computes
    gain["disable"] = False
    gain["mix"] = 0.0
    assert g.hash_of(gain, ctx) == g.hash_of(c, ctx)


def test_frame_is_hashed_only_where_it_is_read():
    g = engine.Graph()
    still = g.create("TestGain", inputs=[g.create("TestConstant")])
    ramp = g.create("TestGain", inputs=[g.create("TestFrameRamp")])
    assert g.hash_of(still, g.context(1)) == g.hash_of(still, g.context(2))
    assert g.hash_of(ramp, g.context(1)) != g.hash_of(ramp, g.context(2))
    assert g.evaluate(ramp, 7).tensor[0, 0, 0].item() == 7.0


def test_temporal_node_hashes_and_reads_its_window():
    g = engine.Graph()
    mean = g.create("TestTemporalMean", window=1, inputs=[g.create("TestFrameRamp")])
    assert g.evaluate(mean, 5).tensor[0, 0, 0].item() == pytest.approx(5.0)
    # Frames 4 and 6 are now cached: the next frame computes only the new frame 7 and the mean.
    computes = g.cache.stats.computes
    g.evaluate(mean, 6)
    assert g.cache.stats.computes == computes + 2


def test_animated_knob_changes_the_hash_per_frame():
    g = engine.Graph()
    gain = g.create("TestGain", inputs=[g.create("TestConstant")])
    g.set_key(gain, "gain", 1, 1.0)
    g.set_key(gain, "gain", 10, 2.0)
    assert g.hash_of(gain, g.context(1)) != g.hash_of(gain, g.context(5))
    assert g.hash_of(gain, g.context(10)) == g.hash_of(gain, g.context(20))


def test_concurrent_requests_for_one_hash_compute_once():
    g = engine.Graph()
    slow = g.create("TestSlow", seconds=0.3, inputs=[g.create("TestConstant")])
    engine_nodes.TestSlow.runs = 0
    results = []
    threads = [threading.Thread(target=lambda: results.append(g.evaluate(slow, 1))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine_nodes.TestSlow.runs == 1
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_cancellation_stops_a_long_compute_and_a_waiter_takes_over():
    g = engine.Graph()
    slow = g.create("TestSlow", seconds=5.0, inputs=[g.create("TestConstant")])
    engine_nodes.TestSlow.runs = 0
    token = CancelToken()
    errors = []

    def stale_request():
        try:
            g.evaluate(slow, 1, cancel=token)
        except Cancelled as exc:
            errors.append(exc)

    t = threading.Thread(target=stale_request)
    start = time.perf_counter()
    t.start()
    time.sleep(0.1)
    token.cancel()
    t.join()
    assert errors and time.perf_counter() - start < 1.0
    assert not g.is_cached(slow, 1)
    # A second request whose peer gets cancelled computes the frame itself.
    slow["seconds"] = 0.3
    first, second = CancelToken(), CancelToken()
    out = []
    t1 = threading.Thread(target=lambda: pytest.raises(Cancelled, g.evaluate, slow, 1, cancel=first))
    t1.start()
    time.sleep(0.05)
    t2 = threading.Thread(target=lambda: out.append(g.evaluate(slow, 1, cancel=second)))
    t2.start()
    time.sleep(0.05)
    first.cancel()
    t1.join()
    t2.join()
    assert len(out) == 1 and out[0].tensor.shape == (3, 32, 64)
    assert g.is_cached(slow, 1)


def test_cache_budgets_are_honoured_lru_by_bytes():
    image_bytes = 3 * 32 * 64 * 4
    cache = FrameCache(device_budget=0, host_budget=3 * image_bytes)
    g = engine.Graph(cache=cache)
    ramp = g.create("TestFrameRamp", size=1)
    gain = g.create("TestGain", gain=2.0, inputs=[g.create("TestConstant")])
    for frame in range(1, 6):
        g.set_key(gain, "gain", frame, float(frame))
    for frame in range(1, 6):
        g.evaluate(gain, frame)
        assert cache.host_bytes <= cache.host_budget
    # Oldest frames went first; the newest are still there.
    assert g.is_cached(gain, 5) and not g.is_cached(gain, 1)
    assert cache.stats.evictions >= 2
    cache.set_budgets(host_budget=0)
    assert len(cache) == 0 and cache.host_bytes == 0
    assert ramp in g.nodes


def test_the_device_tier_defaults_to_a_quarter_of_the_gpu(monkeypatch):
    from doublure.engine import cache as cache_mod

    class Properties:
        total_memory = 140 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties)
    assert cache_mod.default_device_budget(torch.device("cuda", 0)) == 35 * 2**30
    assert cache_mod.default_device_budget(torch.device("cpu")) == 2 * 2**30
    monkeypatch.setenv("DOUBLURE_PROCESSES_PER_GPU", "4")   # farm workers sharing the GPU share the quarter
    assert cache_mod.default_device_budget(torch.device("cuda", 0)) == 35 * 2**30 // 4
    monkeypatch.setenv("DOUBLURE_CACHE_DEVICE_MB", "64")
    assert FrameCache().device_budget == 64 * 2**20


def test_upload_puts_host_tensors_on_the_device_unchanged():
    from doublure.engine.device import upload

    host = torch.arange(12, dtype=torch.float64).view(3, 4) / 7
    device = engine.default_device()
    there = upload(host, device)
    assert there.device == device and torch.equal(there.cpu(), host)
    assert upload(host, "cpu") is host                  # on the host nothing is copied
    assert upload(host, "meta").device.type == "meta"


def test_device_tier_holds_device_images_and_demotes_to_host_when_over_budget():
    image_bytes = 3 * 32 * 32 * 4
    cache = FrameCache(device_budget=image_bytes, host_budget=10 * image_bytes)
    g = engine.Graph(cache=cache)
    gain = g.create("TestGain", inputs=[g.create("TestFrameRamp", size=32)])
    device = engine.default_device()
    for frame in (1, 2, 3):
        g.evaluate(gain, frame, device=device)
    if device.type == "cuda":
        assert cache.device_bytes <= image_bytes and cache.stats.demotions >= 1
        assert cache.host_bytes > 0
    else:  # without a GPU everything lives in host RAM and the device tier stays empty
        assert cache.device_bytes == 0 and cache.host_bytes == 6 * image_bytes
    # A demoted entry comes back on the request's device without recomputing, and read on the host it holds
    # the same pixels (on a GPU: the copy to the host has finished before it is read).
    computes = cache.stats.computes
    on_device = g.evaluate(gain, 1, device=device)
    assert on_device.device == device
    assert cache.stats.computes == computes
    for frame in (1, 2, 3):
        on_host = g.evaluate(gain, frame, device=torch.device("cpu")).tensor
        assert on_host.device.type == "cpu"
        torch.testing.assert_close(on_host, g.evaluate(gain, frame, device=device).tensor.cpu(), rtol=0, atol=0)
    assert cache.stats.computes == computes


def test_the_default_cuda_device_carries_its_index(monkeypatch):
    """torch.device("cuda") != torch.device("cuda:0"), and tensors report the latter: an index-less default
    would never match the device of the images already on it."""
    from doublure.engine import device as engine_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    engine_device._resolve.cache_clear()
    try:
        assert engine_device._resolve(None) == torch.device("cuda", 0)
        assert engine_device._resolve("cuda") == torch.device("cuda", 0)
        assert engine_device._resolve("cuda:1") == torch.device("cuda", 1)
        assert engine_device._resolve("cpu") == torch.device("cpu")
    finally:
        engine_device._resolve.cache_clear()


def test_per_node_timings_are_recorded():
    g = engine.Graph()
    slow = g.create("TestSlow", seconds=0.05, inputs=[g.create("TestConstant")])
    g.evaluate(slow, 1)
    assert g.timings["TestSlow1"].computes == 1
    assert 0.04 < g.timings["TestSlow1"].seconds < 1.0
    assert g.timings["TestConstant1"].seconds < g.timings["TestSlow1"].seconds


def test_a_nodes_timing_leaves_out_its_inputs_computes():
    g = engine.Graph()
    below = g.create("TestSlow", seconds=0.12, inputs=[g.create("TestConstant")])
    above = g.create("TestSlow", seconds=0.03, inputs=[below])
    top = g.create("TestGain", inputs=[above])
    g.evaluate(top, 1)
    assert 0.11 < g.timings[below.name].seconds < 0.5
    assert 0.02 < g.timings[above.name].seconds < 0.1  # not its input's 0.12 s
    assert g.timings[top.name].seconds < 0.02


def test_timings_are_added_once_per_compute_when_the_pull_ends_even_a_failed_one():
    """The computes a pull times are added to ``Graph.timings`` when its outermost call ends: a chain's nodes
    once each, and those computed before a node failed too."""
    class Fails(engine.Node):
        type_name = "TestFailsAfterPulling"

        def compute(self, ctx, inputs):
            inputs.get(0)
            raise engine.DoublureError("no good")

    if Fails.type_name not in engine.node_types():
        engine.register_node(Fails)
    g = engine.Graph()
    node = g.create("TestFrameRamp")
    for _ in range(3):
        node = g.create("TestInPlaceGain", inputs=[node])
    g.evaluate(node, 1)
    assert {name: t.computes for name, t in g.timings.items()} == {
        "TestFrameRamp1": 1, "TestInPlaceGain1": 1, "TestInPlaceGain2": 1, "TestInPlaceGain3": 1}
    with pytest.raises(engine.DoublureError, match="no good"):
        g.evaluate(g.create("TestFailsAfterPulling", inputs=[node]), 2)
    assert g.timings["TestInPlaceGain3"].computes == g.timings["TestFrameRamp1"].computes == 2
    assert "TestFailsAfterPulling1" not in g.timings  # its compute did not end
    assert all(t.seconds >= 0 for t in g.timings.values())


def test_missing_required_input_is_a_clear_error():
    g = engine.Graph()
    gain = g.create("TestGain")
    with pytest.raises(engine.DoublureError, match="TestGain1: input 'input' is not connected"):
        g.evaluate(gain, 1)


def test_reload_sees_a_changed_file(tmp_path):
    from doublure.engine.hashing import file_identity

    path = tmp_path / "source.txt"
    path.write_text("one")

    class FileStamp(engine.Node):
        type_name = "TestFileStamp"
        inputs = ()

        def hash(self, ctx, h):
            super().hash(ctx, h)
            h.update(file_identity(path))

        def compute(self, ctx, inputs):
            return engine.Image(torch.full((3, 1, 1), float(len(path.read_text()))))

    if "TestFileStamp" not in engine.node_types():
        engine.register_node(FileStamp)
    g = engine.Graph()
    node = g.create("TestFileStamp")
    assert g.evaluate(node, 1).tensor[0, 0, 0].item() == 3.0
    path.write_text("three")
    g.reload()
    assert g.evaluate(node, 1).tensor[0, 0, 0].item() == 5.0


def test_the_hasher_keeps_types_apart_and_hashes_a_subclass_as_its_type():
    """Strings and floats take a short way by exact type: a subclass (numpy's float64, a str enum) takes the
    general one, and both give the same digest; 1, 1.0, "1", True and None stay apart."""
    import enum

    import numpy as np

    from doublure.engine.hashing import Hasher

    class Name(str, enum.Enum):
        A = "a"

    def digest(*values):
        h = Hasher()
        for value in values:
            h.update(value)
        return h.hexdigest()

    assert digest(np.float64(0.5)) == digest(0.5)
    assert digest(Name.A) == digest("a")
    assert len({digest(v) for v in (1, 1.0, "1", True, None, b"1", [1], (1.0,))}) == 8
    assert digest([1, "a"]) == digest((1, "a"))  # a knob's list value as saved in a project hashes as its tuple
    assert digest("ab", "c") != digest("a", "bc")  # strings carry their length
