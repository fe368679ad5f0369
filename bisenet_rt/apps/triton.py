"""Triton Inference Server model repositories for a built engine or an exported pipeline ONNX.

Writes `REPO/<name>/config.pbtxt`, `REPO/<name>/<version>/model.plan|model.onnx` and
`REPO/<name>/labels.txt`: uint8 BGR `frames` in, uint8 `labels` out, the resize inside the model,
dynamic batching and instance groups, so scaling past one machine happens on Triton.
The config is plain text written here (no Triton packages needed to export); the tests parse it
with Triton's own ModelConfig schema.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..artifacts import INPUT_NAME, OUTPUT_NAME, ArtifactInfo, load_onnx, open_artifact, sidecar_path
from ..atomic import replacing, write_atomic
from ..errors import ArtifactError, InputError
from ..outputs import check_outputs
from ..sizes import check_batch, check_frame_size, format_size

if TYPE_CHECKING:
    import onnx

__all__ = ["TritonModel", "describe_artifact", "model_config_text", "export_triton", "preferred_batch_sizes",
           "PLATFORMS"]

#: artifact kind -> (Triton platform, file name inside the version folder)
PLATFORMS: dict[str, tuple[str, str]] = {
    "tensorrt": ("tensorrt_plan", "model.plan"),
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
}
_ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
DEFAULT_ONNX_MAX_BATCH = 8
_MODEL_NAME_MAX = 128
#: Model names: a plain folder name that every file system and Triton's HTTP/gRPC paths take as it is.
_MODEL_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{_MODEL_NAME_MAX - 1}}}")
DEFAULT_QUEUE_DELAY_US = 2000


@dataclasses.dataclass(frozen=True)
class TritonModel:
    """What Triton needs to know about one artifact: platform, per-request dims (batch excluded), limits."""

    path: Path
    kind: str  # "tensorrt" or "onnxruntime"
    info: ArtifactInfo
    input_dims: tuple[int, ...]  # H, W, 3 with -1 for any size
    output_dims: tuple[int, ...]  # H, W
    batch_limit: int | None  # largest batch the artifact itself accepts; None = any
    notes: tuple[str, ...] = ()  # caveats for the person deploying it

    @property
    def platform(self) -> str:
        return PLATFORMS[self.kind][0]

    @property
    def filename(self) -> str:
        return PLATFORMS[self.kind][1]


def _engine_model(path: Path) -> TritonModel:
    artifact = open_artifact(path)
    sidecar = artifact.sidecar or {}
    if sidecar.get("backend", "tensorrt") != "tensorrt":
        raise ArtifactError(f"{path}: its sidecar says it was built for {sidecar['backend']}, not TensorRT; "
                              "Triton's tensorrt_plan platform needs a TensorRT engine")
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path}: the engine file is empty; rebuild it with 'bisenet-rt build'")
    info = artifact.info
    io = sidecar.get("io") or []  # read back from the engine by 'bisenet-rt build'
    found = sorted((t.get("mode"), t.get("name"), t.get("dtype")) for t in io)
    if io and found != [("input", INPUT_NAME, "uint8"), ("output", OUTPUT_NAME, "uint8")]:
        raise ArtifactError(f"{path}: its I/O tensors {found} are not the pipeline's uint8 '{INPUT_NAME}' -> "
                              f"'{OUTPUT_NAME}'; build the engine from the pipeline graph with 'bisenet-rt build'")
    version, gpu = sidecar.get("tensorrt_version", "unknown"), (sidecar.get("gpu") or {}).get("name", "unknown")
    notes = (f"{path.name} was built by TensorRT {version} for {gpu}: serve it with the Triton release that ships "
             f"TensorRT {version}, on that GPU model (engines load nowhere else)",)
    if info.min_size and info.max_size and info.min_size == info.max_size:
        w, h = info.max_size
        dims: tuple[int, ...] = (h, w)
    else:
        dims = (-1, -1)
    return TritonModel(path=path, kind="tensorrt", info=info, input_dims=(*dims, 3), output_dims=dims,
                       batch_limit=info.max_batch, notes=notes)


def _onnx_dims(value: "onnx.ValueInfoProto") -> tuple[str, list[int], int]:
    """(name, dims with -1 for symbolic ones, element type) of a graph input or output."""
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return value.name, dims, tensor.elem_type


def _onnx_model(path: Path) -> TritonModel:
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = load_onnx(path)
    if any(uses_external_data(t) for t in proto.graph.initializer):
        raise ArtifactError(f"{path}: keeps its weights in external data files, which a one-file Triton model "
                              "cannot carry; re-export it with 'bisenet-rt export' (one self-contained file)")
    inputs = [_onnx_dims(v) for v in proto.graph.input]
    outputs = [_onnx_dims(v) for v in proto.graph.output]
    uint8 = onnx.TensorProto.UINT8
    if (len(inputs) != 1 or inputs[0][0] != INPUT_NAME or inputs[0][2] != uint8 or len(inputs[0][1]) != 4
            or len(outputs) != 1 or outputs[0][0] != OUTPUT_NAME or outputs[0][2] != uint8 or len(outputs[0][1]) != 3):
        raise ArtifactError(f"{path}: not a bisenet-rt pipeline graph (inputs {[i[:2] for i in inputs]}, outputs "
                              f"{[o[:2] for o in outputs]}); Triton needs the uint8 '{INPUT_NAME}' -> '{OUTPUT_NAME}' "
                              "graph: 'bisenet-rt export -o PATH.onnx' without --plain")
    artifact = open_artifact(path)
    info, sidecar = artifact.info, artifact.sidecar
    notes = []
    contrib = sorted({n.domain for n in proto.graph.node} - {"", "ai.onnx"})
    if contrib:
        built_with = (sidecar or {}).get("onnxruntime_version", "the one it was optimized with")
        notes.append(f"{path.name} uses ONNX Runtime-specific operators ({', '.join(contrib)}) from an optimized build; "
                     f"Triton's ONNX Runtime must be at least as new ({built_with}). The plain export "
                     "('bisenet-rt export') is the portable choice")
    batch = inputs[0][1][0]
    return TritonModel(path=path, kind="onnxruntime", info=info, input_dims=tuple(inputs[0][1][1:]),
                       output_dims=tuple(outputs[0][1][1:]), batch_limit=batch if batch > 0 else None,
                       notes=tuple(notes))


def describe_artifact(path: str | os.PathLike) -> TritonModel:
    """Read an engine (via its sidecar) or a pipeline ONNX (via its graph and metadata) for Triton."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file; build one with 'bisenet-rt build' or export one with "
                              "'bisenet-rt export -o PATH.onnx'")
    suffix = path.suffix.lower()
    if suffix in _ENGINE_SUFFIXES:
        return _engine_model(path)
    if suffix == ".onnx":
        return _onnx_model(path)
    raise ArtifactError(f"{path}: Triton export takes a TensorRT engine ({', '.join(_ENGINE_SUFFIXES)}) or a "
                          "pipeline .onnx")


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two from 2 up to `max_batch`, and `max_batch` itself."""
    sizes = [b for b in (2 ** i for i in range(1, max_batch.bit_length())) if b < max_batch]
    return sizes + [max_batch] if max_batch > 1 else []


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def model_config_text(model: TritonModel, *, name: str, max_batch: int, instances: int, kind: str,
                      queue_delay_us: int, input_dims: tuple[int, ...] | None = None,
                      output_dims: tuple[int, ...] | None = None) -> str:
    """The config.pbtxt for `model`: I/O, batching, instance groups and the class names as parameters."""
    info = model.info
    params = {
        "bisenet_rt.classes": json.dumps(list(info.classes), ensure_ascii=False),
        "bisenet_rt.model_size": format_size(info.model_size),
        "bisenet_rt.precision": info.precision.value,
        "bisenet_rt.source_sha256": info.source_sha256,
    }
    lines = [
        f"# Generated by bisenet-rt {__version__} export-triton from {model.path.name}.",
        f"# '{INPUT_NAME}': uint8 BGR frames, batch x H x W x 3 (as OpenCV delivers);",
        f"# '{OUTPUT_NAME}': uint8 class ids, batch x H x W (line i of labels.txt names id i).",
        "# Resize to the model size and back happens inside the model. Requests of different frame",
        "# sizes are never batched together by the dynamic batcher.",
        *(f"# Note: {note}." for note in model.notes),
        f"name: {_quote(name)}",
        f"platform: {_quote(model.platform)}",
        f"max_batch_size: {max_batch}",
        "input [",
        "  {",
        f"    name: {_quote(INPUT_NAME)}",
        "    data_type: TYPE_UINT8",
        f"    dims: {_dims(input_dims or model.input_dims)}",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_quote(OUTPUT_NAME)}",
        "    data_type: TYPE_UINT8",
        f"    dims: {_dims(output_dims or model.output_dims)}",
        "  }",
        "]",
    ]
    if max_batch > 1:
        lines += ["dynamic_batching {",
                  f"  preferred_batch_size: {_dims(tuple(preferred_batch_sizes(max_batch)))}",
                  f"  max_queue_delay_microseconds: {queue_delay_us}",
                  "}"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {kind}", "  }", "]"]
    for key, value in params.items():
        lines.append(f"parameters {{ key: {_quote(key)} value {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def export_triton(artifact: str | os.PathLike | TritonModel, repo: str | os.PathLike, *, name: str = "bisenetv2",
                  max_batch: int | None = None, instances: int = 1, device: str | None = None,
                  queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, version: int = 1,
                  frame_size: tuple[int, int] | None = None, force: bool = False) -> Path:
    """Write a Triton model repository entry for `artifact` (a path, or what describe_artifact read);
    return the model folder `repo/name`.

    `max_batch` defaults to the engine's profile maximum (engines) or 8 (ONNX). `device` is 'gpu'
    or 'cpu' (ONNX only; engines always run on the GPU; default: gpu for engines, cpu for ONNX).
    `frame_size` (w, h) pins the frame size in the config, so Triton rejects other sizes up front.
    """
    model = artifact if isinstance(artifact, TritonModel) else describe_artifact(artifact)
    if not _MODEL_NAME.fullmatch(name):
        raise InputError(f"bad model name {name!r}: use letters, digits, '_', '-' and '.' (not first), at most "
                         f"{_MODEL_NAME_MAX} characters, such as 'bisenetv2'; the name is the model's folder and how "
                         "clients call it")
    if instances < 1:
        raise InputError(f"--instances must be at least 1, got {instances}")
    if version < 1:
        raise InputError(f"--version must be at least 1 (Triton ignores version folders named 0), got {version}")
    if queue_delay_us < 0:
        raise InputError(f"--queue-delay-us must be non-negative, got {queue_delay_us}")
    device = device or ("gpu" if model.kind == "tensorrt" else "cpu")
    if device not in ("gpu", "cpu"):
        raise InputError(f"--device must be 'gpu' or 'cpu', got {device!r}")
    if model.kind == "tensorrt" and device != "gpu":
        raise InputError("a TensorRT engine runs on the GPU only; drop --device cpu, or export the ONNX for CPU serving")
    max_batch = _max_batch(model, max_batch)
    input_dims = output_dims = None
    if frame_size is not None:
        w, h = check_frame_size(frame_size, "--frame-size", "no frame above it is accepted")
        _check_frame_size(model, w, h)
        input_dims, output_dims = (h, w, 3), (h, w)

    model_dir = Path(repo) / name
    target = model_dir / str(version) / model.filename
    check_outputs([(target, "the model file"), (model_dir / "labels.txt", "the class list"),
                   (model_dir / "config.pbtxt", "the model configuration")],
                  [(model.path, "the artifact being exported"), (sidecar_path(model.path), "the artifact's metadata file")])
    if target.exists() and not force:
        raise InputError(f"{target} already exists; pass --force to overwrite it, or choose another --version/--name")
    text = model_config_text(model, name=name, max_batch=max_batch, instances=instances,
                             kind="KIND_GPU" if device == "gpu" else "KIND_CPU", queue_delay_us=queue_delay_us,
                             input_dims=input_dims, output_dims=output_dims)
    with replacing(target) as tmp:
        shutil.copyfile(model.path, tmp)  # a copy, not a link: the folder is usually mounted into a container
    write_atomic(model_dir / "labels.txt", ("\n".join(model.info.classes) + "\n").encode())
    write_atomic(model_dir / "config.pbtxt", text.encode())
    return model_dir


def _max_batch(model: TritonModel, requested: int | None) -> int:
    limit = model.batch_limit
    if requested is None:
        if model.kind == "tensorrt":
            return limit or 1  # the engine's optimisation profile decides
        return min(DEFAULT_ONNX_MAX_BATCH, limit) if limit else DEFAULT_ONNX_MAX_BATCH
    check_batch(requested, "--max-batch", InputError)
    if limit is not None and requested > limit:
        raise InputError(f"--max-batch {requested} exceeds the largest batch {limit} that {model.path.name} accepts; "
                         f"rebuild it with 'bisenet-rt build --max-batch {requested}' or lower --max-batch")
    return requested


def _check_frame_size(model: TritonModel, w: int, h: int) -> None:
    fixed_h, fixed_w = model.input_dims[0], model.input_dims[1]
    if (fixed_h > 0 and fixed_h != h) or (fixed_w > 0 and fixed_w != w):
        raise InputError(f"--frame-size {w}x{h} differs from the {fixed_w}x{fixed_h} frames {model.path.name} takes")
    lo, hi = model.info.min_size, model.info.max_size
    if (lo and (w < lo[0] or h < lo[1])) or (hi and (w > hi[0] or h > hi[1])):
        raise InputError(f"--frame-size {w}x{h} is outside the frame range {format_size(lo or (1, 1))} .. "
                         f"{format_size(hi) if hi else 'any'} of {model.path.name}; rebuild with matching "
                         "--min-size/--max-size")
