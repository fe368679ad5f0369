"""Argument helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..apps.video import VIDEO_SUFFIXES
from ..images import IMAGE_SUFFIXES
from ..sizes import parse_size

if TYPE_CHECKING:
    from ..segmenter import Segmenter

__all__ = ["size_arg", "model_size_arg", "output_file_arg", "FILE_SUFFIXES", "precision_arg", "newest_artifact_or_fail",
           "check_writable", "check_report_path", "open_segmenter", "runs_checkpoints", "rebuild_at",
           "note_kept_size", "add_device_argument"]


def size_arg(text: str) -> tuple[int, int]:
    """argparse type for WIDTHxHEIGHT."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def model_size_arg(text: str) -> tuple[int, int]:
    """argparse type for a model size: WIDTHxHEIGHT, both multiples of 32."""
    from ..sizes import check_model_size

    try:
        return check_model_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def precision_arg(text: str) -> str:
    """argparse type for a precision name."""
    from ..precision import Precision

    try:
        return Precision.parse(text).value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def newest_artifact_or_fail(option: str, build_hint: str = "'bisenet-rt build'") -> Path:
    """The newest artifact in the engines folder, said on stderr; none -> one line naming `option` to pass."""
    from ..artifacts import newest_artifact
    from ..errors import ArtifactError
    from ..settings import engines_dir

    found = newest_artifact()
    if found is None:
        raise ArtifactError(f"no {option} given and no artifact under {engines_dir()}/; build one with "
                              f"{build_hint} or pass {option} PATH")
    print(f"using {found} (newest under {engines_dir()}/)", file=sys.stderr)
    return found


#: Suffixes that name files (images, videos, reports, artifacts, checkpoints, archives): a folder output ending in
#: one is a mistake (`segment clip.mp4 -o o.png` would make a folder o.png/), refused unless that folder exists.
FILE_SUFFIXES = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES, ".gif", ".json", ".jsonl", ".txt", ".csv", ".yaml", ".yml",
                 ".pbtxt", ".onnx", ".engine", ".plan", ".xml", ".bin", ".pth", ".pt", ".ckpt", ".npy", ".npz", ".zip",
                 ".tar", ".gz")


def output_file_arg(text: str) -> Path:
    """argparse type for a file to write: a path ending in '/' names a folder and is refused."""
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} ends in '/', so it names a folder; give a file name "
                                         f"(e.g. {text.rstrip('/' + os.sep) or '.'}/report.json)")
    return Path(text)


def check_writable(path: str | os.PathLike, option: str, *, folder: bool = False, folder_why: str = "") -> Path:
    """Refuse an output path that cannot be written, before any work starts: one line saying why.

    A folder output whose name ends in a file suffix (FILE_SUFFIXES) is refused unless that folder exists;
    `folder_why` says what the folder is for.
    """
    from ..errors import InputError

    path = Path(path)
    if folder and path.suffix.lower() in FILE_SUFFIXES and not path.is_dir():
        why = folder_why or "this output is a folder"
        raise InputError(f"{option} {path}: ends in {path.suffix}, a file name, but {why}; give a folder name such "
                         f"as {path.with_suffix('')}/")
    if path.exists():
        if folder and not path.is_dir():
            raise InputError(f"{option} {path}: exists and is not a folder; give a folder")
        if not folder and path.is_dir():
            raise InputError(f"{option} {path}: is a folder; give a file name")
    probe = path if folder and path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{option} {path}: {probe} is a file, so nothing can be written under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {probe} is not writable (permissions or a read-only mount)")
    return path


def add_device_argument(p: argparse.ArgumentParser) -> None:
    """`--device`: where the artifacts run, as the Segmenter's `device=` takes it."""
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="cpu, cuda or cuda:N (default: what the artifact implies: checkpoints and ONNX graphs on a "
                        "usable GPU, else the CPU; TensorRT engines on the GPU; OpenVINO IR on the CPU)")


def check_report_path(report: Path, artifacts: list[Path]) -> None:
    """Refuse a report path (`--json`) that names one of the artifacts it reports on, or their metadata."""
    from ..artifacts import artifact_files, sidecar_path
    from ..outputs import check_outputs

    inputs = [(part, "an artifact being measured") for a in artifacts for part in artifact_files(a)]
    inputs += [(sidecar_path(a), "an artifact's metadata file") for a in artifacts]
    check_outputs([(report, "the --json report")], inputs)


def runs_checkpoints(path: Path, backend: str = "auto") -> bool:
    """Whether `path` opens as a checkpoint, which runs at any model size (a built artifact keeps its export size)."""
    from ..backends import spec_for_path

    return (spec_for_path(path).name if backend == "auto" else backend) == "torch"


def rebuild_at(size: tuple[int, int]) -> str:
    """How a built artifact gets another model size, in words."""
    from ..sizes import format_size

    return f"export or build it again with --model-size {format_size(size)}"


def open_segmenter(path: Path, backend: str = "auto", model_size: tuple[int, int] | None = None,
                   **options: Any) -> "Segmenter":
    """A Segmenter on `path`; `model_size` applies to checkpoints. A built artifact keeps its export size: another
    size asked for is noted on stderr with how to get it. `options` go to the Segmenter (`depth`, `device`)."""
    from ..segmenter import Segmenter

    if model_size is not None and runs_checkpoints(path, backend):
        return Segmenter(path, backend=backend, model_size=model_size, **options)
    seg = Segmenter(path, backend=backend, **options)
    if model_size is not None:
        note_kept_size(seg, model_size)
    return seg


def note_kept_size(seg: "Segmenter", asked: tuple[int, int]) -> None:
    """Say on stderr that a built artifact keeps its export size when another was asked for, and how to get it."""
    from ..sizes import format_size

    if tuple(asked) != tuple(seg.model_size):
        print(f"note: {seg.path.name} was exported at model size {format_size(seg.model_size)} and keeps it "
              f"(--model-size applies to checkpoints, .pth); to run it at {format_size(asked)}, {rebuild_at(asked)}",
              file=sys.stderr)
