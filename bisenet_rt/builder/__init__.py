"""Building an artifact: one template over every backend's spec.

    choose the backend and precision among those that can run here (`choice`)
      -> the source graph in the form that backend builds that precision from (`source`: export from the
         weights, the given ONNX, or its quantized form)
      -> the backend admits it (its checks; TensorRT's parser rules) and says what the artifact's facts are
      -> the backend compiles it (engine, optimized ONNX, IR)
      -> one sidecar with those facts beside the artifact

Running never builds; building never runs frames except to check what it made. Every backend-specific step
is a function of its `BackendSpec`, so nothing here branches on which backend it is.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..artifacts import Artifact, ArtifactInfo, artifact_files, artifact_sha256, sidecar_path, write_sidecar
from ..backends import SPECS
from ..backends.spec import BackendSpec, BuildConfig
from ..errors import BuildError
from ..int8_grid import WeightRange
from ..precision import Precision
from ..settings import unwritable_reason
from ..sizes import format_size

if TYPE_CHECKING:
    from .choice import HostFacts

__all__ = ["BuildConfig", "BuildPlan", "build", "plan_build", "prepare", "rebuild_command"]

_log = logging.getLogger(__name__)

#: The cache folder's part INT8 builds read and write (calibration ranges).
_CALIBRATION_CACHE = "calibration"


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """What a build makes: for which backend, in which precision, where, and why that backend."""

    spec: BackendSpec
    precision: Precision
    output: Path
    why: str = ""
    int8: tuple[WeightRange, str] | None = None  # INT8 only: the weight grid and the CPU class it is for, in words
    fallback: "BuildPlan | None" = None  # auto's INT8 only: what is built instead if its labels disagree with FP32


def plan_build(config: BuildConfig) -> BuildPlan:
    """Choose the backend and precision for this machine (`choice.choose_backend`) and the artifact's path."""
    from .choice import host_facts

    return _plan(config, host_facts())


def _plan(config: BuildConfig, facts: "HostFacts") -> BuildPlan:
    from .choice import choose_backend, int8_weights

    # Auto may pick INT8 when calibration frames come with weights to check it against (not a given graph, not
    # random weights, which are drawn anew for the check).
    calibrated = config.calib is not None and config.onnx is None and config.weights is not None
    backend, precision, why = choose_backend(facts, config.backend, config.precision, calibrated)
    fallback = None
    if config.precision is None and precision is Precision.INT8:
        fallback = _plan(dataclasses.replace(config, calib=None), facts)
    spec = SPECS[backend]
    int8 = int8_weights(facts, backend, config.int8_target) if precision is Precision.INT8 else None
    output = Path(config.output) if config.output else spec.default_output(precision, config.engines_dir)
    if output.suffix.lower() not in spec.writes:
        if fallback is not None and config.output:  # -o names the float choice's kind: build that
            return dataclasses.replace(fallback, why=f"{fallback.why}; -o {output} names a {fallback.spec.title} "
                                                      "artifact, so not INT8")
        raise BuildError(f"-o {output}: a {spec.title} artifact is named NAME{spec.writes[0]}"
                         + (" (with NAME.bin beside it)" if spec.writes == (".xml",) else ""))
    return BuildPlan(spec, precision, output, why, int8, fallback)


def prepare(plan: BuildPlan, config: BuildConfig) -> tuple[Artifact, ArtifactInfo]:
    """Everything before the backend's compile step: the source graph, admitted by the backend, and the facts
    the artifact will have. Needs no backend runtime (the GPU plan's CPU rehearsal runs it for TensorRT)."""
    from .source import source_graph

    config = dataclasses.replace(config, precision=plan.precision)
    source = source_graph(config, plan.spec, plan.spec.graph_form(plan.precision), plan.int8)
    return source, plan.spec.admit(source, config)


def build(config: BuildConfig) -> Path:
    """Build the artifact `config` asks for and return its path (the sidecar lies next to it).

    An INT8 artifact `auto` chose is checked against the FP32 reference on calibration frames; where its
    labels disagree on more pixels than `choice.AUTO_INT8_AGREEMENT` allows it is removed and the float
    choice built instead, saying so. A kept INT8 artifact's sidecar records the check (`auto_int8_check`).
    Without calibration frames, auto reuses such an artifact where it still fits (`reuse.checked_int8`),
    making it the newest artifact (the one `bench` and `Segmenter()` open by default).
    """
    from .choice import host_facts
    from .reuse import checked_int8

    facts = host_facts()
    reused = checked_int8(config, facts)
    if reused is not None:
        path, why = reused
        _log.info(f"precision: int8, reusing {path} ({why}; --precision builds a float artifact, --calib "
                  "calibrates again)")
        try:
            os.utime(path)
        except OSError as exc:
            _log.warning(f"could not mark {path} as the newest artifact ({exc}); open it with --artifact {path}")
        return path
    plan = _plan(config, facts)
    _log.info(f"backend: {plan.spec.name}, precision: {plan.precision} ({plan.why})")
    path = _build_plan(plan, config)
    if plan.fallback is None:
        return path
    from .agreement import int8_agreement
    from .choice import AUTO_INT8_AGREEMENT

    agreement, frames = int8_agreement(path, config)
    said = (f"INT8 labels agree with the FP32 reference on {100 * agreement:.2f} % of pixels of {frames} calibration "
            f"frames (bar {100 * AUTO_INT8_AGREEMENT:g} %)")
    if agreement >= AUTO_INT8_AGREEMENT:
        _log.info(f"{said}: keeping {path}")
        _record_check(path, agreement, frames)
        return path
    _log.warning(f"{said}: building {plan.fallback.spec.name} {plan.fallback.precision} instead")
    for part in [*artifact_files(path), sidecar_path(path)]:
        part.unlink(missing_ok=True)
    return _build_plan(plan.fallback, config)


def _record_check(path: Path, agreement: float, frames: int) -> None:
    """Add auto's INT8 check to the artifact's sidecar."""
    from ..artifacts import read_sidecar

    data = read_sidecar(path)
    assert data is not None  # required: a missing sidecar raises
    data["auto_int8_check"] = {"agreement_with_fp32": round(agreement, 5), "frames": frames}
    write_sidecar(path, data)


def _build_plan(plan: BuildPlan, config: BuildConfig) -> Path:
    config = dataclasses.replace(config, precision=plan.precision)
    _check_inputs_kept(config, plan.output)
    if plan.spec.compile is None:
        raise BuildError(f"the {plan.spec.name} backend builds no artifacts")
    with _usable_cache(config, plan.spec) as config:
        started = time.perf_counter()
        source, info = prepare(plan, config)
        details = plan.spec.compile(source, info, config, plan.output)
        elapsed = time.perf_counter() - started
    write_sidecar(plan.output, sidecar(info, plan.spec, source, elapsed, rebuild_command(config, plan), details))
    _log.info(f"wrote {plan.output} in {elapsed:.1f} s")
    return plan.output


def sidecar(info: ArtifactInfo, spec: BackendSpec, source: Artifact, build_seconds: float, rebuild: str,
            details: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of a built artifact: its facts, where it came from, and the backend's own entries (`details`)."""
    return {
        "info": info.to_dict(), "backend": spec.name, "onnx": str(source.path), "onnx_sha256": artifact_sha256(source.path),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 2), "host": platform.node(), "python": platform.python_version(),
        "rebuild_command": rebuild, **details,
    }


def rebuild_command(config: BuildConfig, plan: BuildPlan) -> str:
    """The `bisenet-rt build` command line that builds this artifact again (load-time errors quote it)."""
    source = f" --onnx {config.onnx}" if config.onnx else (f" --weights {config.weights}" if config.weights else "")
    calib = f" --calib {config.calib} --calib-count {config.calib_count}" if plan.precision is Precision.INT8 else ""
    return (f"bisenet-rt build --backend {plan.spec.name} --precision {plan.precision}{source}{calib} "
            f"--model-size {format_size(config.model_size)} --max-batch {config.max_batch} "
            f"--min-size {format_size(config.min_size)} --max-size {format_size(config.max_size)} "
            f"--opt-level {config.opt_level} -o {plan.output}")


def _check_inputs_kept(config: BuildConfig, output: Path) -> None:
    """Refuse an artifact (or its sidecar, or an IR's weights) that would be written over a file the build reads."""
    from ..outputs import check_outputs

    named = ((config.onnx, "the --onnx graph"), (config.weights, "the --weights checkpoint"))
    inputs = [(Path(p), what) for p, what in named if p is not None]
    outputs = [(part, "the built artifact") for part in artifact_files(output)]
    outputs.append((sidecar_path(output), "the artifact's metadata file"))
    check_outputs(outputs, inputs)


@contextlib.contextmanager
def _usable_cache(config: BuildConfig, spec: BackendSpec) -> Iterator[BuildConfig]:
    """The config, with a throwaway cache folder in place of one that cannot be written (a warning, not a failure:
    caches only save time). What earlier builds left in the unwritable one is still used."""
    kinds = spec.caches + ((_CALIBRATION_CACHE,) if config.chosen_precision is Precision.INT8 else ())
    why = unwritable_reason(config.cache_dir) if kinds else None
    if why is None:
        yield config
        return
    _log.warning(f"cache folder {config.cache_dir} is not writable ({why}); building with a temporary one, so "
                 "nothing this build learns is kept for the next")
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_cache_") as tmp:
        for kind in kinds:
            with contextlib.suppress(OSError):
                if (config.cache_dir / kind).is_dir():
                    shutil.copytree(config.cache_dir / kind, Path(tmp) / kind)
        yield dataclasses.replace(config, cache_dir=Path(tmp))
