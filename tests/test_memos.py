"""The memos beside the frame cache: one registry, LRU by bytes under a share of the frame cache's budgets,
purged per graph (issue 25 item 4)."""
import numpy as np
import torch

from doublure import engine
from doublure.engine import CancelToken, FrameCache
from doublure.engine.cache import MEMO_SHARE, Memo, MemoRegistry, clear_memos, default_host_budget, memos


def _image(value: float) -> engine.Image:
    return engine.Image(torch.full((3, 4, 4), value))


def test_a_memo_over_its_byte_budget_drops_its_least_recently_used(monkeypatch):
    clear_memos()   # what earlier tests left would be evicted first
    monkeypatch.setattr(memos, "_host_budget", 5 * 4096 + 1024)
    memo, arrays = Memo(100), Memo(100)   # the item cap is far off: the bytes decide
    try:
        for i in range(8):
            memo.put(("plate", i), torch.zeros(1024))            # 4 KiB each
            memo.get(("plate", 0))                               # the first one stays in use
        assert memos.host_bytes <= memos.host_budget
        kept = [i for i in range(8) if memo.get(("plate", i)) is not None]
        assert kept == [0, 4, 5, 6, 7] and len(memo) == 5
        arrays.put("grey", np.zeros((64, 64), np.uint8))          # numpy buffers count too, in any memo
        assert memo.get(("plate", 0)) is None and arrays.get("grey") is not None   # 0 was read longest ago
    finally:
        memo.clear()
        arrays.clear()


def test_the_item_cap_and_reserve_still_hold():
    memo = Memo(2)
    for i in range(3):
        memo.put(i, float(i))
    assert memo.get(0) is None and len(memo) == 2
    memo.reserve(3)
    memo.put(3, 3.0)
    assert len(memo) == 3 and memo.size == 3
    memo.clear()
    assert len(memo) == 0


def test_the_budgets_are_a_share_of_the_frame_cache_budgets():
    assert MemoRegistry().host_budget == int(MEMO_SHARE * default_host_budget())
    registry = MemoRegistry(host_budget=1000)
    registry.set_budgets(host_budget=10)
    assert registry.host_budget == 10


def test_clearing_a_graphs_cache_purges_only_the_memos_its_evaluations_put():
    memo = Memo(16)
    a, b = FrameCache(), FrameCache()

    def computing(cache: FrameCache, name: str):
        def compute():
            memo.put(name, torch.ones(8))
            return _image(1.0)
        return cache.get_or_compute(name, compute, CancelToken())

    try:
        computing(a, "a")
        computing(b, "b")
        memo.put("outside", torch.ones(8))                        # no evaluation: no graph owns it
        a.clear()
        assert memo.get("a") is None and memo.get("b") is not None and memo.get("outside") is not None
        b.clear()
        assert memo.get("b") is None and memo.get("outside") is not None
        clear_memos()
        assert len(memo) == 0
    finally:
        memo.clear()


def test_memos_put_by_a_nested_compute_belong_to_the_cache_computing():
    """A compute pulls its inputs under its cache's ownership (set once by the outermost compute); a compute
    of another cache nested inside owns what it puts, and the outer one owns what it puts after it."""
    memo = Memo(16)
    a, b = FrameCache(), FrameCache()

    def outer():
        def inner():
            memo.put("b", torch.ones(8))
            return _image(2.0)

        def nested_input():  # a's own input, computed inside a's compute
            memo.put("a input", torch.ones(8))
            return _image(3.0)

        a.get_or_compute("a input", nested_input, CancelToken())
        b.get_or_compute("b", inner, CancelToken())
        memo.put("a after b", torch.ones(8))
        return _image(1.0)

    try:
        a.get_or_compute("a", outer, CancelToken())
        memo.put("outside", torch.ones(8))
        b.clear()
        assert memo.get("b") is None
        assert all(memo.get(k) is not None for k in ("a input", "a after b", "outside"))
        a.clear()
        assert memo.get("a input") is None and memo.get("a after b") is None and memo.get("outside") is not None
    finally:
        memo.clear()


def test_a_graphs_node_memos_go_with_its_cache(media_dir):
    import finish_nodes  # noqa: F401  (registers TestFinishRecolour)
    from doublure.nodes import colormatch

    def graph():
        g = engine.Graph()
        read = g.create("Read", file=str(media_dir / "mead" / "W009_front_neutral_level1_001.mp4"), first=1, last=5)
        plate = g.create("FaceDetect", inputs=[read])
        swap = g.create("TestFinishRecolour", inputs=[plate])
        return g, g.create("ColorMatch", inputs=[swap, plate], window=0)

    clear_memos()
    g, node = graph()
    first = g.evaluate(node, 3).tensor
    remembered = len(colormatch._sample_memo)
    assert remembered > 0 and memos.host_bytes > 0
    g.cache.clear()
    assert len(colormatch._sample_memo) == 0
    assert torch.equal(g.evaluate(node, 3).tensor, first)
