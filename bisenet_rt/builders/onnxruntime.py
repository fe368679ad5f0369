"""Build step for ONNX Runtime: apply ORT's graph optimisations once and save the optimized model."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..artifacts import write_sidecar
from ..atomic import replacing
from ..errors import BuildError
from ..precision import Precision
from . import BuildConfig, base_sidecar, read_pipeline, source_onnx

__all__ = ["build_optimized_onnx"]

_log = logging.getLogger(__name__)


def build_optimized_onnx(config: BuildConfig, output: Path) -> Path:
    """Export (if needed) and optimize the pipeline graph for ONNX Runtime; write it with a sidecar.

    Saved at the 'extended' level: the layout-specific (NCHWc) rewrites are redone at load time,
    so the file stays portable between CPUs. An exported graph gets ONNX Runtime's
    post-processing form (`prepost.POST_FORM_FOR`).
    """
    import onnxruntime as ort

    if config.chosen_precision not in (Precision.FP32, Precision.FP16):
        raise BuildError(f"the onnxruntime build takes fp32 or fp16; {config.chosen_precision} needs its own route "
                         "(see 'bisenet-rt build --help')")
    started = time.perf_counter()
    src = source_onnx(config, config.chosen_precision, "onnxruntime")
    info = read_pipeline(src).info
    if info.precision is not config.chosen_precision:
        raise BuildError(f"{src} is a {info.precision} graph but --precision {config.chosen_precision} was asked for")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.log_severity_level = 3
    with replacing(output) as tmp:  # ORT writes the optimized model straight into the artifact's temporary file
        so.optimized_model_filepath = str(tmp)
        try:
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types
            raise BuildError(f"ONNX Runtime could not optimize {src}: {str(exc).splitlines()[0]}") from None
        read_pipeline(tmp)  # written whole: ORT says nothing when a write falls short
    elapsed = time.perf_counter() - started
    write_sidecar(output, base_sidecar(info, "onnxruntime", src, elapsed, onnxruntime_version=ort.__version__,
                                       optimization_level="extended"))
    _log.info(f"wrote {output} in {elapsed:.1f} s")
    return output
