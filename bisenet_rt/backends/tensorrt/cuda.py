"""A thin, checked layer over the CUDA runtime (cuda-python's `cuda.bindings.runtime`).

Every runtime call goes through `check`/`call`, which turn the error code cuda-python returns as
the first element of each result tuple into a `CudaError` naming the call. Error codes are compared
as integers: cuda-bindings 13.2 and newer return its own fast enum type instead of `enum.IntEnum`. Only the TensorRT
backend and builder import this module (`import bisenet_rt` never does), and cuda.bindings itself
is imported on first use, so the `__cuda_array_interface__` checks here work without CUDA.

Without a usable driver, `device_problem` says in one line what is wrong and what to install: no driver,
a driver older than the CUDA major of the installed wheels (CUDA 13 wheels need driver 580 or newer), or
no GPU. cuda-bindings 12.9 and 13.x report a missing driver as an error code; cuda-python 12.6 raises
RuntimeError instead ("Failed to dlopen libcuda.so.1"), which is caught here.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...errors import BackendUnavailableError, BisenetError, InputError

__all__ = ["CudaError", "check", "call", "DeviceBuffer", "PinnedBuffer", "Stream", "Event", "CudaGraph", "is_pinned",
           "pinned_array",
           "LEGACY_STREAM", "CudaArray", "device_pointer", "device_name", "compute_capability", "runtime_version",
           "driver_version", "DriverFacts", "driver_facts", "device_problem", "compatibility_problem",
           "runtime_major", "nvidia_driver_version", "MIN_DRIVER", "INSTALL_FOR_CUDA"]


class CudaError(BisenetError, RuntimeError):
    """A CUDA runtime call failed; the message names the call and the CUDA error."""


@functools.cache
def _runtime() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise BackendUnavailableError("the CUDA runtime bindings are not installed (pip install '.[gpu]' from the "
                                      "clone)") from None
    return runtime


def check(result: Sequence[Any], call_name: str) -> Any:
    """Unpack a cuda-python result tuple `(error, *values)`: raise CudaError naming `call_name`
    unless the error is cudaSuccess; return None, the single value, or the tuple of values."""
    err, values = result[0], tuple(result[1:])
    if not _succeeded(err):
        raise CudaError(f"{call_name} failed: {_error_text(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _error_text(err: Any) -> str:
    """'cudaErrorX (description)'; the description needs the driver (cuda-python 12.6 raises without one)."""
    rt = _runtime()
    try:
        name = rt.cudaGetErrorName(err)[1].decode()
    except RuntimeError:
        name = f"CUDA error {int(err)}"
    try:
        return f"{name} ({rt.cudaGetErrorString(err)[1].decode()})"
    except RuntimeError:
        return name


def _succeeded(err: Any) -> bool:
    """Whether a cuda-python error code is cudaSuccess (0), whatever enum type carries it."""
    return int(err) == 0


def call(func: Callable[..., Sequence[Any]], *args: Any) -> Any:
    """Call a cuda.bindings.runtime function and `check` its result under the function's own name."""
    try:
        result = func(*args)
    except RuntimeError as exc:  # cuda-python 12.6 raises where the driver (libcuda.so.1) is missing
        raise CudaError(f"{func.__name__} failed: {exc}") from None
    return check(result, func.__name__)


# -- device information ------------------------------------------------------------------------------
@functools.cache
def _properties() -> Any:
    rt = _runtime()
    return call(rt.cudaGetDeviceProperties, call(rt.cudaGetDevice))


def device_name() -> str:
    """Name of the current CUDA device, e.g. 'NVIDIA GeForce RTX 4090'."""
    name = _properties().name
    return (name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)).strip()


def compute_capability() -> tuple[int, int]:
    """(major, minor) compute capability of the current CUDA device, e.g. (8, 9)."""
    props = _properties()
    return int(props.major), int(props.minor)


def _version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def runtime_version() -> str:
    """The CUDA runtime version cuda-python loaded, e.g. '12.6'."""
    rt = _runtime()
    return _version(call(rt.cudaRuntimeGetVersion))


def driver_version() -> str:
    """The newest CUDA version the installed driver supports, e.g. '12.8'."""
    rt = _runtime()
    return _version(call(rt.cudaDriverGetVersion))


def runtime_major() -> int:
    """The CUDA major version the runtime bindings were built for (12 or 13); needs no driver."""
    return int(call(_runtime().cudaRuntimeGetVersion)) // 1000


# -- driver compatibility ------------------------------------------------------------------------------
#: The oldest Linux driver that runs each CUDA major (CUDA minor-version compatibility: one driver runs every
#: minor release of its major; NVIDIA's CUDA compatibility guide, "Minor Version Compatibility", table 1).
MIN_DRIVER: dict[int, str] = {12: "525.60.13", 13: "580.65.06"}
#: The install line for the GPU wheels (TensorRT, cuda-python) of each CUDA major (pyproject.toml extras).
INSTALL_FOR_CUDA: dict[int, str] = {12: "pip install '.[gpu]' from the clone",
                                     13: "pip install '.[gpu-cu13]' from the clone"}
_DRIVER_FILE = Path("/proc/driver/nvidia/version")


@dataclasses.dataclass(frozen=True)
class DriverFacts:
    """What the NVIDIA driver offers this process, read once: its version, the newest CUDA it runs, its GPUs."""

    driver: str | None  # the driver's version as nvidia-smi prints it ('570.86.15'); None where none is loaded
    driver_cuda: int    # newest CUDA the driver runs, as cudaDriverGetVersion encodes it (12080); 0: no libcuda
    devices: int        # CUDA devices visible to the runtime bindings (0 where none is usable)
    error: str | None   # why cudaGetDeviceCount failed; None when it succeeded

    @property
    def cuda_major(self) -> int:
        return self.driver_cuda // 1000


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version ('570.86.15') from /proc, or None (no driver, or not Linux)."""
    try:
        text = _DRIVER_FILE.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None


@functools.cache
def driver_facts() -> DriverFacts:
    """Ask the CUDA runtime (once per process) which driver, CUDA version and GPUs it finds."""
    rt = _runtime()
    driver = nvidia_driver_version()
    try:
        err, count = rt.cudaGetDeviceCount()
    except RuntimeError as exc:  # cuda-python 12.6 without libcuda.so.1
        return DriverFacts(driver=driver, driver_cuda=0, devices=0, error=str(exc))
    try:
        version_err, driver_cuda = rt.cudaDriverGetVersion()
    except RuntimeError:
        version_err, driver_cuda = 0, 0
    error = None if _succeeded(err) else _error_text(err)
    rt.cudaGetLastError()  # a failed first call leaves its error behind; clear it
    return DriverFacts(driver=driver, driver_cuda=int(driver_cuda) if _succeeded(version_err) else 0,
                       devices=int(count) if error is None else 0, error=error)


def compatibility_problem(facts: DriverFacts, wheels: Mapping[str, int]) -> str | None:
    """None when the driver in `facts` runs the CUDA major of every wheel in `wheels` ({'cuda-bindings': 12, ...})
    and sees a GPU; else one line: what is wrong and what to install."""
    needed = max(wheels.values(), default=12)
    wanted = ", ".join(f"{name} (CUDA {major})" for name, major in sorted(wheels.items()))
    if facts.driver_cuda == 0:
        if facts.driver is not None:
            return (f"the NVIDIA driver {facts.driver} is loaded but its CUDA library (libcuda.so.1) cannot be opened"
                    f"{f' ({facts.error})' if facts.error else ''}; inside a container, start it with the GPU "
                    "passed through (docker run --gpus all, NVIDIA Container Toolkit)")
        return (f"no NVIDIA driver is installed (libcuda.so.1 not found{f': {facts.error}' if facts.error else ''}); "
                f"install one: CUDA 12 wheels need driver >= {MIN_DRIVER[12]}, CUDA 13 wheels >= {MIN_DRIVER[13]}")
    major, minor = facts.cuda_major, facts.driver_cuda % 1000 // 10
    too_new = sorted(name for name, m in wheels.items() if m > major)
    if too_new:
        driver = f"the NVIDIA driver {facts.driver}" if facts.driver else "the NVIDIA driver"
        fix = (f"{INSTALL_FOR_CUDA[major]} (CUDA {major} wheels) or update the driver to >= "
               f"{MIN_DRIVER.get(needed, 'the one of CUDA ' + str(needed))}" if major in INSTALL_FOR_CUDA else
               f"update the driver to >= {MIN_DRIVER[12]} (CUDA 12) or >= {MIN_DRIVER[13]} (CUDA 13)")
        return f"{driver} runs CUDA up to {major}.{minor}, but {wanted} need CUDA {needed}: {fix}"
    if facts.error is not None:
        return f"no CUDA GPU is usable ({facts.error})"
    if facts.devices == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return "no CUDA GPU is visible" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
    return None


def device_problem(wheels: Mapping[str, int] | None = None) -> str | None:
    """None when a CUDA GPU is usable here through cuda-python (and the driver runs the CUDA major of every wheel
    in `wheels`, e.g. {'tensorrt': 13}); else one line saying what is wrong and what to install."""
    try:
        major = runtime_major()
    except BackendUnavailableError as exc:
        return str(exc)
    return compatibility_problem(driver_facts(), {"cuda-bindings": major, **(wheels or {})})


# -- memory ------------------------------------------------------------------------------------------
class _Allocation:
    """`nbytes` of CUDA-allocated memory at `ptr`, released once by `close()` or a `with` block."""

    def __init__(self, nbytes: int, allocate: Callable[..., Sequence[Any]]) -> None:
        self.nbytes = int(nbytes)
        self.ptr: int = int(call(allocate, max(self.nbytes, 1)))

    def _release(self, ptr: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free the memory; safe to call twice."""
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._release(ptr)

    def __enter__(self) -> "_Allocation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceBuffer(_Allocation):
    """`nbytes` of device memory from cudaMalloc, exposed as a 1-D uint8 `__cuda_array_interface__`."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes, _runtime().cudaMalloc)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"version": 3, "shape": (self.nbytes,), "typestr": "|u1", "data": (self.ptr, False),
                "strides": None, "stream": None}

    def copy_from_host(self, host: "PinnedBuffer | int", nbytes: int, stream: "Stream") -> None:
        """Queue a copy of the first `nbytes` of `host` (a PinnedBuffer or a page-locked address) into this buffer."""
        rt = _runtime()
        call(rt.cudaMemcpyAsync, self.ptr, _address(host), nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
             stream.handle)

    def copy_to_host(self, host: "PinnedBuffer | int", nbytes: int, stream: "Stream") -> None:
        """Queue a copy of the first `nbytes` of this buffer into `host` (a PinnedBuffer or page-locked address)."""
        rt = _runtime()
        call(rt.cudaMemcpyAsync, _address(host), self.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
             stream.handle)

    def _release(self, ptr: int) -> None:
        call(_runtime().cudaFree, ptr)


class PinnedBuffer(_Allocation):
    """`nbytes` of page-locked host memory from cudaMallocHost, seen from numpy through `view`.

    Page-locked memory lets cudaMemcpyAsync run truly asynchronously (and faster than from
    pageable memory). Views must not outlive `close()`: copy results out before reusing it.
    """

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes, _runtime().cudaMallocHost)
        self._array = np.frombuffer(memoryview((ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self.ptr)), np.uint8)

    def view(self, shape: Sequence[int]) -> np.ndarray:
        """A uint8 array of `shape` over the start of the buffer (no copy)."""
        size = int(np.prod(shape))
        if size > self.nbytes:
            raise ValueError(f"a {tuple(shape)} view needs {size} bytes; this pinned buffer holds {self.nbytes}")
        return self._array[:size].reshape(shape)

    def _release(self, ptr: int) -> None:
        self._array = np.empty(0, np.uint8)
        call(_runtime().cudaFreeHost, ptr)


def _address(host: "PinnedBuffer | int") -> int:
    return host if isinstance(host, int) else host.ptr


def is_pinned(array: np.ndarray) -> bool:
    """Whether a host array's memory is page-locked (cudaMallocHost or cudaHostRegister), so a copy from
    or to it runs asynchronously and without staging. False for ordinary memory or where CUDA is absent."""
    if array.size == 0 or device_problem() is not None:
        return False
    rt = _runtime()
    err, attributes = rt.cudaPointerGetAttributes(array.ctypes.data)
    if not _succeeded(err):
        rt.cudaGetLastError()  # older runtimes report ordinary memory as an error; clear it
        return False
    return int(attributes.type) == int(rt.cudaMemoryType.cudaMemoryTypeHost)


def pinned_array(shape: Sequence[int], dtype: Any = np.uint8) -> np.ndarray:
    """A numpy array in page-locked host memory, freed when the array (and every view of it) is gone.

    Frames and labels held there move to and from the GPU without the extra host copy that ordinary
    memory needs. Where CUDA is absent (no cuda-python, no driver, no GPU) this is an ordinary array that
    every backend takes.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if device_problem() is not None:
        return np.empty(shape, dtype)
    buffer = PinnedBuffer(nbytes)
    flat = buffer.view((max(nbytes, 1),))[:nbytes]
    return np.asarray(_PinnedHolder(flat.view(dtype).reshape(shape), buffer))


class _PinnedHolder:
    """Keeps a PinnedBuffer alive exactly as long as the numpy arrays over it (numpy's `base` chain)."""

    def __init__(self, array: np.ndarray, buffer: "PinnedBuffer") -> None:
        self._buffer = buffer
        self.__array_interface__ = dict(array.__array_interface__)

    def __del__(self) -> None:
        try:
            self._buffer.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown: the runtime may be gone)
            pass


# -- streams, events, graphs ---------------------------------------------------------------------------
#: Handle of the legacy default stream (cudaStreamLegacy), where PyTorch and CuPy queue work by default.
LEGACY_STREAM = 1


class Stream:
    """A CUDA stream: one this object created (non-blocking, destroyed by close) or a borrowed handle."""

    def __init__(self, handle: int | None = None) -> None:
        rt = _runtime()
        self._owned = handle is None
        self._sync_event: Event | None = None
        if handle is None:
            # Non-blocking: no implicit synchronisation with the legacy default stream, which also
            # keeps other libraries' default-stream work from invalidating a graph capture.
            handle = int(call(rt.cudaStreamCreateWithFlags, rt.cudaStreamNonBlocking))
        self.handle = int(handle)

    def synchronize(self) -> None:
        """Block until all work queued on the stream has finished."""
        call(_runtime().cudaStreamSynchronize, self.handle)

    def wait_for(self, other: int | None) -> None:
        """Order this stream after the work queued so far on stream handle `other` (no host wait)."""
        if other is None or int(other) == self.handle:
            return
        if self._sync_event is None:
            self._sync_event = Event(timing=False)
        self._sync_event.record(int(other))
        self.wait_event(self._sync_event)

    def wait_event(self, event: "Event") -> None:
        """Order this stream after the work before `event`'s latest record (no host wait)."""
        call(_runtime().cudaStreamWaitEvent, self.handle, event.handle, 0)

    def close(self) -> None:
        """Destroy an owned stream (after its work finishes); safe to call twice."""
        if self._sync_event is not None:
            self._sync_event.close()
            self._sync_event = None
        if self._owned and self.handle:
            handle, self.handle = self.handle, 0
            call(_runtime().cudaStreamDestroy, handle)


class Event:
    """A CUDA event; with timing, `elapsed_ms(start)` is the GPU time between two records."""

    def __init__(self, *, timing: bool = True) -> None:
        rt = _runtime()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.handle: int = int(call(rt.cudaEventCreateWithFlags, flags))

    def record(self, stream: "Stream | int") -> None:
        """Record the event on a stream (a Stream or a raw handle)."""
        call(_runtime().cudaEventRecord, self.handle, stream.handle if isinstance(stream, Stream) else int(stream))

    def synchronize(self) -> None:
        """Block until the work before the event's latest record has finished."""
        call(_runtime().cudaEventSynchronize, self.handle)

    def elapsed_ms(self, start: "Event") -> float:
        """Milliseconds of GPU time from `start`'s record to this event's (waits for this event)."""
        self.synchronize()
        return float(call(_runtime().cudaEventElapsedTime, start.handle, self.handle))

    def close(self) -> None:
        """Destroy the event; safe to call twice."""
        if self.handle:
            handle, self.handle = self.handle, 0
            call(_runtime().cudaEventDestroy, handle)


class CudaGraph:
    """Work captured once from a stream and replayed with one launch (no per-kernel CPU overhead)."""

    def __init__(self, graph: Any, graph_exec: Any) -> None:
        self._graph, self._exec = graph, graph_exec

    @classmethod
    def capture(cls, stream: Stream, work: Callable[[], None]) -> "CudaGraph":
        """Record what `work()` enqueues on `stream` and instantiate it; nothing runs until `launch`.

        On failure the capture is ended (so the stream is usable again) and the error re-raised.
        Thread-local mode: other threads' CUDA calls cannot invalidate this capture.
        """
        rt = _runtime()
        call(rt.cudaStreamBeginCapture, stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        try:
            work()
        except BaseException:
            err, graph = rt.cudaStreamEndCapture(stream.handle)
            if _succeeded(err) and graph is not None:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the capture error so later calls do not report it
            raise
        graph = call(rt.cudaStreamEndCapture, stream.handle)
        try:
            graph_exec = call(rt.cudaGraphInstantiate, graph, 0)
        except CudaError:
            call(rt.cudaGraphDestroy, graph)
            raise
        return cls(graph, graph_exec)

    def launch(self, stream: Stream) -> None:
        """Replay the captured work on `stream`."""
        call(_runtime().cudaGraphLaunch, self._exec, stream.handle)

    def close(self) -> None:
        """Destroy the executable graph and the graph; safe to call twice."""
        rt = _runtime()
        if self._exec is not None:
            graph_exec, self._exec = self._exec, None
            call(rt.cudaGraphExecDestroy, graph_exec)
        if self._graph is not None:
            graph, self._graph = self._graph, None
            call(rt.cudaGraphDestroy, graph)


# -- other libraries' device arrays ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CudaArray:
    """What `device_pointer` read from a `__cuda_array_interface__`: address, shape, producer stream."""

    ptr: int
    shape: tuple[int, ...]
    stream: int | None = None


def _c_strides(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def device_pointer(obj: Any, expected_shape: Sequence[int | None], dtype: Any = np.uint8, *, name: str = "array",
                   writable: bool = False) -> CudaArray:
    """Read and validate a device array's `__cuda_array_interface__` (versions 2 and 3) for zero-copy use.

    `expected_shape` gives each dimension, None where any size goes. Rejects other dtypes (TypeError),
    other shapes, strided/non-contiguous or masked arrays, and read-only arrays where `writable` is
    asked (InputError), each naming `name`, what arrived and what is expected. Calls no CUDA function.
    """
    expected_dtype = np.dtype(dtype)
    shape_text = " x ".join("?" if d is None else str(d) for d in expected_shape)
    wanted = f"a C-contiguous {expected_dtype} CUDA array shaped {shape_text}"
    try:
        iface = obj.__cuda_array_interface__
    except AttributeError:
        raise TypeError(f"{name} is a {type(obj).__name__} without __cuda_array_interface__; expected {wanted} "
                        "(a PyTorch CUDA tensor, a CuPy array, or any object exporting the interface)") from None
    if not isinstance(iface, dict) or not {"shape", "typestr", "data"} <= iface.keys():
        raise TypeError(f"{name}: __cuda_array_interface__ must be a dict with 'shape', 'typestr' and 'data'; "
                        f"got {iface!r}")
    try:
        got_dtype = np.dtype(iface["typestr"])
    except TypeError:
        raise TypeError(f"{name} has typestr {iface['typestr']!r}, not a valid array type; expected {wanted}") from None
    if got_dtype != expected_dtype:
        raise TypeError(f"{name} has dtype {got_dtype} (typestr {iface['typestr']!r}); expected {wanted}")
    shape = tuple(int(d) for d in iface["shape"])
    if len(shape) != len(expected_shape) or any(e is not None and e != d for d, e in zip(shape, expected_shape)):
        raise InputError(f"{name} has shape {' x '.join(map(str, shape)) or '()'}; expected {wanted}")
    if 0 in shape:
        raise InputError(f"{name} is empty (shape {shape}); expected {wanted}")
    strides = iface.get("strides")
    if strides is not None:
        c_strides = _c_strides(shape, got_dtype.itemsize)
        if any(dim != 1 and int(s) != c for dim, s, c in zip(shape, strides, c_strides)):
            raise InputError(f"{name} is not C-contiguous (strides {tuple(strides)}, C order would be {c_strides}); "
                             "make it contiguous first, e.g. tensor.contiguous() or cupy.ascontiguousarray(a)")
    if iface.get("mask") is not None:
        raise InputError(f"{name} is a masked array; expected {wanted} without a mask")
    ptr, readonly = iface["data"]
    if writable and readonly:
        raise InputError(f"{name} is read-only; the output must be a writable {wanted}")
    stream = iface.get("stream")
    return CudaArray(ptr=int(ptr), shape=shape, stream=None if stream is None else int(stream))
