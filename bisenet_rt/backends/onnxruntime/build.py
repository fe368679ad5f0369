"""ONNX Runtime's build step: the pipeline graph optimized once and saved, or (INT8) the Q/DQ graph itself."""
from __future__ import annotations

import collections
import logging
import tempfile
from pathlib import Path
from typing import Any

from ...artifacts import Artifact, ArtifactInfo, open_artifact
from ...atomic import replacing, write_atomic
from ...errors import BuildError, ArtifactError
from ...precision import Precision
from ..spec import BuildConfig

__all__ = ["compile_onnxruntime", "ort_kernel_counts"]

_log = logging.getLogger(__name__)

#: Kernels of the convolutions and the classifier (a MatMul), int8 and float.
_KERNELS = ("QLinearConv", "Conv", "FusedConv", "MatMulIntegerToFloat", "MatMul")


def compile_onnxruntime(source: Artifact, info: ArtifactInfo, config: BuildConfig, output: Path) -> dict[str, Any]:
    """Write the ONNX Runtime artifact of an admitted source graph at `output`; return the sidecar's entries.

    FP32/FP16: ORT's graph optimisations applied once, saved at the 'extended' level (the layout-specific
    NCHWc rewrites are redone at load time, so the file stays portable between CPUs). INT8: the Q/DQ graph
    as it is (ORT fuses the Q/DQ pairs into int8 kernels when it loads it); the build says which kernels.
    """
    import onnxruntime as ort

    if info.precision is Precision.INT8:
        from ...graph.qdq import FLOAT_STAGE

        write_atomic(output, source.path.read_bytes())
        kernels = ort_kernel_counts(output)
        float_convs = kernels.get("Conv", 0) + kernels.get("FusedConv", 0)
        _log.info(f"ONNX Runtime runs {kernels.get('QLinearConv', 0)} convolutions in int8 (QLinearConv), the "
                  f"classifier as {'an int8 MatMulIntegerToFloat' if kernels.get('MatMulIntegerToFloat') else 'a float MatMul'}"
                  f", and {float_convs} float conv(s) ({FLOAT_STAGE})")
        return {"onnxruntime_version": ort.__version__, "cpu_conv_kernels": kernels}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.log_severity_level = 3
    with replacing(output) as tmp:  # ORT writes the optimized model straight into the artifact's temporary file
        so.optimized_model_filepath = str(tmp)
        try:
            ort.InferenceSession(str(source.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types
            raise BuildError(f"ONNX Runtime could not optimize {source.path}: {str(exc).splitlines()[0]}") from None
        try:
            open_artifact(tmp, sidecar=False)  # written whole: ORT says nothing when a write falls short
        except ArtifactError as exc:
            raise BuildError(f"ONNX Runtime wrote an unreadable {output}: {exc}") from None
    return {"onnxruntime_version": ort.__version__, "optimization_level": "extended"}


def ort_kernel_counts(path: Path) -> dict[str, int]:
    """Which kernels ONNX Runtime (CPU) runs the convolutions and the classifier with, as loaded for inference."""
    import onnx
    import onnxruntime as ort

    from .run import QDQ_DISABLED_OPTIMIZERS, session_options

    with tempfile.TemporaryDirectory(prefix="bisenet_rt_ort_") as tmp:
        so = session_options()
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=list(QDQ_DISABLED_OPTIMIZERS))
        except Exception as exc:  # ORT's own exception types
            raise BuildError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return {op: ops[op] for op in _KERNELS if ops[op]}
