"""TensorRT backend (GPU): a deserialized engine run with cuda-python, one execution context per lane.

Host frames go through page-locked buffers (async H2D, `execute_async_v3`, async D2H, one
synchronize); the engine's work for a fixed input shape and fixed buffers is captured once into a
CUDA graph and replayed, for host and device (`infer_device`) calls alike. The pipeline graph has no
data-dependent shapes (see `conformance`), so capture succeeds; where an engine still
cannot be captured, the backend says so once and runs it plainly. Device arrays of other libraries
(PyTorch, CuPy) are used zero-copy by `infer_device`.

A lane is one execution context with its own stream, buffers and CUDA graph. Calls from several threads
and submissions spread over up to `depth` lanes; which lane a call takes, when a lane's graph is dropped
and how lanes' runs are ordered is decided by `lanes` (bookkeeping without CUDA, tested on any
machine). The engine always runs on a lane's own non-default stream: TensorRT warns that enqueueV3 on the
default stream adds device-wide synchronisation (NvInferRuntime.h, enqueueV3).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import threading
from typing import Any, Callable, Hashable

import numpy as np

from ...artifacts import INPUT_NAME, OUTPUT_NAME, ArtifactInfo, open_artifact
from ...errors import BisenetError, ArtifactError
from ..base import Backend
from ..submission import DEFAULT_DEPTH
from ..frames import check_size
from .lanes import LaneBook, LaneBooks, Launch, check_tensor_address

__all__ = ["TensorRTBackend", "TensorRTError", "GraphStats", "trt_logger", "gpu_facts", "engine_io"]

_log = logging.getLogger(__name__)


class TensorRTError(BisenetError, RuntimeError):
    """A TensorRT call failed while running an engine; the message names the call."""


@dataclasses.dataclass
class GraphStats:
    """How the engine's work was launched: captured CUDA graphs, their replays, plain runs, and why
    capture was given up (None while it works)."""

    captures: int = 0
    replays: int = 0
    plain_runs: int = 0
    fallback: str | None = None


@functools.cache
def trt_logger() -> Any:
    """The process-wide TensorRT logger: warnings go to stderr, errors are kept for our exceptions.

    One instance for every builder and runtime (TensorRT warns when they are given different ones).
    """
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            super().__init__()
            self.errors: collections.deque[str] = collections.deque(maxlen=20)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                _log.warning("TensorRT: %s", msg)

        def take_errors(self) -> str:
            """The errors logged since the last call, joined for a message ('' when none)."""
            text = "; ".join(self.errors)
            self.errors.clear()
            return text

    return _Logger()


def gpu_facts() -> dict[str, str]:
    """The current GPU as the sidecar records it: name and compute capability ('8.9')."""
    from . import cuda

    major, minor = cuda.compute_capability()
    return {"name": cuda.device_name(), "compute_capability": f"{major}.{minor}"}


def engine_io(engine: Any) -> list[dict[str, Any]]:
    """Name, direction, shape (-1 = dynamic) and numpy dtype name of each I/O tensor of an engine."""
    import tensorrt as trt

    io = []
    for i in range(engine.num_io_tensors):
        tensor = engine.get_tensor_name(i)
        io.append({"name": tensor, "mode": engine.get_tensor_mode(tensor).name.lower(),
                   "shape": [int(d) for d in engine.get_tensor_shape(tensor)],
                   "dtype": np.dtype(trt.nptype(engine.get_tensor_dtype(tensor))).name})
    return io


def _rebuild_command(sidecar: dict[str, Any], path: os.PathLike) -> str:
    return sidecar.get("rebuild_command") or f"bisenet-rt build --backend tensorrt -o {path}"


def _check_compatible(sidecar: dict[str, Any], path: os.PathLike) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU, saying how to rebuild."""
    import tensorrt as trt

    built, here = sidecar.get("tensorrt_version"), str(trt.__version__)
    fix = f"rebuild it on this machine: {_rebuild_command(sidecar, path)}"
    if built != here:
        raise ArtifactError(f"{path} was built by TensorRT {built}, but TensorRT {here} is installed; "
                              f"engines only load in the TensorRT version that built them; {fix}")
    gpu, here_gpu = sidecar.get("gpu") or {}, gpu_facts()
    if gpu.get("compute_capability") != here_gpu["compute_capability"] or gpu.get("name") != here_gpu["name"]:
        raise ArtifactError(f"{path} was built for {gpu.get('name')} (sm {gpu.get('compute_capability')}), but this "
                              f"GPU is {here_gpu['name']} (sm {here_gpu['compute_capability']}); engines are tuned for "
                              f"one GPU model; {fix}")


def _check_pipeline_io(io: list[dict[str, Any]], path: os.PathLike) -> None:
    expected = {INPUT_NAME: ("input", 4, "uint8"), OUTPUT_NAME: ("output", 3, "uint8")}
    if {t["name"]: (t["mode"], len(t["shape"]), t["dtype"]) for t in io} != expected:
        raise ArtifactError(f"{path}: not a bisenet-rt pipeline engine (I/O {io}; expected uint8 '{INPUT_NAME}' "
                              f"N x H x W x 3 in, uint8 '{OUTPUT_NAME}' N x H x W out); build it with "
                              "'bisenet-rt build --backend tensorrt'")


class _Lane:
    """One execution context with its own stream, timing events, buffers and CUDA graph: one frame in flight.

    Its `book` (lanes.LaneBook) says which key (shape, input and output address) the context is
    bound to and what its graph belongs to; this class does the CUDA and TensorRT calls the book decides.
    """

    def __init__(self, backend: "TensorRTBackend", index: int) -> None:
        from . import cuda

        self.backend = backend
        self.index = index
        # CUDA and TensorRT handles (cuda.Stream, cuda.CudaGraph, cuda.PinnedBuffer / DeviceBuffer, an
        # IExecutionContext); typed loosely because tensorrt ships no type information
        self.graph: Any = None
        self.host_in: Any = None
        self.host_out: Any = None
        self.dev_in: Any = None
        self.dev_out: Any = None
        self.shape: tuple[int, ...] | None = None
        self.bound: tuple[int, int] | None = None
        self.timed = False
        self.job: "_TrtPending | None" = None  # the submission whose labels are still in this lane's buffers
        self.context: Any = backend._engine.create_execution_context()
        if self.context is None:
            raise ArtifactError(f"{backend.path}: TensorRT could not create an execution context "
                                  f"({trt_logger().take_errors() or 'out of GPU memory?'})")
        self.stream: Any = cuda.Stream()
        self.events: tuple[Any, Any] = (cuda.Event(), cuda.Event())

    @property
    def book(self) -> LaneBook:
        return self.backend._books.books[self.index]

    # -- host frames -------------------------------------------------------------------------------
    def start(self, batch: np.ndarray, out: np.ndarray | None, *, in_place: bool = True) -> int:
        """Queue upload, engine and download of a validated batch on this lane's stream; return the
        host address the labels arrive at. Pinned frames (`bisenet_rt.pinned_frames`, or
        cudaHostRegister-ed) are uploaded in place where `in_place` allows (the caller keeps the frame
        unchanged until the labels are collected), others through the lane's pinned buffer (a copy
        taken here); a pinned `out` receives the labels directly."""
        from . import cuda

        self.finish_job()
        n, h, w, _ = batch.shape
        in_bytes, out_bytes = batch.nbytes, n * h * w
        self.dev_in = _grown(self.dev_in, in_bytes, cuda.DeviceBuffer)
        self.dev_out = _grown(self.dev_out, out_bytes, cuda.DeviceBuffer)
        if in_place and cuda.is_pinned(batch):
            src = batch.ctypes.data
        else:
            self.host_in = _grown(self.host_in, in_bytes, cuda.PinnedBuffer)
            np.copyto(self.host_in.view(batch.shape), batch)
            src = self.host_in.ptr
        if out is not None and cuda.is_pinned(out):
            dst = out.ctypes.data
        else:
            self.host_out = _grown(self.host_out, out_bytes, cuda.PinnedBuffer)
            dst = self.host_out.ptr
        self.bind(batch.shape, self.dev_in.ptr, self.dev_out.ptr)
        self.dev_in.copy_from_host(src, in_bytes, self.stream)
        self.timed_run()
        self.dev_out.copy_to_host(dst, out_bytes, self.stream)
        return dst

    def collect(self, dst: int, shape: tuple[int, int, int], out: np.ndarray | None) -> np.ndarray:
        """Wait for the lane's queued work; the labels in `out` (copied there unless they landed there) or a new array."""
        self.stream.synchronize()
        if out is not None and dst == out.ctypes.data:
            return out
        labels = self.host_out.view(shape)
        if out is None:
            return labels.copy()  # the pinned buffer is reused by the next call
        np.copyto(out, labels)
        return out

    def finish_job(self) -> None:
        if self.job is not None:
            job, self.job = self.job, None
            self.book.pending = False
            job.finish()

    # -- binding and launching -----------------------------------------------------------------------
    def bind(self, shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        """Set the input shape and tensor addresses, only where they changed since the last call; a graph
        captured for another binding is dropped (it would replay the old shape or buffers)."""
        if self.book.bind((shape, in_ptr, out_ptr)):
            self.drop_graph()
        context, path = self.context, self.backend.path
        if shape != self.shape:
            self.shape = None
            if self.backend._dynamic_input and not context.set_input_shape(INPUT_NAME, shape):
                raise TensorRTError(f"set_input_shape('{INPUT_NAME}', {shape}) failed: "
                                    f"{trt_logger().take_errors() or 'shape outside the engine profile'}")
            out_shape = tuple(int(d) for d in context.get_tensor_shape(OUTPUT_NAME))
            if out_shape != shape[:3]:
                raise TensorRTError(f"engine output '{OUTPUT_NAME}' has shape {out_shape} for input {shape}; expected "
                                    f"{shape[:3]}: {path.name} is not a bisenet-rt pipeline engine")
            self.shape = shape
        if (in_ptr, out_ptr) != self.bound:
            self.bound = None
            for tensor, ptr in ((INPUT_NAME, in_ptr), (OUTPUT_NAME, out_ptr)):
                if not context.set_tensor_address(tensor, ptr):
                    raise TensorRTError(f"set_tensor_address('{tensor}', {ptr:#x}) failed: "
                                        f"{trt_logger().take_errors() or 'no detail'}")
            self.bound = (in_ptr, out_ptr)

    def timed_run(self) -> None:
        """Run the engine on the lane's stream between its two timing events, after the last run of another
        lane where the lanes share the engine's optimization profile (`LaneBooks.order_after`)."""
        before = self.backend._books.order_after(self.index)
        if before is not None:
            self.stream.wait_event(self.backend._lanes[before].events[1])
        start, end = self.events
        self.timed = False
        start.record(self.stream)
        self.run()
        end.record(self.stream)
        self.timed = True

    def run(self) -> None:
        """Run plainly, capture a CUDA graph, or replay it, as the lane's book decides for the bound key."""
        backend = self.backend
        launch = self.book.next_launch(backend._use_graphs)
        if launch is Launch.CAPTURE and not self.capture():
            launch = Launch.PLAIN
        if launch is Launch.PLAIN:
            self.execute()
            backend.graph_stats.plain_runs += 1
        else:
            self.graph.launch(self.stream)
            backend.graph_stats.replays += 1
        self.book.ran(launch)

    def capture(self) -> bool:
        """Capture the engine's work into a CUDA graph; on failure say so once and run plainly from then on.

        As trtexec does (samples/common/sampleInference.cpp), the earlier plain run has finished before the
        capture begins, so none of its set-up work can fall into the graph."""
        from . import cuda

        backend = self.backend
        self.drop_graph()
        self.stream.synchronize()
        try:
            self.graph = cuda.CudaGraph.capture(self.stream, self.execute)
        except BisenetError as exc:
            backend._use_graphs = False
            backend.graph_stats.fallback = str(exc)
            _log.warning("CUDA graph capture failed for %s (%s); running it without CUDA graphs from now on",
                         backend.path.name, exc)
            return False
        backend.graph_stats.captures += 1
        return True

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise TensorRTError(f"execute_async_v3 failed for {self.backend.path.name}: "
                                f"{trt_logger().take_errors() or 'no detail'}")

    def drop_graph(self) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            self.book.graph_dropped()
            graph.close()

    def close(self) -> None:
        """Wait for queued work, then free graph, context, buffers, events and stream."""
        try:
            self.finish_job()
            if self.stream is not None:
                self.stream.synchronize()
        finally:
            self.drop_graph()
            self.context = None
            for buffer in (self.host_in, self.host_out, self.dev_in, self.dev_out, *self.events):
                if buffer is not None:
                    buffer.close()
            self.host_in = self.host_out = self.dev_in = self.dev_out = None
            self.events = (None, None)
            if self.stream is not None:
                self.stream.close()
                self.stream = None


class _TrtPending:
    """A frame submitted to a lane: its upload, inference and download are queued; `result()` waits."""

    def __init__(self, lane: _Lane, dst: int, shape: tuple[int, int, int], out: np.ndarray | None) -> None:
        self._lane, self._dst, self._shape, self._out = lane, dst, shape, out
        self._labels: np.ndarray | None = None

    def finish(self) -> None:
        if self._labels is None:
            self._labels = self._lane.collect(self._dst, self._shape, self._out)

    def result(self, timeout: float | None = None) -> np.ndarray:
        with self._lane.backend._lock:
            if self._lane.job is self:
                self._lane.finish_job()
            self.finish()
        assert self._labels is not None  # finish() collected them
        return self._labels

    def done(self) -> bool:
        return self._labels is not None


def _grown(buffer: Any, nbytes: int, kind: type) -> Any:
    """`buffer` if it holds `nbytes`, else a new one of that size (the old one freed)."""
    if buffer is not None and buffer.nbytes >= nbytes:
        return buffer
    if buffer is not None:
        buffer.close()
    return kind(nbytes)


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine built by `bisenet-rt build --backend tensorrt`.

    `cuda_graphs=False` runs every call with plain `execute_async_v3` (for profiling tools that
    do not follow graph launches). Calls from several threads and `submit` spread over up to `depth`
    lanes (own context, stream and buffers each); a call waits for a free lane when all are busy.
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH, cuda_graphs: bool = True) -> None:
        super().__init__(path, depth=depth)
        # Everything _close() frees, set first so a failed load still closes cleanly.
        self._engine: Any = None
        self._runtime: Any = None
        self._lanes: list[_Lane] = []
        self._books = LaneBooks(shared_profile=True)
        self._lock = threading.RLock()
        self._lane_free = threading.Condition(self._lock)
        self._last_sync: _Lane | None = None  # the lane of the last synchronous call (its events time it)
        self._use_graphs = cuda_graphs
        self._most_in_flight = 0
        #: Captures, replays and plain runs so far (all lanes), and why capture stopped (if it did).
        self.graph_stats = GraphStats()

        import tensorrt as trt

        from . import cuda

        artifact = open_artifact(self.path)
        sidecar = artifact.sidecar or {}
        self._info: ArtifactInfo = artifact.info
        _check_compatible(sidecar, self.path)
        logger = trt_logger()
        logger.take_errors()
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{self.path}: TensorRT could not deserialize it: the file is corrupt or was "
                                  f"built by another TensorRT ({logger.take_errors() or 'no detail'}); "
                                  f"rebuild it with: {_rebuild_command(sidecar, self.path)}")
        io = engine_io(self._engine)
        _check_pipeline_io(io, self.path)
        self._dynamic_input = any(d < 0 for t in io if t["name"] == INPUT_NAME for d in t["shape"])
        # Lanes share the engine's one optimization profile; with dynamic shapes their runs are ordered.
        self._books = LaneBooks(shared_profile=self._dynamic_input)
        self._add_lane()
        major, minor = cuda.compute_capability()
        self._device = f"GPU: {cuda.device_name()} (sm_{major}{minor})"

    # -- what it reports -------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._device

    def versions(self) -> dict[str, str]:
        import tensorrt as trt

        from . import cuda

        return {"tensorrt": str(trt.__version__), "cuda_runtime": cuda.runtime_version(),
                "cuda_driver": cuda.driver_version()}

    def last_device_time_ms(self) -> float | None:
        """GPU time of the engine's work in the last synchronous call (CUDA events around the enqueue)."""
        lane = self._last_sync
        if lane is None or not lane.timed or lane.events[0] is None:
            return None
        start, end = lane.events
        return end.elapsed_ms(start)

    @property
    def most_in_flight(self) -> int:
        """The most submissions that were in flight at once so far."""
        return self._most_in_flight

    # -- lanes -------------------------------------------------------------------------------------
    def _add_lane(self) -> int:
        lane = _Lane(self, len(self._lanes))  # creates the context first: a failure leaves no book behind
        self._books.add()
        self._lanes.append(lane)
        return lane.index

    def _take_lane(self, wants: Callable[[Hashable | None], bool]) -> _Lane:
        """The lane a call runs on (`LaneBooks.pick`), held until `_give_back`; waits while all `depth` are busy.
        The caller holds the lock."""
        while True:
            self._refuse_if_closed()
            index = self._books.pick(wants, self.depth)
            if index is not None:
                break
            self._lane_free.wait()
        if index == len(self._lanes):
            self._add_lane()
        self._books.take(index)
        return self._lanes[index]

    def _give_back(self, lane: _Lane) -> None:
        with self._lock:
            self._books.give_back(lane.index)
            self._lane_free.notify_all()

    # -- running -----------------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_into(batch, None)

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """Queue the batch on a lane bound to its shape where one is free; wait for its labels without holding the
        lock, so calls from other threads run on other lanes meanwhile."""
        with self._lock:
            lane = self._take_lane(_same_shape(batch.shape))
            try:
                dst = lane.start(batch, out)
                self._last_sync = lane
            except BaseException:
                self._give_back(lane)
                raise
        try:
            return lane.collect(dst, batch.shape[:3], out)
        finally:
            self._give_back(lane)

    def submit(self, batch: np.ndarray, out: np.ndarray | None = None, *, copy: bool = True) -> Any:
        """Queue a validated batch on one of `depth` lanes and return at once; `.result()` waits for it.

        A lane still holding an earlier submission's labels hands them to that submission first (the
        oldest first), so at most `depth` frames are in flight and memory stays bounded. With `copy` the frame
        is staged into the lane's pinned buffer (that is the copy); only without it is a pinned frame uploaded in
        place.
        """
        self._check(batch, out)
        with self._lock:
            lane = self._take_lane(_same_shape(batch.shape))
            try:
                dst = lane.start(batch, out, in_place=not copy)
                lane.job = _TrtPending(lane, dst, batch.shape[:3], out)
                lane.book.pending = True
                self._most_in_flight = max(self._most_in_flight, sum(1 for ln in self._lanes if ln.job is not None))
                return lane.job
            finally:
                self._give_back(lane)

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Segment device frames into device labels, zero-copy (`__cuda_array_interface__` objects).

        `frames`: uint8 N x H x W x 3, `labels`: writable uint8 N x H x W, both C-contiguous and starting on
        a 256-byte boundary (TensorRT's rule; a slice like `frames[1:]` may not). With `stream` (a raw
        cudaStream_t handle, e.g. `torch.cuda.current_stream().cuda_stream`, 0 on PyTorch's default stream)
        the work runs after what the caller queued there, what the caller queues there later runs after
        the labels are written, and the call returns at once. Without it, the work waits for the streams
        the arrays' interfaces name (else the legacy default stream, where PyTorch and CuPy work by
        default) and the call returns when the labels are written. Either way the engine runs on a lane's
        own stream. The same buffers twice in a row are captured into a CUDA graph and replayed from then
        on; calls alternating between buffer sets keep one graph each on up to `depth` lanes.
        """
        from . import cuda

        self._refuse_if_closed()
        src = cuda.device_pointer(frames, (None, None, None, 3), np.uint8, name="frames")
        n, h, w, _ = src.shape
        info = self.info
        check_size(src.shape, info.min_size, info.max_size, info.max_batch, self.path.name)
        dst = cuda.device_pointer(labels, (n, h, w), np.uint8, name="labels", writable=True)
        check_tensor_address(src.ptr, "frames")
        check_tensor_address(dst.ptr, "labels")
        key = (src.shape, src.ptr, dst.ptr)
        with self._lock:
            lane = self._take_lane(lambda bound: bound == key)
        try:
            with self._lock:
                lane.finish_job()
                self._run_device(lane, src, dst, stream)
            if stream is None:
                lane.stream.synchronize()
        finally:
            self._give_back(lane)

    def _run_device(self, lane: _Lane, src: Any, dst: Any, stream: int | None) -> None:
        """Order the lane's stream after the producers (the caller's stream, else the arrays' streams or the
        legacy default stream), run the engine there, and order the caller's stream after it."""
        from . import cuda

        caller = None if stream is None else cuda.Stream(int(stream))
        try:
            if caller is not None:
                producers = [caller.handle, *(p for p in (src.stream, dst.stream) if p is not None)]
            else:
                producers = [cuda.LEGACY_STREAM if p is None else p for p in (src.stream, dst.stream)]
            for producer in dict.fromkeys(producers):
                lane.stream.wait_for(producer)
            lane.bind(src.shape, src.ptr, dst.ptr)
            lane.timed_run()
            self._last_sync = lane
            if caller is not None:
                caller.wait_for(lane.stream.handle)
        finally:
            if caller is not None:
                caller.close()  # borrowed handle: frees only its helper event

    # -- lifetime ------------------------------------------------------------------------------------
    def _close(self) -> None:
        """Wait for calls in progress and queued work, then free every lane, then the engine and runtime."""
        with self._lock:
            while any(book.held for book in self._books.books):
                self._lane_free.wait()
            try:
                for lane in self._lanes:
                    lane.close()
            finally:
                self._lanes = []
                self._engine = self._runtime = None  # contexts (in the lanes) before engine before runtime


def _same_shape(shape: tuple[int, ...]) -> Callable[[Hashable | None], bool]:
    """For host calls: a lane bound to this batch shape (its buffers are the lane's own) keeps its graph."""
    return lambda bound: isinstance(bound, tuple) and bound[0] == shape
