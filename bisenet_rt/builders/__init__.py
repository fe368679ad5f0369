"""Building runtime artifacts from the pipeline ONNX: a chain of small steps, each a plain function.

weights -> typed pipeline ONNX (export) -> backend artifact (TensorRT engine, optimized ONNX,
OpenVINO IR) + JSON sidecar under engines/. Running never builds; building never runs frames
except to check what it made.
"""
from __future__ import annotations

import contextlib
import logging
import dataclasses
import datetime
import importlib
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..artifacts import ArtifactInfo, Pipeline, open_pipeline
from ..classes import DEFAULT_MODEL_SIZE
from ..errors import BuildError, ConfigError, EngineLoadError
from ..precision import Precision
from ..prepost import POST_FORM_FOR, PostForm
from ..settings import cache_dir, engines_dir, unwritable_reason
from ..sizes import check_batch, check_frame_size, check_model_size

__all__ = ["BuildConfig", "build", "resolve_backend", "default_output", "source_onnx", "read_pipeline", "base_sidecar",
           "BUILDERS", "INT8_TARGETS"]

_log = logging.getLogger(__name__)

#: backend name -> "module:function(onnx_path, config) -> Path"; imported only when used.
BUILDERS: dict[str, str] = {
    "tensorrt": "bisenet_rt.builders.tensorrt:build_engine",
    "onnxruntime": "bisenet_rt.builders.onnxruntime:build_optimized_onnx",
    "openvino": "bisenet_rt.builders.openvino:build_ir",
}
_SUFFIX = {"tensorrt": ".engine", "onnxruntime": ".onnx", "openvino": ".xml"}
#: Subfolders of the cache folder that builds read and write (TensorRT's timing cache, INT8 calibration ranges).
_BUILD_CACHES = ("tensorrt", "calibration")
#: `--int8-target` choices: the CPU class the INT8 weight grid is chosen for (see `choice.int8_weights`).
INT8_TARGETS = ("auto", "vnni", "avx2")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything `bisenet-rt build` takes; sizes are (width, height)."""

    precision: Precision | None = None  # None: the fastest precision whose accuracy holds (auto)
    backend: str = "auto"
    weights: Path | None = None
    onnx: Path | None = None
    output: Path | None = None
    engines_dir: Path = dataclasses.field(default_factory=engines_dir)
    cache_dir: Path = dataclasses.field(default_factory=cache_dir)  # calibration ranges, TensorRT timing cache
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    max_batch: int = 1
    min_size: tuple[int, int] = (2048, 1024)
    max_size: tuple[int, int] = (2048, 1024)
    opt_level: int = 3
    calib: Path | None = None
    calib_count: int = 200
    int8_target: str = "auto"

    def __post_init__(self) -> None:
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision.parse(self.precision))
        if self.weights is not None and self.onnx is not None:
            raise ConfigError("give --weights or --onnx, not both")
        check_batch(self.max_batch, "--max-batch")
        check_model_size(self.model_size)
        for name in ("min_size", "max_size"):
            check_frame_size(getattr(self, name), f"--{name.replace('_', '-')}", "no frame above it is accepted")
        if self.min_size[0] > self.max_size[0] or self.min_size[1] > self.max_size[1]:
            raise ConfigError(f"--min-size {self.min_size[0]}x{self.min_size[1]} is larger than "
                             f"--max-size {self.max_size[0]}x{self.max_size[1]}")
        if self.int8_target not in INT8_TARGETS:
            raise ConfigError(f"--int8-target must be one of {', '.join(INT8_TARGETS)}, got {self.int8_target!r}")
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--opt-level must be 0..5 (TensorRT builder optimization level), got {self.opt_level}")

    @property
    def chosen_precision(self) -> Precision:
        """The precision to build: set, or resolved from auto by `build` before any builder runs."""
        if self.precision is None:
            raise BuildError("no precision chosen: call bisenet_rt.builders.build(config), which resolves auto, "
                             "or set BuildConfig(precision=...)")
        return self.precision


def resolve_backend(requested: str, precision: Precision | str | None = None) -> tuple[str, Precision, str]:
    """The backend and precision to build here, and why: `choice.choose_backend` on this machine's facts."""
    from .choice import choose_backend, host_facts

    return choose_backend(host_facts(), requested, precision)


def default_output(backend: str, precision: Precision, engines_dir: Path) -> Path:
    """engines/bisenetv2_<precision>.<engine|onnx|xml>."""
    return engines_dir / f"bisenetv2_{precision.value}{_SUFFIX[backend]}"


def source_onnx(config: BuildConfig, graph_precision: Precision, backend: str) -> Path:
    """The pipeline ONNX to build from: `--onnx` as given, else exported from `--weights` (or random)
    with the post-processing laid out as `backend` runs it fastest (`POST_FORM_FOR`)."""
    from ..export import ExportConfig, export_onnx
    from ..model import model_and_sha

    if config.onnx is not None:
        if not Path(config.onnx).is_file():
            raise BuildError(f"--onnx {config.onnx}: no such file; export one with 'bisenet-rt export -o PATH.onnx'")
        return Path(config.onnx)
    post = POST_FORM_FOR[backend]
    suffix = "" if post is PostForm.RESIZE else f".{post.value}"
    path = config.engines_dir / f"bisenetv2_{graph_precision.value}{suffix}.src.onnx"
    model, sha = model_and_sha(config.weights)
    export_onnx(model, path, ExportConfig(precision=graph_precision, model_size=config.model_size, post=post),
                source_sha256=sha)
    _log.info(f"exported {path}")
    return path


def read_pipeline(src: Path) -> Pipeline:
    """Open the pipeline ONNX a builder starts from, graph included (`open_pipeline`'s checks, as a BuildError)."""
    try:
        return open_pipeline(src, keep_graph=True, sidecar=False)
    except EngineLoadError as exc:
        raise BuildError(str(exc)) from None


def base_sidecar(info: ArtifactInfo, backend: str, onnx_path: Path, build_seconds: float, **extra: Any) -> dict[str, Any]:
    """Sidecar fields every builder writes; `extra` adds the backend's own (versions, GPU, I/O)."""
    from ..model import file_sha256

    return {
        "info": info.to_json(), "backend": backend, "onnx_sha256": file_sha256(onnx_path),
        "onnx": str(onnx_path), "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 2), "host": platform.node(), "python": platform.python_version(),
        **extra,
    }


def _check_inputs_kept(config: BuildConfig, output: Path) -> None:
    """Refuse an artifact (or its sidecar, or an IR's weights) that would be written over a file the build reads."""
    from ..artifacts import artifact_files, sidecar_path
    from ..outputs import check_outputs

    named = ((config.onnx, "the --onnx graph"), (config.weights, "the --weights checkpoint"))
    inputs = [(Path(p), what) for p, what in named if p is not None]
    outputs = [(part, "the built artifact") for part in artifact_files(output)]
    outputs.append((sidecar_path(output), "the artifact's metadata file"))
    check_outputs(outputs, inputs)


def build(config: BuildConfig) -> Path:
    """Build the artifact `config` asks for and return its path (the sidecar lies next to it)."""
    backend, precision, why = resolve_backend(config.backend, config.precision)
    _log.info(f"backend: {backend}, precision: {precision} ({why})")
    config = dataclasses.replace(config, precision=precision)
    output = Path(config.output) if config.output else default_output(backend, precision, config.engines_dir)
    _check_inputs_kept(config, output)
    with _usable_cache(config, backend) as config:
        if precision is Precision.INT8:  # quantize (Q/DQ) first; every backend builds from that graph
            from .int8 import build_int8

            return build_int8(config, backend, output)
        module, func = BUILDERS[backend].split(":")
        builder = getattr(importlib.import_module(module), func)
        return builder(config, output)


@contextlib.contextmanager
def _usable_cache(config: BuildConfig, backend: str) -> Iterator[BuildConfig]:
    """The config, with a throwaway cache folder in place of one that cannot be written (a warning, not a failure:
    caches only save time). What earlier builds left in the unwritable one is still used."""
    if backend != "tensorrt" and config.chosen_precision is not Precision.INT8:  # no cache in this build
        yield config
        return
    why = unwritable_reason(config.cache_dir)
    if why is None:
        yield config
        return
    _log.warning(f"cache folder {config.cache_dir} is not writable ({why}); building with a temporary one, so "
                 "nothing this build learns is kept for the next")
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_cache_") as tmp:
        for kind in _BUILD_CACHES:
            with contextlib.suppress(OSError):
                if (config.cache_dir / kind).is_dir():
                    shutil.copytree(config.cache_dir / kind, Path(tmp) / kind)
        yield dataclasses.replace(config, cache_dir=Path(tmp))

