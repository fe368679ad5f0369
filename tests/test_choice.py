"""The build's choices are pure functions of measured facts, checked here for every CPU class on any machine.

`choose_backend` (which backend and precision `bisenet-rt build` makes), `int8_weights` (which INT8
weight grid fits the target CPU) and `cpu_fit_warning` (whether an INT8 artifact loses accuracy on
this CPU) read a `HostFacts` / `CpuFeatures`; the tables below hold one row per CPU class, so a class
this machine is not is still tested.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bisenet_rt.builder.choice import CPU_FP32_BACKEND, HostFacts, choose_backend, int8_weights
from bisenet_rt.errors import BackendUnavailableError
from bisenet_rt.host import CpuFeatures, cpu_features, physical_cores
from bisenet_rt.precision import Precision
from bisenet_rt.int8_grid import WeightRange, cpu_fit_warning

#: One row per x86-64 CPU class this project meets (flags as /proc/cpuinfo names them).
CPU_CLASSES = {
    "avx2": CpuFeatures.from_flags({"avx2", "fma"}),                                        # AMD Zen 2/3, Haswell
    "avx2-vnni": CpuFeatures.from_flags({"avx2", "fma", "avx_vnni"}),                       # Alder Lake clients
    "avx512": CpuFeatures.from_flags({"avx2", "avx512f"}),                                  # Skylake-SP
    "avx512-vnni": CpuFeatures.from_flags({"avx2", "avx512f", "avx512_vnni"}),              # Cascade Lake, Ice Lake
    "avx512-vnni-bf16": CpuFeatures.from_flags({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}),  # Zen 4/5
    "amx": CpuFeatures.from_flags({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                                   "amx_bf16"}),                                            # Sapphire Rapids
}
NO_TRT = "the tensorrt Python module is not installed"


def facts(cpu: str, *, tensorrt: bool = False, openvino: bool = True, cores: int = 2) -> HostFacts:
    return HostFacts(missing={"tensorrt": None if tensorrt else NO_TRT,
                              "openvino": None if openvino else "the openvino module is not installed",
                              "onnxruntime": None}, cpu=CPU_CLASSES[cpu], cores=cores)


# cpu class, TensorRT usable, OpenVINO usable, --backend, --precision -> backend, precision
AUTO_TABLE = [
    ("avx2", False, True, "auto", None, CPU_FP32_BACKEND, Precision.FP32),
    ("avx2-vnni", False, True, "auto", None, CPU_FP32_BACKEND, Precision.FP32),
    ("avx512", False, True, "auto", None, CPU_FP32_BACKEND, Precision.FP32),
    ("avx512-vnni", False, True, "auto", None, CPU_FP32_BACKEND, Precision.FP32),
    ("avx512-vnni-bf16", False, True, "auto", None, "openvino", Precision.BF16),
    ("amx", False, True, "auto", None, "openvino", Precision.BF16),
    ("amx", False, False, "auto", None, "onnxruntime", Precision.FP32),  # no OpenVINO: no BF16 path
    ("amx", False, True, "auto", "fp32", CPU_FP32_BACKEND, Precision.FP32),  # a named precision is kept
    ("avx2", False, True, "auto", "int8", "onnxruntime", Precision.INT8),
    ("avx2", False, True, "auto", "fp16", "onnxruntime", Precision.FP16),
    ("amx", False, True, "auto", "bf16", "openvino", Precision.BF16),
    ("avx2", True, True, "auto", None, "tensorrt", Precision.FP32),  # a usable TensorRT wins on every CPU
    ("amx", True, True, "auto", "fp16", "tensorrt", Precision.FP16),
    ("avx2", False, True, "openvino", None, "openvino", Precision.FP32),
    ("amx", False, True, "onnxruntime", "int8", "onnxruntime", Precision.INT8),
]


@pytest.mark.parametrize("cpu,trt,ov,requested,precision,backend,built", AUTO_TABLE,
                         ids=[f"{r[0]}-trt{int(r[1])}-ov{int(r[2])}-{r[3]}-{r[4]}" for r in AUTO_TABLE])
def test_backend_choice_per_cpu_class(cpu, trt, ov, requested, precision, backend, built):
    got, got_precision, why = choose_backend(facts(cpu, tensorrt=trt, openvino=ov), requested, precision)
    assert (got, got_precision) == (backend, built), why
    assert why


# cpu class, TensorRT usable, OpenVINO usable, --precision -> backend, precision, with calibration frames given
CALIBRATED_TABLE = [
    ("avx512-vnni-bf16", False, True, None, "openvino", Precision.INT8),  # OpenVINO INT8: the fastest CPU path
    ("amx", False, True, None, "openvino", Precision.INT8),
    ("avx2-vnni", False, True, None, "openvino", Precision.INT8),
    ("avx512-vnni", False, False, None, "onnxruntime", Precision.INT8),  # no OpenVINO: ONNX Runtime's INT8
    ("avx2", False, True, None, CPU_FP32_BACKEND, Precision.FP32),  # no VNNI: int8 products saturate, float kept
    ("avx512", False, True, None, CPU_FP32_BACKEND, Precision.FP32),
    ("amx", False, True, "bf16", "openvino", Precision.BF16),  # a named precision is kept
    ("amx", False, True, "fp32", CPU_FP32_BACKEND, Precision.FP32),
    ("avx2", True, True, None, "tensorrt", Precision.FP32),  # a usable TensorRT wins
]


@pytest.mark.parametrize("cpu,trt,ov,precision,backend,built", CALIBRATED_TABLE,
                         ids=[f"{r[0]}-trt{int(r[1])}-ov{int(r[2])}-{r[3]}" for r in CALIBRATED_TABLE])
def test_calibration_frames_make_auto_pick_int8_where_it_is_exact(cpu, trt, ov, precision, backend, built):
    got, got_precision, why = choose_backend(facts(cpu, tensorrt=trt, openvino=ov), "auto", precision, calibrated=True)
    assert (got, got_precision) == (backend, built), why
    if built is Precision.INT8:
        assert "calibration frames were given" in why and "agree with FP32" in why
    elif precision is None and not trt:
        assert "INT8 not chosen" in why and "--precision int8" in why
    assert choose_backend(facts(cpu, tensorrt=trt, openvino=ov), "auto", precision)[1] is not Precision.INT8


def test_core_count_does_not_change_the_choice():
    assert {choose_backend(facts("avx2", cores=n))[:2] for n in (1, 2, 64)} == {(CPU_FP32_BACKEND, Precision.FP32)}


@pytest.mark.parametrize("requested,precision", [("tensorrt", None), ("openvino", "fp32")])
def test_unusable_backend_is_refused_naming_what_works(requested, precision):
    with pytest.raises(BackendUnavailableError) as info:
        choose_backend(facts("avx2", openvino=False), requested, precision)
    message = str(info.value)
    assert requested in message and "bisenet-rt build --backend onnxruntime" in message


def test_bf16_without_openvino_is_refused():
    with pytest.raises(BackendUnavailableError, match="bf16 runs on OpenVINO"):
        choose_backend(facts("amx", openvino=False), "auto", "bf16")


# cpu class, backend, --int8-target -> weight grid
INT8_TABLE = [
    ("avx2", "onnxruntime", "auto", WeightRange.REDUCED),
    ("avx2", "openvino", "auto", WeightRange.REDUCED),
    ("avx2-vnni", "onnxruntime", "auto", WeightRange.FULL),
    ("avx512", "onnxruntime", "auto", WeightRange.REDUCED),  # AVX-512 without VNNI saturates too
    ("avx512-vnni", "onnxruntime", "auto", WeightRange.FULL),
    ("amx", "onnxruntime", "auto", WeightRange.FULL),
    ("avx2", "tensorrt", "auto", WeightRange.FULL),  # the GPU does not saturate, whatever the CPU
    ("amx", "onnxruntime", "avx2", WeightRange.REDUCED),  # an explicit target wins
    ("avx2", "onnxruntime", "vnni", WeightRange.FULL),
]


@pytest.mark.parametrize("cpu,backend,target,weights", INT8_TABLE, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in INT8_TABLE])
def test_int8_weights_per_cpu_class(cpu, backend, target, weights):
    got, where = int8_weights(facts(cpu), backend, target)
    assert got is weights and where


def _quantization(weights: WeightRange | None) -> dict[str, str]:
    """An artifact's quantization facts (`ArtifactInfo.quantization`); older artifacts recorded no weight grid."""
    return {"format": "QDQ"} if weights is None else {"format": "QDQ", "weight_range": weights.value}


@pytest.mark.parametrize("cpu,weights,warns", [
    ("avx2", WeightRange.FULL, True),
    ("avx2", None, True),  # graphs from before the grid was recorded had 8-bit weights
    ("avx512", WeightRange.FULL, True),
    ("avx2", WeightRange.REDUCED, False),
    ("avx512-vnni", WeightRange.FULL, False),
    ("amx", WeightRange.REDUCED, False),  # 7-bit weights are safe everywhere
])
def test_int8_artifact_fit_warning(cpu, weights, warns):
    message = cpu_fit_warning(_quantization(weights), CPU_CLASSES[cpu], "model.onnx")
    assert (message is not None) == warns
    if warns:
        assert "model.onnx" in message and "--int8-target avx2" in message


def test_cpu_features_read_the_flags():
    assert CPU_CLASSES["avx2"].label == "AVX2" and not CPU_CLASSES["avx2"].exact_int8
    assert CPU_CLASSES["avx2-vnni"].exact_int8 and CPU_CLASSES["avx2-vnni"].label == "AVX2 VNNI"
    assert CPU_CLASSES["amx"].label == "AMX" and CPU_CLASSES["amx"].bf16
    assert CPU_CLASSES["avx512-vnni-bf16"].label == "AVX-512 VNNI BF16"
    here = cpu_features()
    assert isinstance(here.avx2, bool) and here.label


def test_physical_cores_follow_the_process_affinity():
    """Restricted to one CPU (in a child process, so this one keeps its affinity), one core is reported."""
    import os

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("this OS has no CPU affinity API")
    code = ("import os; from bisenet_rt.host import physical_cores; "
            "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); print(physical_cores())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
