"""TensorRT backend (GPU): a deserialized engine run with cuda-python on one CUDA stream.

Host frames go through page-locked buffers (async H2D, `execute_async_v3`, async D2H, one
synchronize); the engine's work for a fixed input shape and fixed buffers is captured once into a
CUDA graph and replayed, for host and device (`infer_device`) calls alike. The pipeline graph has no
data-dependent shapes (see `build.trt_conformance`), so capture succeeds; where an engine still
cannot be captured, the backend says so once and runs it plainly. Device arrays of other libraries
(PyTorch, CuPy) are used zero-copy by `infer_device`.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import threading
from typing import Any

import numpy as np

from ..artifacts import INPUT_NAME, OUTPUT_NAME, ArtifactInfo, open_pipeline
from ..errors import BisenetError, EngineLoadError
from ..frames import check_size
from .base import Backend

__all__ = ["TensorRTBackend", "TensorRTError", "GraphStats", "tensorrt_availability", "trt_logger", "gpu_facts",
           "engine_io"]

_log = logging.getLogger(__name__)
_MIN_MAJOR = 10  # execute_async_v3, name-based I/O, strong typing: TensorRT 10 and 11


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


def tensorrt_availability() -> str | None:
    """None when TensorRT, the CUDA runtime bindings and a GPU are all present; else what is missing."""
    try:
        import tensorrt
    except ImportError:
        return "the tensorrt Python module is not installed (pip install .[gpu], TensorRT 10 or 11)"
    except OSError as exc:  # the module is there but its shared libraries are not
        return f"the tensorrt module cannot load its libraries ({exc}); reinstall TensorRT (pip install .[gpu])"
    major = int(str(tensorrt.__version__).split(".", 1)[0])
    if major < _MIN_MAJOR:
        return f"TensorRT {tensorrt.__version__} is too old; bisenet-rt needs TensorRT 10 or 11 (pip install .[gpu])"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "the CUDA runtime bindings are not installed (pip install cuda-python)"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:  # int(): cuda-bindings >= 13.2 returns its own enum type, not an IntEnum
        return f"no CUDA driver or GPU is usable ({cudart.cudaGetErrorString(err)[1].decode()})"
    if count == 0:
        return "no CUDA GPU is visible"
    return None


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
    from .. import cuda

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
        raise EngineLoadError(f"{path} was built by TensorRT {built}, but TensorRT {here} is installed; "
                              f"engines only load in the TensorRT version that built them; {fix}")
    gpu, here_gpu = sidecar.get("gpu") or {}, gpu_facts()
    if gpu.get("compute_capability") != here_gpu["compute_capability"] or gpu.get("name") != here_gpu["name"]:
        raise EngineLoadError(f"{path} was built for {gpu.get('name')} (sm {gpu.get('compute_capability')}), but this "
                              f"GPU is {here_gpu['name']} (sm {here_gpu['compute_capability']}); engines are tuned for "
                              f"one GPU model; {fix}")


def _check_pipeline_io(io: list[dict[str, Any]], path: os.PathLike) -> None:
    expected = {INPUT_NAME: ("input", 4, "uint8"), OUTPUT_NAME: ("output", 3, "uint8")}
    if {t["name"]: (t["mode"], len(t["shape"]), t["dtype"]) for t in io} != expected:
        raise EngineLoadError(f"{path}: not a bisenet-rt pipeline engine (I/O {io}; expected uint8 '{INPUT_NAME}' "
                              f"N x H x W x 3 in, uint8 '{OUTPUT_NAME}' N x H x W out); build it with "
                              "'bisenet-rt build --backend tensorrt'")


class _Lane:
    """One execution context with its own stream, timing events, buffers and CUDA graph: one frame in flight.

    The synchronous calls use lane 0; `submit` spreads frames over more lanes, so the upload, the
    inference and the download of consecutive frames overlap on different streams.
    """

    def __init__(self, backend: "TensorRTBackend") -> None:
        from .. import cuda

        self.backend = backend
        # CUDA and TensorRT handles (cuda.Stream, cuda.CudaGraph, cuda.PinnedBuffer / DeviceBuffer, an
        # IExecutionContext); typed loosely because tensorrt ships no type information
        self.graph: Any = None
        self.host_in: Any = None
        self.host_out: Any = None
        self.dev_in: Any = None
        self.dev_out: Any = None
        self.shape: tuple[int, ...] | None = None
        self.bound: tuple[int, int] | None = None
        self.graph_key: tuple | None = None
        self.last_key: tuple | None = None
        self.timed = False
        self.last_stream: int | None = None
        self.job: "_TrtPending | None" = None  # the submission whose labels are still in this lane's buffers
        self.context: Any = backend._engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(f"{backend.path}: TensorRT could not create an execution context "
                                  f"({trt_logger().take_errors() or 'out of GPU memory?'})")
        self.stream: Any = cuda.Stream()
        self.events: tuple[Any, Any] = (cuda.Event(), cuda.Event())

    # -- host frames -------------------------------------------------------------------------------
    def start(self, batch: np.ndarray, out: np.ndarray | None, *, in_place: bool = True) -> int:
        """Queue upload, engine and download of a validated batch on this lane's stream; return the
        host address the labels arrive at. Pinned frames (`bisenet_rt.pinned_frames`, or
        cudaHostRegister-ed) are uploaded in place where `in_place` allows (the caller keeps the frame
        unchanged until the labels are collected), others through the lane's pinned buffer (a copy
        taken here); a pinned `out` receives the labels directly."""
        from .. import cuda

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
        self.timed_enqueue(self.stream, graph_key=(batch.shape, self.dev_in.ptr, self.dev_out.ptr))
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
            job.finish()

    # -- binding and launching -----------------------------------------------------------------------
    def bind(self, shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        """Set the input shape and tensor addresses, only where they changed since the last call."""
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

    def timed_enqueue(self, stream: Any, *, graph_key: tuple | None) -> None:
        """Enqueue the engine between the two timing events; graph-replayed when `graph_key` allows.

        The context's scratch memory allows one run at a time, so a run on another stream than the
        last one first waits for the last run's end event.
        """
        start, end = self.events
        if self.timed and stream.handle != self.last_stream:
            stream.wait_event(end)
        self.timed = False
        start.record(stream)
        self.enqueue(stream, graph_key)
        end.record(stream)
        self.timed, self.last_stream = True, stream.handle

    def enqueue(self, stream: Any, graph_key: tuple | None) -> None:
        """Replay the graph captured for `graph_key` on `stream`; capture one on the second call with the same key.

        The first call with a new shape or new buffers runs plainly: TensorRT may need non-capturable
        work right after a shape change, and one-off shapes then never pay for a capture. Graphs are
        captured on the lane's own stream and replayed on whichever stream the call runs on.
        """
        backend = self.backend
        if graph_key is not None and backend._use_graphs:
            if self.graph is not None and self.graph_key == graph_key:
                self.launch(stream)
                return
            if self.last_key == graph_key and self.capture(graph_key):
                self.launch(stream)
                return
        self.execute(stream)
        backend.graph_stats.plain_runs += 1
        self.last_key = graph_key

    def launch(self, stream: Any) -> None:
        self.graph.launch(stream)
        self.backend.graph_stats.replays += 1

    def capture(self, graph_key: tuple) -> bool:
        """Capture the engine's work into a CUDA graph; on failure say so once and run plainly from then on."""
        from .. import cuda

        backend = self.backend
        self.drop_graph()
        try:
            self.graph = cuda.CudaGraph.capture(self.stream, lambda: self.execute(self.stream))
        except BisenetError as exc:
            backend._use_graphs = False
            backend.graph_stats.fallback = str(exc)
            _log.warning("CUDA graph capture failed for %s (%s); running it without CUDA graphs from now on",
                         backend.path.name, exc)
            return False
        self.graph_key = graph_key
        backend.graph_stats.captures += 1
        return True

    def execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(stream.handle):
            raise TensorRTError(f"execute_async_v3 failed for {self.backend.path.name}: "
                                f"{trt_logger().take_errors() or 'no detail'}")

    def drop_graph(self) -> None:
        if self.graph is not None:
            graph, self.graph, self.graph_key = self.graph, None, None
            graph.close()

    def close(self) -> None:
        """Wait for queued work, then free graph, context, buffers, events and stream."""
        try:
            self.finish_job()
            if self.stream is not None:
                self.stream.synchronize()
            if self.timed:
                self.events[1].synchronize()  # the last run, also when queued on a caller's stream
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
    do not follow graph launches). Calls from several threads are serialized (one lock); for
    throughput, `submit` keeps up to `depth` frames in flight on their own streams and contexts.
    """

    name = "tensorrt"
    suffixes = (".engine", ".plan", ".trt")

    @classmethod
    def availability(cls) -> str | None:
        return tensorrt_availability()

    def __init__(self, path: str | os.PathLike, *, cuda_graphs: bool = True) -> None:
        super().__init__(path)
        # Everything _close() frees, set first so a failed load still closes cleanly.
        self._engine: Any = None
        self._runtime: Any = None
        self._lanes: list[_Lane] = []
        self._next_lane = 0
        self._lock = threading.RLock()
        self._use_graphs = cuda_graphs
        self._most_in_flight = 0
        #: Captures, replays and plain runs so far (all lanes), and why capture stopped (if it did).
        self.graph_stats = GraphStats()

        import tensorrt as trt

        from .. import cuda

        pipeline = open_pipeline(self.path)
        sidecar = pipeline.sidecar or {}
        self._info: ArtifactInfo = pipeline.info
        _check_compatible(sidecar, self.path)
        logger = trt_logger()
        logger.take_errors()
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineLoadError(f"{self.path}: TensorRT could not deserialize it: the file is corrupt or was "
                                  f"built by another TensorRT ({logger.take_errors() or 'no detail'}); "
                                  f"rebuild it with: {_rebuild_command(sidecar, self.path)}")
        io = engine_io(self._engine)
        _check_pipeline_io(io, self.path)
        self._dynamic_input = any(d < 0 for t in io if t["name"] == INPUT_NAME for d in t["shape"])
        self._lanes.append(_Lane(self))
        major, minor = cuda.compute_capability()
        self._device = f"GPU: {cuda.device_name()} (sm_{major}{minor})"

    # -- what it reports -------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._device

    def versions(self) -> dict[str, str]:
        import tensorrt as trt

        from .. import cuda

        return {"tensorrt": str(trt.__version__), "cuda_runtime": cuda.runtime_version(),
                "cuda_driver": cuda.driver_version()}

    def last_device_time_ms(self) -> float | None:
        """GPU time of the engine's work in the last synchronous call (CUDA events around the enqueue)."""
        lane = self._lanes[0] if self._lanes else None
        if lane is None or not lane.timed or lane.events is None:
            return None
        start, end = lane.events
        return end.elapsed_ms(start)

    @property
    def most_in_flight(self) -> int:
        """The most submissions that were in flight at once so far."""
        return self._most_in_flight

    # -- running -----------------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_into(batch, None)

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        with self._lock:
            lane = self._lanes[0]
            dst = lane.start(batch, out)
            return lane.collect(dst, batch.shape[:3], out)

    def submit(self, batch: np.ndarray, out: np.ndarray | None = None, *, copy: bool = True) -> Any:
        """Queue a validated batch on the next of `depth` lanes and return at once; `.result()` waits for it.

        A lane still holding an earlier submission's labels hands them to that submission first, so
        at most `depth` frames are in flight and memory stays bounded. With `copy` the frame is staged
        into the lane's pinned buffer (that is the copy); only without it is a pinned frame uploaded in place.
        """
        self._check(batch, out)
        with self._lock:
            while len(self._lanes) < self.depth:
                self._lanes.append(_Lane(self))
            lane = self._lanes[self._next_lane % self.depth]
            self._next_lane += 1
            dst = lane.start(batch, out, in_place=not copy)
            lane.job = _TrtPending(lane, dst, batch.shape[:3], out)
            self._most_in_flight = max(self._most_in_flight, sum(1 for ln in self._lanes if ln.job is not None))
            return lane.job

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Segment device frames into device labels, zero-copy (`__cuda_array_interface__` objects).

        `frames`: uint8 N x H x W x 3, `labels`: writable uint8 N x H x W, both C-contiguous. With
        `stream` (a raw cudaStream_t handle, e.g. `torch.cuda.current_stream().cuda_stream`) the work
        is queued there, after what the caller queued on it, and the call returns at once. Without
        it, the work waits for the streams the arrays' interfaces name (else the legacy default
        stream, where PyTorch and CuPy work by default) and the call returns when the labels are written.
        The same buffers twice in a row are captured into a CUDA graph and replayed from then on.
        """
        from .. import cuda

        if self._closed:
            raise BisenetError(f"{self.name} backend for {self.path.name} is closed")
        src = cuda.device_pointer(frames, (None, None, None, 3), np.uint8, name="frames")
        n, h, w, _ = src.shape
        info = self.info
        check_size(src.shape, info.min_size, info.max_size, info.max_batch, self.path.name)
        dst = cuda.device_pointer(labels, (n, h, w), np.uint8, name="labels", writable=True)
        with self._lock:
            lane = self._lanes[0]
            lane.finish_job()
            run_on = lane.stream if stream is None else cuda.Stream(int(stream))
            for producer in (src.stream, dst.stream):
                run_on.wait_for(cuda.LEGACY_STREAM if producer is None and stream is None else producer)
            lane.bind(src.shape, src.ptr, dst.ptr)
            try:
                lane.timed_enqueue(run_on, graph_key=(src.shape, src.ptr, dst.ptr))
                if stream is None:
                    run_on.synchronize()
            finally:
                if run_on is not lane.stream:
                    run_on.close()  # borrowed handle: frees only its helper event

    # -- lifetime ------------------------------------------------------------------------------------
    def _close(self) -> None:
        """Wait for queued work, then free every lane, then the engine and runtime."""
        try:
            for lane in self._lanes:
                lane.close()
        finally:
            self._lanes = []
            self._engine = self._runtime = None  # contexts (in the lanes) before engine before runtime
