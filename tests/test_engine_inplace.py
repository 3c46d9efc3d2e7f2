"""Nodes that take their input (``Inputs.take``): a chain works in place on frames made for it alone, keeps
only its end in the cache, and never writes into a frame anyone else can see (a cached frame, a frame shared
with another tensor, a memo or numpy, a frame another thread waits for)."""
import threading
import time

import numpy as np
import pytest
import torch

import engine_nodes
from doublure import engine
from doublure.engine import CancelToken, Image, Node, node_types, register_node
from doublure.engine.cache import Memo, _Flight
from doublure.engine.graph import MAX_NESTING, REMAKE_S
from doublure.engine.image import is_unshared


class ViewOfInput(Node):
    """The first two planes of its input, as a view of the input's tensor (no copy)."""

    type_name = "TestViewOfInput"

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        return Image(image.tensor[:2], channels=("R", "G"))


class Tagged(Node):
    """Its input's Image with one more metadata key: the same tensor object as the input's."""

    type_name = "TestTagged"

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        return image.replace(metadata={**image.metadata, "tagged": self.name})


_remembered = Memo(size=8)


class Remembered(Node):
    """A frame of the frame number that it also keeps in a Memo (as a decoder keeps what it decoded)."""

    type_name = "TestRemembered"
    inputs = ()

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        return Image(_remembered.put((self.name, ctx.frame), torch.full((3, 4, 4), float(ctx.frame))))


class FromNumpy(Node):
    """A frame whose memory is a numpy array the node keeps (``torch.from_numpy``)."""

    type_name = "TestFromNumpy"
    inputs = ()
    arrays: dict = {}

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        array = FromNumpy.arrays.setdefault(ctx.frame, np.full((3, 4, 4), float(ctx.frame), np.float32))
        return Image(torch.from_numpy(array))


class Gated(Node):
    """A frame of the frame number, computed only once ``gate`` is set (to hold a computation in flight)."""

    type_name = "TestGated"
    inputs = ()
    gate = threading.Event()

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        assert Gated.gate.wait(10)
        return Image(torch.full((3, 4, 4), float(ctx.frame)))


class AliasesInPlace(Node):
    """Doubles its input in place when allowed and hands on the same Image, keeping an alias of the frame it
    wrote (``alias``: a view, a detached tensor or its storage's Python object) in ``kept`` (a node that
    remembers a plane), or makes autograd track it."""

    type_name = "TestAliasesInPlace"
    knob_specs = (engine.knobs.Enum("alias", ("view", "detach", "storage", "requires_grad")),)
    kept: list = []

    def compute(self, ctx, inputs):
        image, writable = inputs.take(0)
        assert writable  # the frame the chain below made for it alone
        tensor = image.tensor.mul_(2.0)
        alias = self.value("alias", ctx.frame)
        if alias == "requires_grad":
            tensor.requires_grad_(True)
        else:
            kept = {"view": tensor[0], "detach": tensor.detach(), "storage": tensor.untyped_storage()}[alias]
            AliasesInPlace.kept.append(kept)
        return image.replace(tensor=tensor)


for _cls in (ViewOfInput, Tagged, Remembered, FromNumpy, Gated, AliasesInPlace):
    if _cls.type_name not in node_types():
        register_node(_cls)


@pytest.fixture(autouse=True)
def _fresh_record():
    engine_nodes.TestInPlaceGain.wrote_in_place.clear()
    yield


def chain(g, source, gains):
    node = source
    for gain in gains:
        node = g.create("TestInPlaceGain", gain=gain, inputs=[node])
    return node


def in_place(name=None):
    return [w for n, _, w in engine_nodes.TestInPlaceGain.wrote_in_place if name is None or n == name]


def test_a_chain_works_in_place_and_keeps_only_its_end():
    g = engine.Graph()
    source = g.create("TestFrameRamp", size=8)
    head = chain(g, source, [2.0, 3.0, 0.5, 4.0])
    out = g.evaluate(head, 5)
    assert torch.equal(out.tensor, torch.full((3, 8, 8), 5.0 * 2 * 3 * 0.5 * 4))
    assert in_place() == [True] * 4
    assert g.cache.stats.computes == 5 and len(g.cache) == 1  # each node once; the cache holds the end
    assert g.is_cached(head, 5) and not g.is_cached(head.input(0), 5) and not g.is_cached(source, 5)
    assert g.evaluate(head, 5) is out and g.cache.stats.computes == 5  # the end is a cache hit


def test_a_frame_handed_out_earlier_is_never_written():
    g = engine.Graph()
    source = g.create("TestFrameRamp", size=8)
    middle = chain(g, source, [2.0, 3.0])
    head = chain(g, middle, [10.0])
    viewed = g.evaluate(middle, 1)  # the user views the middle: its frame is cached and held by the viewer
    assert torch.equal(viewed.tensor, torch.full((3, 8, 8), 6.0))
    assert torch.equal(g.evaluate(head, 1).tensor, torch.full((3, 8, 8), 60.0))
    assert in_place(head.name) == [False]  # the middle's frame came from the cache: read-only
    assert torch.equal(viewed.tensor, torch.full((3, 8, 8), 6.0))
    del viewed  # nothing holds it now but the cache: still read-only, still cached
    assert torch.equal(g.evaluate(head, 2).tensor, torch.full((3, 8, 8), 120.0))  # another frame, warm cache
    g.cache.clear()
    computes = g.cache.stats.computes
    g.evaluate(middle, 3)
    engine_nodes.TestInPlaceGain.wrote_in_place.clear()
    g.evaluate(head, 3)
    assert in_place(head.name) == [False]
    assert torch.equal(g.evaluate(middle, 3).tensor, torch.full((3, 8, 8), 18.0))
    assert g.cache.stats.computes == computes + 3 + 1  # the middle's chain once, the head once


def test_a_frame_read_by_two_nodes_is_kept_and_not_written():
    g = engine.Graph()
    source = g.create("TestFrameRamp", size=8)
    left, right = chain(g, source, [2.0]), chain(g, source, [3.0])
    both = g.create("TestMasked", inputs=[left, g.create("TestMaskFromImage", inputs=[right])])
    g.evaluate(both, 1)
    assert in_place(left.name) == [False] and in_place(right.name) == [False]
    assert torch.equal(g.evaluate(source, 1).tensor, torch.full((3, 8, 8), 1.0))
    assert g.cache.stats.computes == 5  # the source once for both

    # a second reader connected later: the frame is kept from then on
    engine_nodes.TestInPlaceGain.wrote_in_place.clear()
    g2 = engine.Graph()
    source2 = g2.create("TestFrameRamp", size=8)
    gain = chain(g2, source2, [2.0])
    g2.evaluate(gain, 1)
    assert not g2.is_cached(source2, 1)
    g2.create("TestGain", inputs=[source2])
    g2.evaluate(gain, 2)
    assert g2.is_cached(source2, 2) and in_place(gain.name) == [True, False]


def test_a_pass_through_between_keeps_the_rule():
    g = engine.Graph()
    source = g.create("TestFrameRamp", size=8)
    skipped = g.create("TestGain", gain=9.0, mix=0.0, inputs=[source])  # passes its input through
    head = chain(g, skipped, [2.0])
    assert torch.equal(g.evaluate(head, 1).tensor, torch.full((3, 8, 8), 2.0))
    assert in_place() == [True]
    g.create("TestGain", inputs=[skipped])  # the pass-through now feeds two nodes: the source's frame is shared
    assert torch.equal(g.evaluate(head, 2).tensor, torch.full((3, 8, 8), 4.0))
    assert in_place() == [True, False] and g.is_cached(source, 2)


@pytest.mark.parametrize("sharing", ["TestViewOfInput", "TestTagged"])
def test_a_frame_sharing_a_cached_frames_memory_is_not_written(sharing):
    g = engine.Graph()
    source = g.create("TestFrameRamp", size=8)
    head = chain(g, g.create(sharing, inputs=[source]), [2.0])
    out = g.evaluate(head, 3)
    assert in_place() == [False]
    assert torch.equal(out.tensor, torch.full((out.tensor.shape[0], 8, 8), 6.0))
    assert torch.equal(g.evaluate(source, 3).tensor, torch.full((3, 8, 8), 3.0))  # the cached source as it was


@pytest.mark.parametrize("holder", ["TestRemembered", "TestFromNumpy"])
def test_a_frame_someone_else_keeps_is_not_written(holder):
    g = engine.Graph()
    source = g.create(holder)
    head = chain(g, source, [2.0])
    assert torch.equal(g.evaluate(head, 4).tensor, torch.full((3, 4, 4), 8.0))
    assert in_place() == [False]
    kept = _remembered.get((source.name, 4)) if holder == "TestRemembered" else FromNumpy.arrays[4]
    assert (torch.as_tensor(kept) == 4.0).all()


@pytest.mark.parametrize("alias", ["view", "detach", "storage", "requires_grad"])
def test_a_frame_a_node_of_the_chain_shares_after_writing_it_is_not_written_again(alias):
    """The chain's frame goes up as the same Image, checked again above each node (what cannot change is
    read once): a view or a detached tensor a node kept of it, or autograd, is still seen."""
    g = engine.Graph()
    AliasesInPlace.kept.clear()
    source = chain(g, g.create("TestFrameRamp", size=8), [3.0])
    head = chain(g, g.create("TestAliasesInPlace", alias=alias, inputs=[source]), [5.0])
    with torch.no_grad():
        out = g.evaluate(head, 1)
    assert in_place() == [True, False]
    assert torch.equal(out.tensor.detach(), torch.full((3, 8, 8), 30.0))
    if alias == "storage":  # a tensor over that memory can be made from it at any time
        assert (torch.empty(0).set_(AliasesInPlace.kept[0]) == 6.0).all()
    elif alias != "requires_grad":
        assert (AliasesInPlace.kept[0] == 6.0).all()  # not written by the gain above


def test_a_frame_whose_storage_someone_holds_is_not_unshared():
    """torch gives one Python object per storage: holding it adds no use of the storage, only a reference to
    that object, before the Image is first checked or after."""
    image = Image(torch.zeros(3, 4, 4))
    storage = image.tensor.untyped_storage()
    assert not is_unshared(image, image_refs=1)
    del storage
    assert is_unshared(image, image_refs=1)
    storage = image.tensor.untyped_storage()
    assert not is_unshared(image, image_refs=1)
    del storage
    image.tensor.untyped_storage()  # made and let go of: nobody holds it
    assert is_unshared(image, image_refs=1)


def test_a_frame_another_thread_waits_for_is_not_written():
    g = engine.Graph()
    source = g.create("TestGated")
    head = chain(g, source, [2.0])
    Gated.gate.clear()
    results = {}
    taker = threading.Thread(target=lambda: results.setdefault("head", g.evaluate(head, 7)))
    taker.start()
    digest = g.hash_of(source, g.context(7))
    while digest not in g.cache._flights:  # the taker computes the source's frame (for the head alone)
        pass
    reader = threading.Thread(target=lambda: results.setdefault("source", g.evaluate(source, 7)))
    reader.start()
    while g.cache._flights.get(digest) is not None and g.cache._flights[digest].waiters is None:
        pass  # the reader waits for that same computation
    Gated.gate.set()
    taker.join(10)
    reader.join(10)
    assert in_place() == [False]
    assert torch.equal(results["source"].tensor, torch.full((3, 4, 4), 7.0))
    assert torch.equal(results["head"].tensor, torch.full((3, 4, 4), 14.0))


class SlowRamp(Node):
    """A frame of the frame number made in ``seconds`` (a slow node whose frame its consumer may write over)."""

    type_name = "TestSlowRamp"
    inputs = ()
    knob_specs = (engine.knobs.Float("seconds", 0.0),)
    runs = 0

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        SlowRamp.runs += 1
        time.sleep(self.value("seconds", ctx.frame))
        return Image(torch.full((3, 8, 8), float(ctx.frame)))


if SlowRamp.type_name not in node_types():
    register_node(SlowRamp)


def test_a_frame_slow_to_make_again_is_kept_once_its_cost_is_known():
    g = engine.Graph()
    slow = g.create("TestSlowRamp", seconds=1.5 * REMAKE_S)
    head = chain(g, slow, [2.0])
    assert torch.equal(g.evaluate(head, 1).tensor, torch.full((3, 8, 8), 2.0))
    assert in_place() == [True] and not g.is_cached(slow, 1)  # not timed yet: taken, not kept
    assert torch.equal(g.evaluate(head, 2).tensor, torch.full((3, 8, 8), 4.0))
    assert in_place() == [True, False] and g.is_cached(slow, 2)  # known slow now: kept and read-only
    runs = SlowRamp.runs
    head["gain"] = 3.0
    assert torch.equal(g.evaluate(head, 2).tensor, torch.full((3, 8, 8), 6.0))
    assert SlowRamp.runs == runs  # a change below it does not make it again
    assert torch.equal(g.evaluate(slow, 2).tensor, torch.full((3, 8, 8), 2.0))


def test_a_frame_that_cannot_be_written_over_is_kept():
    g = engine.Graph()
    tagged = g.create("TestTagged", inputs=[g.create("TestFrameRamp", size=8)])
    head = chain(g, tagged, [2.0])
    g.evaluate(head, 1)
    assert in_place() == [False] and g.is_cached(tagged, 1)  # it shares the ramp's frame: nothing to save
    computes = g.cache.stats.computes
    head["gain"] = 3.0
    assert torch.equal(g.evaluate(head, 1).tensor, torch.full((3, 8, 8), 3.0))
    assert g.cache.stats.computes == computes + 1  # the head alone


def test_a_chain_deeper_than_one_pass_evaluates():
    g = engine.Graph()
    head = chain(g, g.create("TestFrameRamp", size=4), [1.0] * (3 * MAX_NESTING))
    assert torch.equal(g.evaluate(head, 2).tensor, torch.full((3, 4, 4), 2.0))
    writable = in_place()
    assert len(writable) == 3 * MAX_NESTING and sum(writable) >= len(writable) - 6  # in place but where held


class SpareRamp(Node):
    """A frame of the frame number, written into ``inputs.new_tensor`` (memory the cache let go of)."""

    type_name = "TestSpareRamp"
    inputs = ()

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        return Image(torch.full((3, 8, 8), float(ctx.frame), out=inputs.new_tensor((3, 8, 8))))


if SpareRamp.type_name not in node_types():
    register_node(SpareRamp)

FRAME_BYTES = 3 * 8 * 8 * 4


def test_a_new_frame_reuses_the_memory_of_one_the_cache_let_go_of():
    g = engine.Graph(cache=engine.FrameCache(host_budget=2 * FRAME_BYTES))
    ramp = g.create("TestSpareRamp")
    pointers = {f: g.evaluate(ramp, f).tensor.data_ptr() for f in (1, 2, 3)}  # frame 3 evicts frame 1
    assert g.cache.stats.evictions == 1
    four = g.evaluate(ramp, 4)
    assert four.tensor.data_ptr() == pointers[1] and torch.equal(four.tensor, torch.full((3, 8, 8), 4.0))
    assert torch.equal(g.evaluate(ramp, 3).tensor, torch.full((3, 8, 8), 3.0))


def test_a_frame_held_after_its_eviction_is_never_reused():
    g = engine.Graph(cache=engine.FrameCache(host_budget=2 * FRAME_BYTES))
    ramp = g.create("TestSpareRamp")
    viewed = g.evaluate(ramp, 1)  # the viewer still shows frame 1 when the cache lets it go
    later = [g.evaluate(ramp, f) for f in (2, 3, 4, 5)]
    assert g.cache.stats.evictions == 3
    assert torch.equal(viewed.tensor, torch.full((3, 8, 8), 1.0))
    assert viewed.tensor.data_ptr() not in {image.tensor.data_ptr() for image in later}
    g.cache.clear()
    assert g.cache.new_tensor((3, 8, 8), torch.float32, torch.device("cpu")).data_ptr() not in {
        image.tensor.data_ptr() for image in later}  # clear keeps no spare frames either


def test_only_a_spare_of_the_same_shape_and_type_is_reused():
    cache = engine.FrameCache(host_budget=FRAME_BYTES)
    cpu = torch.device("cpu")
    for frame in range(3):
        cache.put(str(frame), Image(cache.new_tensor((3, 8, 8), torch.float32, cpu).fill_(frame)))
    spare = cache._spare[-1].data_ptr()
    assert cache.new_tensor((3, 4, 16), torch.float32, cpu).data_ptr() != spare
    assert cache.new_tensor((3, 8, 8), torch.float64, cpu).data_ptr() != spare
    assert cache.new_tensor((3, 8, 8), torch.float32, cpu).data_ptr() == spare


@pytest.mark.parametrize("data_window", [None, (2, 1, 6, 5)])
def test_a_frame_written_in_place_is_described_as_a_new_tensor_would_be(data_window):
    """``replace(tensor=t.mul_(g))`` (the tensor it holds, written in place) gives the Image a new tensor would
    give (the whole frame as its data window, the rest kept): the Image itself when its data window is already
    the whole frame (it is immutable), a new one otherwise."""
    tensor = torch.rand(4, 6, 8)
    image = Image(tensor, channels=("R", "G", "B", "A"), metadata={"k": 1}, faces=["face"], pixel_aspect=2.0,
                  data_window=data_window)
    written = image.replace(tensor=tensor.mul_(0.5))
    expected = Image(tensor.clone(), channels=("R", "G", "B", "A"), metadata={"k": 1}, faces=["face"],
                     pixel_aspect=2.0)
    assert (written is image) == (data_window is None) and written.tensor is tensor
    for name in ("channels", "metadata", "faces", "pixel_aspect", "data_window", "nbytes"):
        assert getattr(written, name) == getattr(expected, name), name
    assert type(written.data_window).__name__ == "Box"
    # given a window of part of the frame, the Image is no longer the whole frame's: a new one again
    cropped = written.replace(data_window=(2, 1, 6, 5))
    rewritten = cropped.replace(tensor=tensor)
    assert rewritten is not cropped and rewritten.data_window == (0, 0, 8, 6)
    assert written.replace(data_window=(0, 0, 8, 6)).replace(tensor=tensor).data_window == (0, 0, 8, 6)
    # a frame with pasted windows is not its tensor: replacing with the shared tensor drops the windows
    patched = image.paste((0, 2, 0, 2), torch.zeros(4, 2, 2))
    plain = patched.replace(tensor=tensor)
    assert not plain._patches and torch.equal(plain.tensor, tensor)


def test_a_waiter_that_made_its_event_after_the_owner_looked_still_gets_the_frame():
    """A frame not kept leaves its flight without the cache's lock: a waiter whose event came too late to be
    set finds the result at its next slice of waiting."""
    cache = engine.FrameCache()
    flight = cache._flights["late"] = _Flight()
    results = []
    waiter = threading.Thread(target=lambda: results.append(cache.obtain("late", None, (), CancelToken())),
                              daemon=True)
    waiter.start()
    while flight.waiters is None:  # the waiter found the flight and waits on its event
        pass
    flight.result = Image(torch.full((3, 2, 2), 5.0))
    del cache._flights["late"]  # the owner's end, having read no event: nothing is set
    waiter.join(5)
    assert not waiter.is_alive() and results == [(flight.result, False)]
