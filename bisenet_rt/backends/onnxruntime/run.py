"""ONNX Runtime backend: the pipeline graph on the CPU, or on a GPU through onnxruntime-gpu."""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ...artifacts import INPUT_NAME, OUTPUT_NAME, open_artifact
from ...errors import BackendUnavailableError, ConfigError, ArtifactError
from ...host import cpu_name, physical_cores
from ...precision import Precision
from ..base import Backend
from ..submission import DEFAULT_DEPTH

__all__ = ["OnnxRuntimeBackend", "session_options", "execution_providers", "QDQ_DISABLED_OPTIMIZERS"]

_log = logging.getLogger(__name__)
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: Graph passes turned off for INT8 (Q/DQ) graphs: common-subexpression elimination merges the
#: per-consumer QuantizeLinear nodes, and on x86 ORT runs a convolution in int8 only after a
#: QuantizeLinear with one consumer (see bisenet_rt/graph/qdq.py).
QDQ_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def session_options(threads: int | None = None) -> Any:
    """Session options tuned for the pipeline graph: all graph optimisations, one thread per physical core."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def execution_providers(device: str | None, available: list[str]) -> list[Any]:
    """The execution providers for `device`: 'cpu'; 'cuda' or 'cuda:N' (the GPU providers present, on GPU N);
    None or 'auto' (the GPU providers present, else the CPU). The CPU provider comes last in every list."""
    kind, _, index = (device or "auto").partition(":")
    if kind not in ("cpu", "cuda", "auto") or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"unknown device {device!r} for onnxruntime; choose cpu, cuda, cuda:N or auto")
    gpu = [p for p in _GPU_PROVIDERS if p in available] if kind != "cpu" else []
    if kind == "cuda" and not gpu:
        raise BackendUnavailableError(f"device {device}: ONNX Runtime has no CUDA provider here; swap in "
                                      "onnxruntime-gpu ('pip uninstall -y onnxruntime && pip install onnxruntime-gpu') "
                                      "or run on the CPU (device cpu)")
    placed: list[Any] = [(p, {"device_id": int(index)}) for p in gpu] if index else gpu
    return [*placed, "CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """Runs the exported pipeline ONNX (or the optimized model `bisenet-rt build` writes)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH, device: str | None = None,
                 threads: int | None = None) -> None:
        super().__init__(path, depth=depth)
        #: Why this INT8 artifact loses accuracy on this CPU (also logged at load), or None.
        self.fit_warning: str | None = None
        import onnxruntime as ort

        artifact = open_artifact(self.path)
        self._info = artifact.info
        if self._info.precision is Precision.INT8:
            from ...host import cpu_features
            from ...int8_grid import cpu_fit_warning

            self.fit_warning = cpu_fit_warning(self._info.quantization, cpu_features(), self.path.name)
            if self.fit_warning and device != "cuda":
                _log.warning(self.fit_warning)
        providers = execution_providers(device, ort.get_available_providers())
        try:
            disabled = list(QDQ_DISABLED_OPTIMIZERS) if self._info.precision is Precision.INT8 else None
            self._session = ort.InferenceSession(str(self.path), session_options(threads), providers=providers,
                                                 disabled_optimizers=disabled)
        except Exception as exc:  # ORT raises its own exception classes from C++
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        self._provider = self._session.get_providers()[0]

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
