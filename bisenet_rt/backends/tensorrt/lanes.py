"""The TensorRT backend's bookkeeping, apart from CUDA: which lane runs a call, what a lane's CUDA graph belongs
to and when it is dropped, which earlier run a lane's run must wait for, and TensorRT's address rule.

A lane is one execution context with its own stream and buffers (`backends.tensorrt._Lane`); each holds one
`LaneBook`, and the backend's `LaneBooks` chooses lanes. Nothing here calls CUDA or TensorRT, so the rules
are tested on any machine (tests/test_tensorrt_lanes.py) through the very objects the backend uses.

The rules, from TensorRT's own sources:
- A CUDA graph replays the context state it was captured in (input shape, tensor addresses): a lane keeps
  one graph, and binding another shape or address set drops it.
- After a shape or address change the first enqueue may do set-up work that is not capturable
  (`IPluginV3OneRuntime::onShapeChange` runs "during the next subsequent enqueueV3() ... if an input binding
  is changed via setTensorAddress() or setInputShape()", NvInferRuntime.h; trtexec runs the enqueue once
  before capturing, samples/common/sampleInference.cpp): the first run with a key is plain, the second
  captures, later ones replay.
- "If the engine supports dynamic shapes, each execution context in concurrent use must use a separate
  optimization profile" (NvInferRuntime.h, class IExecutionContext). Engines here have one profile, so runs
  of different lanes are ordered one after another on the GPU (`order_after`); the uploads and downloads
  around them still overlap.
- `setTensorAddress`: "The pointer must have at least 256-byte alignment" (NvInferRuntime.h).
"""
from __future__ import annotations

import enum
import itertools
from typing import Callable, Hashable, Sequence

from ...errors import InputError

__all__ = ["Launch", "LaneBook", "LaneBooks", "TENSOR_ALIGNMENT", "check_tensor_address"]

#: Alignment TensorRT requires of every tensor address given to `setTensorAddress` (bytes).
TENSOR_ALIGNMENT = 256


class Launch(enum.Enum):
    """How a lane runs the engine this time."""

    PLAIN = "plain"      # execute_async_v3
    CAPTURE = "capture"  # capture execute_async_v3 into a CUDA graph, then launch it
    REPLAY = "replay"    # launch the graph captured for the bound key


class LaneBook:
    """One lane's state: the key (shape, input address, output address) its context is bound to, its runs in a
    row with that key, the key its CUDA graph was captured for, and whether a thread or a submission holds it."""

    def __init__(self) -> None:
        self.bound: Hashable | None = None
        self.runs = 0
        self.graph_key: Hashable | None = None
        self.held = False      # a call is using the lane (between taking and giving it back)
        self.pending = False   # a submission's labels are still in the lane's buffers
        self.last_used = 0

    def bind(self, key: Hashable) -> bool:
        """Record that the context is bound to `key`; True when the lane's graph must be dropped (it belongs
        to another key, so it would replay another shape or other buffers)."""
        if key == self.bound:
            return False
        drop = self.graph_key is not None
        self.bound, self.runs, self.graph_key = key, 0, None
        return drop

    def next_launch(self, graphs: bool) -> Launch:
        """Plain for the first run with the bound key (or with graphs off), capture for the second, then replay."""
        if not graphs:
            return Launch.PLAIN
        if self.graph_key is not None and self.graph_key == self.bound:
            return Launch.REPLAY
        return Launch.CAPTURE if self.runs >= 1 else Launch.PLAIN

    def ran(self, launch: Launch) -> None:
        """Record a run; after a capture the lane's graph belongs to the bound key."""
        self.runs += 1
        if launch is Launch.CAPTURE:
            self.graph_key = self.bound

    def graph_dropped(self) -> None:
        self.graph_key = None


class LaneBooks:
    """The books of all lanes of one engine: which lane a call takes, and which earlier run it waits for."""

    def __init__(self, *, shared_profile: bool) -> None:
        self.books: list[LaneBook] = []
        self._ticks = itertools.count(1)
        self._last_run: int | None = None
        self._shared_profile = shared_profile

    def add(self) -> int:
        """A new lane's book; returns its index."""
        self.books.append(LaneBook())
        return len(self.books) - 1

    def pick(self, wants: Callable[[Hashable | None], bool], most: int) -> int | None:
        """The lane for a call whose binding `wants` accepts; `len(books)` to add a lane (at most `most`);
        None to wait until a lane is given back.

        In order: a free lane already bound as wanted (its graph stays valid), a lane never bound, a new
        lane, the free lane used longest ago, then the lane whose submission is oldest (it is collected first).
        """
        free = [i for i, b in enumerate(self.books) if not b.held]
        idle = [i for i in free if not self.books[i].pending]
        bound = [i for i in idle if wants(self.books[i].bound)]
        if bound:
            return max(bound, key=lambda i: self.books[i].last_used)
        fresh = [i for i in idle if self.books[i].bound is None]
        if fresh:
            return fresh[0]
        if len(self.books) < max(most, 1):
            return len(self.books)
        for group in (idle, free):
            if group:
                return min(group, key=lambda i: self.books[i].last_used)
        return None

    def take(self, lane: int) -> LaneBook:
        """Mark lane `lane` held by the caller."""
        book = self.books[lane]
        book.held, book.last_used = True, next(self._ticks)
        return book

    def give_back(self, lane: int) -> None:
        self.books[lane].held = False

    def order_after(self, lane: int) -> int | None:
        """The lane whose last run lane `lane`'s run must follow on the GPU (None: no wait), and note this run.

        Lanes share the engine's one optimization profile, so with dynamic shapes their runs must not overlap.
        """
        before, self._last_run = self._last_run, lane
        return before if self._shared_profile and before is not None and before != lane else None


def check_tensor_address(ptr: int, name: str) -> None:
    """Refuse a device address TensorRT cannot bind (not 256-byte aligned), saying how to get an aligned one."""
    if ptr % TENSOR_ALIGNMENT:
        raise InputError(f"{name} starts at {ptr:#x}, {ptr % TENSOR_ALIGNMENT} bytes past a {TENSOR_ALIGNMENT}-byte "
                         f"boundary; TensorRT needs tensor addresses aligned to {TENSOR_ALIGNMENT} bytes. A slice "
                         "such as frames[1:] starts inside the buffer: pass a copy (tensor.clone(), cupy.copy(a)) "
                         "or a buffer of its own")
