"""OpenVINO backend: the pipeline graph (ONNX or saved IR) on the CPU, in exactly the precision asked for.

OpenVINO's silent default on CPUs with BF16 instructions is to compute FP32 graphs in BF16; here the
inference precision is always set explicitly, and BF16 is used only when asked for (or recorded by
`bisenet-rt build --precision bf16`) and only where the CPU reports BF16 support.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ArtifactInfo, info_from_sidecar, read_sidecar
from ..errors import BackendUnavailableError, EngineLoadError, InputError
from ..export import INPUT_NAME, read_metadata
from ..precision import Precision
from ..segmenter import ENGINES_DIR
from .base import Backend, physical_cores

__all__ = ["OpenVINOBackend", "openvino_version", "cpu_capabilities", "supports_bf16", "tune_graph",
           "inference_precision", "HINTS", "OV_PRECISION", "DEFAULT_CACHE_DIR"]

#: `hint` -> OpenVINO PERFORMANCE_HINT.
HINTS: dict[str, str] = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
#: Our precision -> OpenVINO INFERENCE_PRECISION_HINT. INT8 graphs carry their own Q/DQ; the rest stays f32.
OV_PRECISION: dict[Precision, str] = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16",
                                       Precision.INT8: "f32"}
_NHWC = [0, 2, 3, 1]
_REBUILD = "rebuild it with 'bisenet-rt build --backend openvino'"
_REEXPORT = "open the exported graph ('bisenet-rt export -o PATH.onnx'), not an ONNX Runtime-optimized one"
#: Where compiled models are cached so a second start skips compilation (None disables the cache).
DEFAULT_CACHE_DIR = ENGINES_DIR / "ov_cache"


def openvino_version() -> str:
    """The OpenVINO release, e.g. '2026.4.1' (without the build suffix)."""
    import openvino as ov

    return ov.__version__.split("-")[0]


def cpu_capabilities(core: Any = None) -> tuple[str, ...]:
    """What OpenVINO's CPU plugin reports it can compute in here ('FP32', 'BF16', 'FP16', 'INT8', ...)."""
    import openvino as ov

    core = core or ov.Core()
    return tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def supports_bf16(core: Any = None) -> bool:
    """Whether this CPU computes BF16 natively (AVX512_BF16 or AMX), as OpenVINO reports it."""
    return "BF16" in cpu_capabilities(core)


def inference_precision(graph: Precision, requested: Precision | None, capabilities: tuple[str, ...]) -> Precision:
    """The precision to compute in: what was asked for, checked against the graph and this CPU.

    None means the graph's own precision (FP16 graphs compute in FP32 where the CPU has no FP16 arithmetic).
    """
    if requested is None:
        if graph is Precision.FP16 and "FP16" not in capabilities:
            return Precision.FP32
        requested = graph
    if requested is Precision.BF16:
        if graph not in (Precision.FP32, Precision.BF16):
            raise InputError(f"bf16 on OpenVINO runs an fp32 graph with the BF16 hint; this is a {graph} graph. "
                             "Export fp32 ('bisenet-rt export -o PATH.onnx') or build with "
                             "'bisenet-rt build --backend openvino --precision bf16'")
        if "BF16" not in capabilities:
            raise BackendUnavailableError("bf16 needs a CPU with BF16 instructions (AVX512_BF16 or AMX); OpenVINO "
                                          f"reports only {', '.join(capabilities)} here. Use precision='fp32' "
                                          "('bisenet-rt build --backend openvino --precision fp32')")
        return requested
    if requested is Precision.FP16 and "FP16" not in capabilities:
        raise BackendUnavailableError("fp16 compute needs a CPU with FP16 arithmetic (AVX512_FP16 or AMX-FP16); "
                                      f"OpenVINO reports only {', '.join(capabilities)} here. Use precision='fp32'")
    if requested is Precision.FP32 and graph is Precision.BF16:  # a bf16 IR holds the fp32 graph
        return requested
    if requested is not graph and not (requested is Precision.FP16 and graph is Precision.FP32):
        raise InputError(f"this is a {graph} graph; precision={requested.value!r} cannot run it as such. Open it "
                         f"with precision=None, or export/build a {requested} artifact")
    return requested


def _const_values(output: Any) -> list | None:
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    return node.get_data().tolist()


def _nhwc_source(op: Any) -> Any:
    """The NCHW tensor behind `op`'s first input when that input is Transpose(x, [0, 2, 3, 1]), else None."""
    src = op.input_value(0).get_node()
    if src.get_type_name() != "Transpose" or _const_values(src.input_value(1)) != _NHWC:
        return None
    return src.input_value(0)


def tune_graph(model: Any) -> list[str]:
    """Rewrite channels-last steps the CPU plugin runs slowly into channels-first ones; same values.

    The pipeline graph upsamples the logits channels-last (cheap for ONNX Runtime and TensorRT),
    but OpenVINO's CPU kernels for a 19-channel NHWC Interpolate and arg-max are several times
    slower than their blocked NCHW kernels. Interpolate and TopK commute with the transpose, so
    the transpose moves after them. Returns what was changed (empty when nothing matched).
    """
    import openvino.opset11 as ops

    changed = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Interpolate" or op.get_input_size() != 2:
            continue
        source = _nhwc_source(op)
        scales = _const_values(op.input_value(1))
        attrs = op.get_attributes()
        if source is None or attrs.get("shape_calculation_mode") != "scales" or not scales or len(scales) != 4 \
                or scales[0] != 1 or scales[3] != 1:
            continue
        nchw = ops.interpolate(source, np.array([1, 1, scales[1], scales[2]], np.float32), mode=attrs["mode"],
                               shape_calculation_mode="scales",
                               coordinate_transformation_mode=attrs["coordinate_transformation_mode"],
                               nearest_mode=attrs["nearest_mode"], antialias=attrs["antialias"],
                               cube_coeff=attrs["cube_coeff"], name=f"{op.get_friendly_name()}/nchw")
        op.output(0).replace(ops.transpose(nchw, np.array(_NHWC, np.int64)).output(0))
        changed.append(f"{op.get_friendly_name()}: Interpolate before the NHWC transpose")
    for op in model.get_ordered_ops():
        if op.get_type_name() != "TopK" or op.get_attributes().get("axis") not in (3, -1):
            continue
        source = _nhwc_source(op)
        if source is None:
            continue
        attrs = op.get_attributes()
        nchw = ops.topk(source, op.input_value(1), axis=1, mode=attrs["mode"], sort=attrs["sort"],
                        index_element_type=attrs["index_element_type"], stable=attrs.get("stable", False),
                        name=f"{op.get_friendly_name()}/nchw")
        for i in range(2):
            op.output(i).replace(ops.transpose(nchw.output(i), np.array(_NHWC, np.int64)).output(0))
        changed.append(f"{op.get_friendly_name()}: arg-max before the NHWC transpose")
    if changed:
        model.validate_nodes_and_infer_types()
    return changed


class OpenVINOBackend(Backend):
    """Runs the pipeline graph from an exported ONNX (fp32, fp16, Q/DQ int8) or a built IR (`.xml` + `.bin`).

    `precision=None` runs the artifact's own precision (an IR built with `--precision bf16` runs BF16);
    'fp32' is always true FP32, 'bf16' is refused on CPUs without BF16. `hint='latency'` runs a call
    in one request; `'throughput'` spreads the frames of a batch over parallel async requests (streams).
    """

    name = "openvino"
    suffixes = (".xml", ".onnx")

    def __init__(self, path: str | os.PathLike, *, precision: str | Precision | None = None, hint: str = "latency",
                 threads: int | None = None, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR) -> None:
        super().__init__(path)
        import openvino as ov

        if hint not in HINTS:
            raise ValueError(f"unknown hint {hint!r} for openvino; choose one of: {', '.join(HINTS)}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._hint = hint
        core = ov.Core()
        info = self._read_info()
        self._capabilities = cpu_capabilities(core)
        requested = None if precision is None else Precision.parse(precision)
        self._compute = inference_precision(info.precision, requested, self._capabilities)
        self._info = ArtifactInfo(classes=info.classes, model_size=info.model_size,
                                  precision=info.precision if requested is None else self._compute,
                                  source_sha256=info.source_sha256)
        # IR from 'bisenet-rt build' is tuned already; compiling it by path lets a cache hit skip reading it.
        is_ir = self.path.suffix.lower() == ".xml"
        model = str(self.path) if is_ir else self._read_model(core)
        #: The graph rewrites applied at load time (see `tune_graph`).
        self.rewrites = [] if is_ir else tune_graph(model)
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[self._compute],
            "PERFORMANCE_HINT": HINTS[hint],
            "INFERENCE_NUM_THREADS": threads or physical_cores(),
        }
        if cache_dir is not None:
            try:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(cache_dir)
            except OSError as exc:
                print(f"openvino: compiled-model cache disabled ({cache_dir}: {exc.strerror})", file=sys.stderr)
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise EngineLoadError(f"{self.path}: OpenVINO cannot load it ({_first_line(exc)}); "
                                  f"{_REBUILD if is_ir else _REEXPORT}") from None
        self._check_io(self._compiled.inputs)
        self._cpu = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        self._request = self._compiled.create_infer_request()
        self._queue = None
        if hint == "throughput":
            self._queue = ov.AsyncInferQueue(self._compiled,
                                             int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    # -- loading -----------------------------------------------------------------------------------
    def _read_info(self) -> ArtifactInfo:
        if self.path.suffix.lower() == ".xml":
            if not self.path.with_suffix(".bin").is_file():
                raise EngineLoadError(f"{self.path}: its weights file {self.path.with_suffix('.bin').name} is missing; "
                                      "rebuild with 'bisenet-rt build --backend openvino'")
            return info_from_sidecar(read_sidecar(self.path))
        import onnx

        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise EngineLoadError(f"{self.path}: not a readable ONNX file ({exc.__class__.__name__}); "
                                  "re-export it with 'bisenet-rt export'") from None
        meta = read_metadata(proto)
        sidecar = read_sidecar(self.path, required=False)
        inputs = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
        if meta.get("graph") == "plain" or (meta and inputs != [(INPUT_NAME, onnx.TensorProto.UINT8)]):
            raise EngineLoadError(f"{self.path}: this is a plain model graph (float input {inputs}); the Segmenter "
                                  "needs the pipeline graph: 'bisenet-rt export -o PATH.onnx' without --plain")
        if sidecar is not None:
            return info_from_sidecar(sidecar).with_profile(None, None, None)
        if meta:
            return ArtifactInfo.from_metadata(meta)
        raise EngineLoadError(f"{self.path}: no bisenet-rt metadata; export the graph with 'bisenet-rt export'")

    def _read_model(self, core: Any) -> Any:
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            raise EngineLoadError(f"{self.path}: OpenVINO cannot read it ({_first_line(exc)}); {_REEXPORT}") from None
        self._check_io(model.inputs)
        return model

    def _check_io(self, inputs: Any) -> None:
        found = [(p.get_any_name(), p.get_element_type().get_type_name()) for p in inputs]
        if len(found) != 1 or found[0][1] != "u8":
            raise EngineLoadError(f"{self.path}: expected one uint8 input '{INPUT_NAME}' (the pipeline graph), found "
                                  f"{found}; export with 'bisenet-rt export -o PATH.onnx' without --plain")

    # -- what it reports ---------------------------------------------------------------------------
    @classmethod
    def availability(cls) -> str | None:
        try:
            import openvino as ov
        except ImportError:
            return "the openvino module is not installed (pip install openvino)"
        if "CPU" not in ov.Core().available_devices:
            return "OpenVINO finds no CPU device (unsupported processor architecture?)"
        return None

    @property
    def info(self) -> ArtifactInfo:
        return self._info

    @property
    def device(self) -> str:
        return f"CPU: {self._cpu} (OpenVINO {self._compute.value})"

    @property
    def compute_precision(self) -> Precision:
        """The precision OpenVINO computes in (may differ from the graph's: fp16 weights computed in fp32)."""
        return self._compute

    def versions(self) -> dict[str, str]:
        compiled_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT")  # read back, not assumed
        return {"openvino": openvino_version(), "inference_precision": compiled_precision.get_type_name(),
                "performance_hint": HINTS[self._hint],
                "threads": str(self._compiled.get_property("INFERENCE_NUM_THREADS")),
                "streams": str(self._compiled.get_property("NUM_STREAMS"))}

    # -- running -----------------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._queue is None or batch.shape[0] == 1:
            return self._request.infer({0: batch}, share_inputs=True)[0]
        labels = np.empty(batch.shape[:3], np.uint8)

        def done(request: Any, index: int) -> None:
            labels[index] = request.get_output_tensor(0).data[0]

        self._queue.set_callback(done)
        for i in range(batch.shape[0]):
            self._queue.start_async({0: batch[i:i + 1]}, userdata=i, share_inputs=True)
        self._queue.wait_all()
        return labels

    def _close(self) -> None:
        self._queue = None
        self._request = None
        self._compiled = None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__
