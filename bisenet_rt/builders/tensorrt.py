"""Build step for TensorRT: typed pipeline ONNX -> strongly typed network -> serialized engine + sidecar.

Precision is a property of the ONNX graph (TensorRT 11 builds strongly typed networks only): an
FP16 engine comes from the FP16-typed export, an INT8 engine from a Q/DQ graph. The network is
created with the STRONGLY_TYPED flag, which TensorRT 10 honours and TensorRT 11 ignores (always
on), so one code path serves both.
"""
from __future__ import annotations

import logging
import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactInfo, write_sidecar
from ..atomic import write_atomic
from ..errors import BackendUnavailableError, BuildError
from ..artifacts import INPUT_NAME
from ..precision import Precision
from ..sizes import format_size
from . import BuildConfig, base_sidecar, read_pipeline, source_onnx
from .trt_conformance import require_tensorrt

__all__ = ["build_engine", "engine_source", "EngineSource", "TIMING_CACHE", "WORKSPACE_BYTES"]

_log = logging.getLogger(__name__)

#: File under engines/ holding the builder's kernel timings, reused by every later build.
TIMING_CACHE = "timing.cache"
#: Upper bound of the builder's scratch memory (the memory pool TensorRT calls WORKSPACE).
WORKSPACE_BYTES = 4 << 30
_INT8_HINT = ("INT8 engines are built from a Q/DQ-quantized pipeline ONNX: run 'bisenet-rt build --precision int8 "
              "--calib DIR' (it calibrates on your frames), or pass a Q/DQ ONNX with --onnx")


@dataclasses.dataclass(frozen=True)
class EngineSource:
    """The pipeline ONNX an engine is built from, and what the engine's sidecar says of it."""

    onnx: Path
    info: ArtifactInfo  # the graph's facts with the engine's frame-size range and batch (its profile)
    dynamic: bool       # the input has dynamic dimensions, so the engine gets an optimization profile


def engine_source(config: BuildConfig) -> EngineSource:
    """Everything before TensorRT: export (if needed), check the graph against the parser's rules
    (`trt_conformance`) and against a fixed frame size or batch, and the facts with the engine's profile.

    Needs no GPU: the GPU plan's CPU rehearsal (`benchmarks/gpu_check.py --plan-on-cpu`) runs it as well.
    """
    src, info = _source(config)
    dynamic = _check_fixed_dims(info, config, src)
    return EngineSource(onnx=src, info=info.with_profile(config.min_size, config.max_size, config.max_batch),
                        dynamic=dynamic)


def build_engine(config: BuildConfig, output: Path) -> Path:
    """Export (if needed), check and build the pipeline graph into a TensorRT engine; write it with a sidecar.

    Refused first where TensorRT cannot run (no driver, a driver too old for the wheels' CUDA major, no GPU).
    """
    from ..backends.tensorrt import gpu_facts, tensorrt_availability, trt_logger

    missing = tensorrt_availability()
    if missing is not None:
        raise BackendUnavailableError(f"cannot build a TensorRT engine here: {missing}")
    source = engine_source(config)
    src, dynamic = source.onnx, source.dynamic
    import tensorrt as trt

    output = Path(output)
    logger = trt_logger()
    logger.take_errors()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)  # owns the weights: stays alive until the build is done
    _parse(parser, src)
    builder_config = _builder_config(builder, config, dynamic)
    cache_path = config.cache_dir / "tensorrt" / TIMING_CACHE
    _use_timing_cache(builder_config, cache_path)
    logger.take_errors()  # a timing cache set aside above logs errors that are not the build's
    monitor = _progress_monitor()
    builder_config.progress_monitor = monitor
    _log.info(f"building {output} from {src} ({config.chosen_precision}, batch 1..{config.max_batch}, frames "
          f"{format_size(config.min_size)} .. {format_size(config.max_size)}, optimization level {config.opt_level}); "
          "this takes minutes")
    started = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, builder_config)
    finally:
        monitor.close()
    elapsed = time.perf_counter() - started
    if monitor.cancelled:
        raise KeyboardInterrupt
    if serialized is None:
        raise BuildError(f"TensorRT could not build {src}: {logger.take_errors() or 'no detail logged'}")
    engine_bytes = bytes(serialized)
    write_atomic(output, engine_bytes)
    try:
        write_atomic(cache_path, bytes(builder_config.get_timing_cache().serialize()))
    except OSError as exc:  # DiskFullError too: the cache only saves time, the engine is written
        _log.warning(f"timing cache not saved ({exc}); the next build times its kernels again")
    io, profile = _read_back(engine_bytes, dynamic)
    write_sidecar(output, base_sidecar(
        source.info, "tensorrt", src, elapsed, tensorrt_version=str(trt.__version__), gpu=gpu_facts(), io=io,
        profile=profile, builder_optimization_level=config.opt_level, workspace_bytes=WORKSPACE_BYTES,
        timing_cache=str(cache_path), rebuild_command=rebuild_command(config, output)))
    _log.info(f"wrote {output} in {elapsed:.0f} s (timing cache: {cache_path})")
    return output


def rebuild_command(config: BuildConfig, output: Path) -> str:
    """The `bisenet-rt build` command line that builds this engine again (for load-time errors)."""
    source = f" --onnx {config.onnx}" if config.onnx else (f" --weights {config.weights}" if config.weights else "")
    return (f"bisenet-rt build --backend tensorrt --precision {config.chosen_precision}{source} "
            f"--model-size {format_size(config.model_size)} --max-batch {config.max_batch} "
            f"--min-size {format_size(config.min_size)} --max-size {format_size(config.max_size)} "
            f"--opt-level {config.opt_level} -o {output}")


def _source(config: BuildConfig) -> tuple[Path, ArtifactInfo]:
    """The pipeline ONNX to build from and what it is; its precision must be the one asked for."""
    if config.chosen_precision is Precision.INT8 and config.onnx is None:
        raise BuildError(_INT8_HINT)
    if config.chosen_precision not in (Precision.FP32, Precision.FP16, Precision.INT8):
        raise BuildError(f"TensorRT builds fp32 and fp16 (from the typed export) or int8 (from a Q/DQ ONNX); "
                         f"{config.chosen_precision} is not one of them")
    src = source_onnx(config, config.chosen_precision, "tensorrt")
    pipeline = read_pipeline(src)
    proto, info = pipeline.graph, pipeline.info
    assert proto is not None  # read_pipeline keeps the graph
    require_tensorrt(proto, str(src))
    if config.chosen_precision is Precision.INT8:
        if not any(node.op_type == "QuantizeLinear" for node in proto.graph.node):
            raise BuildError(f"{src} has no QuantizeLinear nodes, so it is not an INT8 graph; {_INT8_HINT}")
        return src, dataclasses.replace(info, precision=Precision.INT8)
    if info.precision is not config.chosen_precision:
        raise BuildError(f"{src} is a {info.precision} graph but --precision {config.chosen_precision} was asked for; "
                         f"TensorRT takes the precision from the graph: export with --precision {config.chosen_precision}")
    return src, info


def _check_fixed_dims(info: ArtifactInfo, config: BuildConfig, src: Path) -> bool:
    """Whether the graph's input has dynamic dimensions; a graph exported with a fixed frame size or
    batch (`bisenet-rt export --frame-size/--batch`) must be built for exactly that."""
    frame = info.min_size if info.min_size is not None and info.min_size == info.max_size else None
    if frame is not None and (config.min_size, config.max_size) != (frame, frame):
        raise BuildError(f"{src} is fixed to {format_size(frame)} frames; build it with --min-size {format_size(frame)} "
                         f"--max-size {format_size(frame)}, or export a graph without --frame-size")
    if info.max_batch is not None and config.max_batch != info.max_batch:
        raise BuildError(f"{src} is fixed to batch {info.max_batch}; build it with --max-batch {info.max_batch}, or "
                         "export a graph without --batch")
    return frame is None or info.max_batch is None


def _parse(parser: Any, src: Path) -> None:
    """Parse the ONNX file into the network, reporting every parser error."""
    if parser.parse_from_file(str(src)):
        return
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    lines = [f"node {error.node()} ({error.node_name()}, {error.node_operator()}): {error.desc()}" for error in errors]
    raise BuildError(f"TensorRT's ONNX parser rejected {src} with {len(lines)} error(s): "
                     + "; ".join(lines or ["no detail"]))


def _builder_config(builder: Any, config: BuildConfig, dynamic: bool) -> Any:
    """One optimization profile where the input is dynamic (batch 1..N, the frame-size range, tuned
    for batch 1 at the largest size), the optimization level and the workspace limit."""
    import tensorrt as trt

    builder_config = builder.create_builder_config()
    if dynamic:
        (min_w, min_h), (max_w, max_h) = config.min_size, config.max_size
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (1, min_h, min_w, 3), (1, max_h, max_w, 3), (config.max_batch, max_h, max_w, 3))
        if builder_config.add_optimization_profile(profile) < 0:
            raise BuildError(f"TensorRT rejected the optimization profile for '{INPUT_NAME}' (batch "
                             f"1..{config.max_batch}, {format_size(config.min_size)} .. {format_size(config.max_size)})")
    builder_config.builder_optimization_level = config.opt_level
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    return builder_config


def _use_timing_cache(builder_config: Any, path: Path) -> None:
    """Start from the timing cache of earlier builds; a cache from another TensorRT or GPU is set aside."""
    data = path.read_bytes() if path.is_file() else b""
    cache = builder_config.create_timing_cache(data)
    if cache is not None and builder_config.set_timing_cache(cache, False):
        return
    if data:
        _log.warning(f"{path} does not fit this TensorRT or GPU; starting a new timing cache")
        cache = builder_config.create_timing_cache(b"")
        if cache is not None and builder_config.set_timing_cache(cache, False):
            return
    raise BuildError("TensorRT could not create a timing cache")


def _read_back(engine_bytes: bytes, dynamic: bool) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """I/O tensors and input shape range of the built engine, read from the engine itself."""
    import tensorrt as trt

    from ..backends.tensorrt import engine_io, trt_logger

    runtime = trt.Runtime(trt_logger())
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise BuildError(f"the engine TensorRT just built does not deserialize: {trt_logger().take_errors()}")
    io = engine_io(engine)
    if dynamic:
        shapes = engine.get_tensor_profile_shape(INPUT_NAME, 0)
    else:  # a fixed input has no profile: its one shape is the range
        shapes = [engine.get_tensor_shape(INPUT_NAME)] * 3
    profile = {key: [int(d) for d in dims] for key, dims in zip(("min", "opt", "max"), shapes)}
    del engine  # before its runtime
    return io, profile


def _progress_monitor() -> Any:
    """A TensorRT IProgressMonitor drawing one tqdm bar per builder phase (two levels deep).

    TensorRT calls it from its own threads, hence the lock; Ctrl-C inside a callback cancels the
    build (step_complete returns False) instead of escaping through TensorRT's C++ frames.
    """
    import tensorrt as trt
    from tqdm import tqdm

    class _TqdmMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            super().__init__()
            self._lock = threading.Lock()
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                with self._lock:
                    depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                    self._depth[phase_name] = depth
                    if depth < 2:
                        self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=len(self._bars),
                                                      leave=depth == 0, unit="step", file=sys.stderr)
            except KeyboardInterrupt:
                self.cancelled = True

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                with self._lock:
                    bar = self._bars.get(phase_name)
                    if bar is not None:
                        bar.update(step + 1 - bar.n)
            except KeyboardInterrupt:
                self.cancelled = True
            return not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            try:
                with self._lock:
                    self._depth.pop(phase_name, None)
                    bar = self._bars.pop(phase_name, None)
                    if bar is not None:
                        bar.close()
            except KeyboardInterrupt:
                self.cancelled = True

        def close(self) -> None:
            """Close bars of phases TensorRT never finished (a failed or cancelled build)."""
            with self._lock:
                for bar in self._bars.values():
                    bar.close()
                self._bars.clear()

    return _TqdmMonitor()
