"""Building runtime artifacts from the pipeline ONNX: a chain of small steps, each a plain function.

weights -> typed pipeline ONNX (export) -> backend artifact (TensorRT engine, optimized ONNX,
OpenVINO IR) + JSON sidecar under engines/. Running never builds; building never runs frames
except to check what it made.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import platform
import sys
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactInfo
from ..classes import DEFAULT_MODEL_SIZE
from ..errors import BackendUnavailableError, BuildError
from ..precision import Precision
from ..prepost import PostForm

__all__ = ["BuildConfig", "build", "resolve_backend", "default_output", "source_onnx", "read_pipeline", "base_sidecar",
           "BUILDERS"]

#: backend name -> "module:function(onnx_path, config) -> Path"; imported only when used.
BUILDERS: dict[str, str] = {
    "tensorrt": "bisenet_rt.build.tensorrt:build_engine",
    "onnxruntime": "bisenet_rt.build.onnxruntime:build_optimized_onnx",
    "openvino": "bisenet_rt.build.openvino:build_ir",
}
_SUFFIX = {"tensorrt": ".engine", "onnxruntime": ".onnx", "openvino": ".xml"}


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything `bisenet-rt build` takes; sizes are (width, height)."""

    precision: Precision | None = None  # None: the fastest precision whose accuracy holds (auto)
    backend: str = "auto"
    weights: Path | None = None
    onnx: Path | None = None
    output: Path | None = None
    engines_dir: Path = Path("engines")
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    max_batch: int = 1
    min_size: tuple[int, int] = (2048, 1024)
    max_size: tuple[int, int] = (2048, 1024)
    opt_level: int = 3
    calib: Path | None = None
    calib_count: int = 200

    def __post_init__(self) -> None:
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision.parse(self.precision))
        if self.weights is not None and self.onnx is not None:
            raise ValueError("give --weights or --onnx, not both")
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.min_size[0] > self.max_size[0] or self.min_size[1] > self.max_size[1]:
            raise ValueError(f"--min-size {self.min_size[0]}x{self.min_size[1]} is larger than "
                             f"--max-size {self.max_size[0]}x{self.max_size[1]}")
        if not 0 <= self.opt_level <= 5:
            raise ValueError(f"--opt-level must be 0..5 (TensorRT builder optimization level), got {self.opt_level}")


def resolve_backend(requested: str, precision: Precision | str | None = None) -> tuple[str, Precision, str]:
    """The backend and precision to build, and why.

    A precision that was asked for is built exactly (a named backend with none builds fp32). `auto`
    picks the fastest path here: TensorRT where it can run; else, when no precision was asked for,
    OpenVINO BF16 on CPUs that compute BF16 natively (measured several times faster than any FP32 CPU
    engine, see benchmarks/peer_cpu.py), else FP32 on `CPU_FP32_BACKEND`.
    """
    from ..backends import backend_class

    chosen = precision is None
    precision = Precision.FP32 if precision is None else Precision.parse(precision)
    if requested != "auto":
        missing = backend_class(requested).availability()
        if missing:
            raise BackendUnavailableError(f"cannot build for {requested}: {missing}. On this machine use: "
                                          f"bisenet-rt build --backend {_fallback(requested)}")
        return requested, precision, f"{requested} was asked for"
    trt_missing = backend_class("tensorrt").availability()
    if trt_missing is None:
        return "tensorrt", precision, "TensorRT and a CUDA GPU are present"
    no_trt = f"TensorRT is not usable here ({trt_missing})"
    ov_missing = backend_class("openvino").availability()
    if precision is Precision.BF16:
        if ov_missing:
            raise BackendUnavailableError(f"bf16 runs on OpenVINO, which cannot run here: {ov_missing}")
        return "openvino", precision, f"{no_trt}; bf16 runs on OpenVINO"
    if precision is not Precision.FP32:
        return "onnxruntime", precision, no_trt
    if ov_missing:
        return "onnxruntime", precision, f"{no_trt}; OpenVINO is not usable either ({ov_missing})"
    from ..backends.openvino import supports_bf16

    if chosen and supports_bf16():
        return "openvino", Precision.BF16, (
            f"{no_trt}; this CPU computes BF16 natively, where OpenVINO BF16 is the fastest CPU path "
            "(measured: benchmarks/peer_cpu.py); pass --precision fp32 for strict FP32")
    cpu = "FP32 was asked for" if not chosen else "this CPU has no BF16 arithmetic"
    return CPU_FP32_BACKEND, precision, (f"{no_trt}; {cpu}, and {CPU_FP32_BACKEND} is the faster FP32 CPU "
                                         "engine (measured: benchmarks/peer_cpu.py)")


#: The faster FP32 engine on CPUs without BF16, measured end to end at 2048x1024 with each engine's FP32
#: forced (OpenVINO's INFERENCE_PRECISION_HINT=f32): see benchmarks/results/peer_cpu_*.json.
CPU_FP32_BACKEND = "onnxruntime"


def _fallback(requested: str) -> str:
    from ..backends import backend_class

    for name in ("tensorrt", "openvino", "onnxruntime"):
        try:
            usable = backend_class(name).availability() is None
        except ImportError:
            usable = False
        if name != requested and usable:
            return name
    return "onnxruntime"


def default_output(backend: str, precision: Precision, engines_dir: Path) -> Path:
    """engines/bisenetv2_<precision>.<engine|onnx|xml>."""
    return engines_dir / f"bisenetv2_{precision.value}{_SUFFIX[backend]}"


def source_onnx(config: BuildConfig, graph_precision: Precision, post: PostForm = PostForm.RESIZE) -> Path:
    """The pipeline ONNX to build from: `--onnx` as given, else exported from `--weights` (or random)
    with the post-processing laid out as `post` (the backend's fastest exact form)."""
    from ..export import ExportConfig, export_onnx
    from ..model import model_and_sha

    if config.onnx is not None:
        if not Path(config.onnx).is_file():
            raise BuildError(f"--onnx {config.onnx}: no such file; export one with 'bisenet-rt export -o PATH.onnx'")
        return Path(config.onnx)
    suffix = "" if post is PostForm.RESIZE else f".{post.value}"
    path = config.engines_dir / f"bisenetv2_{graph_precision.value}{suffix}.src.onnx"
    model, sha = model_and_sha(config.weights)
    export_onnx(model, path, ExportConfig(precision=graph_precision, model_size=config.model_size, post=post),
                source_sha256=sha)
    print(f"exported {path}", file=sys.stderr)
    return path


def read_pipeline(src: Path) -> tuple[Any, ArtifactInfo]:
    """Load a pipeline ONNX a builder starts from and its bisenet-rt facts; refuse anything else."""
    import onnx

    from ..export import read_metadata

    proto = onnx.load(str(src), load_external_data=False)
    meta = read_metadata(proto)
    if not meta or meta.get("graph") != "pipeline":
        raise BuildError(f"{src}: not a bisenet-rt pipeline graph; export one with 'bisenet-rt export -o PATH.onnx'")
    return proto, ArtifactInfo.from_metadata(meta)


def base_sidecar(info: ArtifactInfo, backend: str, onnx_path: Path, build_seconds: float, **extra: Any) -> dict[str, Any]:
    """Sidecar fields every builder writes; `extra` adds the backend's own (versions, GPU, I/O)."""
    from ..model import file_sha256

    return {
        "info": info.to_json(), "backend": backend, "onnx_sha256": file_sha256(onnx_path),
        "onnx": str(onnx_path), "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 2), "host": platform.node(), "python": platform.python_version(),
        **extra,
    }


def build(config: BuildConfig) -> Path:
    """Build the artifact `config` asks for and return its path (the sidecar lies next to it)."""
    backend, precision, why = resolve_backend(config.backend, config.precision)
    print(f"backend: {backend}, precision: {precision} ({why})", file=sys.stderr)
    config = dataclasses.replace(config, precision=precision)
    output = Path(config.output) if config.output else default_output(backend, config.precision, config.engines_dir)
    if config.precision is Precision.INT8:  # quantize (Q/DQ) first; every backend builds from that graph
        from .int8 import build_int8

        return build_int8(config, backend, output)
    module, func = BUILDERS[backend].split(":")
    builder = getattr(importlib.import_module(module), func)
    return builder(config, output)

