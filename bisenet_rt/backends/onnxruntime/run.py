"""ONNX Runtime backend: the pipeline graph on the CPU, or on a GPU through onnxruntime-gpu."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...artifacts import INPUT_NAME, OUTPUT_NAME, ArtifactInfo, open_artifact
from ...errors import BackendUnavailableError, ConfigError, ArtifactError
from ...host import cpu_name, physical_cores
from ...precision import Precision
from ..base import Backend
from ..cpu_kernels import HALF_PIXEL_MODES, CpuKernels, PixelMap, available, uses_kernels
from ..submission import DEFAULT_DEPTH

__all__ = ["OnnxRuntimeBackend", "session_options", "execution_providers", "QDQ_DISABLED_OPTIMIZERS"]

_log = logging.getLogger(__name__)
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: Graph passes turned off for INT8 (Q/DQ) graphs: common-subexpression elimination merges the
#: per-consumer QuantizeLinear nodes, and on x86 ORT runs a convolution in int8 only after a
#: QuantizeLinear with one consumer (see bisenet_rt/graph/qdq.py).
QDQ_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)
#: Why the CPU kernels cannot stand in for a graph's pre- or post-processing whose nodes are not the named ones.
_UNNAMED = "the graph has no named {part}-processing to replace (an optimizer renamed its nodes)"


def session_options(threads: int | None = None, spinning: bool = True) -> Any:
    """Session options tuned for the pipeline graph: all graph optimisations, one thread per physical core.

    `spinning=False` lets ONNX Runtime's threads sleep as soon as a call ends instead of spinning (its default),
    so work that follows on the same cores (the post-processing kernel) gets them.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
    """Runs the exported pipeline ONNX (or the optimized model `bisenet-rt build` writes).

    On the CPU, `prepost` is where the pre/post-processing runs (`backends.cpu_kernels`): 'auto' (the CPU
    kernels around the graph's model where they can run), 'kernels' or 'graph' (the graph's own nodes).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH, device: str | None = None,
                 threads: int | None = None, prepost: str = "auto") -> None:
        super().__init__(path, depth=depth)
        self._kernels: CpuKernels | None = None
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
        source: str | bytes = str(self.path)
        model: tuple[bytes, str, PixelMap] | str = "it runs on a GPU"
        if prepost != "graph" and providers[0] == "CPUExecutionProvider":
            model = _model_graph(self.path, self._info)
        if uses_kernels(prepost, self.name, model if isinstance(model, str) else None) and not isinstance(model, str):
            source, self._model_input, pixels = model
            self._kernels = CpuKernels(self._info.model_size, pixels, threads or physical_cores())
        try:
            disabled = list(QDQ_DISABLED_OPTIMIZERS) if self._info.precision is Precision.INT8 else None
            self._session = ort.InferenceSession(source, session_options(threads, spinning=self._kernels is None),
                                                 providers=providers,
                                                 disabled_optimizers=disabled)
        except Exception as exc:  # ORT raises its own exception classes from C++
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        self._provider = self._session.get_providers()[0]

    @property
    def device(self) -> str:
        if self._provider == "CPUExecutionProvider":
            return f"CPU: {cpu_name()}"
        return f"GPU via {self._provider}"

    @property
    def prepost(self) -> str:
        """'kernels' where the CPU kernels do the pre/post-processing around the graph's model, else 'graph'."""
        return "graph" if self._kernels is None else "kernels"

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "provider": self._provider, "prepost": self.prepost}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_into(batch, None)

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """With `out`, the labels are written straight into it (I/O binding or the kernel, no copy)."""
        if self._kernels is not None:
            logits = self._session.run(None, {self._model_input: self._kernels.preprocess(batch)})[0]
            return self._kernels.postprocess(logits, batch.shape[1:3], out)
        if out is None:
            return self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        binding = self._session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, batch)
        binding.bind_output(OUTPUT_NAME, "cpu", 0, np.uint8, list(out.shape), out.ctypes.data)
        self._session.run_with_iobinding(binding)
        return out

    def _close(self) -> None:
        self._session = None
        if self._kernels is not None:
            self._kernels.close()


def _pixel_map(pipeline: Any) -> PixelMap | str:
    """What the graph's pre-processing does to a pixel, read from its named nodes; or why it is not the kernel's."""
    from onnx import helper, numpy_helper

    nodes = {n.name: n for n in pipeline.graph.node}
    consts = {i.name: numpy_helper.to_array(i) for i in pipeline.graph.initializer}
    resize, scale, shift = nodes.get("pre/resize"), nodes.get("pre/scale"), nodes.get("pre/normalize")
    if (resize is None or scale is None or shift is None or len(scale.input) != 2 or len(shift.input) != 2
            or scale.input[1] not in consts or shift.input[1] not in consts):
        return _UNNAMED.format(part="pre")
    attrs = {a.name: helper.get_attribute_value(a) for a in resize.attribute}
    if (attrs.get("mode") != b"linear" or attrs.get("coordinate_transformation_mode", b"half_pixel") != b"half_pixel"
            or attrs.get("antialias", 0)):
        return "the graph's frame resize is not the half-pixel bilinear one the kernel computes"
    try:
        return PixelMap.of(consts[scale.input[1]], consts[shift.input[1]], "pre/bgr_to_rgb" in nodes)
    except ValueError as exc:
        return f"the graph's normalization is not per channel ({exc})"


def _model_graph(path: Path, info: ArtifactInfo) -> tuple[bytes, str, PixelMap] | str:
    """The model part of the artifact's graph (serialized) with its float32 input's name, and what its
    pre-processing does to a pixel; or why the kernels cannot stand in for its pre/post-processing.

    An FP16 graph's model part keeps the cast of the normalized frame to FP16 (`pre/to_model_dtype`), so ONNX
    Runtime treats it as in the whole graph (on CPUs it drops the cast where its kernels run FP32 anyway)."""
    missing = available()
    if missing:
        return missing
    import onnx

    from ...graph.prepost import coarse_logits, model_upsample_mode, part_graph, with_model_cast

    try:
        pipeline = onnx.load(str(path))
    except Exception as exc:  # onnx's DecodeError and OSError; open_artifact read it already
        return f"its graph does not load ({str(exc).splitlines()[0]})"
    mode = model_upsample_mode(pipeline)
    if coarse_logits(pipeline) is None or mode is None:
        return _UNNAMED.format(part="post")
    if mode not in HALF_PIXEL_MODES:
        return f"the model's upsample uses {mode} coordinates; the kernel computes half-pixel ones"
    pixels = _pixel_map(pipeline)
    if isinstance(pixels, str):
        return pixels
    w, h = info.model_size
    try:
        graph, (model_input,) = part_graph(pipeline, "model", ["N", 3, h, w])
    except ValueError:  # no one tensor between pre/ and the model
        return _UNNAMED.format(part="pre")
    graph, model_input, producer = with_model_cast(pipeline, graph, model_input)
    if producer != "pre/normalize":
        return f"the model reads {producer}'s output, not the normalized frame the kernel makes"
    return graph.SerializeToString(), model_input, pixels
