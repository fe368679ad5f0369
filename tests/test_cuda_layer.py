"""The CUDA layer (bisenet_rt.backends.tensorrt.cuda) on machines without a usable NVIDIA driver, and the driver-compatibility rule.

cuda-python is in the `dev` extra, so these run in CI: the real bindings are called and answer without a
driver (cuda-bindings 12.9 / 13.x with an error code, cuda-python 12.6 by raising RuntimeError). Where a GPU
is usable they skip: tests/test_tensorrt.py runs the same layer for real there.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (pip install .[dev])")

from bisenet_rt.backends.tensorrt import cuda  # noqa: E402  (after the importorskip above)

NO_DEVICE = cuda.device_problem()
without_gpu = pytest.mark.skipif(NO_DEVICE is None, reason="a CUDA GPU is usable here; tests/test_tensorrt.py covers it")


@without_gpu
def test_pinned_frames_without_a_driver_are_an_ordinary_array():
    import bisenet_rt

    frames = bisenet_rt.pinned_frames(2, 4, 6)
    assert type(frames) is np.ndarray and frames.shape == (2, 4, 6, 3) and frames.dtype == np.uint8
    assert frames.base is None and frames.flags.writeable  # plain numpy memory, nothing page-locked behind it
    frames[:] = 7
    assert not cuda.is_pinned(frames)


@without_gpu
def test_device_problem_says_what_is_missing_in_one_line():
    assert "\n" not in NO_DEVICE
    assert "driver" in NO_DEVICE and ("525.60.13" in NO_DEVICE or "--gpus all" in NO_DEVICE)


@without_gpu
def test_tensorrt_availability_answers_without_a_driver():
    from bisenet_rt.backends.tensorrt import tensorrt_availability

    missing = tensorrt_availability()
    assert isinstance(missing, str) and missing and "\n" not in missing


@without_gpu
def test_every_runtime_call_takes_the_argument_types_the_layer_passes():
    """Each wrapper reaches the real binding with its own argument types; without a driver every one answers
    with a CudaError naming its call (a wrong argument type would be a TypeError before the driver is asked)."""
    host = np.zeros(64, np.uint8)
    stream = object.__new__(cuda.Stream)  # handles as the wrappers hold them: plain ints
    stream.handle, stream._owned, stream._sync_event = 0x1234, False, None
    event = object.__new__(cuda.Event)
    event.handle = 0x5678
    device = object.__new__(cuda.DeviceBuffer)
    device.ptr, device.nbytes = 0x7F0000000000, 64
    graph = cuda.CudaGraph(runtime.cudaGraph_t(), runtime.cudaGraphExec_t())
    calls = {
        "cudaMalloc": lambda: cuda.DeviceBuffer(64),
        "cudaMallocHost": lambda: cuda.PinnedBuffer(64),
        "cudaStreamCreateWithFlags": cuda.Stream,
        "cudaEventCreateWithFlags": cuda.Event,
        "cudaMemcpyAsync": lambda: device.copy_from_host(host.ctypes.data, 64, stream),
        "cudaStreamSynchronize": stream.synchronize,
        "cudaStreamWaitEvent": lambda: stream.wait_event(event),
        "cudaEventRecord": lambda: event.record(stream),
        "cudaEventSynchronize": event.synchronize,
        "cudaStreamBeginCapture": lambda: cuda.CudaGraph.capture(stream, lambda: None),
        "cudaGraphLaunch": lambda: graph.launch(stream),
        "cudaGetDevice": cuda.device_name,
    }
    for name, run in calls.items():
        with pytest.raises(cuda.CudaError, match=rf"^{name} failed: "):
            run()
    assert cuda.runtime_major() in (12, 13)  # needs no driver


MIN12, MIN13 = cuda.MIN_DRIVER[12], cuda.MIN_DRIVER[13]


@pytest.mark.parametrize("facts, wheels, expected", [
    # a 570 driver runs CUDA 12.8: CUDA 13 wheels cannot start; say which wheels fit, or which driver
    (cuda.DriverFacts("570.86.15", 12080, 0, "cudaErrorInsufficientDriver"), {"cuda-bindings": 13, "tensorrt": 13},
     rf"driver 570.86.15 runs CUDA up to 12.8, but cuda-bindings \(CUDA 13\), tensorrt \(CUDA 13\) need CUDA 13: "
     rf"pip install '\.\[gpu\]' from the clone \(CUDA 12 wheels\) or update the driver to >= {MIN13}"),
    # the bindings fit the driver but TensorRT does not (cudaGetDeviceCount itself succeeds)
    (cuda.DriverFacts("550.54.15", 12040, 1, None), {"cuda-bindings": 12, "tensorrt": 13},
     r"runs CUDA up to 12.4, but cuda-bindings \(CUDA 12\), tensorrt \(CUDA 13\) need CUDA 13"),
    # a driver older than any supported CUDA major
    (cuda.DriverFacts("470.256.02", 11040, 0, "cudaErrorInsufficientDriver"), {"cuda-bindings": 12},
     rf"runs CUDA up to 11.4.*update the driver to >= {MIN12} \(CUDA 12\) or >= {MIN13} \(CUDA 13\)"),
    (cuda.DriverFacts(None, 0, 0, "Failed to dlopen libcuda.so.1"), {"cuda-bindings": 12},
     rf"no NVIDIA driver is installed \(libcuda.so.1 not found: Failed to dlopen libcuda.so.1\).*>= {MIN12}"),
    (cuda.DriverFacts("570.86.15", 0, 0, None), {"cuda-bindings": 12}, r"driver 570.86.15 is loaded.*--gpus all"),
    (cuda.DriverFacts("580.65.06", 13000, 0, "cudaErrorNoDevice (no CUDA-capable device is detected)"),
     {"cuda-bindings": 13}, r"no CUDA GPU is usable \(cudaErrorNoDevice"),
    (cuda.DriverFacts("580.65.06", 13000, 0, None), {"cuda-bindings": 13}, r"no CUDA GPU is visible"),
])
def test_driver_compatibility_names_the_fix(facts, wheels, expected):
    problem = cuda.compatibility_problem(facts, wheels)
    assert problem is not None and "\n" not in problem
    assert re.search(expected, problem), problem


@pytest.mark.parametrize("facts, wheels", [
    (cuda.DriverFacts("580.65.06", 13000, 1, None), {"cuda-bindings": 12, "tensorrt": 12}),  # newer drivers run 12
    (cuda.DriverFacts("580.65.06", 13000, 1, None), {"cuda-bindings": 13, "tensorrt": 13}),
    (cuda.DriverFacts("525.60.13", 12000, 2, None), {"cuda-bindings": 12, "tensorrt": 12}),  # minor-version compat
])
def test_compatible_driver_and_wheels_pass(facts, wheels):
    assert cuda.compatibility_problem(facts, wheels) is None


def test_driver_version_is_read_from_the_kernel_module_line(tmp_path, monkeypatch):
    for line, version in (("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024",
                           "550.54.15"),
                          ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build",
                           "580.65.06")):
        path = tmp_path / "version"
        path.write_text(line + "\nGCC version:  gcc version 12.2.0\n")
        monkeypatch.setattr(cuda, "_DRIVER_FILE", path)
        assert cuda.nvidia_driver_version() == version
    monkeypatch.setattr(cuda, "_DRIVER_FILE", tmp_path / "absent")
    assert cuda.nvidia_driver_version() is None
