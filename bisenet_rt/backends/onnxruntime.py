"""ONNX Runtime backend: the pipeline graph on the CPU, or on a GPU through onnxruntime-gpu."""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..artifacts import ArtifactInfo, info_from_sidecar, read_sidecar
from ..errors import BackendUnavailableError, EngineLoadError
from ..export import INPUT_NAME, OUTPUT_NAME, read_metadata
from ..precision import Precision
from ..host import cpu_name, physical_cores
from .base import Backend

__all__ = ["OnnxRuntimeBackend", "session_options", "QDQ_DISABLED_OPTIMIZERS"]

_log = logging.getLogger(__name__)
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: Graph passes turned off for INT8 (Q/DQ) graphs: common-subexpression elimination merges the
#: per-consumer QuantizeLinear nodes, and on x86 ORT runs a convolution in int8 only after a
#: QuantizeLinear with one consumer (see bisenet_rt/quantize.py).
QDQ_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def session_options(threads: int | None = None) -> Any:
    """Session options tuned for this pipeline: all graph optimisations, one thread per physical core."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class OnnxRuntimeBackend(Backend):
    """Runs the exported pipeline ONNX (or the optimized model `bisenet-rt build` writes)."""

    name = "onnxruntime"
    suffixes = (".onnx", ".ort")

    def __init__(self, path: str | os.PathLike, *, device: str | None = None, threads: int | None = None) -> None:
        super().__init__(path)
        #: Why this INT8 artifact loses accuracy on this CPU (also logged at load), or None.
        self.fit_warning: str | None = None
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise EngineLoadError(f"{self.path}: not a readable ONNX file ({exc.__class__.__name__}); "
                                  "re-export it with 'bisenet-rt export'") from None
        sidecar = read_sidecar(self.path, required=False)
        meta = read_metadata(proto)
        if sidecar is not None:
            self._info = info_from_sidecar(sidecar)
        elif meta:
            self._info = ArtifactInfo.from_metadata(meta)
        else:
            raise EngineLoadError(f"{self.path}: no bisenet-rt metadata; export the graph with 'bisenet-rt export'")
        inputs = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
        if meta.get("graph") == "plain" or inputs != [(INPUT_NAME, onnx.TensorProto.UINT8)]:
            raise EngineLoadError(f"{self.path}: this is a plain model graph (float input {inputs}); the Segmenter needs "
                                  "the pipeline graph: 'bisenet-rt export -o PATH.onnx' without --plain")
        del proto
        if self._info.precision is Precision.INT8:
            from ..host import cpu_features
            from ..quantize import cpu_fit_warning

            self.fit_warning = cpu_fit_warning(meta.get("quantization"), cpu_features(), self.path.name)
            if self.fit_warning and device != "cuda":
                _log.warning(self.fit_warning)
        available = ort.get_available_providers()
        if device == "cuda":
            providers = [p for p in _GPU_PROVIDERS if p in available]
            if not providers:
                raise BackendUnavailableError("ONNX Runtime has no CUDA provider here; swap in onnxruntime-gpu "
                                              "('pip uninstall -y onnxruntime && pip install onnxruntime-gpu') "
                                              "or use device='cpu'")
        elif device in (None, "auto"):
            providers = [p for p in _GPU_PROVIDERS if p in available]
        elif device == "cpu":
            providers = []
        else:
            raise ValueError(f"unknown device {device!r} for onnxruntime; choose 'cpu', 'cuda' or 'auto'")
        providers.append("CPUExecutionProvider")
        try:
            disabled = list(QDQ_DISABLED_OPTIMIZERS) if self._info.precision is Precision.INT8 else None
            self._session = ort.InferenceSession(str(self.path), session_options(threads), providers=providers,
                                                 disabled_optimizers=disabled)
        except Exception as exc:  # ORT raises its own exception classes from C++
            raise EngineLoadError(f"{self.path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        self._provider = self._session.get_providers()[0]

    @classmethod
    def availability(cls) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "the onnxruntime module is not installed (pip install onnxruntime)"
        return None

    @property
    def device(self) -> str:
        if self._provider == "CPUExecutionProvider":
            return f"CPU: {cpu_name()}"
        return f"GPU via {self._provider}"

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "provider": self._provider}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """With `out`, ONNX Runtime writes the labels straight into it (I/O binding, no copy)."""
        if out is None:
            return self._infer(batch)
        binding = self._session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, batch)
        binding.bind_output(OUTPUT_NAME, "cpu", 0, np.uint8, list(out.shape), out.ctypes.data)
        self._session.run_with_iobinding(binding)
        return out

    def _close(self) -> None:
        self._session = None
