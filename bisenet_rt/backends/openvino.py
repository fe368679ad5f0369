"""OpenVINO backend: the pipeline graph (ONNX or saved IR) on the CPU, in exactly the precision asked for.

OpenVINO's silent default on CPUs with BF16 instructions is to compute FP32 graphs in BF16; here the
inference precision is always set explicitly, and BF16 is used only when asked for (or recorded by
`bisenet-rt build --precision bf16`) and only where the CPU reports BF16 support.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import INPUT_NAME, ArtifactInfo, open_pipeline
from ..errors import BackendUnavailableError, ConfigError, EngineLoadError, InputError
from ..host import physical_cores
from ..precision import Precision
from ..settings import cache_dir as user_cache_dir, unwritable_reason
from .base import Backend

__all__ = ["OpenVINOBackend", "openvino_version", "cpu_capabilities", "supports_bf16", "tune_graph",
           "inference_precision", "HINTS", "OV_PRECISION", "USER_CACHE"]

_log = logging.getLogger(__name__)
#: `hint` -> OpenVINO PERFORMANCE_HINT.
HINTS: dict[str, str] = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
#: Our precision -> OpenVINO INFERENCE_PRECISION_HINT. INT8 graphs carry their own Q/DQ; the rest stays f32.
OV_PRECISION: dict[Precision, str] = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16",
                                       Precision.INT8: "f32"}
_NHWC = [0, 2, 3, 1]  # transpose order NCHW -> NHWC
_NCHW = [0, 3, 1, 2]  # and back
_REBUILD = "rebuild it with 'bisenet-rt build --backend openvino'"
_REEXPORT = "open the exported graph ('bisenet-rt export -o PATH.onnx'), not an ONNX Runtime-optimized one"


class _UserCache:
    """The default `cache_dir`: the user's cache folder (`bisenet_rt.settings.cache_dir('openvino')`)."""

    def __repr__(self) -> str:
        return "USER_CACHE"


#: Kernels OpenVINO's CPU plugin keeps per input shape it has seen (its default, 5000, grows memory with every
#: new frame size; a video stream or camera has one size, so a small cache costs nothing there).
RUNTIME_CACHE = 16
#: Compiled models are cached so a second start skips compilation; this default puts them in the user's
#: cache folder, a path puts them there, None disables the cache.
USER_CACHE = _UserCache()


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


def _i64(values: Any) -> Any:
    import openvino.opset11 as ops

    return ops.constant(np.array(values, np.int64))


def _is_transpose(node: Any, perm: list[int]) -> bool:
    return node.get_type_name() == "Transpose" and _const_values(node.input_value(1)) == perm


def _interpolate_like(op: Any, data: Any, axis_order: list[int], name: str) -> Any:
    """`op` (an Interpolate over all four axes) applied to `data`, its sizes/scales reordered by `axis_order`."""
    import openvino.opset11 as ops

    attrs = op.get_attributes()
    per_axis = ops.gather(op.input_value(1), _i64(axis_order), _i64(0))
    return ops.interpolate(data, per_axis, mode=attrs["mode"], shape_calculation_mode=attrs["shape_calculation_mode"],
                           coordinate_transformation_mode=attrs["coordinate_transformation_mode"],
                           nearest_mode=attrs["nearest_mode"], antialias=attrs["antialias"],
                           cube_coeff=attrs["cube_coeff"], name=name)


def tune_graph(model: Any) -> list[str]:
    """Move channels-last work the CPU plugin runs slowly to the channels-first side of its transpose; same values.

    The pipeline graph resizes frames and logits channels-last (cheap for ONNX Runtime and TensorRT),
    but OpenVINO's CPU kernels for an NHWC Interpolate, and for an arg-max over 19 contiguous
    channels, are several times slower than their NCHW kernels. Interpolate (separable per axis) and
    TopK commute with a transpose, so each runs on the NCHW side; the arg-max reads an N x C x HW
    view, so the plugin gives it a planar layout (in a channels-contiguous one its TopK is ~10x
    slower). Returns what was changed.
    """
    import openvino.opset11 as ops

    changed = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Interpolate" or op.get_input_size() != 2:
            continue
        attrs = op.get_attributes()
        if any(attrs["pads_begin"]) or any(attrs["pads_end"]):
            continue
        name = op.get_friendly_name()
        source = op.input_value(0).get_node()
        consumers = [i.get_node() for i in op.output(0).get_target_inputs()]
        if _is_transpose(source, _NHWC):  # Interpolate(NHWC(x)) -> NHWC(Interpolate(x))
            nchw = _interpolate_like(op, source.input_value(0), _NCHW, f"{name}/nchw")
            op.output(0).replace(ops.transpose(nchw, _i64(_NHWC)).output(0))
            changed.append(f"{name}: Interpolate moved before the NHWC transpose")
        elif consumers and all(_is_transpose(c, _NCHW) for c in consumers):  # NCHW(Interp(x)) -> Interp(NCHW(x))
            nchw = _interpolate_like(op, ops.transpose(op.input_value(0), _i64(_NCHW)), _NCHW,
                                     f"{name}/nchw")
            for consumer in consumers:
                consumer.output(0).replace(nchw.output(0))
            changed.append(f"{name}: Interpolate moved after the NCHW transpose")
    for op in model.get_ordered_ops():
        if op.get_type_name() != "TopK" or op.get_attributes().get("axis") not in (3, -1):
            continue
        source = op.input_value(0).get_node()
        if not _is_transpose(source, _NHWC):
            continue
        attrs = op.get_attributes()
        logits = source.input_value(0)
        shape = ops.shape_of(logits, "i64")
        planar = ops.reshape(logits, _i64([0, 0, -1]), special_zero=True)  # N x C x HW
        top = ops.topk(planar, op.input_value(1), axis=1, mode=attrs["mode"], sort=attrs["sort"],
                       index_element_type=attrs["index_element_type"], stable=attrs.get("stable", False),
                       name=f"{op.get_friendly_name()}/nchw")
        n_k_h_w = ops.concat([ops.gather(shape, _i64([0]), _i64(0)), _i64([-1]),
                              ops.gather(shape, _i64([2, 3]), _i64(0))], 0)
        for i in range(2):
            nkhw = ops.reshape(top.output(i), n_k_h_w, special_zero=False)
            op.output(i).replace(ops.transpose(nkhw, _i64(_NHWC)).output(0))
        changed.append(f"{op.get_friendly_name()}: arg-max moved before the NHWC transpose")
    if changed:
        model.validate_nodes_and_infer_types()
    return changed


class OpenVINOBackend(Backend):
    """Runs the pipeline graph from an exported ONNX (fp32, fp16, Q/DQ int8) or a built IR (`.xml` + `.bin`).

    `precision=None` runs the artifact's own precision (an IR built with `--precision bf16` runs BF16);
    'fp32' is always true FP32, 'bf16' is refused on CPUs without BF16. `hint='latency'` runs a call
    in one request; `'throughput'` spreads the frames of a batch over parallel asynchronous requests,
    one per OpenVINO stream.
    """

    name = "openvino"
    suffixes = (".xml", ".onnx")

    def __init__(self, path: str | os.PathLike, *, precision: str | Precision | None = None, hint: str = "latency",
                 threads: int | None = None, cache_dir: str | os.PathLike | None | _UserCache = USER_CACHE,
                 runtime_cache: int = RUNTIME_CACHE) -> None:
        super().__init__(path)
        import openvino as ov

        if hint not in HINTS:
            raise ConfigError(f"unknown hint {hint!r} for openvino; choose one of: {', '.join(HINTS)}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        self._hint = hint
        core = ov.Core()
        self._quantization: str | None = None  # the INT8 graph's quantization metadata, read with the info
        info = self._read_info()
        requested = None if precision is None else Precision.parse(precision)
        self._compute = inference_precision(info.precision, requested, cpu_capabilities(core))
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
            "CPU_RUNTIME_CACHE_CAPACITY": str(runtime_cache),
        }
        if isinstance(cache_dir, _UserCache):
            cache_dir = user_cache_dir("openvino")
        if cache_dir is not None:
            why = unwritable_reason(cache_dir)
            if why is None:
                config["CACHE_DIR"] = str(cache_dir)
            else:
                _log.warning("openvino: compiled-model cache disabled (%s: %s); each start compiles again", cache_dir, why)
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise EngineLoadError(f"{self.path}: OpenVINO cannot load it ({_first_line(exc)}); "
                                  f"{_REBUILD if is_ir else _REEXPORT}") from None
        self._check_io(self._compiled.inputs)
        self._check_output(self._compiled.outputs)
        self._cpu = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        #: Why this INT8 artifact loses accuracy on this CPU (also logged at load), or None.
        self.fit_warning: str | None = None
        if info.precision is Precision.INT8:
            from ..host import cpu_features
            from ..quantize import cpu_fit_warning

            self.fit_warning = cpu_fit_warning(self._quantization, cpu_features(), self.path.name)
            if self.fit_warning:
                _log.warning(self.fit_warning)
        # One request per stream OpenVINO runs in parallel (1 under the latency hint), and at least `depth`, so
        # threads sharing this backend (or `submit`) each take an idle request instead of colliding on one.
        parallel = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if hint == "throughput" else 1
        self._requests = [self._compiled.create_infer_request() for _ in range(max(1, parallel, self.depth))]
        self._parallel = max(1, parallel)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for request in self._requests:
            self._idle.put(request)
        self._take_many = threading.Lock()

    # -- loading -----------------------------------------------------------------------------------
    def _read_info(self) -> ArtifactInfo:
        is_ir = self.path.suffix.lower() == ".xml"
        if is_ir and not self.path.with_suffix(".bin").is_file():
            raise EngineLoadError(f"{self.path}: its weights file {self.path.with_suffix('.bin').name} is missing; "
                                  f"{_REBUILD}")
        pipeline = open_pipeline(self.path)
        self._quantization = pipeline.quantization
        if is_ir or pipeline.sidecar is None:
            return pipeline.info
        return pipeline.info.with_profile(None, None, None)  # another backend's limits; OpenVINO takes any size

    def _read_model(self, core: Any) -> Any:
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            raise EngineLoadError(f"{self.path}: OpenVINO cannot read it ({_first_line(exc)}); {_REEXPORT}") from None
        self._check_io(model.inputs)
        return model

    def _check_output(self, outputs: Any) -> None:
        found = [(p.get_any_name(), p.get_element_type().get_type_name(), p.get_partial_shape().rank.get_length())
                 for p in outputs]
        if len(found) != 1 or found[0][1:] != ("u8", 3):
            raise EngineLoadError(f"{self.path}: expected one uint8 N x H x W label map as output (the pipeline graph), "
                                  f"found {found}; {_REBUILD}")

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
        """One frame on one idle infer request; a batch in waves over up to one request per OpenVINO stream.

        Requests come from a pool, so calls from several threads run side by side, each on its own
        request (OpenVINO's infer requests are not thread-safe). No Python completion callbacks: they
        need the GIL on OpenVINO's threads, which can deadlock against a waiting caller.
        """
        if self._parallel == 1 or batch.shape[0] == 1:
            request = self._idle.get()
            try:
                return request.infer({0: batch}, share_inputs=True)[0]
            finally:
                self._idle.put(request)
        with self._take_many:  # one multi-request caller at a time, so two never wait on each other's requests
            requests = [self._idle.get() for _ in range(min(batch.shape[0], self._parallel))]
        try:
            labels = np.empty(batch.shape[:3], np.uint8)
            for start in range(0, batch.shape[0], len(requests)):
                wave = list(enumerate(requests, start))[:batch.shape[0] - start]
                for i, request in wave:
                    request.start_async({0: batch[i:i + 1]}, share_inputs=True)
                for i, request in wave:
                    request.wait()
                    labels[i] = request.get_output_tensor(0).data[0]
            return labels
        finally:
            for request in requests:
                self._idle.put(request)

    def _close(self) -> None:
        self._requests = []
        self._compiled = None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__
