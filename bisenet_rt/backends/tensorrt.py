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
import sys
from typing import Any

import numpy as np

from ..artifacts import ArtifactInfo, info_from_sidecar, read_sidecar
from ..errors import BisenetError, EngineLoadError
from ..export import INPUT_NAME, OUTPUT_NAME
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
                print(f"TensorRT warning: {msg}", file=sys.stderr)

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


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine built by `bisenet-rt build --backend tensorrt`.

    `cuda_graphs=False` runs every call with plain `execute_async_v3` (for profiling tools that
    do not follow graph launches).
    """

    name = "tensorrt"
    suffixes = (".engine", ".plan", ".trt")

    @classmethod
    def availability(cls) -> str | None:
        return tensorrt_availability()

    def __init__(self, path: str | os.PathLike, *, cuda_graphs: bool = True) -> None:
        super().__init__(path)
        # Everything _close() frees, set first so a failed load still closes cleanly.
        self._context = self._engine = self._runtime = self._stream = self._graph = None
        self._events: tuple[Any, Any] | None = None
        self._host_in = self._host_out = self._dev_in = self._dev_out = None
        self._shape: tuple[int, ...] | None = None
        self._bound: tuple[int, int] | None = None
        self._graph_key: tuple | None = None
        self._last_key: tuple | None = None
        self._timed = False
        self._last_stream: int | None = None
        self._use_graphs = cuda_graphs
        #: Captures, replays and plain runs so far, and why capture stopped (if it did).
        self.graph_stats = GraphStats()

        import tensorrt as trt

        from .. import cuda

        sidecar = read_sidecar(self.path)
        self._info: ArtifactInfo = info_from_sidecar(sidecar)
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
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineLoadError(f"{self.path}: TensorRT could not create an execution context "
                                  f"({logger.take_errors() or 'out of GPU memory?'})")
        self._stream = cuda.Stream()
        self._events = (cuda.Event(), cuda.Event())
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
        """GPU time of the engine's work in the last call (CUDA events around the enqueue)."""
        if not self._timed or self._events is None:
            return None
        start, end = self._events
        return end.elapsed_ms(start)

    # -- running -----------------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        from .. import cuda

        n, h, w, _ = batch.shape
        in_bytes, out_bytes = batch.nbytes, n * h * w
        self._host_in = self._grown(self._host_in, in_bytes, cuda.PinnedBuffer)
        self._host_out = self._grown(self._host_out, out_bytes, cuda.PinnedBuffer)
        self._dev_in = self._grown(self._dev_in, in_bytes, cuda.DeviceBuffer)
        self._dev_out = self._grown(self._dev_out, out_bytes, cuda.DeviceBuffer)
        self._bind(batch.shape, self._dev_in.ptr, self._dev_out.ptr)
        np.copyto(self._host_in.view(batch.shape), batch)
        stream = self._stream
        self._dev_in.copy_from_host(self._host_in, in_bytes, stream)
        self._timed_enqueue(stream, graph_key=(batch.shape, self._dev_in.ptr, self._dev_out.ptr))
        self._dev_out.copy_to_host(self._host_out, out_bytes, stream)
        stream.synchronize()
        return self._host_out.view((n, h, w)).copy()  # the pinned buffer is reused by the next call

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Segment device frames into device labels, zero-copy (`__cuda_array_interface__` objects).

        `frames`: uint8 N x H x W x 3, `labels`: writable uint8 N x H x W, both C-contiguous. With
        `stream` (a raw cudaStream_t handle, e.g. `torch.cuda.current_stream().cuda_stream`) the work
        is queued there, after what the caller queued on it, and the call returns at once. Without
        it, the work waits for the streams the arrays' interfaces name (else the legacy default
        stream, where PyTorch and CuPy work by default) and the call returns when the labels are written.
        """
        from .. import cuda

        if self._closed:
            raise BisenetError(f"{self.name} backend for {self.path.name} is closed")
        src = cuda.device_pointer(frames, (None, None, None, 3), np.uint8, name="frames")
        n, h, w, _ = src.shape
        info = self.info
        check_size(src.shape, info.min_size, info.max_size, info.max_batch, self.path.name)
        dst = cuda.device_pointer(labels, (n, h, w), np.uint8, name="labels", writable=True)
        run_on = self._stream if stream is None else cuda.Stream(int(stream))
        for producer in (src.stream, dst.stream):
            run_on.wait_for(cuda.LEGACY_STREAM if producer is None and stream is None else producer)
        self._bind(src.shape, src.ptr, dst.ptr)
        try:
            self._timed_enqueue(run_on, graph_key=(src.shape, src.ptr, dst.ptr))
            if stream is None:
                run_on.synchronize()
        finally:
            if run_on is not self._stream:
                run_on.close()  # borrowed handle: frees only its helper event

    @staticmethod
    def _grown(buffer: Any, nbytes: int, kind: type) -> Any:
        """`buffer` if it holds `nbytes`, else a new one of that size (the old one freed)."""
        if buffer is not None and buffer.nbytes >= nbytes:
            return buffer
        if buffer is not None:
            buffer.close()
        return kind(nbytes)

    def _bind(self, shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        """Set the input shape and tensor addresses, only where they changed since the last call."""
        context = self._context
        if shape != self._shape:
            self._shape = None
            if self._dynamic_input and not context.set_input_shape(INPUT_NAME, shape):
                raise TensorRTError(f"set_input_shape('{INPUT_NAME}', {shape}) failed: "
                                    f"{trt_logger().take_errors() or 'shape outside the engine profile'}")
            out_shape = tuple(int(d) for d in context.get_tensor_shape(OUTPUT_NAME))
            if out_shape != shape[:3]:
                raise TensorRTError(f"engine output '{OUTPUT_NAME}' has shape {out_shape} for input {shape}; expected "
                                    f"{shape[:3]}: {self.path.name} is not a bisenet-rt pipeline engine")
            self._shape = shape
        if (in_ptr, out_ptr) != self._bound:
            self._bound = None
            for tensor, ptr in ((INPUT_NAME, in_ptr), (OUTPUT_NAME, out_ptr)):
                if not context.set_tensor_address(tensor, ptr):
                    raise TensorRTError(f"set_tensor_address('{tensor}', {ptr:#x}) failed: "
                                        f"{trt_logger().take_errors() or 'no detail'}")
            self._bound = (in_ptr, out_ptr)

    def _timed_enqueue(self, stream: Any, *, graph_key: tuple | None) -> None:
        """Enqueue the engine between the two timing events; graph-replayed when `graph_key` allows.

        The context's scratch memory allows one run at a time, so a run on another stream than the
        last one first waits for the last run's end event.
        """
        start, end = self._events
        if self._timed and stream.handle != self._last_stream:
            stream.wait_event(end)
        self._timed = False
        start.record(stream)
        self._enqueue(stream, graph_key)
        end.record(stream)
        self._timed, self._last_stream = True, stream.handle

    def _enqueue(self, stream: Any, graph_key: tuple | None) -> None:
        """Replay the graph captured for `graph_key` on `stream`; capture one on the second call with the same key.

        The first call with a new shape or new buffers runs plainly: TensorRT may need non-capturable
        work right after a shape change, and one-off shapes then never pay for a capture. Graphs are
        captured on the backend's own stream and replayed on whichever stream the call runs on.
        """
        if graph_key is not None and self._use_graphs:
            if self._graph is not None and self._graph_key == graph_key:
                self._launch(stream)
                return
            if self._last_key == graph_key and self._capture(graph_key):
                self._launch(stream)
                return
        self._execute(stream)
        self.graph_stats.plain_runs += 1
        self._last_key = graph_key

    def _launch(self, stream: Any) -> None:
        self._graph.launch(stream)
        self.graph_stats.replays += 1

    def _capture(self, graph_key: tuple) -> bool:
        """Capture the engine's work into a CUDA graph; on failure say so once and run plainly from then on."""
        from .. import cuda

        self._drop_graph()
        try:
            self._graph = cuda.CudaGraph.capture(self._stream, lambda: self._execute(self._stream))
        except BisenetError as exc:
            self._use_graphs = False
            self.graph_stats.fallback = str(exc)
            _log.warning("CUDA graph capture failed for %s (%s); running it without CUDA graphs from now on",
                         self.path.name, exc)
            return False
        self._graph_key = graph_key
        self.graph_stats.captures += 1
        return True

    def _execute(self, stream: Any) -> None:
        if not self._context.execute_async_v3(stream.handle):
            raise TensorRTError(f"execute_async_v3 failed for {self.path.name}: "
                                f"{trt_logger().take_errors() or 'no detail'}")

    def _drop_graph(self) -> None:
        if self._graph is not None:
            graph, self._graph, self._graph_key = self._graph, None, None
            graph.close()

    # -- lifetime ------------------------------------------------------------------------------------
    def _close(self) -> None:
        """Wait for queued work, then free graph, context, engine, runtime, buffers, events and stream."""
        try:
            if self._stream is not None:
                self._stream.synchronize()
            if self._timed:
                self._events[1].synchronize()  # the last run, also when queued on a caller's stream
        finally:
            self._drop_graph()
            self._context = self._engine = self._runtime = None  # context before engine before runtime
            for buffer in (self._host_in, self._host_out, self._dev_in, self._dev_out, *(self._events or ())):
                if buffer is not None:
                    buffer.close()
            self._host_in = self._host_out = self._dev_in = self._dev_out = self._events = None
            if self._stream is not None:
                self._stream.close()
                self._stream = None
