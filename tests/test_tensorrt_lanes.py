"""The TensorRT backend's lane and CUDA-graph bookkeeping, on any machine (no CUDA, no TensorRT).

`LaneBooks` / `LaneBook` are the objects `TensorRTBackend` keeps; `_Backend` below walks them in the order the
backend does for one call (take a lane, bind, order after the last run, launch, record, give back) and
records what each call would do on the GPU.
"""
from __future__ import annotations

import pytest

from bisenet_rt.backends.tensorrt.lanes import TENSOR_ALIGNMENT, LaneBooks, Launch, check_tensor_address
from bisenet_rt.errors import InputError

SHAPE_A, SHAPE_B = (1, 1024, 2048, 3), (2, 1024, 2048, 3)
A, B, C = (SHAPE_A, 0x1000, 0x9000), (SHAPE_A, 0x2000, 0xA000), (SHAPE_A, 0x3000, 0xB000)


class _Backend:
    """The backend's call sequence over its books, without the CUDA calls (which the books only decide)."""

    def __init__(self, depth: int, *, graphs: bool = True, shared_profile: bool = True) -> None:
        self.books = LaneBooks(shared_profile=shared_profile)
        self.books.add()  # the backend creates lane 0 at load
        self.depth, self.graphs = depth, graphs
        self.dropped: list[int] = []

    def take(self, key) -> int:
        lane = self.books.pick(lambda bound: bound == key, self.depth)
        assert lane is not None, "all lanes busy"
        if lane == len(self.books.books):
            self.books.add()
        self.books.take(lane)
        return lane

    def run(self, lane: int, key) -> tuple[int, Launch, int | None]:
        """bind + timed_run on a taken lane: (lane, how it launched, the lane whose run it waited for)."""
        book = self.books.books[lane]
        if book.bind(key):
            self.dropped.append(lane)
        waits = self.books.order_after(lane)
        launch = book.next_launch(self.graphs)
        book.ran(launch)
        return lane, launch, waits

    def call(self, key) -> tuple[int, Launch, int | None]:
        lane = self.take(key)
        try:
            return self.run(lane, key)
        finally:
            self.books.give_back(lane)


P, CAP, R = Launch.PLAIN, Launch.CAPTURE, Launch.REPLAY


def launches(backend: _Backend, keys) -> list[tuple[int, Launch]]:
    return [backend.call(key)[:2] for key in keys]


def test_one_key_runs_plain_then_captures_then_replays():
    backend = _Backend(depth=2)
    assert launches(backend, [A, A, A, A]) == [(0, P), (0, CAP), (0, R), (0, R)]
    assert backend.books.books[0].graph_key == A and backend.dropped == []


def test_a_new_key_on_the_same_context_drops_its_graph_and_runs_plainly_before_capturing_again():
    """TensorRT's rule: a graph belongs to the binding it was captured with, and the first enqueue after a
    shape or address change runs plainly."""
    backend = _Backend(depth=1)
    assert launches(backend, [A, A, B, A, A, A]) == [(0, P), (0, CAP), (0, P), (0, P), (0, CAP), (0, R)]
    assert backend.dropped == [0]  # B dropped A's graph; B itself never captured, so A's rebinding drops nothing
    assert backend.books.books[0].graph_key == A


def test_alternating_buffer_sets_keep_a_graph_each_on_their_own_lanes():
    backend = _Backend(depth=2)
    got = launches(backend, [A, B] * 4)
    assert got == [(0, P), (1, P), (0, CAP), (1, CAP), (0, R), (1, R), (0, R), (1, R)]
    assert backend.dropped == []


def test_more_buffer_sets_than_lanes_reuse_the_lane_used_longest_ago():
    backend = _Backend(depth=2)
    got = launches(backend, [A, B, C, A])
    assert got == [(0, P), (1, P), (0, P), (1, P)]  # C took lane 0 (oldest), then A took lane 1


def test_a_busy_lane_is_not_taken_by_another_thread():
    backend = _Backend(depth=2)
    first = backend.take(A)           # thread 1 is inside a call on lane 0
    second = backend.take(A)          # thread 2, same key: a second lane
    assert (first, second) == (0, 1)
    assert backend.books.pick(lambda bound: True, backend.depth) is None  # a third thread waits
    backend.books.give_back(first)
    assert backend.books.pick(lambda bound: bound == A, backend.depth) == 0


def test_submissions_in_flight_are_collected_oldest_first():
    backend = _Backend(depth=3)
    order = []
    for _ in range(6):
        lane = backend.take(A)
        backend.run(lane, A)
        backend.books.books[lane].pending = True  # its labels wait in the lane until collected
        backend.books.give_back(lane)
        order.append(lane)
    assert order == [0, 1, 2, 0, 1, 2]
    backend.books.books[1].pending = False  # that submission's result() was taken
    assert backend.books.pick(lambda bound: bound == A, backend.depth) == 1  # a free lane before a pending one


def test_runs_on_different_lanes_are_ordered_where_they_share_the_profile():
    shared = _Backend(depth=2)
    assert [shared.call(k)[2] for k in (A, B, B, A)] == [None, 0, None, 1]
    own = _Backend(depth=2, shared_profile=False)  # a fixed-shape engine: contexts may run concurrently
    assert [own.call(k)[2] for k in (A, B, B, A)] == [None, None, None, None]


def test_without_graphs_every_run_is_plain():
    backend = _Backend(depth=1, graphs=False)
    assert [launch for _, launch in launches(backend, [A, A, A])] == [P, P, P]
    assert backend.books.books[0].graph_key is None


@pytest.mark.parametrize("ptr", [0, TENSOR_ALIGNMENT, 0x7F0000000000, 0x7F0000000000 + 24 * TENSOR_ALIGNMENT])
def test_aligned_addresses_pass(ptr):
    check_tensor_address(ptr, "frames")


def test_a_misaligned_slice_is_refused_naming_the_fix():
    base, h, w = 0x7F0000000000, 481, 641  # frames[1:] of an odd frame size starts mid-buffer
    with pytest.raises(InputError, match=r"frames starts at 0x7f00000e1d23, 35 bytes past a 256-byte boundary.*clone"):
        check_tensor_address(base + h * w * 3, "frames")
