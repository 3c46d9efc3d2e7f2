"""The hash walk's memo of each node's own part (issue 26, item 12): a node with the default hash, no animated
knob and nothing passed through is hashed once until the next edit, and a new frame only adds its inputs'
hashes to a copy. The digests must be the ones ``Node.hash`` gives, and every edit anywhere above a node must
still reach its hash."""
import pytest
import torch

import engine_nodes  # noqa: F401  (registers the test node types)
from doublure import engine
from doublure.engine import Node
from doublure.engine.hashing import Hasher
from doublure.engine.project import load


def gain_chain(length=6):
    """A frame ramp under ``length`` in-place gains (default hash and pass-through: memoised own parts)."""
    g = engine.Graph()
    node = g.create("TestFrameRamp", "Ramp", size=4)
    chain = []
    for i in range(length):
        node = g.create("TestInPlaceGain", f"Gain{i + 1}", gain=1.0 + i / 8, inputs=[node])
        chain.append(node)
    return g, chain


def hashes(g, nodes, frame):
    ctx = g.context(frame)
    return [g.hash_of(node, ctx) for node in nodes]


def test_the_memoised_digest_is_the_one_node_hash_gives():
    g, chain = gain_chain()
    mask = g.create("TestMaskFromImage", inputs=[chain[2]])
    masked = g.create("TestMasked", inputs=[chain[-1], mask])  # two inputs: its own part, then both hashes
    for frame in (1, 2, 7):
        ctx = g.context(frame)
        for node in [*chain, mask, masked]:
            memoised = g.hash_of(node, ctx)
            h = Hasher()
            Node.hash(node, ctx, h)  # the default hash itself, its inputs through the graph
            assert memoised == h.hexdigest(), (node.name, frame)
    assert g._own_hash(chain[0]) is not None and g._own_hash(masked) is not None  # the memo was used
    assert g._own_hash(g["Ramp"]) is None  # its own hash reads the frame


def test_a_knob_changed_above_reaches_every_hash_below_and_undo_restores_them():
    g, chain = gain_chain()
    before = {frame: hashes(g, chain, frame) for frame in (1, 2)}
    g.set_knob(chain[1], "gain", 3.0)
    for frame in (1, 2):
        after = hashes(g, chain, frame)
        assert after[0] == before[frame][0]
        assert all(a != b for a, b in zip(after[1:], before[frame][1:])), frame
    g.undo()
    assert {frame: hashes(g, chain, frame) for frame in (2, 1)} == before
    g.set_knob(g["Ramp"], "size", 5)  # the source: every node below
    assert all(a != b for a, b in zip(hashes(g, chain, 1), before[1]))


def test_rewiring_reaches_the_hashes_below_only():
    g, chain = gain_chain()
    before = hashes(g, chain, 1)
    other = g.create("TestConstant")
    g.connect(other, chain[3])
    after = hashes(g, chain, 1)
    assert after[:3] == before[:3]
    assert all(a != b for a, b in zip(after[3:], before[3:]))
    assert g.evaluate(chain[-1], 1).height == 32  # the constant's frame, not the ramp's
    g.undo()
    assert hashes(g, chain, 1) == before


def test_an_animated_knob_hashes_per_frame_and_its_keys_leave_the_memo():
    g, chain = gain_chain()
    still = {frame: hashes(g, chain, frame) for frame in (1, 5, 10)}
    g.set_key(chain[2], "gain", 1, 1.0, "linear")
    g.set_key(chain[2], "gain", 10, 2.0, "linear")
    assert g._own_hash(chain[2]) is None
    animated = {frame: hashes(g, chain, frame) for frame in (1, 5, 10)}
    assert animated[1][:2] == still[1][:2]
    # the value at each frame enters the hash: gain 1.0 at frame 1, 1.444 at 5, 2.0 at 10
    assert len({animated[frame][2] for frame in (1, 5, 10)}) == 3
    assert all(animated[5][i] != still[5][i] for i in range(2, len(chain)))
    torch.testing.assert_close(g.evaluate(chain[2], 10).tensor, torch.full((3, 4, 4), 10 * 1.0 * 1.125 * 2.0))
    g.undo()
    g.undo()
    assert {frame: hashes(g, chain, frame) for frame in (1, 5, 10)} == still


def test_a_disabled_node_shares_its_inputs_hash_and_comes_back_when_enabled():
    g, chain = gain_chain()
    before = hashes(g, chain, 3)
    g.set_knob(chain[2], "disable", True)
    assert g.hash_of(chain[2], g.context(3)) == before[1]
    assert hashes(g, chain, 3)[3] != before[3]
    g.undo()
    assert hashes(g, chain, 3) == before


def test_a_hash_memoised_part_way_down_a_chain_is_taken_up():
    g, chain = gain_chain(10)
    middle = g.hash_of(chain[4], g.context(1))  # hashes the ramp and gains 1-5
    top = g.hash_of(chain[-1], g.context(1))  # the run stops at gain 5
    g.reload()  # the memos are forgotten: a cold walk of the whole chain gives the same keys
    assert g.hash_of(chain[-1], g.context(1)) == top and g.hash_of(chain[4], g.context(1)) == middle


def test_a_reloaded_project_gives_the_same_hashes_and_sees_its_edits(tmp_path):
    g, chain = gain_chain()
    g.set_key(chain[0], "gain", 1, 0.5)
    g.set_key(chain[0], "gain", 4, 1.5)
    path = str(tmp_path / "chain.dbl")
    g.save(path)
    loaded = load(path)
    reloaded = [loaded[node.name] for node in chain]
    for frame in (1, 2, 4):
        assert hashes(loaded, reloaded, frame) == hashes(g, chain, frame)
    loaded.set_knob(reloaded[3], "gain", 9.0)
    assert hashes(loaded, reloaded, 2)[3:] != hashes(g, chain, 2)[3:]
    assert hashes(loaded, reloaded, 2)[:3] == hashes(g, chain, 2)[:3]


@pytest.mark.parametrize("frame", [1, 3])
def test_a_chain_of_memoised_nodes_evaluates_to_the_same_pixels_after_each_edit(frame):
    g, chain = gain_chain()
    expected = float(frame)
    for i in range(len(chain)):
        expected *= 1.0 + i / 8
    torch.testing.assert_close(g.evaluate(chain[-1], frame).tensor, torch.full((3, 4, 4), expected))
    g.set_knob(chain[0], "gain", 2.0)
    torch.testing.assert_close(g.evaluate(chain[-1], frame).tensor, torch.full((3, 4, 4), expected * 2.0))
