"""OpenVINO's build step: the pipeline ONNX converted to IR (`.xml` + `.bin`), with the precision to run it in.

BF16 is not a graph of its own: it is the FP32 graph compiled with OpenVINO's BF16 inference hint,
so the IR holds FP32 weights and the sidecar says 'bf16'. It is refused where the CPU lacks BF16.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...artifacts import Artifact, ArtifactInfo
from ...atomic import Replacement
from ...errors import BackendUnavailableError, BuildError, DiskFullError
from ...precision import Precision
from ..spec import BuildConfig

__all__ = ["compile_ir"]

_log = logging.getLogger(__name__)


def compile_ir(source: Artifact, info: ArtifactInfo, config: BuildConfig, output: Path) -> dict[str, Any]:
    """Convert the admitted pipeline graph to OpenVINO IR at `output` (.xml + .bin), tuned for the CPU plugin, and
    check it compiles and runs in its precision; return the sidecar's OpenVINO entries."""
    import openvino as ov

    from ...host import cpu_name
    from .run import cpu_capabilities, inference_precision, openvino_version
    from .tune import tune_graph

    capabilities = cpu_capabilities()
    try:
        compute = inference_precision(source.info.precision, info.precision, capabilities)
    except BackendUnavailableError as exc:
        raise BuildError(str(exc)) from None
    try:
        model = ov.convert_model(str(source.path))
    except Exception as exc:  # the ONNX frontend raises its own OpConversionFailure and RuntimeError types
        raise BuildError(f"OpenVINO could not convert {source.path}: {str(exc).splitlines()[0]}") from None
    rewrites = tune_graph(model)
    _write_ir(model, output)
    _check_runs(output, compute)
    _log.info(f"wrote {output.with_suffix('.bin').name} beside it; it runs in {compute}")
    return {"openvino_version": openvino_version(), "cpu": cpu_name(), "cpu_capabilities": list(capabilities),
            "inference_precision": compute.value, "graph_precision": source.info.precision.value,
            "graph_rewrites": rewrites}


def _write_ir(model: object, output: Path) -> None:
    """Save IR under temporary names, then rename both files, so a crash never leaves a half-written pair."""
    import openvino as ov

    try:
        replacement = Replacement(output, companions=(".bin",))
        try:
            with replacement.translated():
                try:
                    ov.save_model(model, str(replacement.tmp), compress_to_fp16=False)  # weights as the graph has them
                except RuntimeError as exc:
                    raise BuildError(f"could not write {output}: {str(exc).splitlines()[0]}") from None
            # the .bin first, the .xml last; the sidecar, written after, holds both files' hash: a pair cut in two is
            # refused at load
            replacement.commit_part(".bin")
            replacement.commit()
        finally:
            replacement.discard()
    except DiskFullError:
        raise
    except OSError as exc:
        raise BuildError(f"could not write {output}: {exc}") from None


def _check_runs(output: Path, compute: Precision) -> None:
    """Compile the written IR in its precision and run one small frame, so a broken artifact fails the build."""
    import openvino as ov

    from .run import OV_PRECISION

    try:
        compiled = ov.Core().compile_model(str(output), "CPU", {"INFERENCE_PRECISION_HINT": OV_PRECISION[compute]})
        labels = compiled(np.zeros((1, 64, 128, 3), np.uint8))[0]
    except RuntimeError as exc:
        raise BuildError(f"the IR {output} does not run on OpenVINO: {str(exc).splitlines()[0]}") from None
    if labels.shape != (1, 64, 128) or labels.dtype != np.uint8:
        raise BuildError(f"the IR {output} returned {labels.dtype} {labels.shape} for a 1x64x128x3 frame, "
                         "expected uint8 (1, 64, 128)")
