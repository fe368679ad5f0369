"""The ONNX Runtime backend (CPUs; GPUs through onnxruntime-gpu): its spec, and whether it can run here.

`run.py` runs pipeline graphs in an InferenceSession; `build.py` writes the optimized graph (or, INT8, the
Q/DQ graph). Only this file is imported until one is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...graph.prepost import PostForm
from ...precision import Precision
from ..spec import BackendSpec, BuildConfig, GraphForm

if TYPE_CHECKING:
    from ...artifacts import Artifact, ArtifactInfo
    from ..base import Backend

__all__ = ["SPEC"]


def _availability() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"the onnxruntime module is not installed ({SPEC.install})"
    return None


def _runtime() -> "type[Backend]":
    from .run import OnnxRuntimeBackend

    return OnnxRuntimeBackend


def _compile(source: "Artifact", info: "ArtifactInfo", config: BuildConfig, output: Path) -> dict[str, Any]:
    from .build import compile_onnxruntime

    return compile_onnxruntime(source, info, config, output)


#: The SEPARABLE post-processing: the faster exact layout on ONNX Runtime's CPU kernels.
SPEC = BackendSpec(
    name="onnxruntime", title="ONNX Runtime", extra="onnxruntime", opens=(".onnx", ".ort"), writes=(".onnx",),
    availability=_availability, runtime=_runtime, compile=_compile, devices=("cpu", "cuda"),
    graph_forms={p: GraphForm(p, PostForm.SEPARABLE) for p in (Precision.FP32, Precision.FP16, Precision.INT8)})
