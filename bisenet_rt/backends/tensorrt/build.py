"""TensorRT's build step: typed pipeline ONNX -> strongly typed network -> serialized engine.

Precision is a property of the ONNX graph (TensorRT 11 builds strongly typed networks only): an
FP16 engine comes from the FP16-typed export, an INT8 engine from a Q/DQ graph. The network is
created with the STRONGLY_TYPED flag, which TensorRT 10 honours and TensorRT 11 ignores (always
on), so one code path serves both.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from ...artifacts import INPUT_NAME, Artifact, ArtifactInfo
from ...atomic import write_atomic
from ...errors import BackendUnavailableError, BuildError
from ...precision import Precision
from ...sizes import format_size
from ..spec import BuildConfig
from .conformance import require_tensorrt

__all__ = ["admit", "compile_engine", "TIMING_CACHE", "WORKSPACE_BYTES"]

_log = logging.getLogger(__name__)

#: File under the cache folder's tensorrt/ holding the builder's kernel timings, reused by every later build.
TIMING_CACHE = "timing.cache"
#: Upper bound of the builder's scratch memory (the memory pool TensorRT calls WORKSPACE).
WORKSPACE_BYTES = 4 << 30


def admit(source: Artifact, config: BuildConfig) -> ArtifactInfo:
    """Check a source graph for TensorRT before TensorRT sees it, and say what the engine's facts will be.

    The graph obeys the ONNX parser's rules (`conformance`), an INT8 graph has Q/DQ nodes, and a graph
    exported with a fixed frame size or batch is built for exactly that; the engine's facts are the
    graph's with the engine's profile (frame-size range and batch). Needs no GPU: the GPU plan's CPU
    rehearsal (`benchmarks/gpu_check.py --plan-on-cpu`) runs it as well.
    """
    proto = source.graph
    assert proto is not None  # the build template opens source graphs with their graph
    require_tensorrt(proto, str(source.path))
    if config.chosen_precision is Precision.INT8 and not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        raise BuildError(f"{source.path} has no QuantizeLinear nodes, so it is not an INT8 graph; build INT8 with "
                         "'bisenet-rt build --precision int8 --calib DIR', or pass a Q/DQ graph with --onnx")
    _check_fixed_dims(source.info, config, source.path)
    return dataclasses.replace(source.info, precision=config.chosen_precision).with_profile(
        config.min_size, config.max_size, config.max_batch)


def compile_engine(source: Artifact, info: ArtifactInfo, config: BuildConfig, output: Path) -> dict[str, Any]:
    """Build the admitted pipeline graph into a serialized TensorRT engine at `output`; return the sidecar's
    TensorRT entries (version, GPU, I/O, profile, builder settings).

    Refused first where TensorRT cannot run (no driver, a driver too old for the wheels' CUDA major, no GPU).
    """
    from . import tensorrt_availability
    from .run import engine_io, gpu_facts, trt_logger

    missing = tensorrt_availability()
    if missing is not None:
        raise BackendUnavailableError(f"cannot build a TensorRT engine here: {missing}")
    import tensorrt as trt

    src, dynamic = source.path, _is_dynamic(source.info)
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
              f"{format_size(config.min_size)} .. {format_size(config.max_size)}, optimization level "
              f"{config.opt_level}); this takes minutes")
    try:
        serialized = builder.build_serialized_network(network, builder_config)
    finally:
        monitor.close()
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
    return {"tensorrt_version": str(trt.__version__), "gpu": gpu_facts(), "io": io, "profile": profile,
            "builder_optimization_level": config.opt_level, "workspace_bytes": WORKSPACE_BYTES,
            "timing_cache": str(cache_path)}


def _is_dynamic(info: ArtifactInfo) -> bool:
    """Whether the graph's input has a dynamic dimension (then the engine gets an optimization profile)."""
    fixed_frame = info.min_size is not None and info.min_size == info.max_size
    return not fixed_frame or info.max_batch is None


def _check_fixed_dims(info: ArtifactInfo, config: BuildConfig, src: Path) -> None:
    """A graph exported with a fixed frame size or batch (`bisenet-rt export --frame-size/--batch`) must be
    built for exactly that."""
    frame = info.min_size if info.min_size is not None and info.min_size == info.max_size else None
    if frame is not None and (config.min_size, config.max_size) != (frame, frame):
        raise BuildError(f"{src} is fixed to {format_size(frame)} frames; build it with --min-size {format_size(frame)} "
                         f"--max-size {format_size(frame)}, or export a graph without --frame-size")
    if info.max_batch is not None and config.max_batch != info.max_batch:
        raise BuildError(f"{src} is fixed to batch {info.max_batch}; build it with --max-batch {info.max_batch}, or "
                         "export a graph without --batch")


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

    from .run import engine_io, trt_logger

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
