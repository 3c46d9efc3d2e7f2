"""Graphs far deeper than Python's recursion limit: thousands of nodes in a chain hash, evaluate, cache and
cancel as a short chain does (issue 26, item 7)."""
import sys
import threading

import pytest
import torch

import engine_nodes  # noqa: F401  (registers the test node types)
from doublure import engine, nodes  # noqa: F401  (registers Reformat)
from doublure.engine import Cancelled, CancelToken

DEPTH = 5000


@pytest.fixture(scope="module")
def chain():
    """A constant under 5,000 Reformats that alternate between two small formats (each one resamples)."""
    g = engine.Graph()
    node = g.create("TestConstant", "Source", width=16, height=8)
    for i in range(DEPTH):
        size = (8, 4) if i % 2 == 0 else (16, 8)
        node = g.create("Reformat", f"Reformat{i + 1}", inputs=[node], width=size[0], height=size[1],
                        filter="impulse" if i % 3 else "bilinear")
    return g, node


def test_depth_is_beyond_the_recursion_limit():
    assert DEPTH * 3 > sys.getrecursionlimit()


def test_deep_chain_hashes_evaluates_and_caches(chain):
    g, top = chain
    g.cache.clear()
    computes = g.cache.stats.computes
    image = g.evaluate(top, 1)
    assert (image.width, image.height) == (16, 8)
    assert torch.allclose(image.tensor, torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 8, 16))
    assert g.cache.stats.computes - computes == DEPTH + 1  # every node once, however deep
    assert g.evaluate(top, 1) is not None and g.cache.stats.computes - computes == DEPTH + 1
    # A cold hash walk of the whole chain gives the same key.
    digest = g.hash_of(top, g.context(1))
    g.reload()
    assert g.hash_of(top, g.context(1)) == digest


def test_nudging_the_deepest_node_changes_the_top_and_recomputes_only_what_changed(chain):
    g, top = chain
    g.evaluate(top, 1)
    before = g.hash_of(top, g.context(1))
    computes = g.cache.stats.computes
    g.set_knob(g["Source"], "color", (0.5, 0.25, 0.125))
    assert g.hash_of(top, g.context(1)) != before
    image = g.evaluate(top, 1)
    assert torch.allclose(image.tensor[:, 0, 0], torch.tensor([0.5, 0.25, 0.125]))
    assert g.cache.stats.computes - computes == DEPTH + 1
    g.undo()  # back to the old value: the old entries are still there
    computes = g.cache.stats.computes
    g.evaluate(top, 1)
    assert g.cache.stats.computes == computes


def test_deep_chain_disabled_nodes_share_their_inputs_entry(chain):
    g, top = chain
    middle = g["Reformat2500"]
    below = g["Reformat2499"]
    ctx = g.context(1)
    with g.undo_group("disable"):
        g.set_knob(middle, "disable", True)
    assert g.hash_of(middle, ctx) == g.hash_of(below, ctx)
    g.undo()


def test_deep_chain_cancellation(chain):
    g, top = chain
    g.cache.clear()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        g.evaluate(top, 2, cancel=token)
    assert len(g.cache) == 0
    # Cancelled deep in the chain: what was finished below stays cached, nothing above.
    cancel_at = g["Reformat10"]
    token = CancelToken()
    original = type(cancel_at).compute

    def compute(node, ctx, inputs):
        image = original(node, ctx, inputs)
        if node is cancel_at:
            token.cancel()
        return image

    type(cancel_at).compute = compute
    try:
        with pytest.raises(Cancelled):
            g.evaluate(top, 2, cancel=token)
    finally:
        type(cancel_at).compute = original
    assert len(g.cache) == 11  # Source and Reformat1-10


def test_an_error_deep_in_the_chain_names_its_node(chain):
    g, top = chain
    g.disconnect(g["Reformat1"], 0)
    try:
        with pytest.raises(engine.DoublureError, match="Reformat1: input 'input' is not connected"):
            g.evaluate(top, 3)
    finally:
        g.undo()


def test_every_node_of_a_deep_chain_computes_once_and_is_timed():
    g = engine.Graph()
    node = g.create("TestFrameRamp", "Ramp")
    for i in range(2000):
        node = g.create("TestGain", f"Gain{i + 1}", inputs=[node], gain=1.0)
    g.evaluate(node, 3)
    assert g.timings["Ramp"].computes == 1
    assert all(g.timings[f"Gain{i + 1}"].computes == 1 for i in range(2000))
    assert all(timing.seconds >= 0 for timing in g.timings.values())  # own time: inputs' time taken off


def test_two_threads_pulling_one_deep_chain_compute_each_node_once():
    g = engine.Graph()
    node = g.create("TestFrameRamp", "Ramp")
    for i in range(1000):
        node = g.create("TestGain", f"Gain{i + 1}", inputs=[node], gain=1.0)
    results, errors = [], []

    def pull():
        try:
            results.append(g.evaluate(node, 5))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 2
    assert all(torch.equal(r.tensor, torch.full((3, 8, 8), 5.0)) for r in results)
    assert g.cache.stats.computes == 1001
