"""What one backend is, for building and for running: a `BackendSpec` per backend, and what a build asks of it.

Each backend package (`backends/<name>/__init__.py`) defines its spec: its name and files, whether it can
run here, which pipeline graph each precision is built from (`GraphForm`), how a source graph is admitted
(checks, and the facts the artifact will have), how it is compiled, and the runtime class that opens the
artifact. Building (`bisenet_rt.builder`) and opening (`backends.open_backend`) only iterate over specs; the
heavy modules (`run.py`, `build.py`) are imported by the spec's functions when they are called.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..classes import DEFAULT_MODEL_SIZE
from ..errors import BuildError, ConfigError
from ..graph.prepost import PostForm
from ..precision import Precision
from ..settings import cache_dir, engines_dir
from ..sizes import check_batch, check_frame_size, check_model_size, format_size

if TYPE_CHECKING:
    from ..artifacts import Artifact, ArtifactInfo
    from .base import Backend

__all__ = ["BackendSpec", "GraphForm", "BuildConfig", "INT8_TARGETS", "DEFAULT_FRAME"]

#: `--int8-target` choices: the CPU class the INT8 weight grid is chosen for (see `builder.choice.int8_weights`).
INT8_TARGETS = ("auto", "vnni", "avx2")
#: The frame size of the paper's protocol, and the default of a build's frame-size range.
DEFAULT_FRAME = (2048, 1024)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything `bisenet-rt build` takes; sizes are (width, height).

    The source (`weights` or `onnx`), precision, calibration and output are read by the build template;
    the frame-size range, batch, optimization level and cache folder by a backend's compile step.
    """

    precision: Precision | None = None  # None: the fastest precision whose accuracy holds (auto)
    backend: str = "auto"
    weights: Path | None = None
    onnx: Path | None = None
    output: Path | None = None
    engines_dir: Path = dataclasses.field(default_factory=engines_dir)
    cache_dir: Path = dataclasses.field(default_factory=cache_dir)  # calibration ranges, TensorRT timing cache
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    max_batch: int = 1
    min_size: tuple[int, int] = DEFAULT_FRAME
    max_size: tuple[int, int] = DEFAULT_FRAME
    opt_level: int = 3
    calib: Path | None = None
    calib_count: int = 200
    int8_target: str = "auto"

    def __post_init__(self) -> None:
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision.parse(self.precision))
        if self.weights is not None and self.onnx is not None:
            raise ConfigError("give --weights or --onnx, not both")
        check_batch(self.max_batch, "--max-batch")
        check_model_size(self.model_size)
        for name in ("min_size", "max_size"):
            check_frame_size(getattr(self, name), f"--{name.replace('_', '-')}", "no frame above it is accepted")
        if self.min_size[0] > self.max_size[0] or self.min_size[1] > self.max_size[1]:
            raise ConfigError(f"--min-size {format_size(self.min_size)} is larger than --max-size "
                              f"{format_size(self.max_size)}")
        if self.int8_target not in INT8_TARGETS:
            raise ConfigError(f"--int8-target must be one of {', '.join(INT8_TARGETS)}, got {self.int8_target!r}")
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--opt-level must be 0..5 (TensorRT builder optimization level), got {self.opt_level}")

    @property
    def chosen_precision(self) -> Precision:
        """The precision to build: set, or resolved from auto by the build template before any backend step."""
        if self.precision is None:
            raise BuildError("no precision chosen: call bisenet_rt.builder.build(config), which resolves auto, "
                             "or set BuildConfig(precision=...)")
        return self.precision


@dataclasses.dataclass(frozen=True)
class GraphForm:
    """The pipeline graph a backend builds one precision from: the graph's own precision (INT8: a Q/DQ graph)
    and the layout of its exact post-processing."""

    precision: Precision
    post: PostForm


def _same_facts(source: "Artifact", config: BuildConfig) -> "ArtifactInfo":
    """The artifact has the source graph's facts, in the precision built."""
    return dataclasses.replace(source.info, precision=config.chosen_precision)


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """One backend as a unit: what it is called and opens, whether it can run here, and how it builds.

    `graph_forms`: the precisions its build makes and the graph each is made from (empty: it builds
    nothing, it opens checkpoints). `admit` checks a source graph and returns the facts the artifact will
    have; `compile` writes the artifact at `output` and returns its own sidecar entries (versions,
    device, I/O); `runtime` is the Backend class that opens its artifacts.
    """

    name: str
    title: str
    extra: str  # the pip extra that installs it
    opens: tuple[str, ...]  # artifact suffixes its runtime opens
    availability: Callable[[], "str | None"]  # None when it can run here, else one line saying what is missing
    runtime: Callable[[], "type[Backend]"]
    writes: tuple[str, ...] = ()  # suffixes of the artifacts its build writes, the default first
    graph_forms: Mapping[Precision, GraphForm] = dataclasses.field(default_factory=dict)
    on_gpu: bool = False  # its artifacts run on a GPU (the INT8 weight grid then needs no CPU care)
    # Where its artifacts run ("cpu", "cuda"). With both, its runtime takes `device=` ("cpu", "cuda", "cuda:N");
    # with one, it runs there and takes no device (on "cuda": the current CUDA device).
    devices: tuple[str, ...] = ("cpu",)
    caches: tuple[str, ...] = ()  # parts of the cache folder its build reads and writes
    admit: Callable[["Artifact", BuildConfig], "ArtifactInfo"] = _same_facts
    compile: Callable[["Artifact", "ArtifactInfo", BuildConfig, Path], dict[str, Any]] | None = None

    @property
    def install(self) -> str:
        """The pip command that installs this backend, from a clone of the repository."""
        return f"pip install '.[{self.extra}]'"

    def graph_form(self, precision: Precision) -> GraphForm:
        """The graph `precision` is built from here; BuildError naming what this backend builds otherwise."""
        if precision not in self.graph_forms:
            made = ", ".join(p.value for p in self.graph_forms) or "nothing (it runs checkpoints)"
            raise BuildError(f"the {self.name} backend builds {made}, not {precision}")
        return self.graph_forms[precision]

    def default_output(self, precision: Precision, folder: Path) -> Path:
        """engines/bisenetv2_<precision><suffix>."""
        if not self.writes:
            raise BuildError(f"the {self.name} backend builds no artifacts")
        return folder / f"bisenetv2_{precision.value}{self.writes[0]}"
