"""Pipelined video segmentation on short generated clips: round trip, truncated and bad input, shutdown."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import street_frame

FRAMES, W, H = 12, 160, 96


def write_clip(path: Path, n: int = FRAMES, fourcc: str = "mp4v") -> list[np.ndarray]:
    """Write n distinct street-like frames with OpenCV; return the frames as written."""
    frames = [street_frame(H, W, seed=i) for i in range(n)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return frames


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_clip(path)
    return path


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory, confident_model) -> Path:
    """The pipeline graph at a 256x128 model size: the same code path, a sixteenth of the work per frame."""
    from bisenet_rt.graph.export import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("video_onnx") / "small.onnx"
    export_onnx(confident_model, path, ExportConfig(model_size=(256, 128)))
    return path


@pytest.fixture(scope="module")
def segmenter(small_onnx):
    from bisenet_rt import Segmenter

    with Segmenter(small_onnx) as seg:
        yield seg


def _no_pipeline_threads() -> bool:
    return not any(t.name.startswith("bisenet-") for t in threading.enumerate())


def test_round_trip_keeps_count_size_order_and_overlay(segmenter, clip, tmp_path):
    from bisenet_rt.apps.video import segment_video
    from bisenet_rt.apps.viz import overlay

    out = tmp_path / "out.mp4"
    stats = segment_video(segmenter, clip, out, show_fps=False, progress=False)
    assert (stats.frames_read, stats.frames, stats.expected) == (FRAMES, FRAMES, FRAMES)
    assert not stats.ended_early and not stats.interrupted
    assert stats.fps > 0 and stats.output == out
    written = read_all(out)
    assert len(written) == FRAMES
    assert all(f.shape == (H, W, 3) for f in written)
    # The output is what encoding the reference overlays of the decoded input, in order, gives.
    expected = [overlay(d, segmenter(d), segmenter.palette) for d in read_all(clip)]
    reference = tmp_path / "reference.mp4"
    writer = cv2.VideoWriter(str(reference), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for e in expected:
        writer.write(e)
    writer.release()
    for i, (got, want) in enumerate(zip(written, read_all(reference))):
        diff = float(np.abs(got.astype(np.int16) - want).mean())
        assert diff < 0.5, f"frame {i}: mean abs difference {diff:.2f} from the encoded reference overlay"
    # and differs from its neighbours by far more (so the order is checked too)
    assert float(np.abs(written[0].astype(np.int16) - written[1]).mean()) > 5.0
    assert _no_pipeline_threads()


def test_fps_counter_is_drawn(segmenter, clip, tmp_path):
    from bisenet_rt.apps.video import segment_video

    plain, counted = tmp_path / "plain.mp4", tmp_path / "fps.mp4"
    segment_video(segmenter, clip, plain, show_fps=False, max_frames=2, progress=False)
    stats = segment_video(segmenter, clip, counted, show_fps=True, max_frames=2, progress=False)
    assert stats.frames == 2 and not stats.ended_early  # stopping at max_frames is not an early end
    a, b = read_all(plain)[1].astype(np.int16), read_all(counted)[1].astype(np.int16)
    corner = np.abs(a[:20, :60] - b[:20, :60]).mean()
    rest = np.abs(a[40:, :] - b[40:, :]).mean()
    assert corner > 10 * max(rest, 0.5), (corner, rest)


def test_one_rate_per_meaning(segmenter, clip, tmp_path):
    """The counter drawn on the video, the progress bar and the summary's 'pipeline' number are one quantity
    (frames after the first per second since the first); the start-up-inclusive rate is named as such."""
    from bisenet_rt.apps.video import _Encoder, segment_video

    stats = segment_video(segmenter, clip, tmp_path / "o.mp4", progress=False)
    assert stats.pipeline_fps is not None and stats.frames == FRAMES
    assert (f"(pipeline {stats.pipeline_fps:.2f} frames/s after the first frame (the counter on the video), "
            f"{stats.fps:.2f} frames/s including start-up; complete)") in stats.summary()
    encoder = _Encoder(tmp_path / "unused.mp4", fps=10.0, codec="mp4v", palette=segmenter.palette, alpha=0.5,
                       show_fps=True)
    encoder.seen, encoder.first_at, encoder.last_at = 5, 100.0, 100.5  # 4 frames after the first in 0.5 s
    assert encoder.rate() == 8.0 and encoder.settled_rate() is None  # the start-up burst is shown as "--"
    encoder.seen, encoder.last_at = 13, 102.0
    assert encoder.rate() == encoder.settled_rate() == 6.0


def test_truncated_avi_ends_cleanly_keeping_frames(segmenter, tmp_path):
    from bisenet_rt.apps.video import segment_video

    full = tmp_path / "full.avi"
    write_clip(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut_out.avi"
    stats = segment_video(segmenter, cut, out, progress=False)
    assert stats.ended_early and not stats.interrupted
    assert stats.expected == FRAMES and 0 < stats.frames_read < FRAMES
    assert stats.frames == stats.frames_read
    kept = read_all(out)
    assert len(kept) == stats.frames and kept[0].shape == (H, W, 3)
    assert "ended early" in stats.summary()
    assert _no_pipeline_threads()


def test_truncated_mp4_is_a_clear_error(segmenter, clip, tmp_path):
    """An .mp4 keeps its index (moov atom) at the end: cut in half, nothing in it can be located."""
    from bisenet_rt.errors import InputError
    from bisenet_rt.apps.video import segment_video

    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mp4: cannot be opened as a video.*codec"):
        segment_video(segmenter, cut, tmp_path / "o.mp4", progress=False)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50])
def test_non_video_file_errors_clearly(segmenter, tmp_path, content):
    from bisenet_rt.errors import InputError
    from bisenet_rt.apps.video import segment_video

    bad = tmp_path / "notes.mp4"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="notes.mp4"):
        segment_video(segmenter, bad, tmp_path / "o.mp4", progress=False)
    with pytest.raises(InputError, match="no such video file"):
        segment_video(segmenter, tmp_path / "missing.mp4", tmp_path / "o.mp4", progress=False)


def test_unwritable_output_errors_and_stops_threads(segmenter, clip, tmp_path):
    from bisenet_rt.errors import InputError
    from bisenet_rt.apps.video import segment_video

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="cannot create its folder"):
        segment_video(segmenter, clip, tmp_path / "a_file" / "out.mp4", progress=False)
    with pytest.raises(InputError, match="overwrite the input"):
        segment_video(segmenter, clip, clip, progress=False)
    assert _no_pipeline_threads()


class _FailingAfter:
    """The real Segmenter, with a failure injected on call number `n` (to exercise shutdown paths)."""

    def __init__(self, segmenter, n: int, exc: BaseException) -> None:
        self.segmenter, self.n, self.exc, self.calls = segmenter, n, exc, 0
        self.palette = segmenter.palette

    @property
    def depth(self) -> int:
        return self.segmenter.depth

    @property
    def path(self):
        return self.segmenter.path

    def submit(self, frame, copy=True):
        self.calls += 1
        if self.calls == self.n:
            raise self.exc
        return self.segmenter.submit(frame, copy=copy)


def test_inference_error_shuts_down_and_keeps_output(segmenter, clip, tmp_path):
    from bisenet_rt.apps.video import segment_video

    out = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="injected"):
        segment_video(_FailingAfter(segmenter, 4, RuntimeError("injected")), clip, out, progress=False)
    assert _no_pipeline_threads()
    assert 1 <= len(read_all(out)) <= 3  # frames inferred before the failure, finalized and readable


def test_ctrl_c_finalizes_output(segmenter, clip, tmp_path):
    from bisenet_rt.apps.video import segment_video

    out = tmp_path / "stopped.mp4"
    stats = segment_video(_FailingAfter(segmenter, 4, KeyboardInterrupt()), clip, out, progress=False)
    assert stats.interrupted and not stats.ended_early
    assert stats.frames <= 3 and len(read_all(out)) == stats.frames
    assert _no_pipeline_threads()


def test_segment_command_on_a_video(small_onnx, clip, tmp_path, capsys):
    from bisenet_rt.cli import main

    out = tmp_path / "cli.mp4"
    rc = main(["segment", str(clip), "-o", str(out), "--engine", str(small_onnx), "--max-frames", "3",
               "--quiet"])
    assert rc == 0
    assert len(read_all(out)) == 3
    assert "read 3/12 frames, wrote 3" in capsys.readouterr().err
    # Two videos: OUT is a folder with one STEM.mp4 each; a video -o then is an error.
    second = tmp_path / "second.avi"
    write_clip(second, n=2)
    rc = main(["segment", str(clip), str(second), "-o", str(tmp_path / "many"), "--engine", str(small_onnx),
               "--max-frames", "2", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["clip.mp4", "second.mp4"]
    assert main(["segment", str(clip), str(second), "-o", str(tmp_path / "x.mp4"),
                 "--engine", str(small_onnx)]) == 1
    assert "names a video file" in capsys.readouterr().err


def test_missing_camera_errors_clearly(segmenter, tmp_path):
    from bisenet_rt.errors import InputError
    from bisenet_rt.apps.video import segment_video

    with pytest.raises(InputError, match="camera 99 cannot be opened"):
        segment_video(segmenter, 99, tmp_path / "cam.mp4", progress=False)
