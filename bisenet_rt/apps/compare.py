"""Label-free comparison of artifacts, as `polygraphy run --trt --onnxrt` does: no dataset, only the same frames.

Every artifact labels the same frames (given images, or synthetic street scenes); each is compared pixel by
pixel with the first. Where the model's coarse logits can be had (a checkpoint, through the reference
model; an ONNX pipeline graph, by making them an extra output of an in-memory copy of the graph) their
largest and mean absolute difference from the first artifact that has them says how far the numbers moved,
also where no label flipped. TensorRT engines and OpenVINO IR keep their intermediate tensors inside, so for
them the labels are all there is.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..artifacts import RANDOM_WEIGHTS
from ..errors import ConfigError, InputError

if TYPE_CHECKING:
    from ..segmenter import Segmenter

__all__ = ["CompareResult", "Logits", "synthetic_frames", "folder_frames", "logits_source", "compare", "report",
           "format_table", "write_report", "DEFAULT_COUNT"]

#: Frames compared by default: enough to cover every class the synthetic scenes draw, few enough for a CPU.
DEFAULT_COUNT = 4
#: A function that returns the coarse logits (N x C x h x w, float32) of one uint8 N x H x W x 3 BGR batch.
Logits = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class CompareResult:
    """One artifact against the reference (the first): its labels' agreement and, where both have logits, how far
    its logits are from the reference's."""

    artifact: str
    backend: str
    precision: str
    device: str
    model_size: tuple[int, int]
    random_weights: bool
    agreement: float | None         # fraction of all pixels labelled as the first artifact labels them; None: it
    worst_frame: float | None       # the lowest fraction of one frame
    max_logit_diff: float | None    # largest |logit - reference logit|; None where not compared (see `logits`)
    mean_logit_diff: float | None
    logits: str                     # "compared", "reference", or why not

    def to_json(self) -> dict[str, Any]:
        def percent(v: float | None) -> float | None:
            return None if v is None else round(100.0 * v, 4)

        return {"artifact": self.artifact, "backend": self.backend, "precision": self.precision, "device": self.device,
                "model_size": f"{self.model_size[0]}x{self.model_size[1]}", "random_weights": self.random_weights,
                "agreement_percent": percent(self.agreement), "worst_frame_agreement_percent": percent(self.worst_frame),
                "max_abs_logit_diff": self.max_logit_diff, "mean_abs_logit_diff": self.mean_logit_diff,
                "logits": self.logits}


def synthetic_frames(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """`count` synthetic street scenes (bisenet_rt.data.synth) of `size` (w, h): what the demo model was trained on,
    with every class the generator draws."""
    from ..data.synth import generate_frame

    return [generate_frame(seed, i, size=size)[0] for i in range(count)]


def folder_frames(folder: Path, count: int) -> list[np.ndarray]:
    """The first `count` images under `folder` (recursively, sorted), read as BGR uint8."""
    from ..images import IMAGE_SUFFIXES, read_image

    if not folder.is_dir():
        raise InputError(f"--frames {folder}: no such folder; give a folder of images, or leave it out for synthetic "
                         "street scenes")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:count]
    if not found:
        raise InputError(f"--frames {folder}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images in this folder")
    return [read_image(p) for p in found]


def _checkpoint_logits(path: Path, model_size: tuple[int, int], device: str | None) -> Logits:
    """The reference model's coarse logits (the classifier's output, before its x8 upsample)."""
    import torch

    from ..model import load_checkpoint
    from ..model.reference import preprocess

    where = torch.device(device if device not in (None, "auto") else "cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint(path).to(where)
    caught: list[Any] = []
    model.head.conv_out.register_forward_hook(lambda module, args, output: caught.append(output))

    def logits(batch: np.ndarray) -> np.ndarray:
        caught.clear()
        with torch.inference_mode():
            frames = torch.from_numpy(batch).to(where)
            model(preprocess(frames, model_size, model.family.normalization))
        return caught[0].float().cpu().numpy()

    return logits


def _onnx_logits(path: Path, device: str | None) -> Logits | str:
    """An ONNX Runtime session of the graph with its coarse logits as a second output, or why there is none."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from ..artifacts import INPUT_NAME, load_onnx, open_artifact
    from ..backends.onnxruntime.run import QDQ_DISABLED_OPTIMIZERS, execution_providers, session_options
    from ..graph.prepost import coarse_logits
    from ..precision import Precision

    info = open_artifact(path).info
    proto = load_onnx(path, external_data=True)
    coarse = coarse_logits(proto)
    if coarse is None:
        return ("not available: no model tensor read by the post-processing (an optimized graph renames them); "
                "compare the graph it was built from (engines/*.src.onnx)")
    dtype = onnx.TensorProto.FLOAT16 if info.precision is Precision.FP16 else onnx.TensorProto.FLOAT
    proto.graph.output.append(helper.make_tensor_value_info(coarse, dtype, None))
    disabled = list(QDQ_DISABLED_OPTIMIZERS) if info.precision is Precision.INT8 else None
    session = ort.InferenceSession(proto.SerializeToString(), session_options(),
                                   providers=execution_providers(device, ort.get_available_providers()),
                                   disabled_optimizers=disabled)

    def logits(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([coarse], {INPUT_NAME: batch})[0], np.float32)

    return logits


def logits_source(seg: "Segmenter", device: str | None) -> Logits | str:
    """How to get an artifact's coarse logits, or why they cannot be had (engines, IR)."""
    from ..backends import SPECS

    suffix = seg.path.suffix.lower()
    if suffix in SPECS["torch"].opens:
        return _checkpoint_logits(seg.path, seg.model_size, device)
    if suffix == ".onnx":
        return _onnx_logits(seg.path, device)
    kind = next((f"{spec.title} artifacts" for spec in SPECS.values() if suffix in spec.opens), f"{suffix} files")
    return f"not available: {kind} keep their intermediate tensors inside; the labels are compared"


def compare(segmenters: Sequence["Segmenter"], frames: Sequence[np.ndarray], *, device: str | None = None,
            progress: bool = True) -> list[CompareResult]:
    """Run every Segmenter on every frame and compare each with the first: labels pixel by pixel, coarse logits
    (where both can be had and have one shape) by their absolute difference."""
    if len(segmenters) < 2:
        raise ConfigError("compare needs two or more artifacts: the first is the reference the others are held to")
    if not frames:
        raise ConfigError("no frames to compare on")
    sources = [logits_source(seg, device) for seg in segmenters]
    ref_logits = next((k for k, s in enumerate(sources) if not isinstance(s, str)), None)
    n = len(segmenters)
    same = np.zeros(n, np.int64)
    worst = np.ones(n)
    diff_max = np.zeros(n)
    diff_sum = np.zeros(n)
    diff_count = np.zeros(n, np.int64)
    shape_note: dict[int, str] = {}
    pixels = 0
    items: Any = frames
    if progress:
        from tqdm import tqdm

        items = tqdm(frames, desc="compare", unit="frame")
    for frame in items:
        labels = [seg(frame) for seg in segmenters]
        logits = [None if isinstance(s, str) else s(frame[None]) for s in sources]
        pixels += labels[0].size
        for k in range(n):
            agree = int(np.count_nonzero(labels[k] == labels[0]))
            same[k] += agree
            worst[k] = min(worst[k], agree / labels[0].size)
            mine, ref = logits[k], logits[ref_logits] if ref_logits is not None else None
            if mine is None or ref is None or k == ref_logits:
                continue
            if mine.shape != ref.shape:
                shape_note[k] = (f"not compared: logits {'x'.join(map(str, mine.shape[1:]))} against "
                                 f"{'x'.join(map(str, ref.shape[1:]))} (another model size)")
                continue
            delta = np.abs(mine - ref)
            diff_max[k] = max(diff_max[k], float(delta.max()))
            diff_sum[k] += float(delta.sum(dtype=np.float64))
            diff_count[k] += delta.size
    results = []
    for k, seg in enumerate(segmenters):
        source = sources[k]
        if isinstance(source, str):
            note = source
        elif k == ref_logits:
            note = "reference"
        else:
            note = shape_note.get(k, "compared")
        compared = note == "compared"
        results.append(CompareResult(
            artifact=str(seg.path), backend=seg.backend.name, precision=seg.precision.value, device=seg.device,
            model_size=seg.model_size, random_weights=seg.random_weights,
            agreement=None if k == 0 else float(same[k] / pixels), worst_frame=None if k == 0 else float(worst[k]),
            max_logit_diff=round(float(diff_max[k]), 6) if compared else None,
            mean_logit_diff=round(float(diff_sum[k] / diff_count[k]), 6) if compared else None, logits=note))
    return results


def report(results: Sequence[CompareResult], frames: str, argv: Sequence[str]) -> dict[str, Any]:
    """The JSON report: the command, the frames, and each artifact against the first."""
    return {"command": "bisenet-rt " + shlex.join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "frames": frames, "reference": results[0].artifact if results else None,
            "results": [r.to_json() for r in results]}


def format_table(results: Sequence[CompareResult], frames: str) -> str:
    """A markdown table, one row per artifact, the first the reference; notes under it for logits not compared and
    random weights."""
    lines = [f"{frames}; each artifact against the first",
             "",
             "| artifact | backend | precision | device | pixels labelled as the first | worst frame | max abs logit diff | "
             "mean abs logit diff |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        agree = "(reference)" if r.agreement is None else f"{100 * r.agreement:.3f} %"
        worst = "" if r.worst_frame is None else f"{100 * r.worst_frame:.3f} %"
        if r.max_logit_diff is not None and r.mean_logit_diff is not None:
            peak, mean = f"{r.max_logit_diff:.4g}", f"{r.mean_logit_diff:.3g}"
        else:
            peak, mean = ("(reference)", "") if r.logits == "reference" else ("n/a", "")
            if r.logits != "reference":
                notes.append(f"{Path(r.artifact).name}: logits {r.logits}")
        lines.append(f"| {Path(r.artifact).name} | {r.backend} | {r.precision} | {r.device} | {agree} | {worst} | "
                     f"{peak} | {mean} |")
    notes += [f"{Path(r.artifact).name}: {RANDOM_WEIGHTS}" for r in results if r.random_weights]
    return "\n".join(lines + ([""] + notes if notes else []))


def write_report(rep: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the JSON report atomically."""
    from ..atomic import write_atomic

    return write_atomic(path, (json.dumps(rep, indent=2) + "\n").encode())
