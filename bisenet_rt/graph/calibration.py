"""INT8 calibration: which frames, their activations' ranges (from ONNX Runtime's calibrator), and the cache of those ranges.

Frames are fed through the same preprocessing the pipeline graph applies (the PyTorch reference,
`model.reference.preprocess`, at the graph's model size and the weights' normalization). For the
percentile method, ranges end at the 99.9th percentile of |activation|, the semantic branch's at the
99.99th (`PERCENTILE`, `SEMANTIC_PERCENTILE`). Ranges are cached as JSON under the cache folder, keyed by
the plain graph, the calibration frames and the method, and reused by the next build with the same inputs;
a cache that cannot be written is a warning, never a failure.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from ..artifacts import load_json
from ..errors import BuildError
from ..families import DEFAULT_FAMILY, Normalization
from ..images import IMAGE_SUFFIXES
from .export import PLAIN_INPUT_NAME

if TYPE_CHECKING:
    import onnx


__all__ = ["CALIBRATION_METHODS", "DEFAULT_METHOD", "PERCENTILE", "SEMANTIC_PERCENTILE", "SEMANTIC_BRANCH", "MAX_RANGE",
           "Frame", "CalibrationFrames", "calibration_files", "calibration_cache_path", "calibrate", "load_ranges",
           "save_ranges", "check_ranges", "bounds", "ort_method"]

_log = logging.getLogger(__name__)

#: Calibration methods of onnxruntime.quantization.CalibrationMethod offered here.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")

#: Percentile: on the demo model it kept more pixels equal to FP32 than MinMax or Entropy did
#: (benchmarks/int8_cpu.py --methods compares them).
DEFAULT_METHOD = "percentile"

#: Percentile of |activation| each range ends at. ORT's default, 99.999, lets the few frames with extreme
#: activations (in the synthetic set: those showing the saturated ego-vehicle hood, whose activations reach
#: 7-15x those of a typical frame) set the scale for every frame; below it those outliers clip and the
#: common values keep their resolution.
PERCENTILE = 99.9

#: Percentile for the semantic branch's tensors, whose deep, low-resolution
#: context features lose information when clipped as tightly as the detail branch's, the aggregation's and
#: the head's. Pixels labelled as FP32 labels them on the quantization-aware fine-tuned demo model (64
#: calibration frames; 12 val frames / 16 train frames, 3 of them among those): every range at 99.9: 98.65 % on
#: val; every range at 99.99: 98.85 / 99.01 %; this split: 99.14 / 99.24 %; the semantic branch at 99.95
#: or 99.995 instead, or the rest at 99.7 or 99.95: 98.8-99.0 / 99.0-99.2 %. Before that fine-tune one
#: percentile did best: 99.9 (95.7 % vs 91.7 % at 99.99).
SEMANTIC_PERCENTILE = 99.99

#: The semantic branch's attribute in `bisenet_rt.model.BiSeNetV2`: its modules are named `segment.*`,
#: and the exported graph's nodes and tensors `/segment/*`.
SEMANTIC_BRANCH = "segment"

#: Bump when the quantization recipe changes, so old calibration caches are not reused.
_RECIPE = f"qdq-s8s8-perchannel-v5-p{PERCENTILE}-s{SEMANTIC_PERCENTILE}"

#: Frames per calibration pass for the histogram methods, which hold every activation of a pass in memory.
_HISTOGRAM_CHUNK = 4

Frame = Union[str, os.PathLike, np.ndarray]


def calibration_files(directory: str | os.PathLike | None, count: int) -> list[Path]:
    """Up to `count` image files under `directory` (searched recursively), spread evenly over the sorted set."""
    if directory is None:
        raise BuildError("int8 needs calibration frames: pass --calib DIR, a folder of frames like those the model "
                         "will see (for example the training images)")
    if count < 1:
        raise BuildError(f"--calib-count must be at least 1, got {count}")
    root = Path(directory)
    if not root.is_dir():
        raise BuildError(f"--calib {root}: no such folder; give a folder of calibration frames (.png/.jpg)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BuildError(f"--calib {root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in it and its "
                         "subfolders); give a folder of calibration frames")
    if len(files) <= count:
        return files
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in picks]


class CalibrationFrames:
    """ONNX Runtime calibration data reader: BGR uint8 frames -> the plain graph's normalized input.

    Frames go through `bisenet_rt.model.reference.preprocess`, the reference of what the pipeline graph does
    before the model, at the graph's model size.
    """

    def __init__(self, frames: Sequence[Frame], model_size: tuple[int, int], *, progress: bool,
                 normalization: Normalization = DEFAULT_FAMILY.normalization) -> None:
        self.frames = list(frames)
        self.model_size = model_size
        self.normalization = normalization
        self.start, self.end = 0, len(self.frames)
        self.index = 0
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.frames), desc="calibrate", unit="frame", file=sys.stderr)

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.frames))
        self.index = self.start

    def get_next(self) -> dict[str, np.ndarray] | None:
        import torch

        from ..model.reference import preprocess

        if self.index >= self.end:
            if self.end >= len(self.frames):
                self.close()
            return None
        frame = _read_frame(self.frames[self.index])
        self.index += 1
        if self.bar is not None:
            self.bar.update(1)
        with torch.inference_mode():
            x = preprocess(torch.from_numpy(frame)[None], self.model_size, self.normalization)
        return {PLAIN_INPUT_NAME: x.numpy()}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _read_frame(frame: Frame) -> np.ndarray:
    """A calibration frame as a contiguous BGR uint8 H x W x 3 array (files read with OpenCV)."""
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BuildError(f"calibration frames must be uint8 H x W x 3 BGR arrays; got {frame.dtype} {frame.shape}")
        return np.ascontiguousarray(frame)
    from ..images import ImageError, read_image

    try:
        return read_image(frame)
    except ImageError as exc:
        raise BuildError(f"calibration frame {exc}; remove it from the --calib folder") from None


def _frame_digest(frame: Frame) -> bytes:
    h = hashlib.sha256()
    if isinstance(frame, np.ndarray):
        h.update(repr((frame.dtype.str, frame.shape)).encode())
        h.update(np.ascontiguousarray(frame).tobytes())
    else:
        path = Path(frame)
        h.update(path.name.encode())
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise BuildError(f"calibration frame {path}: cannot read it ({exc.strerror})") from None
    return h.digest()


def calibration_cache_path(plain: "onnx.ModelProto", frames: Sequence[Frame], *, method: str,
                           model_size: tuple[int, int], cache_dir: str | os.PathLike, variant: str = "") -> Path:
    """Where the calibration ranges of this graph, frame list and method are (or will be) cached.

    The key is the graph's computation: its metadata (the facts export writes) is left out of it. `variant`
    names a different rewrite of the same graph before calibration (its tensors differ).
    """
    bare = type(plain)()
    bare.CopyFrom(plain)
    del bare.metadata_props[:]
    h = hashlib.sha256()
    key = f"{_RECIPE}|{method}|{model_size[0]}x{model_size[1]}|" + (f"{variant}|" if variant else "")
    h.update(key.encode())
    h.update(hashlib.sha256(bare.SerializeToString()).digest())
    for frame in frames:
        h.update(_frame_digest(frame))
    return Path(cache_dir) / f"int8_calibration_{h.hexdigest()[:24]}.json"


def save_ranges(ranges: Any, path: Path, workdir: Path) -> Path:
    """Save calibration ranges to their cache file; where it cannot be written (a read-only or full cache folder),
    warn and keep them in `workdir` for this build only. Returns where they are."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    from ..atomic import replacing

    try:
        with replacing(path) as tmp:
            save_tensors_data(ranges, tmp)
        return path
    except OSError as exc:  # DiskFullError included
        _log.warning(f"calibration ranges not cached in {path.parent} ({getattr(exc, 'strerror', None) or exc}); "
                     "the next build calibrates again")
    fallback = workdir / "ranges.json"
    save_tensors_data(ranges, fallback)
    return fallback


def ort_method(method: str) -> Any:
    """onnxruntime.quantization.CalibrationMethod for one of CALIBRATION_METHODS."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


def calibrate(prepared: "onnx.ModelProto", reader: CalibrationFrames, method: str, workdir: Path) -> Any:
    """Ranges (ORT TensorsData) of the tensors the quantizer quantizes, from ORT's calibrator in one pass.

    For `percentile`, the semantic branch's ranges end at SEMANTIC_PERCENTILE and all others at
    PERCENTILE, both read from the same histograms.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    model_path = workdir / "prepared.onnx"
    onnx.save(prepared, str(model_path))
    calibrator = create_calibrator(model_path, sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),
                                   augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=ort_method(method),
                                   extra_options={"percentile": PERCENTILE} if method == "percentile" else {})
    chunk = len(reader) if method == "minmax" else _chunk(len(reader))  # histograms hold a chunk's activations
    for start in range(0, len(reader), chunk):
        reader.set_range(start, start + chunk)
        calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    if method == "percentile":
        calibrator.collector.percentile = SEMANTIC_PERCENTILE
        semantic = calibrator.compute_data()
        for name in ranges.keys():
            if name.startswith(f"/{SEMANTIC_BRANCH}/"):
                ranges[name] = semantic[name]
    return ranges


def load_ranges(path: Path, method: str) -> Any:
    """Cached calibration ranges, refused if they are not the method's or not readable."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    try:
        load_json(path.read_bytes(), "the calibration cache")  # bounded in size and depth before ORT's reader
        ranges = load_tensors_data(path)
        held = ranges.calibration_method
        found = bounds(ranges)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError(f"calibration cache {path} is unreadable ({exc.__class__.__name__}: {exc}); delete it to "
                         "calibrate again") from None
    if held != ort_method(method):
        raise BuildError(f"calibration cache {path} holds {getattr(held, 'name', held)} ranges, not {method}; "
                         "delete it to calibrate again")
    check_ranges(found, str(path))
    return ranges


#: The largest activation magnitude a calibrated range may claim (normalized inputs keep this network's
#: activations orders of magnitude below it); beyond it a range is corrupt and would round every value to 0.
MAX_RANGE = 1e6


def bounds(ranges: Any) -> list[np.ndarray]:
    """Each tensor's calibrated (low, high) from ORT TensorsData, as float64 arrays."""
    return [np.asarray(ranges[name].range_value, np.float64) for name in ranges.keys()]


def check_ranges(bounds: Sequence[np.ndarray], where: str) -> None:
    """Refuse calibration ranges that are not finite, not (low, high) pairs, or absurdly wide."""
    for value in bounds:
        if value.size != 2 or not np.all(np.isfinite(value)) or value[0] > value[1]:
            raise BuildError(f"calibration ranges in {where} include {value.tolist()}, not a finite (low, high) "
                             "pair; delete the cache to calibrate again")
        if np.max(np.abs(value)) > MAX_RANGE:
            raise BuildError(f"calibration ranges in {where} include {value.tolist()}, beyond +-{MAX_RANGE:g}; "
                             "the cache is corrupt: delete it to calibrate again")


def _chunk(n: int) -> int:
    """The largest divisor of n up to _HISTOGRAM_CHUNK (the quantizer wants equal chunks)."""
    return max(d for d in range(1, min(n, _HISTOGRAM_CHUNK) + 1) if n % d == 0) if n else 1
