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
    one per OpenVINO stream.
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH, precision: str | Precision | None = None,
                 hint: str = "latency", threads: int | None = None,
                 cache_dir: str | os.PathLike | None | _UserCache = USER_CACHE, runtime_cache: int = RUNTIME_CACHE) -> None:
        super().__init__(path, depth=depth)
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
        # IR from 'bisenet-rt build' is tuned already; compiling it by path lets a cache hit skip reading it. BF16 marks
        # the arg-max on the read graph (IR does not keep the mark).
        is_ir = self.path.suffix.lower() == ".xml"
        bf16 = self._compute is Precision.BF16
        model = str(self.path) if is_ir and not bf16 else self._read_model(core)
        #: The graph rewrites and marks applied at load time (see `tune_graph`, `bf16_argmax`).
        self.rewrites = ([] if is_ir else tune_graph(model)) + (bf16_argmax(model) if bf16 else [])
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
