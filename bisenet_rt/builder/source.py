"""The build's source step: the pipeline graph an artifact is built from, in the form its backend asks for.

`--onnx` as given, or exported from `--weights` (random weights without them); for INT8, the quantized
(Q/DQ) graph: a given Q/DQ pipeline graph as it is, else the plain graph (given, or exported from the
weights) calibrated and quantized. PyTorch is imported only here, only where weights are read, and
for INT8 calibration (frames are preprocessed by the PyTorch reference).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from ..artifacts import Artifact, load_onnx, open_artifact, read_metadata
from ..atomic import write_atomic
from ..backends.spec import BackendSpec, BuildConfig, GraphForm
from ..errors import BackendUnavailableError, BuildError, ArtifactError
from ..graph.export import GRAPH_KIND, ExportConfig
from ..post_form import PostForm
from ..int8_grid import WeightRange
from ..precision import Precision

__all__ = ["source_graph"]

_log = logging.getLogger(__name__)


def source_graph(config: BuildConfig, spec: BackendSpec, form: GraphForm,
                 int8: tuple[WeightRange, str] | None = None) -> Artifact:
    """The pipeline graph to build `spec`'s artifact from, opened with its graph and checked to be in `form`'s
    precision. `int8` is the weight grid and its target in words (`choice.int8_weights`), for INT8 only."""
    if form.precision is Precision.INT8:
        if int8 is None:
            raise BuildError("an INT8 build needs its weight grid (builder.choice.int8_weights)")
        path = _quantized(config, form, *int8)
    elif config.onnx is not None:
        path = _given(config.onnx, "'bisenet-rt export -o PATH.onnx'")
    else:
        path = _exported(config, form)
    try:
        source = open_artifact(path, keep_graph=True, sidecar=False)
    except ArtifactError as exc:
        raise BuildError(str(exc)) from None
    if source.info.precision is not form.precision:
        raise BuildError(f"{path} is a {source.info.precision} graph but --precision {config.chosen_precision} was "
                         f"asked for; {spec.title} builds it from a {form.precision} graph: pass one exported with "
                         f"'bisenet-rt export --precision {form.precision}', or --weights")
    return source


def _given(path: Path, how: str) -> Path:
    if not Path(path).is_file():
        raise BuildError(f"--onnx {path}: no such file; export one with {how}")
    return Path(path)


def _source_path(config: BuildConfig, form: GraphForm) -> Path:
    """engines/bisenetv2_<precision>[.<post>][.classifier_conv].src.onnx: the graph a build starts from, kept
    beside the artifact."""
    post = "" if form.post is PostForm.RESIZE else f".{form.post.value}"
    conv = ".classifier_conv" if form.classifier_conv else ""
    return config.engines_dir / f"bisenetv2_{form.precision.value}{post}{conv}.src.onnx"


def _require_torch(what: str) -> None:
    try:
        found = importlib.util.find_spec("torch") is not None
    except ImportError:  # an import hook refusing it
        found = False
    if not found:
        raise BackendUnavailableError(f"{what} needs PyTorch, which is not installed: pip install '.[torch]' from the "
                                      "clone, or build from an exported graph with --onnx")


def _exported(config: BuildConfig, form: GraphForm) -> Path:
    """Export the weights (or random ones) as the pipeline graph in `form`."""
    _require_torch("exporting from --weights" if config.weights else "a build without --onnx (it exports random weights)")
    from ..graph.export import export_onnx
    from ..model import model_and_sha

    path = _source_path(config, form)
    model, sha = model_and_sha(config.weights)
    export_onnx(model, path, ExportConfig(precision=form.precision, model_size=config.model_size, post=form.post),
                source_sha256=sha)
    _log.info(f"exported {path}")
    return path


def _quantized(config: BuildConfig, form: GraphForm, weights: WeightRange, target: str) -> Path:
    """The Q/DQ pipeline graph: `--onnx` if it already is one, else the plain graph quantized.

    The plain graph is `--onnx` (from 'export --plain') as given, or exported from `--weights` at
    `--model-size`; it is calibrated on `--calib` frames and quantized to `weights` for `target`.
    """
    from ..graph.calibration import calibration_files
    from ..graph.qdq import quantize_graph

    if config.onnx is not None:
        proto = load_onnx(_given(config.onnx, "'bisenet-rt export --plain -o PATH.onnx'"), external_data=True,
                          error=BuildError)
        meta = read_metadata(proto)
        if meta.get(GRAPH_KIND) == "pipeline":
            if meta.get("precision") == Precision.INT8.value:
                return Path(config.onnx)
            raise BuildError(f"--onnx {config.onnx} is a {meta.get('precision', 'fp32')} pipeline graph; int8 "
                             "quantizes the plain model graph: pass 'bisenet-rt export --plain' output, --weights, "
                             "or an int8 graph")
    frames = calibration_files(config.calib, config.calib_count)
    _require_torch("INT8 calibration (frames are preprocessed by the PyTorch reference)")
    if config.onnx is None:
        from ..graph.export import export_onnx
        from ..model import model_and_sha

        model, sha = model_and_sha(config.weights)
        proto = export_onnx(model, None, ExportConfig(plain=True, model_size=config.model_size), source_sha256=sha)
    _log.info(f"int8: {len(frames)} calibration frames from {config.calib}; {weights.value} weights, for {target}")
    qdq = quantize_graph(proto, frames, cache_dir=config.cache_dir / "calibration",
                         model_size=None if config.onnx is not None else config.model_size, post=form.post,
                         classifier_conv=form.classifier_conv,
                         weights=weights, target=target)
    path = _source_path(config, form)
    write_atomic(path, qdq.SerializeToString())
    _log.info(f"wrote the Q/DQ graph {path}")
    return path
