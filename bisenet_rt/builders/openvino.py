"""Build step for OpenVINO: convert the pipeline ONNX to IR (`.xml` + `.bin`) and record the precision to run it in.

BF16 is not a graph of its own: it is the FP32 graph compiled with OpenVINO's BF16 inference hint,
so the IR holds FP32 weights and the sidecar says 'bf16'. It is refused where the CPU lacks BF16.
"""
from __future__ import annotations

import logging
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ArtifactInfo, Pipeline, write_sidecar
from ..atomic import Replacement
from ..errors import BackendUnavailableError, BuildError, DiskFullError
from ..precision import Precision
from . import BuildConfig, base_sidecar, read_pipeline, source_onnx

__all__ = ["build_ir"]

_log = logging.getLogger(__name__)

#: The graph each precision is built from.
_GRAPH = {Precision.FP32: Precision.FP32, Precision.BF16: Precision.FP32, Precision.FP16: Precision.FP16}


def build_ir(config: BuildConfig, output: Path) -> Path:
    """Export (if needed) and convert the pipeline graph to OpenVINO IR; check it compiles and runs; write a sidecar."""
    import openvino as ov

    from ..host import cpu_name
    from ..backends.openvino import cpu_capabilities, inference_precision, openvino_version, tune_graph

    output = Path(output)
    if output.suffix.lower() != ".xml":
        raise BuildError(f"-o {output}: OpenVINO IR is written as NAME.xml (with NAME.bin beside it)")
    capabilities = cpu_capabilities()
    if config.chosen_precision is Precision.BF16 and "BF16" not in capabilities:
        raise BackendUnavailableError("--precision bf16 needs a CPU with BF16 instructions (AVX512_BF16 or AMX); "
                                      f"OpenVINO reports only {', '.join(capabilities)} here. Build fp32 instead: "
                                      "'bisenet-rt build --backend openvino --precision fp32'")
    if config.chosen_precision is Precision.INT8 and config.onnx is None:
        raise BuildError("--precision int8 on OpenVINO runs a Q/DQ graph: pass one with --onnx PATH.onnx")
    started = time.perf_counter()
    graph_precision = _GRAPH.get(config.chosen_precision, config.chosen_precision)
    src = source_onnx(config, graph_precision, "openvino")
    pipeline = read_pipeline(src)
    graph_info = pipeline.info
    if graph_info.precision is not graph_precision:
        raise BuildError(f"{src} is a {graph_info.precision} graph; --precision {config.chosen_precision} is built from a "
                         f"{graph_precision} graph")
    try:
        compute = inference_precision(graph_info.precision, config.chosen_precision, capabilities)
    except BackendUnavailableError as exc:
        raise BuildError(str(exc)) from None
    try:
        model = ov.convert_model(str(src))
    except Exception as exc:  # the ONNX frontend raises its own OpConversionFailure and RuntimeError types
        raise BuildError(f"OpenVINO could not convert {src}: {str(exc).splitlines()[0]}") from None
    rewrites = tune_graph(model)
    _write_ir(model, output)
    _check_runs(output, compute)
    info = ArtifactInfo(classes=graph_info.classes, model_size=graph_info.model_size, precision=config.chosen_precision,
                        source_sha256=graph_info.source_sha256)
    elapsed = time.perf_counter() - started
    write_sidecar(output, base_sidecar(info, "openvino", src, elapsed, openvino_version=openvino_version(),
                                       cpu=cpu_name(), cpu_capabilities=list(capabilities),
                                       inference_precision=compute.value, graph_precision=graph_info.precision.value,
                                       graph_rewrites=rewrites, quantization=_quantization(pipeline)))
    _log.info(f"wrote {output} (+ {output.with_suffix('.bin').name}; runs in {compute}) in {elapsed:.1f} s")
    return output


def _quantization(pipeline: Pipeline) -> Any:
    """The INT8 graph's quantization facts (weight grid, target CPU class), or None for a float graph."""
    return json.loads(pipeline.quantization) if pipeline.quantization else None


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

    from ..backends.openvino import OV_PRECISION

    try:
        compiled = ov.Core().compile_model(str(output), "CPU", {"INFERENCE_PRECISION_HINT": OV_PRECISION[compute]})
        labels = compiled(np.zeros((1, 64, 128, 3), np.uint8))[0]
    except RuntimeError as exc:
        raise BuildError(f"the IR {output} does not run on OpenVINO: {str(exc).splitlines()[0]}") from None
    if labels.shape != (1, 64, 128) or labels.dtype != np.uint8:
        raise BuildError(f"the IR {output} returned {labels.dtype} {labels.shape} for a 1x64x128x3 frame, "
                         "expected uint8 (1, 64, 128)")
