"""Which backend, precision and INT8 weight grid fit this machine: pure functions of measured facts.

`host_facts()` measures once (which runtimes can run, the CPU's instruction sets, its cores);
`choose_backend` and `int8_weights` only read those facts, so every CPU class is testable on any
machine (tests/test_choice.py walks a table of them). The rule is kept honest by the per-class
measurements in benchmarks/results/peer_cpu_*.json.
"""
from __future__ import annotations

import dataclasses

from ..backends import SPECS
from ..errors import BackendUnavailableError, ConfigError
from ..host import CpuFeatures
from ..int8_grid import WeightRange
from ..precision import Precision

__all__ = ["HostFacts", "host_facts", "choose_backend", "int8_weights", "CPU_FP32_BACKEND", "CPU_INT8_BACKENDS",
           "BUILD_BACKENDS", "AUTO_INT8_AGREEMENT"]

#: Backends `bisenet-rt build` can build for, in the order a fallback is suggested.
BUILD_BACKENDS = ("tensorrt", "openvino", "onnxruntime")
#: The faster FP32 engine on CPUs without BF16, measured end to end at 2048x1024 with each engine's FP32
#: forced (OpenVINO's INFERENCE_PRECISION_HINT=f32): see benchmarks/results/peer_cpu_*.json.
CPU_FP32_BACKEND = "onnxruntime"
#: The INT8 CPU engines, fastest first, measured end to end at 2048x1024: see benchmarks/results/cpu_limit_*.json.
CPU_INT8_BACKENDS = ("openvino", "onnxruntime")
#: The share of pixels an INT8 artifact `auto` chose must label as the FP32 reference does on the check frames;
#: below it the build makes the float choice instead. INT8's accuracy bar is 99 % on unseen frames (tests/test_int8.py);
#: the check runs on few frames, so this one leaves room for their noise.
AUTO_INT8_AGREEMENT = 0.985


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What the choice rests on. A backend maps to None when it can run here, else to what is missing."""

    missing: dict[str, str | None]
    cpu: CpuFeatures
    cores: int

    def usable(self, backend: str) -> bool:
        return self.missing.get(backend, f"{backend} is not known") is None


def host_facts() -> HostFacts:
    """Measure this machine: each build backend's availability, the CPU features, the usable physical cores.

    BF16 counts only where the CPU flags say so and, when OpenVINO can run, OpenVINO agrees (it is the
    runtime that would compute in BF16; a hypervisor can hide what the flags show).
    """
    from ..host import cpu_features, physical_cores

    missing = {}
    for name in BUILD_BACKENDS:
        try:
            missing[name] = SPECS[name].availability()
        except ImportError as exc:  # a runtime whose own imports fail
            missing[name] = f"cannot import it ({exc}); reinstall it: {SPECS[name].install}"
    cpu = cpu_features()
    if cpu.bf16 and missing["openvino"] is None:
        from ..backends.openvino.run import supports_bf16

        cpu = dataclasses.replace(cpu, bf16=supports_bf16())
    return HostFacts(missing=missing, cpu=cpu, cores=physical_cores())


def _fallback(facts: HostFacts, requested: str) -> str:
    usable = [name for name in BUILD_BACKENDS if name != requested and facts.usable(name)]
    if usable:
        return f"use: bisenet-rt build --backend {usable[0]}"
    return f"or install it: {SPECS[requested].install}"


def _none_usable(facts: HostFacts) -> BackendUnavailableError:
    """The error when no runtime to build for is installed: each one, why not, and the extra that installs it."""
    why = "; ".join(f"{SPECS[name].title}: {facts.missing[name]}" for name in BUILD_BACKENDS)
    return BackendUnavailableError(
        "no runtime to build for is usable here; install one from the clone: pip install '.[onnxruntime]' (any CPU), "
        f"'.[openvino]' (fastest on CPUs with BF16) or '.[gpu]' (NVIDIA GPUs, TensorRT). ({why})")


def _check_precision(facts: HostFacts, backend: str, precision: Precision) -> None:
    """Refuse a precision the backend does not build, or BF16 on a CPU without BF16 arithmetic, before any work."""
    SPECS[backend].graph_form(precision)
    if precision is Precision.BF16 and not facts.cpu.bf16:
        raise BackendUnavailableError(f"--precision bf16 needs a CPU with BF16 instructions (AVX512_BF16 or AMX); this "
                                      f"one ({facts.cpu.label}) has none. Build fp32 instead: --precision fp32")


def choose_backend(facts: HostFacts, requested: str = "auto", precision: Precision | str | None = None,
                   calibrated: bool = False) -> tuple[str, Precision, str]:
    """The backend and precision to build, and why, from `facts` alone.

    A precision that was asked for is built exactly (a named backend with none builds fp32), and refused
    where that backend does not build it or the CPU cannot compute it. `auto` picks the fastest path among
    the backends that can run here: TensorRT where it can run; else, when no precision was asked for,
    OpenVINO BF16 on CPUs that compute BF16 natively (AVX512-BF16 or AMX), else FP32 on `CPU_FP32_BACKEND`
    (on AVX2 and on AVX-512 without BF16 alike; the core count changes the threads, not the choice). With
    `calibrated` (calibration frames given) and no precision asked for, INT8 on the fastest INT8 CPU engine
    where the CPU sums int8 products exactly (VNNI, AMX); the build then keeps it only if its labels agree
    with FP32 (`AUTO_INT8_AGREEMENT`).
    """
    backend, precision, why = _choose(facts, requested, precision, calibrated)
    _check_precision(facts, backend, precision)
    return backend, precision, why


def _choose(facts: HostFacts, requested: str, precision: Precision | str | None,
            calibrated: bool) -> tuple[str, Precision, str]:
    chosen = precision is None
    precision = Precision.FP32 if precision is None else Precision.parse(precision)
    if requested != "auto":
        if requested not in BUILD_BACKENDS:
            raise ConfigError(f"unknown backend {requested!r}; choose one of: auto, {', '.join(BUILD_BACKENDS)}")
        if not facts.usable(requested):
            raise BackendUnavailableError(f"cannot build for {requested}: {facts.missing[requested]}. On this machine "
                                          f"{_fallback(facts, requested)}")
        return requested, precision, f"{requested} was asked for"
    if not any(facts.usable(name) for name in BUILD_BACKENDS):
        raise _none_usable(facts)
    if facts.usable("tensorrt"):
        return "tensorrt", precision, "TensorRT and a CUDA GPU are present"
    no_trt = f"TensorRT is not usable here ({facts.missing['tensorrt']})"
    if chosen and calibrated:
        int8 = next((name for name in CPU_INT8_BACKENDS if facts.usable(name)), None)
        if int8 is not None and facts.cpu.exact_int8:
            return int8, Precision.INT8, (
                f"{no_trt}; calibration frames were given and this CPU ({facts.cpu.label}) sums int8 products exactly, "
                f"where {SPECS[int8].title} INT8 is the fastest CPU path (measured: benchmarks/cpu_limit.py); kept if "
                f"its labels agree with FP32 on >= {100 * AUTO_INT8_AGREEMENT:g} % of pixels")
        backend, precision, why = _choose(facts, requested, None, False)
        return backend, precision, (f"{why}; INT8 not chosen: this CPU ({facts.cpu.label}) has no VNNI or AMX, where "
                                    "int8 products saturate (pass --precision int8 to build it anyway)")
    if precision is Precision.BF16:
        if not facts.usable("openvino"):
            raise BackendUnavailableError(f"bf16 runs on OpenVINO, which cannot run here: {facts.missing['openvino']}")
        return "openvino", precision, f"{no_trt}; bf16 runs on OpenVINO"
    if not facts.usable("onnxruntime"):
        return "openvino", precision, f"{no_trt}; ONNX Runtime is not usable either ({facts.missing['onnxruntime']})"
    if precision is not Precision.FP32:
        return "onnxruntime", precision, no_trt
    if not facts.usable("openvino"):
        return "onnxruntime", precision, f"{no_trt}; OpenVINO is not usable either ({facts.missing['openvino']})"
    if chosen and facts.cpu.bf16:
        return "openvino", Precision.BF16, (
            f"{no_trt}; this CPU ({facts.cpu.label}) computes BF16 natively, where OpenVINO BF16 is the fastest CPU "
            "path (measured: benchmarks/peer_cpu.py); pass --precision fp32 for strict FP32")
    cpu = "FP32 was asked for" if not chosen else f"this CPU ({facts.cpu.label}) has no BF16 arithmetic"
    return CPU_FP32_BACKEND, precision, (f"{no_trt}; {cpu}, and {CPU_FP32_BACKEND} is the faster FP32 CPU "
                                         "engine (measured: benchmarks/peer_cpu.py)")


def int8_weights(facts: HostFacts, backend: str, target: str = "auto") -> tuple[WeightRange, str]:
    """The INT8 weight grid for `backend` and the CPU class it targets, and the target in words.

    `target` 'auto' means this machine's CPU (a GPU backend's artifact: the GPU, which does not saturate); 'vnni'
    (VNNI/AMX CPUs, TensorRT) and 'avx2' (CPUs with only AVX2) name a class explicitly.
    """
    on_gpu = SPECS[backend].on_gpu
    if target == "vnni" or (target == "auto" and (on_gpu or facts.cpu.exact_int8)):
        where = SPECS[backend].title if on_gpu and target == "auto" else "CPUs with VNNI or AMX and TensorRT"
        return WeightRange.FULL, where
    if target in ("avx2", "auto"):
        return WeightRange.REDUCED, "CPUs with only AVX2 (no VNNI), where 8-bit weights saturate; any CPU or TensorRT runs it"
    raise ConfigError(f"unknown int8 target {target!r}; choose auto, vnni or avx2")
