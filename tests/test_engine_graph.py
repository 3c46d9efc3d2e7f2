"""Graph edits, connections, knobs and undo: the contracts of DESIGN.md's engine section."""
import pytest

import engine_nodes  # noqa: F401  (registers the test node types)
from doublure import engine
from doublure.engine import ConnectionRefused, DoublureError, KnobError


def test_nodes_get_unique_names_and_uuids():
    g = engine.Graph()
    a, b = g.create("TestConstant"), g.create("TestConstant")
    assert (a.name, b.name) == ("TestConstant1", "TestConstant2")
    assert a.uuid != b.uuid
    g.delete(a)
    assert g.create("TestConstant").name == "TestConstant1"
    with pytest.raises(DoublureError, match="already exists"):
        g.rename(b, "TestConstant1")
    with pytest.raises(DoublureError, match="must start with a letter"):
        g.rename(b, "1bad name")


def test_type_mismatch_and_cycles_are_refused_naming_both_nodes():
    g = engine.Graph()
    c = g.create("TestConstant")
    gain = g.create("TestGain", inputs=[c])
    gain2 = g.create("TestGain", inputs=[gain])
    masked = g.create("TestMasked")
    with pytest.raises(ConnectionRefused, match=r"TestGain2.*TestGain1.*cycle"):
        g.connect(gain2, gain)
    with pytest.raises(ConnectionRefused, match="cycle"):
        g.connect(gain, gain)
    with pytest.raises(ConnectionRefused, match=r"TestConstant1 \(Image\) to TestMasked1.mask \(Mask\)"):
        g.connect(c, masked, "mask")
    mask = g.create("TestMaskFromImage", inputs=[c])
    g.connect(mask, masked, "mask")
    assert masked.input(1) is mask


def test_bad_knob_value_names_node_knob_and_value_and_keeps_the_old_value():
    g = engine.Graph()
    c = g.create("TestConstant", width=10)
    with pytest.raises(KnobError, match=r"TestConstant1.width: bad value -3"):
        c["width"] = -3
    with pytest.raises(KnobError, match=r"TestConstant1.width: bad value 'wide'"):
        c["width"] = "wide"
    with pytest.raises(KnobError, match="has no knob 'colour'"):
        c["colour"] = (1, 1, 1)
    assert c["width"] == 10
    assert len(g.undo_stack) == 1  # the create only


def test_keyframes_linear_smooth_and_constant():
    g = engine.Graph()
    n = g.create("TestGain", inputs=[g.create("TestConstant")])
    g.set_key(n, "gain", 1, 0.0, "linear")
    g.set_key(n, "gain", 11, 10.0, "linear")
    assert n.value("gain", 6) == pytest.approx(5.0)
    assert n.value("gain", -5) == 0.0 and n.value("gain", 50) == 10.0
    g.set_key(n, "gain", 1, 0.0, "smooth")
    # Smooth with flat end tangents: an ease-in/ease-out, symmetric about the middle.
    assert n.value("gain", 6) == pytest.approx(5.0)
    assert n.value("gain", 2) < 1.0 and n.value("gain", 10) > 9.0
    g.set_key(n, "gain", 21, 0.0, "smooth")
    # With a middle key the curve passes through every key.
    assert [n.value("gain", f) for f in (1, 11, 21)] == pytest.approx([0.0, 10.0, 0.0])
    g.set_key(n, "gain", 1, 0.0, "constant")
    assert n.value("gain", 10.9) == 0.0
    with pytest.raises(KnobError, match="cannot be animated"):
        g.set_key(g.create("TestSlow"), "disable", 1, True)
    g.remove_key(n, "gain", 21)
    assert n.knob("gain").key_frames() == [1.0, 11.0]


def test_undo_redo_covers_create_connect_knob_key_rename_and_delete():
    g = engine.Graph()
    c = g.create("TestConstant")
    gain = g.create("TestGain", inputs=[c])
    gain["gain"] = 2.0
    g.set_key(gain, "mix", 5, 0.5)
    g.rename(gain, "Brighten")
    g.delete(c)
    assert gain.input(0) is None and len(g.nodes) == 1
    g.undo()
    assert gain.input(0) is c and len(g.nodes) == 2
    g.undo()
    assert gain.name == "TestGain1"
    g.undo()
    assert not gain.knob("mix").is_animated
    g.undo()
    assert gain["gain"] == 1.0
    g.undo()
    assert gain not in g.nodes
    assert g.redo() and g.redo() and gain["gain"] == 2.0 and gain.input(0) is c
    while g.redo():
        pass
    assert gain.name == "Brighten" and len(g.nodes) == 1


def test_delete_heals_the_chain_and_undo_group_is_one_step():
    g = engine.Graph()
    c = g.create("TestConstant")
    a = g.create("TestGain", inputs=[c])
    b = g.create("TestGain", inputs=[a])
    g.delete(a)
    assert b.input(0) is c
    with g.undo_group("Tweak"):
        b["gain"] = 3.0
        b["mix"] = 0.5
    g.undo()
    assert (b["gain"], b["mix"]) == (1.0, 1.0)


def test_failed_group_is_rolled_back():
    g = engine.Graph()
    c = g.create("TestConstant")
    with pytest.raises(KnobError):
        with g.undo_group("Half"):
            c["width"] = 5
            c["height"] = -1
    assert c["width"] == 64


def test_events_reach_subscribers():
    g = engine.Graph()
    seen = []
    g.subscribe(lambda e: seen.append((e.kind, e.node.name if e.node else e.name)))
    c = g.create("TestConstant")
    c["width"] = 3
    g.undo()
    kinds = [k for k, _ in seen if k != "history"]
    assert kinds == ["node_added", "knob_changed", "knob_changed"]


def test_frame_ranges_parse_nuke_syntax():
    parse = engine.parse_frame_range
    assert parse("1-5") == [1, 2, 3, 4, 5]
    assert parse("1-9x4") == [1, 5, 9]
    assert parse("1,5,10-12") == [1, 5, 10, 11, 12]
    assert parse("1001") == [1001]
    for bad in ("5-1", "a-b", "1-3x0", ""):
        with pytest.raises(ValueError):
            parse(bad)


def test_project_settings_are_validated_and_undoable():
    g = engine.Graph()
    g.set_setting("last", 50)
    with pytest.raises(KnobError, match="runs backwards"):
        g.set_setting("first", 60)
    with pytest.raises(KnobError, match="fps"):
        g.set_setting("fps", -1)
    g.undo()
    assert g.settings["last"] == 100
