"""The frame cache: results keyed by hash alone, LRU by bytes in two tiers (device memory, host RAM).

When the device tier is over budget its least recently used entries move to host RAM; when host RAM is
over budget they are dropped. Two requests for the same hash at once compute it once: the second waits
for the first (single flight). A waiter whose computing peer was cancelled computes it itself.
"""
from __future__ import annotations

import collections
import contextvars
import dataclasses
import itertools
import os
import threading
import weakref
from typing import Callable

import numpy as np
import torch

from .context import CancelToken
from .device import default_device
from .errors import Cancelled, Deferred
from .image import Image, is_unshared

_WAIT_SLICE_S = 0.02

#: the share of each frame-cache budget (device, host) the memos may hold beside it
MEMO_SHARE = 0.25

#: frames the host tier lets go of that it keeps for the next new tensor of their shape (``FrameCache.new_tensor``)
SPARE_FRAMES = 2


class _MemoEntry:
    __slots__ = ("value", "nbytes", "tier", "owner")

    def __init__(self, value, nbytes: int, tier: str, owner: int | None) -> None:
        self.value, self.nbytes, self.tier, self.owner = value, nbytes, tier, owner


def _value_bytes(value) -> tuple[int, int]:
    """(host bytes, device bytes) a memo's value or key holds: tensors and arrays by their buffers, the rest
    (numbers, small objects) by a word or their size."""
    if isinstance(value, torch.Tensor):
        n = value.element_size() * value.nelement()
        return (n, 0) if value.device.type == "cpu" else (0, n)
    if isinstance(value, np.ndarray):
        return value.nbytes, 0
    if isinstance(value, (bytes, bytearray, str)):
        return len(value), 0
    if isinstance(value, (tuple, list)):
        parts = [_value_bytes(v) for v in value]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    if isinstance(value, dict):
        return _value_bytes(list(value.values()))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _value_bytes([getattr(value, f.name) for f in dataclasses.fields(value)])
    return 8, 0


class MemoRegistry:
    """The one store behind every :class:`Memo`: what the nodes and their libraries remember beside the frame
    cache (decoded faces, optical flows, face masks, skin samples), LRU by bytes in two tiers like the frame
    cache, under a share (:data:`MEMO_SHARE`) of the frame cache's configured budgets.

    An entry belongs to the frame cache (the graph) whose evaluation put it there, so clearing a graph's cache
    purges its memos too (:meth:`purge`); an entry put outside any evaluation belongs to none and goes with
    :func:`clear_memos`. Each Memo also keeps at most its ``size`` entries.
    """

    def __init__(self, device_budget: int | None = None, host_budget: int | None = None) -> None:
        self._device_budget, self._host_budget = device_budget, host_budget
        self._tiers: dict[str, collections.OrderedDict] = {"device": collections.OrderedDict(),
                                                           "host": collections.OrderedDict()}
        self._bytes = {"device": 0, "host": 0}
        self._lock = threading.RLock()

    @property
    def device_budget(self) -> int:
        """Bytes of device memory the memos may hold: MEMO_SHARE of the frame cache's device budget
        (``DOUBLURE_CACHE_DEVICE_MB`` or :func:`default_device_budget`), found on first use."""
        if self._device_budget is None:
            self._device_budget = int(MEMO_SHARE * _budget_from_env(
                "DOUBLURE_CACHE_DEVICE_MB", default_device_budget(default_device())))
        return self._device_budget

    @property
    def host_budget(self) -> int:
        """Bytes of host RAM the memos may hold: MEMO_SHARE of the frame cache's host budget."""
        if self._host_budget is None:
            self._host_budget = int(MEMO_SHARE * default_host_budget())
        return self._host_budget

    @property
    def device_bytes(self) -> int:
        return self._bytes["device"]

    @property
    def host_bytes(self) -> int:
        return self._bytes["host"]

    def set_budgets(self, device_budget: int | None = None, host_budget: int | None = None) -> None:
        with self._lock:
            if device_budget is not None:
                self._device_budget = device_budget
            if host_budget is not None:
                self._host_budget = host_budget
            self._enforce()

    def get(self, memo: "Memo", key):
        with self._lock:
            entry = memo._entries.get(key)
            if entry is None:
                return None
            memo._entries.move_to_end(key)
            self._tiers[entry.tier].move_to_end((memo, key))
            return entry.value

    def put(self, memo: "Memo", key, value) -> None:
        host, device = _value_bytes(value)
        key_bytes, _ = _value_bytes(key)
        tier = "device" if device > 0 else "host"
        entry = _MemoEntry(value, host + device + key_bytes, tier, _memo_owner.get())
        with self._lock:
            self._remove(memo, key)
            memo._entries[key] = entry
            self._tiers[tier][(memo, key)] = entry
            self._bytes[tier] += entry.nbytes
            while len(memo._entries) > memo.size:
                self._remove(memo, next(iter(memo._entries)))
            self._enforce()

    def _remove(self, memo: "Memo", key) -> None:
        entry = memo._entries.pop(key, None)
        if entry is not None:
            del self._tiers[entry.tier][(memo, key)]
            self._bytes[entry.tier] -= entry.nbytes

    def _enforce(self) -> None:
        for tier, budget in (("device", self.device_budget), ("host", self.host_budget)):
            entries = self._tiers[tier]
            while self._bytes[tier] > budget and entries:
                memo, key = next(iter(entries))
                self._remove(memo, key)

    def purge(self, owner: int | None = None, memo: "Memo | None" = None) -> None:
        """Drop the entries of one frame cache (``owner``, its :attr:`FrameCache.memo_owner`), of one memo, or,
        with neither, all of them."""
        with self._lock:
            for entries in self._tiers.values():
                for (m, key), entry in list(entries.items()):
                    if (memo is None or m is memo) and (owner is None or entry.owner == owner):
                        self._remove(m, key)


#: the frame cache (its :attr:`FrameCache.memo_owner`) whose evaluation is running in this thread
_memo_owner: contextvars.ContextVar[int | None] = contextvars.ContextVar("doublure_memo_owner", default=None)
_owners = itertools.count(1)
memos = MemoRegistry()


class Memo:
    """A named part of the :data:`memos` registry: what one node module remembers beside the frame cache (face
    masks, decoded faces, optical flows, skin samples), keyed by content like the frame cache, at most
    ``size`` entries and within the registry's byte budgets. Thread-safe."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, key):
        """The value remembered for ``key`` (now the most recently used), or None."""
        return memos.get(self, key)

    def put(self, key, value):
        """Remember ``value`` for ``key``, dropping the least recently used beyond ``size`` (and beyond the
        registry's budgets); returns ``value``."""
        memos.put(self, key, value)
        return value

    def reserve(self, size: int) -> None:
        """Hold at least ``size`` items from now on (a node whose working set grows with its knobs and its
        faces sizes its memo to it: an LRU smaller than a sequential working set misses on every access).
        The registry's byte budgets still bound it."""
        with memos._lock:
            self.size = max(self.size, int(size))

    def clear(self) -> None:
        memos.purge(memo=self)

    def __len__(self) -> int:
        return len(self._entries)


def clear_memos() -> None:
    """Empty every :class:`Memo` (the frame caches are separate: ``FrameCache.clear``)."""
    memos.purge()


def default_host_budget() -> int:
    """The host RAM tier's budget in bytes: ``DOUBLURE_CACHE_HOST_MB``, else 4 GiB."""
    return _budget_from_env("DOUBLURE_CACHE_HOST_MB", 4 * 2**30)


def _budget_from_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(float(value) * 2**20) if value else default


#: how many processes share this process's GPU (a farm's local workers on one GPU), set by who starts them
PROCESSES_PER_GPU_ENV = "DOUBLURE_PROCESSES_PER_GPU"


def default_device_budget(device: torch.device) -> int:
    """The device tier's default size: a quarter of a GPU's memory, shared among the processes on that GPU
    (``DOUBLURE_PROCESSES_PER_GPU``); 2 GiB elsewhere.

    A fixed 2 GiB holds about nine 1080p frames of a seven-node graph; past that, every new entry pushes an
    old one to host RAM with a copy the evaluating thread waits for (on an H200 a 1080p render spent 22 ms a
    frame there). A quarter leaves the rest to the models, a frame's working tensors and training; eight farm
    workers on one GPU, each with a quarter, would ask for twice its memory.
    """
    if device.type == "cuda":
        sharers = max(1, int(os.environ.get(PROCESSES_PER_GPU_ENV) or 1))
        return torch.cuda.get_device_properties(device).total_memory // 4 // sharers
    return 2 * 2**30


@dataclasses.dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    computes: int = 0
    evictions: int = 0
    demotions: int = 0


class _Flight:
    """One computation under way; the threads that ask for the same key meanwhile wait for it.

    Its event is made by the first thread that has to wait (under the cache's lock), not for every
    computation: most have no waiter, and an Event (a Condition and its locks) cost a tenth of the engine's
    own time per node in a long chain."""

    __slots__ = ("waiters", "result", "error")

    def __init__(self) -> None:
        self.waiters: threading.Event | None = None
        self.result: Image | None = None
        self.error: BaseException | None = None


class FrameCache:
    """Thread-safe two-tier LRU cache of Images by hash.

    Budgets are in bytes: ``DOUBLURE_CACHE_DEVICE_MB`` / ``DOUBLURE_CACHE_HOST_MB`` set the defaults
    (:func:`default_device_budget` of the evaluation device, 4 GiB on the host).
    """

    def __init__(self, device_budget: int | None = None, host_budget: int | None = None) -> None:
        self.device_budget = device_budget if device_budget is not None else _budget_from_env(
            "DOUBLURE_CACHE_DEVICE_MB", default_device_budget(default_device()))
        self.host_budget = host_budget if host_budget is not None else default_host_budget()
        self._device: collections.OrderedDict[str, Image] = collections.OrderedDict()
        self._host: collections.OrderedDict[str, Image] = collections.OrderedDict()
        self._device_bytes = 0
        self._host_bytes = 0
        self._flights: dict[str, _Flight] = {}
        # host frames evicted that nothing else held, newest last: memory already mapped for the next new frame
        self._spare: list[torch.Tensor] = []
        self._lock = threading.Lock()
        self.stats = CacheStats()
        #: tags the memo entries put while this cache computes (``memos``), so that clearing it purges them
        self.memo_owner = next(_owners)
        weakref.finalize(self, memos.purge, self.memo_owner)

    # -- queries ----------------------------------------------------------------------------------------
    @property
    def device_bytes(self) -> int:
        return self._device_bytes

    @property
    def host_bytes(self) -> int:
        return self._host_bytes

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._device or key in self._host

    def __len__(self) -> int:
        with self._lock:
            return len(self._device) + len(self._host)

    def get(self, key: str, device: torch.device | None = None) -> Image | None:
        """The cached Image (moved to ``device`` when given), or None. Counts as a use for LRU."""
        with self._lock:
            image = self._lookup(key)
        if image is None:
            return None
        return image if device is None else image.to(device)

    def _lookup(self, key: str) -> Image | None:
        image = self._device.get(key)
        if image is not None:
            self._device.move_to_end(key)
            return image
        image = self._host.get(key)
        if image is not None:
            self._host.move_to_end(key)
        return image

    # -- updates ----------------------------------------------------------------------------------------
    def put(self, key: str, image: Image) -> None:
        with self._lock:
            self._insert(key, image)

    def _insert(self, key: str, image: Image) -> None:
        self._remove(key)
        if image.device.type == "cpu":
            self._host[key] = image
            self._host_bytes += image.nbytes
        else:
            self._device[key] = image
            self._device_bytes += image.nbytes
        self._enforce_budgets()

    def _remove(self, key: str) -> None:
        image = self._device.pop(key, None)
        if image is not None:
            self._device_bytes -= image.nbytes
        image = self._host.pop(key, None)
        if image is not None:
            self._host_bytes -= image.nbytes

    def _enforce_budgets(self) -> None:
        while self._device_bytes > self.device_budget and self._device:
            key, image = self._device.popitem(last=False)
            self._device_bytes -= image.nbytes
            host_image = image.to(torch.device("cpu"))
            self._host[key] = host_image
            self._host.move_to_end(key)
            self._host_bytes += host_image.nbytes
            self.stats.demotions += 1
        while self._host_bytes > self.host_budget and self._host:
            _, image = self._host.popitem(last=False)
            self._host_bytes -= image.nbytes
            self.stats.evictions += 1
            if is_unshared(image, image_refs=1):
                self._spare.append(image.tensor)
                del self._spare[:-SPARE_FRAMES]

    def new_tensor(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor for a node's output: on the CPU, a frame of that shape and dtype the host
        tier evicted when nothing else held it (at most :data:`SPARE_FRAMES` kept beside the budget), else
        ``torch.empty``.

        Once the cache is full, every new frame it keeps evicts one; reusing that memory spares the page
        faults of memory the C allocator got anew (8,100 for a 32 MB frame, a tenth of a 1080p chain's
        time), which it does or not depending on its heap's layout."""
        shape = tuple(shape)
        if device.type == "cpu":
            with self._lock:
                for i in range(len(self._spare) - 1, -1, -1):
                    spare = self._spare[i]
                    if spare.shape == shape and spare.dtype == dtype:
                        del self._spare[i]
                        return spare
        return torch.empty(shape, dtype=dtype, device=device)

    def set_budgets(self, device_budget: int | None = None, host_budget: int | None = None) -> None:
        with self._lock:
            if device_budget is not None:
                self.device_budget = device_budget
            if host_budget is not None:
                self.host_budget = host_budget
            self._enforce_budgets()

    def clear(self) -> None:
        """Drop every frame, and the memo entries this cache's evaluations put (``memos``)."""
        with self._lock:
            self._device.clear()
            self._host.clear()
            self._spare.clear()
            self._device_bytes = self._host_bytes = 0
        memos.purge(owner=self.memo_owner)

    # -- the one entry point evaluation uses --------------------------------------------------------------
    def get_or_compute(self, key: str, compute: Callable[[], Image], cancel: CancelToken,
                       device: torch.device | None = None, keep: bool = True) -> Image:
        """The cached Image for ``key``, computing it once however many threads ask at the same time.

        ``keep`` False: a computed Image is handed to the threads asking now but not kept (a frame its one
        consumer takes over and writes into, ``Graph.take_input``): kept, it would push an older frame out."""
        return self.obtain(key, compute, (), cancel, device, keep)[0]

    def obtain(self, key: str, compute: Callable[..., Image], args: tuple, cancel: CancelToken,
               device: torch.device | None = None, keep: bool = True) -> tuple[Image, bool]:
        """:meth:`get_or_compute` calling ``compute(*args)``, and whether this call computed the Image (False:
        found in the cache or computed by another thread). The engine's pull calls it once per node: no
        closure to build and call, and the caller learns what it may write into."""
        while True:
            cancel.check()
            flights = self._flights  # read again after the compute, from cold memory: a local is one read less
            with self._lock:
                image = self._lookup(key)
                if image is not None:
                    self.stats.hits += 1
                    return (image if device is None else image.to(device)), False
                flight = flights.get(key)
                owner = flight is None
                if owner:
                    flight = flights[key] = _Flight()
                    self.stats.misses += 1
                    self.stats.computes += 1  # here, not after: taken off again if it fails
                elif flight.waiters is None:
                    flight.waiters = threading.Event()
                done = flight.waiters
            if owner:
                # Inline, a Python frame fewer after every node's compute. The memo owner is set by the outermost
                # compute only: the nodes it pulls run under the same owner (a ContextVar's set and reset build a
                # new context each, after every node of a chain).
                token = None if _memo_owner.get() == self.memo_owner else _memo_owner.set(self.memo_owner)
                try:
                    image = compute(*args)
                except BaseException as exc:
                    flight.error = exc
                    with self._lock:
                        self.stats.computes -= 1
                        del self._flights[key]
                        done = flight.waiters
                    if done is not None:
                        done.set()
                    raise
                finally:
                    if token is not None:
                        _memo_owner.reset(token)
                flight.result = image
                if keep:
                    with self._lock:
                        self._insert(key, image)
                        del self._flights[key]
                        done = flight.waiters
                else:
                    # Not kept, so nothing to insert under the lock: the flight goes in one step of the dict
                    # (this runs after every node of a chain, from cold memory). A waiter that makes its event
                    # after this read sees the result at its next slice.
                    del flights[key]
                    done = flight.waiters
                if done is not None:
                    done.set()
                return image, True
            while not done.wait(_WAIT_SLICE_S):
                if flight.result is not None:
                    break
                cancel.check()
            if flight.error is None:
                with self._lock:
                    self.stats.hits += 1
                assert flight.result is not None
                return (flight.result if device is None else flight.result.to(device)), False
            if not isinstance(flight.error, (Cancelled, Deferred)):
                raise flight.error
            # The owner was cancelled (or deferred the work) but this request was not: loop and compute it here.
