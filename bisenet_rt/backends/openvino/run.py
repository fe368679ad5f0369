"""OpenVINO backend: the pipeline graph (ONNX or saved IR) on the CPU, in exactly the precision asked for.

OpenVINO's silent default on CPUs with BF16 instructions is to compute FP32 graphs in BF16; here the
inference precision is always set explicitly, and BF16 is used only when asked for (or recorded by
`bisenet-rt build --precision bf16`) and only where the CPU reports BF16 support.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...artifacts import INPUT_NAME, ArtifactInfo, open_artifact
from ...errors import BackendUnavailableError, ConfigError, ArtifactError, InputError
from ...host import physical_cores
from ...precision import Precision
from ...settings import cache_dir as user_cache_dir, unwritable_reason
from ..base import Backend
from ..cpu_kernels import HALF_PIXEL_MODES, CpuKernels, PixelMap, available, uses_kernels
from ..submission import DEFAULT_DEPTH
from .tune import bf16_argmax, tune_graph

__all__ = ["OpenVINOBackend", "openvino_version", "cpu_capabilities", "supports_bf16", "inference_precision", "HINTS",
           "OV_PRECISION", "USER_CACHE"]

_log = logging.getLogger(__name__)
#: `hint` -> OpenVINO PERFORMANCE_HINT.
HINTS: dict[str, str] = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
#: Our precision -> OpenVINO INFERENCE_PRECISION_HINT. INT8 graphs carry their own Q/DQ; the rest stays f32.
OV_PRECISION: dict[Precision, str] = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16",
                                       Precision.INT8: "f32"}
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


class OpenVINOBackend(Backend):
    """Runs the pipeline graph from an exported ONNX (fp32, fp16, Q/DQ int8) or a built IR (`.xml` + `.bin`).

    `precision=None` runs the artifact's own precision (an IR built with `--precision bf16` runs BF16);
    'fp32' is always true FP32, 'bf16' is refused on CPUs without BF16. `hint='latency'` runs a call
    in one request; `'throughput'` spreads the frames of a batch over parallel asynchronous requests,
    one per OpenVINO stream. `prepost` is where the pre/post-processing runs (`backends.cpu_kernels`):
    'auto' (the CPU kernels where they can run), 'kernels' or 'graph' (the graph's own nodes).
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH, precision: str | Precision | None = None,
                 hint: str = "latency", threads: int | None = None,
                 cache_dir: str | os.PathLike | None | _UserCache = USER_CACHE, runtime_cache: int = RUNTIME_CACHE,
                 prepost: str = "auto") -> None:
        super().__init__(path, depth=depth)
        self._kernels: CpuKernels | None = None
        import openvino as ov

        if hint not in HINTS:
            raise ConfigError(f"unknown hint {hint!r} for openvino; choose one of: {', '.join(HINTS)}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        self._hint = hint
        core = ov.Core()
        info = self._read_info()
        requested = None if precision is None else Precision.parse(precision)
        self._compute = inference_precision(info.precision, requested, cpu_capabilities(core))
        self._info = dataclasses.replace(info, precision=info.precision if requested is None else self._compute)
        # IR from 'bisenet-rt build' is tuned already; compiling it by path lets a cache hit skip reading it. The CPU
        # kernels cut the read graph down to its model; else BF16 marks the graph's arg-max on the read graph (IR
        # does not keep the mark).
        is_ir = self.path.suffix.lower() == ".xml"
        bf16 = self._compute is Precision.BF16
        blocker = available()
        cut = prepost != "graph" and blocker is None
        model = str(self.path) if is_ir and not bf16 and not cut else self._read_model(core)
        #: The graph rewrites and marks applied at load time (see `tune_graph`, `bf16_argmax`).
        self.rewrites = [] if is_ir else tune_graph(model)
        found = _model_part(model, self._info.model_size, self._info.num_classes) if cut else None
        if isinstance(found, str):
            blocker, found = found, None
        if uses_kernels(prepost, self.name, blocker) and found is not None:
            model, pixels = found
            self._kernels = CpuKernels(self._info.model_size, pixels, threads or physical_cores())
        elif bf16:
            self.rewrites += bf16_argmax(model)
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
            raise ArtifactError(f"{self.path}: OpenVINO cannot load it ({_first_line(exc)}); "
                                  f"{_REBUILD if is_ir else _REEXPORT}") from None
        if self._kernels is None:
            self._check_io(self._compiled.inputs)
            self._check_output(self._compiled.outputs)
        self._cpu = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        #: Why this INT8 artifact loses accuracy on this CPU (also logged at load), or None.
        self.fit_warning: str | None = None
        if info.precision is Precision.INT8:
            from ...host import cpu_features
            from ...int8_grid import cpu_fit_warning

            self.fit_warning = cpu_fit_warning(info.quantization, cpu_features(), self.path.name)
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
            raise ArtifactError(f"{self.path}: its weights file {self.path.with_suffix('.bin').name} is missing; "
                                  f"{_REBUILD}")
        artifact = open_artifact(self.path)
        if is_ir or artifact.sidecar is None:
            return artifact.info
        return artifact.info.with_profile(None, None, None)  # another backend's limits; OpenVINO takes any size

    def _read_model(self, core: Any) -> Any:
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            fix = _REBUILD if self.path.suffix.lower() == ".xml" else _REEXPORT
            raise ArtifactError(f"{self.path}: OpenVINO cannot read it ({_first_line(exc)}); {fix}") from None
        self._check_io(model.inputs)
        return model

    def _check_output(self, outputs: Any) -> None:
        found = [(p.get_any_name(), p.get_element_type().get_type_name(), p.get_partial_shape().rank.get_length())
                 for p in outputs]
        if len(found) != 1 or found[0][1:] != ("u8", 3):
            raise ArtifactError(f"{self.path}: expected one uint8 N x H x W label map as output (the pipeline graph), "
                                  f"found {found}; {_REBUILD}")

    def _check_io(self, inputs: Any) -> None:
        found = [(p.get_any_name(), p.get_element_type().get_type_name()) for p in inputs]
        if len(found) != 1 or found[0][1] != "u8":
            raise ArtifactError(f"{self.path}: expected one uint8 input '{INPUT_NAME}' (the pipeline graph), found "
                                  f"{found}; export with 'bisenet-rt export -o PATH.onnx' without --plain")

    # -- what it reports ---------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return f"CPU: {self._cpu} (OpenVINO {self._compute.value})"

    @property
    def compute_precision(self) -> Precision:
        """The precision OpenVINO computes in (may differ from the graph's: fp16 weights computed in fp32)."""
        return self._compute

    @property
    def prepost(self) -> str:
        """'kernels' where the CPU kernels do the pre/post-processing around the graph's model, else 'graph'."""
        return "graph" if self._kernels is None else "kernels"

    def versions(self) -> dict[str, str]:
        compiled_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT")  # read back, not assumed
        return {"openvino": openvino_version(), "inference_precision": compiled_precision.get_type_name(),
                "prepost": self.prepost,
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
        return self._infer_into(batch, None)

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """As `_infer`; the kernels write the labels straight into `out` when given."""
        inputs = batch if self._kernels is None else self._kernels.preprocess(batch)
        if self._parallel == 1 or batch.shape[0] == 1:
            request = self._idle.get()
            try:
                result = request.infer({0: inputs}, share_inputs=True, share_outputs=self._kernels is not None)[0]
                return self._labels(result, batch.shape[1:3], out)
            finally:
                self._idle.put(request)
        with self._take_many:  # one multi-request caller at a time, so two never wait on each other's requests
            requests = [self._idle.get() for _ in range(min(batch.shape[0], self._parallel))]
        try:
            labels = np.empty(batch.shape[:3], np.uint8) if out is None else out
            for start in range(0, batch.shape[0], len(requests)):
                wave = list(enumerate(requests, start))[:batch.shape[0] - start]
                for i, request in wave:
                    request.start_async({0: inputs[i:i + 1]}, share_inputs=True)
                for i, request in wave:
                    request.wait()
                    self._labels(request.get_output_tensor(0).data, batch.shape[1:3], labels[i:i + 1])
            return labels
        finally:
            for request in requests:
                self._idle.put(request)

    def _labels(self, result: np.ndarray, frame_hw: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
        """The labels from a request's output: its coarse logits through the kernel, or the graph's own labels."""
        if self._kernels is not None:
            return self._kernels.postprocess(result, frame_hw, out)
        if out is None:
            return result
        np.copyto(out, result)
        return out

    def _close(self) -> None:
        self._requests = []
        self._compiled = None
        if self._kernels is not None:
            self._kernels.close()


def _crossings(model: Any, part: str, model_size: tuple[int, int]) -> dict[tuple[str, int], Any]:
    """The float rank-4 tensors that cross between the model and `part` ('pre' or 'post'), by producer and port:
    made by a model node and read by a `post/` node, or made by a `pre/` node (N x 3 x h x w: the model input,
    not a rewrite's frame-sized tensor) and read by a model node."""
    found = {}
    w, h = model_size
    for op in model.get_ops():
        name = op.get_friendly_name()
        if part == "post" and not name.startswith("post/") or part == "pre" and name.startswith(("pre/", "post/")):
            continue
        for port in op.inputs():
            source = port.get_source_output()
            producer = source.get_node()
            made_by = producer.get_friendly_name()
            if (made_by.startswith("pre/") != (part == "pre") or made_by.startswith("post/")
                    or producer.get_type_name() in ("Constant", "Parameter")
                    or source.get_element_type().get_type_name() not in ("f32", "f16", "bf16")
                    or source.get_partial_shape().rank.get_length() != 4):
                continue
            dims = source.get_partial_shape()
            if part == "pre" and [d.get_length() if d.is_static else None for d in list(dims)[1:]] != [3, h, w]:
                continue
            found[(made_by, source.get_index())] = source
    return found


def _pixel_map(model: Any, normalized: Any) -> PixelMap | str:
    """What the graph's pre-processing does to a pixel, read from its ops; or why it is not the kernels'.

    OpenVINO's converter moves the BGR -> RGB Gather into the first convolutions' weights (and permutes
    the scale and shift to match), so the channel order and constants are read from the graph, not assumed.
    """
    ops = {op.get_friendly_name(): op for op in model.get_ops() if op.get_friendly_name().startswith("pre/")}
    scale, shift = ops.get("pre/scale"), ops.get("pre/normalize")
    producer = normalized.get_node().get_friendly_name()
    if scale is None or shift is None or producer not in ("pre/normalize", "pre/to_model_dtype"):
        return "the graph's pre-processing is not the named chain the kernel stands in for"
    resizes = [op for name, op in ops.items() if op.get_type_name() == "Interpolate"]
    constants = [op.input_value(1).get_node() for op in (scale, shift)]
    if (len(resizes) != 1 or any(c.get_type_name() != "Constant" for c in constants)
            or scale.input_value(0).get_node().get_friendly_name() not in (resizes[0].get_friendly_name(),
                                                                             "pre/bgr_to_rgb")):
        return "the graph's pre-processing is not the named chain the kernel stands in for"
    attrs = resizes[0].get_attributes()
    if (attrs["mode"] != "linear_onnx" or attrs["coordinate_transformation_mode"] != "half_pixel"
            or attrs["antialias"]):
        return "the graph's frame resize is not the half-pixel bilinear one the kernel computes"
    try:
        return PixelMap.of(constants[0].get_data(), constants[1].get_data(), "pre/bgr_to_rgb" in ops)
    except ValueError as exc:
        return f"the graph's normalization is not per channel ({exc})"


def _model_part(model: Any, model_size: tuple[int, int], classes: int) -> "tuple[Any, PixelMap] | str":
    """`model` cut down to its model part (normalized N x 3 x h x w in, coarse logits out) and what its
    pre-processing does to a pixel; or why the kernels cannot stand in for its pre/post-processing.

    The logits are the one float rank-4 tensor a `post/` node reads from the model, the input the one a model
    node reads from `pre/` (FP32; an FP16 graph keeps its cast of the normalized frame); the model's own upsample (redone by the post-processing's `*model_upsample`
    Interpolate) must use half-pixel coordinates, as the kernel does. Logits left channels-last (a classifier
    computed as a MatMul, its transposes folded by the converter) are transposed back in the model part.
    """
    import openvino as ov
    import openvino.opset11 as ops

    modes = {str(op.get_attributes().get("coordinate_transformation_mode")) for op in model.get_ops()
             if op.get_type_name() == "Interpolate" and op.get_friendly_name().startswith("post/")
             and op.get_friendly_name().endswith("model_upsample")}
    logits, normalized = _crossings(model, "post", model_size), _crossings(model, "pre", model_size)
    if len(logits) != 1 or len(normalized) != 1 or not modes:
        return "the graph has no named pre/post-processing to replace (its pre/ and post/ nodes are missing or renamed)"
    if not modes <= set(HALF_PIXEL_MODES):
        return f"the model's upsample uses {', '.join(sorted(modes))} coordinates; the kernel computes half-pixel ones"
    (source,) = normalized.values()
    pixels = _pixel_map(model, source)
    if isinstance(pixels, str):
        return pixels
    model_input = ops.parameter(source.get_partial_shape(), ov.Type.f32, name="model_input")  # N x 3 x h x w
    cast = source.get_node()
    if cast.get_friendly_name() == "pre/to_model_dtype":  # an FP16 graph: its cast of the FP32 frame stays
        cast.input(0).replace_source_output(model_input.output(0))
    else:
        for target in list(source.get_target_inputs()):
            if not target.get_node().get_friendly_name().startswith(("pre/", "post/")):
                target.replace_source_output(model_input.output(0))
    (coarse,) = logits.values()
    dims = coarse.get_partial_shape()
    if dims[3].is_static and dims[3].get_length() == classes and not (dims[1].is_static and dims[1].get_length() == classes):
        # channels-last logits: the converter folded the model's transpose into the post-processing's own
        coarse = ops.transpose(coarse, ops.constant(np.array([0, 3, 1, 2], np.int64))).output(0)
    part = ov.Model([coarse], [model_input], "bisenet_model")
    part.validate_nodes_and_infer_types()
    return part, pixels


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__
