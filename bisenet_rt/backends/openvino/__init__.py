"""The OpenVINO backend (CPUs): its spec, and whether OpenVINO can run here.

`run.py` compiles and runs pipeline graphs and IR in exactly the precision asked for, `build.py` writes IR,
`tune.py` rewrites graphs for the CPU plugin. Only this file is imported until one is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...post_form import PostForm
from ...precision import Precision
from ..spec import BackendSpec, BuildConfig, GraphForm

if TYPE_CHECKING:
    from ...artifacts import Artifact, ArtifactInfo
    from ..base import Backend

__all__ = ["SPEC"]


def _availability() -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return f"the openvino module is not installed ({SPEC.install})"
    if "CPU" not in ov.Core().available_devices:
        return "OpenVINO finds no CPU device (unsupported processor architecture?)"
    return None


def _runtime() -> "type[Backend]":
    from .run import OpenVINOBackend

    return OpenVINOBackend


def _compile(source: "Artifact", info: "ArtifactInfo", config: BuildConfig, output: Path) -> dict[str, Any]:
    from .build import compile_ir

    return compile_ir(source, info, config, output)


#: BF16 is not a graph of its own: the FP32 graph compiled with OpenVINO's BF16 inference hint (the IR holds
#: FP32 weights, the sidecar says 'bf16'). INT8 is a Q/DQ graph. Every graph has the COLUMN_BANDS post-processing,
#: the exact form OpenVINO's CPU kernels run fastest (benchmarks/prepost_overhead.py); the INT8 classifier stays a
#: Conv, so the logits stay planar (`graph.qdq`).
SPEC = BackendSpec(
    name="openvino", title="OpenVINO", extra="openvino", opens=(".xml", ".onnx"), writes=(".xml",),
    availability=_availability, runtime=_runtime, compile=_compile,
    graph_forms={Precision.FP32: GraphForm(Precision.FP32, PostForm.COLUMN_BANDS),
                 Precision.BF16: GraphForm(Precision.FP32, PostForm.COLUMN_BANDS),
                 Precision.FP16: GraphForm(Precision.FP16, PostForm.COLUMN_BANDS),
                 Precision.INT8: GraphForm(Precision.INT8, PostForm.COLUMN_BANDS, classifier_conv=True)})
