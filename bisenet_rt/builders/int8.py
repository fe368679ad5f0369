"""Build step for INT8: quantize (Q/DQ) from calibration frames, then hand the graph to the backend.

For ONNX Runtime the Q/DQ pipeline ONNX is itself the artifact (engines/bisenetv2_int8.onnx): ORT
fuses the Q/DQ pairs into int8 kernels when it loads it. TensorRT and OpenVINO builders get the same
Q/DQ ONNX as their `--onnx` source (written as engines/bisenetv2_int8.src.onnx).
"""
from __future__ import annotations

import logging
import collections
import dataclasses
import importlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..artifacts import load_onnx, open_pipeline, read_metadata, write_sidecar
from ..atomic import write_atomic
from ..errors import BuildError
from ..precision import Precision
from ..prepost import POST_FORM_FOR
from ..quantize import FLOAT_STAGE
from . import BUILDERS, BuildConfig, base_sidecar
from .choice import host_facts, int8_weights

__all__ = ["build_int8", "int8_source", "ort_kernel_counts"]

_log = logging.getLogger(__name__)

#: Kernels of the convolutions and the classifier (a MatMul), int8 and float.
_KERNELS = ("QLinearConv", "Conv", "FusedConv", "MatMulIntegerToFloat", "MatMul")


def int8_source(config: BuildConfig, path: Path, backend: str) -> Path:
    """The Q/DQ pipeline ONNX to build from: `--onnx` if it already is one, else quantized into `path`.

    A plain FP32 `--onnx` (export --plain) is quantized as given; otherwise the model comes from
    `--weights` (or random weights) and is exported at `--model-size`, with `backend`'s post-processing form
    (`POST_FORM_FOR`) and a weight grid that fits `backend` and `--int8-target` (`choice.int8_weights`).
    """

    from ..model import model_and_sha
    from ..quantize import calibration_files, quantize_pipeline

    model_or_plain: Any = None  # the model, or the plain graph given as --onnx
    sha = "random-init"
    if config.onnx is not None:
        if not Path(config.onnx).is_file():
            raise BuildError(f"--onnx {config.onnx}: no such file; export one with "
                             "'bisenet-rt export --plain -o PATH.onnx'")
        proto = load_onnx(config.onnx, external_data=True, error=BuildError)
        meta = read_metadata(proto)
        if meta.get("graph") == "pipeline":
            if meta.get("precision") == Precision.INT8.value:
                return Path(config.onnx)
            raise BuildError(f"--onnx {config.onnx} is a {meta.get('precision', 'fp32')} pipeline graph; int8 "
                             "quantizes the plain model graph: pass 'bisenet-rt export --plain' output, --weights, "
                             "or an int8 graph")
        model_or_plain, sha = proto, meta.get("source_sha256", sha)
    frames = calibration_files(config.calib, config.calib_count)
    if model_or_plain is None:
        model_or_plain, sha = model_and_sha(config.weights)
    weights, target = int8_weights(host_facts(), backend, config.int8_target)
    _log.info(f"int8: {len(frames)} calibration frames from {config.calib}; {weights.value} weights, for {target}")
    proto = quantize_pipeline(model_or_plain, frames, cache_dir=config.cache_dir / "calibration",
                              model_size=None if config.onnx is not None else config.model_size, source_sha256=sha,
                              post=POST_FORM_FOR[backend], weights=weights, target=target)
    write_atomic(path, proto.SerializeToString())
    _log.info(f"wrote the Q/DQ graph {path}")
    return path


def ort_kernel_counts(path: Path) -> dict[str, int]:
    """Which kernels ONNX Runtime (CPU) runs the convolutions and the classifier with, as loaded for inference."""
    import onnx
    import onnxruntime as ort

    from ..backends.onnxruntime import QDQ_DISABLED_OPTIMIZERS, session_options

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


def build_int8(config: BuildConfig, backend: str, output: Path) -> Path:
    """Quantize (or take an int8 `--onnx`) and build the artifact for `backend`; returns its path."""
    import onnxruntime as ort

    started = time.perf_counter()
    if backend != "onnxruntime":
        src = int8_source(config, config.engines_dir / "bisenetv2_int8.src.onnx", backend)
        module, func = BUILDERS[backend].split(":")
        builder = getattr(importlib.import_module(module), func)
        return builder(dataclasses.replace(config, onnx=src, weights=None), output)
    src = int8_source(config, output, backend)
    if src.resolve() != output.resolve():
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, output)
    pipeline = open_pipeline(output, sidecar=False)
    kernels = ort_kernel_counts(output)
    float_convs = kernels.get("Conv", 0) + kernels.get("FusedConv", 0)
    _log.info(f"ONNX Runtime runs {kernels.get('QLinearConv', 0)} convolutions in int8 (QLinearConv), the classifier as "
          f"{'an int8 MatMulIntegerToFloat' if kernels.get('MatMulIntegerToFloat') else 'a float MatMul'}, and "
          f"{float_convs} float conv(s) ({FLOAT_STAGE})")
    elapsed = time.perf_counter() - started
    write_sidecar(output, base_sidecar(pipeline.info, "onnxruntime", output, elapsed,
                                       onnxruntime_version=ort.__version__,
                                       quantization=json.loads(pipeline.quantization or "null"),
                                       cpu_conv_kernels=kernels))
    _log.info(f"wrote {output} in {elapsed:.1f} s")
    return output
