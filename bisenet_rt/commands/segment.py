"""Segment images, folders of images, video files or a camera with a built artifact (engine or ONNX)."""
from __future__ import annotations

import argparse
import enum
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..backends import SPECS
from ..errors import InputError
from ..images import IMAGE_SUFFIXES, ImageError
from ._common import add_device_argument, check_writable, model_size_arg, newest_artifact_or_fail, open_segmenter

if TYPE_CHECKING:
    import numpy as np

    from ..segmenter import Segmenter

HELP = "segment images, folders, videos or a camera into label PNGs, colour overlays or overlay videos"

EXAMPLES = """
bisenet-rt segment frame.png more_frames/ -o out/ --artifact engines/bisenetv2_fp32.onnx
bisenet-rt segment more_frames/ -o out/ --labels --color      # label PNGs with their colours embedded
bisenet-rt segment more_frames/ -o out/ --overlay --alpha 0.7
bisenet-rt segment drive.mp4 -o drive_seg.mp4
bisenet-rt segment --camera 0 -o camera.mp4 --max-frames 300
bisenet-rt segment cityscapes/leftImg8bit/val -o results/ --label-format cityscapes
"""



class LabelFormat(str, enum.Enum):
    """What a label PNG holds and how it is named."""

    TRAIN_IDS = "train-ids"    # IMG_labels.png, the model's class ids
    CITYSCAPES = "cityscapes"  # IMG.png holding Cityscapes label ids, as the official evaluation reads them

    def __str__(self) -> str:
        return self.value

_EPILOG = """\
outputs:
  images   OUT is a folder. For IMG.png: OUT/IMG_labels.png (one channel, uint8 train ids,
           lossless; with --color a palette PNG: the same ids, shown in the class colours) and
           OUT/IMG_overlay.png (class colours blended over the frame, with a legend of the
           classes present). Both are written unless --labels or --overlay picks one. Images
           found in a folder keep their path relative to that folder under OUT.
           --label-format cityscapes writes, for each city_seq_frame_leftImg8bit.png, only
           OUT/city_seq_frame_leftImg8bit.png holding Cityscapes label ids (the 19 train ids mapped
           back, 0 elsewhere): what cityscapesScripts' evalPixelLevelSemanticLabeling and the
           benchmark server read (one prediction per city_seq_frame, so no overlays beside them).
  videos   .mp4 .avi .mov .mkv are written as overlay videos (MPEG-4, --codec to change) with an
           FPS counter. With one video input and OUT ending in a video suffix, OUT is that file;
           otherwise OUT is a folder holding STEM.mp4 per video. A video that breaks off
           (truncated, corrupt) ends cleanly and keeps the frames written so far.
  camera   --camera N records camera N as an overlay video until Ctrl-C or --max-frames;
           OUT is the video file (or OUT/cameraN.mp4 when OUT is a folder).
An unreadable image is an error naming the file; --skip-bad skips it with a warning and counts it.
Without --artifact the newest artifact under engines/ is used.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _EPILOG
    p.add_argument("inputs", nargs="*", metavar="INPUT", type=Path,
                   help="image files, folders of images (recursive) or video files")
    p.add_argument("--camera", type=int, metavar="INDEX", help="segment camera INDEX (e.g. 0) instead of INPUT")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder, or video file (see below)")
    p.add_argument("--artifact", "--engine", dest="artifact", type=Path,
                   help="artifact to run (.engine, .onnx, .xml, .pth); default: newest under engines/")
    p.add_argument("--backend", default="auto", choices=["auto", *SPECS],
                   help="backend to open the artifact with (default auto: by suffix)")
    add_device_argument(p)
    p.add_argument("--model-size", type=model_size_arg, metavar="WxH",
                   help="checkpoints (.pth): size frames are resized to (default 1024x512; 2048x1024 is the "
                        "published accuracy protocol); built artifacts keep their export size")
    p.add_argument("--labels", action="store_true", help="images: write label PNGs (only them, unless --overlay too)")
    p.add_argument("--overlay", action="store_true", help="images: write colour overlays (only them, unless --labels too)")
    p.add_argument("--label-format", type=LabelFormat, default=LabelFormat.TRAIN_IDS, choices=list(LabelFormat),
                   help="images: label PNGs as the model's train ids (default) or as Cityscapes label ids named "
                        "for the official evaluation and benchmark server (see below)")
    p.add_argument("--color", action="store_true",
                   help="images: label PNGs as palette PNGs (mode P): each pixel still holds its class id (PIL, "
                        "Cityscapes' and MMSegmentation's tools read the ids), and viewers show the class colours; "
                        "OpenCV's imread decodes them to colours")
    p.add_argument("--no-legend", action="store_true", help="images: overlays without the legend of the classes present")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the class colours in overlays, 0..1 (default 0.5)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images with a warning instead of failing")
    p.add_argument("--max-frames", type=int, metavar="N", help="videos and camera: stop after N frames")
    p.add_argument("--no-fps", action="store_true", help="videos: do not draw the FPS counter")
    p.add_argument("--codec", default="mp4v", help="videos: FourCC of the output encoder (default mp4v)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: Path) -> "np.ndarray":
    """A BGR uint8 H x W x 3 image (grey, 16-bit and alpha images converted), its header checked against the
    frame-size limit before decoding; ImageError says why it cannot be read."""
    import cv2

    from ..images import read_image as decode

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our own error names the file instead
    try:
        return decode(path)
    finally:
        cv2.utils.logging.setLogLevel(level)


def write_png(path: Path, image: "np.ndarray", palette: "np.ndarray | None" = None) -> None:
    """Encode and write a PNG atomically (uint8, one or three channels); a label map with `palette` (RGB rows) as
    a palette PNG holding the ids."""
    import cv2

    from ..apps.viz import palette_png
    from ..atomic import write_atomic

    if palette is not None:
        write_atomic(path, palette_png(image, palette))
        return
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InputError(f"{path}: PNG encoding failed for an array shaped {image.shape}")
    write_atomic(path, buf.tobytes())


def _plan_images(inputs: Iterable[Path], exclude: Path) -> list[tuple[Path, Path]]:
    """(image, output stem relative to OUT) for image files and folders among the inputs.

    Images under `exclude` (the output folder, when it lies inside an input folder) are left out, so a
    second run does not segment the first run's outputs.
    """
    skip = exclude.resolve()
    plan = []
    for item in inputs:
        if item.is_dir():
            found = [p for p in find_images(item) if not p.resolve().is_relative_to(skip)]
            if not found:
                print(f"warning: {item}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images in this folder",
                      file=sys.stderr)
            plan += [(p, p.relative_to(item).with_suffix("")) for p in found]
        elif item.suffix.lower() in IMAGE_SUFFIXES:
            plan.append((item, Path(item.stem)))
    return plan


def _classify(inputs: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split inputs into image sources (files and folders) and video files; reject anything else."""
    from ..apps.video import VIDEO_SUFFIXES, is_video

    images, videos = [], []
    for item in inputs:
        if not item.exists():
            raise InputError(f"{item}: no such file or folder")
        if item.is_dir() or item.suffix.lower() in IMAGE_SUFFIXES:
            images.append(item)
        elif is_video(item):
            videos.append(item)
        else:
            raise InputError(f"{item}: unknown input type {item.suffix or '(no suffix)'!r}; give images "
                             f"({', '.join(IMAGE_SUFFIXES)}), folders of images, or videos ({', '.join(VIDEO_SUFFIXES)})")
    return images, videos


def _check_unique(outputs: Iterable[tuple[Path, Path]]) -> None:
    """Raise when two inputs would write the same output file."""
    seen: dict[Path, Path] = {}
    for src, out in outputs:
        key = Path(os.path.normcase(out.resolve()))
        if key in seen:
            raise InputError(f"{seen[key]} and {src} would both write {out}; segment them separately or rename one")
        seen[key] = src


#: What each kind of output is called in messages.
_KIND_NAMES = {"labels": "the label PNG", "overlay": "the overlay", "video": "the overlay video"}


def image_outputs(plan: list[tuple[Path, Path]], out_dir: Path, kinds: list[str],
                  label_format: LabelFormat) -> list[tuple[Path, Path, str]]:
    """(image, file written, kind) for every file `segment_images` writes."""
    return [(src, out_dir / stem.parent / _output_name(stem, kind, label_format), kind)
            for src, stem in plan for kind in kinds]


def check_outputs_against_inputs(writes: list[tuple[Path | int, Path, str]], artifact: Path | None) -> None:
    """Refuse two inputs writing one file, and any output landing on an input: an image, a video, the artifact."""
    from ..artifacts import artifact_files, sidecar_path
    from ..outputs import check_outputs

    _check_unique((Path(str(src)), target) for src, target, _ in writes)
    inputs = [(Path(src), "an input image" if kind != "video" else "an input video")
              for src, _, kind in writes if not isinstance(src, int)]
    if artifact is not None:
        inputs += [(part, "the artifact being run") for part in artifact_files(artifact)]
        inputs.append((sidecar_path(artifact), "the artifact's metadata file"))
    check_outputs(((target, f"{_KIND_NAMES[kind]} of {src if not isinstance(src, int) else f'camera {src}'}")
                   for src, target, kind in writes), inputs)


def _output_name(stem: Path, kind: str, label_format: LabelFormat) -> str:
    """File name of one output: IMG_labels.png / IMG_overlay.png, or IMG.png for Cityscapes label ids."""
    return f"{stem.name}.png" if kind == "labels" and label_format is LabelFormat.CITYSCAPES else f"{stem.name}_{kind}.png"


def _check_cityscapes_names(plan: list[tuple[Path, Path]]) -> None:
    """Cityscapes' tools match predictions to ground truth by city_seq_frame; refuse images not named so."""
    from ..data.cityscapes import parse_frame_id

    for src, _ in plan:
        if parse_frame_id(src.name) is None:
            raise InputError(f"{src}: --label-format cityscapes needs Cityscapes file names "
                             "(city_sequence_frame_leftImg8bit.png, e.g. berlin_000000_000019_leftImg8bit.png), "
                             "which the official evaluation matches predictions by; rename it or use train-ids")


def segment_images(segmenter: "Segmenter", plan: list[tuple[Path, Path]], out_dir: Path, *, labels: bool,
                   overlay: bool, alpha: float, skip_bad: bool, progress: bool,
                   label_format: LabelFormat = LabelFormat.TRAIN_IDS, color: bool = False,
                   legend: bool = True) -> tuple[int, list[Path]]:
    """Write label PNGs (palette PNGs with `color`) and/or overlays (with a legend of the classes present, unless
    not `legend`) for each (image, relative stem); return (done, skipped files)."""
    from tqdm import tqdm

    from ..apps.viz import draw_legend
    from ..apps.viz import overlay as blend

    kinds = [k for k, on in (("labels", labels), ("overlay", overlay)) if on]
    to_label_ids = None
    if label_format is LabelFormat.CITYSCAPES:
        from ..classes import CITYSCAPES_CLASSES
        from ..data.cityscapes import train_id_to_label_id

        if segmenter.num_classes != len(CITYSCAPES_CLASSES):
            raise InputError(f"--label-format cityscapes needs a 19-class Cityscapes model; this one predicts "
                             f"{segmenter.num_classes} classes")
        _check_cityscapes_names(plan)
        to_label_ids = train_id_to_label_id()
    check_outputs_against_inputs(list(image_outputs(plan, out_dir, kinds, label_format)), segmenter.path)
    done, skipped = 0, []
    bar = tqdm(plan, unit="image", disable=not progress, dynamic_ncols=True)
    for src, stem in bar:
        try:
            frame = read_image(src)
        except ImageError as exc:
            if not skip_bad:
                raise InputError(f"{src}: cannot be read as an image ({exc.reason}); fix or remove it, or pass "
                                 "--skip-bad to skip unreadable images") from None
            tqdm.write(f"warning: skipping {src}: unreadable image ({exc.reason})", file=sys.stderr)
            skipped.append(src)
            continue
        result = segmenter(frame)
        target = out_dir / stem.parent
        if labels:
            write_png(target / _output_name(stem, "labels", label_format),
                      result if to_label_ids is None else to_label_ids[result], segmenter.palette if color else None)
        if overlay:
            shown = blend(frame, result, segmenter.palette, alpha=alpha)
            if legend:
                draw_legend(shown, result, segmenter.palette, segmenter.classes)
            write_png(target / f"{stem.name}_overlay.png", shown)
        done += 1
    bar.close()
    return done, skipped


def _artifact(given: Path | None) -> Path:
    return given if given is not None else newest_artifact_or_fail("--artifact")


def run(args: argparse.Namespace) -> int:
    from ..apps.video import VIDEO_SUFFIXES, is_video, segment_video
    from ..artifacts import RANDOM_WEIGHTS

    if not args.inputs and args.camera is None:
        raise InputError("nothing to segment: give INPUT files or folders, or --camera INDEX")
    if args.inputs and args.camera is not None:
        raise InputError("give INPUT files or --camera, not both")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
    images, videos = _classify(args.inputs)
    out: Path = args.output
    to_file = is_video(out) and not images and len(videos) + (args.camera is not None) == 1
    if is_video(out) and not to_file:
        raise InputError(f"-o {out} names a video file, but there are several inputs or images among them; "
                         "give a folder")
    if out.is_file() and not to_file:
        raise InputError(f"-o {out} is an existing file; give a folder")
    check_writable(out, "-o", folder=not to_file,
                   folder_why="segment writes a folder here (a file only for one video or camera input and OUT "
                              f"ending in {'/'.join(VIDEO_SUFFIXES)})")
    plan = _plan_images(images, exclude=out)
    sources: list[tuple[Path | int, Path]] = [(v, out if to_file else out / f"{v.stem}.mp4") for v in videos]
    if args.camera is not None:
        sources.append((args.camera, out if to_file else out / f"camera{args.camera}.mp4"))
    want_labels, want_overlay = (args.labels, args.overlay) if (args.labels or args.overlay) else (True, True)
    if args.label_format is LabelFormat.CITYSCAPES:
        if args.overlay:
            raise InputError("--label-format cityscapes writes only the label-id PNGs (an overlay named after the "
                             "frame would count as a second prediction); write overlays in a separate run")
        want_labels, want_overlay = True, False
        if args.color:
            raise InputError("--color writes the model's train ids with their class colours; the Cityscapes format "
                             "stays plain label ids, as its evaluation reads them: drop --color")
    if args.color and not want_labels:
        raise InputError("--color colours the label PNGs, and --overlay alone writes none; add --labels")
    kinds = [k for k, on in (("labels", want_labels), ("overlay", want_overlay)) if on]
    artifact = _artifact(args.artifact)
    check_outputs_against_inputs([*image_outputs(plan, out, kinds, args.label_format),
                                  *((src, target, "video") for src, target in sources)], artifact)
    progress = not args.quiet

    code = 0
    with open_segmenter(artifact, args.backend, args.model_size, device=args.device) as segmenter:
        if plan:
            done, skipped = segment_images(segmenter, plan, out, labels=want_labels, overlay=want_overlay,
                                           alpha=args.alpha, skip_bad=args.skip_bad, progress=progress,
                                           label_format=args.label_format, color=args.color,
                                           legend=not args.no_legend)
            label_kind = ("Cityscapes label-id PNGs" if args.label_format is LabelFormat.CITYSCAPES
                          else "label PNGs (palette: ids in class colours)" if args.color else "label PNGs")
            written = " and ".join(k for k, on in ((label_kind, want_labels), ("overlays", want_overlay)) if on)
            note = f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""
            note += f"; {RANDOM_WEIGHTS}" if segmenter.random_weights else ""  # said again where the run ends
            print(f"segmented {done} image(s): {written} under {out}{note}", file=sys.stderr)
        for source, target in sources:
            stats = segment_video(segmenter, source, target, alpha=args.alpha, show_fps=not args.no_fps,
                                  max_frames=args.max_frames, codec=args.codec, progress=progress)
            print(stats.summary() + (f"; {RANDOM_WEIGHTS}" if segmenter.random_weights else ""), file=sys.stderr)
            if stats.interrupted:
                code = 0 if isinstance(source, int) else 130  # Ctrl-C is how a camera recording ends
                break
    return code
