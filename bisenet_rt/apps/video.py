"""Pipelined video segmentation: decode, infer and encode on three threads joined by small bounded queues.

Decoding (cv2.VideoCapture) and encoding (overlay, FPS counter, cv2.VideoWriter) run beside
inference, so throughput approaches the Segmenter's own; the inference thread (the caller's) only
submits frames (`Segmenter.submit`, up to `depth` in flight) and hands their labels on in order. A stream that breaks off (truncated or corrupt file, unplugged
camera) ends like a normal one: the output is finalized with every frame written so far.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..artifacts import artifact_files
from ..atomic import Replacement, disk_full, no_room
from ..errors import DiskFullError, InputError, OutputError
from ..outputs import check_outputs
from .viz import overlay

if TYPE_CHECKING:
    from ..segmenter import Segmenter

__all__ = ["VideoStats", "segment_video", "open_capture", "is_video", "VIDEO_SUFFIXES", "DEFAULT_CODEC"]

#: File suffixes treated as videos.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
#: FourCC of the encoder; MPEG-4 part 2 ships with every OpenCV wheel.
DEFAULT_CODEC = "mp4v"
_FALLBACK_FPS = 30.0
_POLL_S = 0.1  # how often blocked queue operations look at the stop flag
#: The drawn counter shows "--" for this long after the first frame: the frames queued during start-up come out
#: in a burst, and a rate over them alone would be far above what the pipeline sustains.
_RATE_SETTLE_S = 1.0
_READER_JOIN_S = 5.0  # how long to wait for a capture blocked in read() when stopping
_END = object()


@dataclasses.dataclass(frozen=True)
class VideoStats:
    """What one run did: frames read and written, wall time, and how the stream ended.

    Two rates, each named for what it measures: `pipeline_fps`, frames written per second once the first
    one was out (what the counter drawn on the video and the progress bar show), and `fps`, frames written
    per second of the whole run, opening the input and the first inference included.
    """

    source: str
    output: Path
    frames_read: int
    frames: int  # written to the output
    seconds: float
    expected: int | None  # frame count the container announced; None for cameras and unknown counts
    ended_early: bool  # the input broke off (truncated, corrupt, camera lost) before its end
    interrupted: bool  # stopped with Ctrl-C; the output is still finalized
    pipeline_fps: float | None = None  # frames written per second after the first; None for fewer than 2 frames

    @property
    def fps(self) -> float:
        """Frames written per second of the whole run: opening, the first inference, decode and encode included."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people: counts, both rates (each named for what it measures) and how the stream ended."""
        how = "interrupted" if self.interrupted else ("input ended early" if self.ended_early else "complete")
        of = f"/{self.expected}" if self.expected is not None else ""
        pipeline = (f"pipeline {self.pipeline_fps:.2f} frames/s after the first frame (the counter on the video), "
                    if self.pipeline_fps is not None else "")
        return (f"{self.source}: read {self.frames_read}{of} frames, wrote {self.frames} to {self.output} "
                f"in {self.seconds:.1f} s ({pipeline}{self.fps:.2f} frames/s including start-up; {how})")


def is_video(path: str | os.PathLike) -> bool:
    """Whether the suffix is one of VIDEO_SUFFIXES."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_capture(source: str | int | os.PathLike) -> Any:
    """Open a video file or a camera index with OpenCV; raise InputError saying what to check."""
    import cv2

    if isinstance(source, int):
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise InputError(f"camera {source} cannot be opened: check it is connected, not held by another program, "
                             f"and readable by this user (/dev/video{source} on Linux)")
        return cap
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: no such video file; check the path")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: cannot be opened as a video; check the container and codec are ones FFmpeg reads "
                         "(mp4/avi/mov/mkv with H.264, MPEG-4, MJPEG...), and that the file is complete (an .mp4 cut "
                         "short loses its index and cannot be read at all; re-encode it with ffmpeg)")
    return cap


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put into a bounded queue without blocking forever: False once `stop` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """Take from a queue without blocking forever: _END once `stop` is set."""
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _END


@dataclasses.dataclass
class _Shared:
    """What the threads report to the caller (each field written by one thread)."""

    fps: float = _FALLBACK_FPS
    expected: int | None = None
    open_error: BaseException | None = None
    read: int = 0
    read_error: str | None = None
    written: int = 0
    write_error: BaseException | None = None
    end_time: float = 0.0


def _reader(source: str | int | os.PathLike, frames: queue.Queue, stop: threading.Event, opened: threading.Event,
            shared: _Shared, max_frames: int | None) -> None:
    """Open the capture, feed its frames, release it: the capture lives on this thread only, so a
    camera stalled in read() never blocks the caller."""
    import cv2

    try:
        cap = open_capture(source)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and np.isfinite(fps) and 0 < fps <= 1000:
            shared.fps = float(fps)
        shared.expected = None if isinstance(source, int) else _frame_count(cap)
    except BaseException as exc:  # handed to the caller, which raises it
        shared.open_error = exc
        return
    finally:
        opened.set()
    try:
        while not stop.is_set() and (max_frames is None or shared.read < max_frames):
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if not _put(frames, frame, stop):
                break
            shared.read += 1
    except cv2.error as exc:  # a decoder failure mid-stream ends the stream, like a truncated file
        shared.read_error = str(exc).strip().splitlines()[-1]
    finally:
        _put(frames, _END, stop)
        cap.release()


class _Encoder:
    """Overlay, FPS counter and cv2.VideoWriter, opened at the first frame (its size decides the writer's)."""

    def __init__(self, output: Path, *, fps: float, codec: str, palette: np.ndarray, alpha: float,
                 show_fps: bool) -> None:
        self.output, self.fps, self.codec = output, fps, codec
        self.palette, self.alpha, self.show_fps = palette, alpha, show_fps
        self.writer: Any = None
        self.partial: Replacement | None = None  # the video is written to its temporary file, renamed over -o at the end
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.seen = 0  # frames that reached the encoder (`frames`: those written)
        self.first_at: float | None = None  # perf_counter when the first frame reached the encoder
        self.last_at: float | None = None   # ... and the latest

    def rate(self) -> float | None:
        """The pipeline's rate: frames after the first per second since the first (None before a second frame)."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return None
        return (self.seen - 1) / (self.last_at - self.first_at)

    def _open(self, frame: np.ndarray) -> None:
        import cv2

        self.size = (frame.shape[1], frame.shape[0])
        try:
            self.partial = Replacement(self.output)
        except DiskFullError:
            raise
        except OSError as exc:
            raise InputError(f"{self.output}: cannot create its folder ({exc.strerror}); choose another -o path") from None
        self.writer = cv2.VideoWriter(str(self.partial.tmp), cv2.VideoWriter.fourcc(*self.codec), self.fps, self.size)
        if not self.writer.isOpened():
            self.writer = None
            raise InputError(f"{self.output}: cannot be written with the {self.codec!r} codec; check the folder is "
                             f"writable and the suffix is one of {', '.join(VIDEO_SUFFIXES)}")

    def write(self, frame: np.ndarray, labels: np.ndarray) -> None:
        import cv2

        self.last_at = time.perf_counter()
        self.seen += 1  # this one included: the rate drawn on it counts it
        if self.first_at is None:
            self.first_at = self.last_at
        if self.writer is None:
            self._open(frame)
        if no_room(self.output.parent):  # the encoder would go on silently, leaving a video nothing can play
            raise disk_full(self.output)
        image = overlay(frame, labels, self.palette, alpha=self.alpha)
        if self.show_fps:
            self._draw_rate(image)
        if (image.shape[1], image.shape[0]) != self.size:  # a stream that changes size mid-way
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def settled_rate(self) -> float | None:
        """`rate()` once _RATE_SETTLE_S have passed since the first frame (the start-up burst is no rate)."""
        assert self.first_at is not None and self.last_at is not None  # set by write() before it draws
        return self.rate() if self.last_at - self.first_at >= _RATE_SETTLE_S else None

    def _draw_rate(self, image: np.ndarray) -> None:
        """Draw the pipeline's rate (`rate()`, the summary's 'pipeline' number) in the top-left corner."""
        import cv2

        rate = self.settled_rate()
        text = f"{rate:.1f} FPS" if rate is not None else "-- FPS"
        scale = max(0.4, image.shape[0] / 720.0)
        org = (int(10 * scale), int(30 * scale))
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, int(4 * scale)), cv2.LINE_AA)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(1.5 * scale)),
                    cv2.LINE_AA)

    def close(self, keep: bool) -> None:
        """Finalize the container; with `keep`, check it and rename it over the output path; otherwise, or when
        the check fails, remove it (the old file stays)."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        partial, self.partial = self.partial, None
        if partial is None:
            return
        try:
            if keep:
                with partial.translated():
                    _check_video(partial.tmp, self.frames, self.output)
                partial.commit()
        finally:
            partial.discard()


def _check_video(path: Path, frames: int, output: Path) -> None:
    """Re-open a finished video: it must open (an .mp4 cut short has no index), hold `frames` frames, and
    its last frame must be found and decoded."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        count = _frame_count(cap) if cap.isOpened() else None
        if count is not None and count != frames:
            problem = f"it holds {count} frames instead of {frames}"
        elif not cap.isOpened():
            problem = "it cannot be opened again (no index: the container was not finalized)"
        else:
            cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
            if cap.read()[0]:
                return
            problem = f"its last frame ({frames}) cannot be found and decoded"
    finally:
        cap.release()
    raise OutputError(f"{output}: the finished video failed its check ({problem}); nothing was replaced. Check the "
                      "free space and the codec (--codec), and run again")


def _writer(encoder: _Encoder, results: queue.Queue, stop: threading.Event, shared: _Shared, bar: Any) -> None:
    try:
        while True:
            item = _get(results, stop)
            if item is _END:
                break
            encoder.write(*item)
            shared.written += 1
            rate = encoder.settled_rate()
            if rate is not None:
                bar.set_postfix_str(f"pipeline {rate:.1f} FPS", refresh=False)
            bar.update(1)
    except BaseException as exc:  # handed to the caller, which re-raises it after shutting down
        shared.write_error = exc
        stop.set()
    finally:
        shared.end_time = time.perf_counter()


def _frame_count(cap: Any) -> int | None:
    import cv2

    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if count and count > 0 and np.isfinite(count) else None


def _infer_in_order(segmenter: "Segmenter", frames: queue.Queue, results: queue.Queue, stop: threading.Event) -> bool:
    """Submit decoded frames with up to `segmenter.depth` in flight; hand (frame, labels) on in order.

    False when stopped before the last frame went out.
    """
    in_flight: collections.deque = collections.deque()
    ended = False
    while not ended or in_flight:
        frame = _END if ended else _get(frames, stop)
        if frame is _END:
            if stop.is_set():
                return False
            ended = True
        else:
            assert isinstance(frame, np.ndarray)  # the reader queues frames and the _END marker only
            in_flight.append((frame, segmenter.submit(frame, copy=False)))  # a decoded frame is new and never changed
        if in_flight and (ended or len(in_flight) >= segmenter.depth):
            done_frame, pending = in_flight.popleft()
            if not _put(results, (done_frame, pending.result()), stop):
                return False
    return True


def segment_video(segmenter: "Segmenter", source: str | int | os.PathLike, output: str | os.PathLike, *,
                  alpha: float = 0.5, show_fps: bool = True, max_frames: int | None = None,
                  codec: str = DEFAULT_CODEC, queue_size: int = 4, progress: bool = True) -> VideoStats:
    """Segment a video file (path) or camera (int index) into a video of class-colour overlays.

    Decode, inference and encode overlap (queues of `queue_size` frames). A stream that breaks off
    ends the run cleanly with everything written so far kept (`ended_early` says so); Ctrl-C does
    the same (`interrupted`). Raises InputError when the input cannot be opened or decoded at all,
    or the output cannot be written.
    """
    from tqdm import tqdm

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")
    if queue_size < 1:
        raise InputError(f"queue_size must be at least 1, got {queue_size}")
    if len(codec) != 4:
        raise InputError(f"codec must be a four-character code such as 'mp4v' or 'MJPG', got {codec!r}")
    output = Path(output)
    camera = isinstance(source, int)
    name = f"camera {source}" if camera else str(source)
    inputs = [] if isinstance(source, int) else [(Path(source), "the input video")]
    check_outputs([(output, f"the overlay video of {name}")],
                  [*inputs, *((part, "the artifact being run") for part in artifact_files(segmenter.path))])
    frames: queue.Queue = queue.Queue(maxsize=queue_size)
    results: queue.Queue = queue.Queue(maxsize=queue_size)
    stop, opened = threading.Event(), threading.Event()
    shared = _Shared()
    started = time.perf_counter()
    reader = threading.Thread(target=_reader, args=(source, frames, stop, opened, shared, max_frames),
                              name="bisenet-decode", daemon=True)
    reader.start()
    opened.wait()
    if shared.open_error is not None:
        reader.join()
        raise shared.open_error
    expected = shared.expected
    total = min(expected, max_frames) if expected is not None and max_frames else (expected or max_frames)
    encoder = _Encoder(output, fps=shared.fps, codec=codec, palette=segmenter.palette, alpha=alpha, show_fps=show_fps)
    # The bar shows the counter's rate (`_Encoder.rate`, as the video and the summary), not tqdm's own average.
    bar_format = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} frames [{elapsed}<{remaining}{postfix}]"
                  if total else "{desc}: {n_fmt} frames [{elapsed}{postfix}]")
    bar = tqdm(total=total, unit="frame", desc=Path(name).name if not camera else name, disable=not progress,
               dynamic_ncols=True, leave=True, bar_format=bar_format)
    writer = threading.Thread(target=_writer, args=(encoder, results, stop, shared, bar), name="bisenet-encode",
                              daemon=True)
    interrupted = drained = False
    writer.start()
    try:
        drained = _infer_in_order(segmenter, frames, results, stop) and _put(results, _END, stop)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if not drained:  # an error or Ctrl-C: tell both threads to stop instead of draining the queues
            stop.set()
        writer.join()  # the writer must finish before the file is finalized
        stop.set()  # the reader may still wait on a full queue
        reader.join(timeout=_READER_JOIN_S)  # a capture blocked in read() (a stalled camera) is left to its daemon
        # the frames written so far become a complete (shorter) video, also after Ctrl-C, SIGTERM or an inference
        # error; only then does it replace the output path: an encoder failure or no frame keeps the old file
        bar.close()
        encoder.close(keep=shared.write_error is None and shared.written > 0)
    if shared.write_error is not None:
        raise shared.write_error
    if shared.read == 0 and not interrupted:
        raise InputError(f"{name}: opened, but no frame could be decoded; check the codec is one FFmpeg reads, "
                         "or that the file is not empty or corrupt")
    limited = max_frames is not None and shared.read >= max_frames
    ended_early = not interrupted and not limited and (
        shared.read_error is not None or camera or (expected is not None and shared.read < expected))
    seconds = (shared.end_time or time.perf_counter()) - started
    return VideoStats(source=name, output=output, frames_read=shared.read, frames=shared.written, seconds=seconds,
                      expected=expected, ended_early=ended_early, interrupted=interrupted, pipeline_fps=encoder.rate())
