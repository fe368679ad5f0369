"""Reliability under threads, faults and hostile files: shared Segmenters, bounded memory, files that appear
complete or not at all (also under kill -9 and SIGTERM), one clear line and exit 1 for every user error."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from bisenet_rt import Segmenter
from bisenet_rt.artifacts import newest_artifact, read_sidecar, sidecar_path
from bisenet_rt.atomic import replacing, write_atomic
from bisenet_rt.cli import main
from bisenet_rt.errors import ArtifactError, InputError
from conftest import REPO, street_frame

SMALL = (256, 128)
CLI = [sys.executable, "-m", "bisenet_rt"]


@pytest.fixture(scope="module")
def small(tmp_path_factory, confident_model):
    """A 256x128 pipeline graph and its ONNX Runtime build (with sidecar), and a short clip."""
    import cv2

    from bisenet_rt.graph.export import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("reliability")
    src = out / "small.onnx"
    export_onnx(confident_model, src, ExportConfig(model_size=SMALL))
    built = out / "built.onnx"
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(src), "-o", str(built)]) == 0
    clip = out / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (160, 96))
    for i in range(120):
        writer.write(street_frame(96, 160, seed=i))
    writer.release()
    return {"src": src, "built": built, "clip": clip, "dir": out}


# -- threads -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_two_threads_on_one_segmenter_get_the_single_threaded_labels(small, backend):
    frames = [street_frame(96 + 8 * (k % 3), 160, seed=k) for k in range(8)]
    with Segmenter(small["src"], backend=backend, **({"cache_dir": None} if backend == "openvino" else {})) as seg:
        expected = [seg(f) for f in frames]
        got: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def work(offset: int) -> None:
            try:
                for k in range(offset, len(frames), 2):
                    got[k] = seg(frames[k])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert all(np.array_equal(got[k], expected[k]) for k in range(len(frames)))


def _rss_mib() -> float:
    """This process's resident memory now (Linux /proc; the suite runs on Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_openvino_memory_stays_flat_across_frame_sizes(small):
    """RSS over 150 new frame sizes (after 30 to warm up) stays under a fixed bound.

    OpenVINO's CPU plugin keeps state per input shape; its per-shape cache is bounded (RUNTIME_CACHE).
    A leak of the kind reported (about 1 MiB for every new size) would exceed the bound many times over.
    """
    with Segmenter(small["src"], backend="openvino", cache_dir=None) as seg:
        sizes = [(64 + 2 * (i % 15), 96 + 4 * (i // 15)) for i in range(180)]
        for h, w in sizes[:30]:
            seg(np.zeros((h, w, 3), np.uint8))
        before = _rss_mib()
        for h, w in sizes[30:]:
            seg(np.zeros((h, w, 3), np.uint8))
        grown_mib = _rss_mib() - before
    assert grown_mib < 12, f"RSS grew {grown_mib:.1f} MiB over 150 frame sizes"


# -- files appear complete or not at all ----------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with replacing(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_temporaries_of_killed_writers_are_cleaned_and_never_picked(tmp_path, small):
    shutil.copy(small["built"], tmp_path / "a.onnx")
    stale = tmp_path / ".a.onnx.tmp999999999.onnx"  # a writer that died (no such process)
    stale.write_bytes(b"partial")
    assert newest_artifact(tmp_path) == tmp_path / "a.onnx"
    write_atomic(tmp_path / "a.onnx", (tmp_path / "a.onnx").read_bytes())
    assert not stale.exists()


def test_an_artifact_that_does_not_match_its_sidecar_is_refused(small, tmp_path):
    """A build cut off between the artifact and its sidecar: new artifact, old sidecar."""
    art = tmp_path / "m.onnx"
    shutil.copy(small["built"], art)
    shutil.copy(sidecar_path(small["built"]), sidecar_path(art))
    with Segmenter(art):
        pass
    art.write_bytes(small["src"].read_bytes())  # another graph under the old sidecar
    with pytest.raises(ArtifactError, match="does not match its metadata file"):
        Segmenter(art)


def test_ir_pair_cut_in_two_is_refused(small, tmp_path):
    out = tmp_path / "ir"
    assert main(["build", "--backend", "openvino", "--precision", "fp32", "--onnx", str(small["src"]),
                 "-o", str(out / "m.xml")]) == 0
    assert read_sidecar(out / "m.xml")["artifact_sha256"]
    bin_path = out / "m.bin"
    data = bytearray(bin_path.read_bytes())
    data[-1] ^= 0xFF  # the weights of another build
    bin_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its metadata file"):
        Segmenter(out / "m.xml", cache_dir=None)


def _start_and_wait(cmd: list[str], ready, timeout: float = 90.0) -> subprocess.Popen:
    """Start `cmd`; return once `ready()` holds or the command has ended (polling every few ms)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return proc


def _writing(folder: Path, name: str, min_bytes: int = 0):
    """Whether a temporary file of a write to folder/name exists (with at least `min_bytes` in it)."""
    def check() -> bool:
        for p in folder.iterdir():
            try:
                if p.name.startswith(f".{name}.tmp") and p.stat().st_size >= min_bytes:
                    return True
            except FileNotFoundError:  # renamed between listing and stat
                pass
        return False
    return check


def test_kill_9_during_export_leaves_the_old_or_the_new_file_whole(small, tmp_path):
    target = tmp_path / "model.onnx"
    shutil.copy(small["src"], target)
    old = target.read_bytes()
    proc = _start_and_wait([*CLI, "export", "--model-size", "512x256", "-o", str(target)], _writing(tmp_path, target.name))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if target.read_bytes() != old:  # the kill came after the rename: then the new export is complete
        assert dict((p.key, p.value) for p in onnx.load(str(target)).metadata_props)["bisenet_rt.model_size"] == "512x256"
    onnx.checker.check_model(onnx.load(str(target)))
    assert main(["export", "--model-size", "256x128", "-o", str(target)]) == 0  # a new write clears any leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_sigterm_during_video_segmentation_finalizes_a_complete_video(small, tmp_path):
    import cv2

    out = tmp_path / "out.avi"
    shutil.copy(small["clip"], out)  # an earlier result at that path: replaced only by a complete file
    cmd = [*CLI, "segment", str(small["clip"]), "-o", str(out), "--engine", str(small["built"]), "--codec", "MJPG",
           "--quiet"]
    proc = _start_and_wait(cmd, _writing(tmp_path, out.name, min_bytes=20000))
    assert proc.poll() is None, "the clip was done before the signal; make it longer"
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    assert code in (130, 143), proc.stderr.read().decode()[-2000:]
    cap = cv2.VideoCapture(str(out))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert 1 <= count < 120  # a finalized, readable video of the frames done before the signal
    assert [p.name for p in tmp_path.iterdir()] == ["out.avi"]


# -- one line and exit 1 for what the user got wrong ------------------------------------------------------
def _one_error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("bisenet-rt")]
    assert len(lines) == 1, lines
    return lines[0]


def test_unwritable_report_paths_are_refused_before_the_work(small, tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for argv, match in ((["bench", "--engine", str(small["built"]), "--json", str(folder)], "is a folder"),
                        (["bench", "--engine", str(small["built"]), "--json", str(a_file / "r.json")], "is a file"),
                        (["export", "-o", str(folder)], "is a folder"),
                        (["segment", str(small["clip"]), "-o", str(a_file / "x.avi"), "--engine", str(small["built"])],
                         "is a file")):
        started = time.perf_counter()
        assert main(argv) == 1
        assert match in _one_error_line(capsys)
        assert time.perf_counter() - started < 30  # refused up front, not after a benchmark


def test_read_only_folder_is_refused(small, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the permission check cannot be seen as root")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["bench", "--engine", str(small["built"]), "--json", str(folder / "r.json")]) == 1
        assert "not writable" in _one_error_line(capsys)
    finally:
        folder.chmod(0o700)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from bisenet_rt.data.synth import write_dataset

    root = tmp_path_factory.mktemp("tiny_synth")
    write_dataset(root, n=4, size=(64, 32), val_fraction=0.25)
    return root


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n", bytes(range(256)) * 8])
def test_corrupt_training_state_is_one_line(tiny_data, tmp_path, capsys, content):
    state = tmp_path / "train_state.pt"
    state.write_bytes(content)
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--resume", str(state),
                 "--iters", "2", "--workers", "0"]) == 1
    assert "cannot read the training state" in _one_error_line(capsys)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update({"data": {k: {"lowest": "x"} for k in d["data"]}}), "unreadable"),
    (lambda d: next(iter(d["data"].values()))["lowest"].update({"data": [float("nan")]}), "finite"),
    (lambda d: next(iter(d["data"].values()))["highest"].update({"data": [1e30]}), "beyond"),
])
def test_corrupt_calibration_cache_is_refused(small, tmp_path, edit, match):
    from bisenet_rt.errors import BuildError
    from bisenet_rt.graph.calibration import load_ranges as _load_ranges
    from bisenet_rt.graph.qdq import quantize_plain
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from conftest import make_confident_model

    plain = export_onnx(make_confident_model(), None, ExportConfig(model_size=SMALL, plain=True))
    cache = tmp_path / "ranges.json"
    quantize_plain(plain, [street_frame(128, 256, seed=1)], cache_path=cache, method="minmax", progress=False)
    data = json.loads(cache.read_text())
    edit(data)
    cache.write_text(json.dumps(data))
    with pytest.raises(BuildError, match=match):
        _load_ranges(cache, "minmax")


def test_outputs_are_checked_at_load(small, tmp_path):
    """A graph whose output is not a label map (here: uint8 frames out) is refused, not run."""
    from onnx import TensorProto, helper

    proto = onnx.load(str(small["src"]))
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["labels"], name="identity")], "echo",
                              [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", "H", "W", 3])],
                              [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W", 3])])
    echo = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    echo.metadata_props.extend(proto.metadata_props)
    onnx.save(echo, str(tmp_path / "echo.onnx"))
    with pytest.raises(ArtifactError, match="not the pipeline's one uint8 N x H x W label map"):
        Segmenter(tmp_path / "echo.onnx")


def test_sidecar_whose_classes_disagree_with_the_graph_is_refused(small, tmp_path):
    art = tmp_path / "m.onnx"
    shutil.copy(small["built"], art)
    sidecar = json.loads(sidecar_path(small["built"]).read_text())
    sidecar["info"]["classes"] = ["road", "sky", "car"]
    sidecar_path(art).write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="names other classes than the graph"):
        Segmenter(art)


def test_frame_size_limit(small, monkeypatch):
    from bisenet_rt.settings import MAX_FRAME_ENV

    with Segmenter(small["built"]) as seg:
        monkeypatch.setenv(MAX_FRAME_ENV, "320x200")
        assert seg(street_frame(200, 320, seed=0)).shape == (200, 320)
        with pytest.raises(InputError, match=f"321x200, larger than the frame-size limit 320x200.*{MAX_FRAME_ENV}"):
            seg(np.zeros((200, 321, 3), np.uint8))


def test_segmenting_a_folder_into_a_subfolder_twice_does_not_take_its_own_outputs(small, tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"f{i}.png"), street_frame(96, 160, seed=i))
    for _ in range(2):
        assert main(["segment", str(images), "-o", str(images / "out"), "--engine", str(small["built"]),
                     "--labels", "--quiet"]) == 0
    assert sorted(p.name for p in (images / "out").iterdir()) == ["f0_labels.png", "f1_labels.png"]


def test_nan_learning_rate_is_refused_up_front(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--lr", "nan", "--iters", "2"]) == 1
    assert "lr must be a finite number" in _one_error_line(capsys)


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "bench", "--engine", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "missing.onnx" in err


# -- nothing a user owns is overwritten or lost (issue 23: one test per row of its table, then the mechanisms) ----------
_PEAK_CLI = """import json, sys
from bisenet_rt.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"code": code, "peak_mib": int(hwm) / 1024}))
"""
#: A CLI process that refuses its input up front stays near its import footprint (torch, ONNX Runtime: ~500 MiB);
#: the refused work of the rows below would take 5 GB and more.
_REFUSED_PEAK_MIB = 1024


def _cli_in_a_process(args: list[str]) -> tuple[int, float, str]:
    """Run the CLI in a fresh process: (exit code, its peak resident memory in MiB, stderr).

    The peak is the process's own (VmHWM, Linux /proc): getrusage's ru_maxrss would start from the forking
    test process's.
    """
    proc = subprocess.run([sys.executable, "-c", _PEAK_CLI, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(result["code"]), float(result["peak_mib"]), proc.stderr


def _mount_tmpfs(folder: Path, size: int, options: str = "") -> str | None:
    """Mount a tmpfs of `size` bytes at `folder`; None when mounted, else why it cannot be (then the test skips)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return "no mount command on this machine"
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"mount cannot run here ({exc})"
    return None if proc.returncode == 0 else f"a tmpfs cannot be mounted here ({proc.stderr.strip() or proc.returncode})"


@pytest.fixture
def small_disk(tmp_path):
    """A folder on its own small file system (tmpfs; the test skips with the reason where mounting is not allowed)."""
    folder = tmp_path / "small_disk"

    def mount(size: int, options: str = "") -> Path:
        why = _mount_tmpfs(folder, size, options)
        if why is not None:
            pytest.skip(why)
        return folder

    yield mount
    if os.path.ismount(folder):
        subprocess.run(["umount", str(folder)], check=True, timeout=30)


def _video_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
    finally:
        cap.release()


def _segment_video_argv(small, out: Path) -> list[str]:
    return ["segment", str(small["clip"]), "-o", str(out), "--engine", str(small["built"]), "--quiet", "--no-fps"]


def test_row_video_on_a_full_disk_keeps_the_good_video(small, small_disk, capsys):
    """`segment v.mp4 -o full/out.mp4` on a nearly full disk, over a good out.mp4: was exit 0 with an unplayable file."""
    good = small["dir"] / "good.mp4"
    assert main(_segment_video_argv(small, good) + ["--max-frames", "10"]) == 0
    disk = small_disk(good.stat().st_size + 64 * 1024)  # room for the good video and a few frames more
    out = disk / "out.mp4"
    shutil.copy(good, out)
    capsys.readouterr()
    assert main(_segment_video_argv(small, out)) == 1
    assert _one_error_line(capsys).endswith(f"error: disk full: {out} (nothing was replaced; free some space and "
                                             "run again)")
    assert out.read_bytes() == good.read_bytes() and _video_frames(out) == 10
    assert [p.name for p in disk.iterdir()] == ["out.mp4"]  # no temporary file left


def test_row_video_on_a_full_disk_simulated(small, tmp_path, monkeypatch, capsys):
    """The same row where no tmpfs can be mounted: the file system reports no room after the fifth frame."""
    import bisenet_rt.atomic
    import bisenet_rt.apps.video

    out = tmp_path / "out.mp4"
    assert main(_segment_video_argv(small, out) + ["--max-frames", "10"]) == 0
    good = out.read_bytes()
    written = {"frames": 0}
    room = bisenet_rt.atomic.no_room

    def filling(folder: Path) -> bool:
        written["frames"] += 1
        return written["frames"] > 5 or room(folder)

    monkeypatch.setattr(bisenet_rt.apps.video, "no_room", filling)
    monkeypatch.setattr(bisenet_rt.atomic, "no_room", lambda folder: written["frames"] > 5)
    capsys.readouterr()
    assert main(_segment_video_argv(small, out)) == 1
    assert f"error: disk full: {out}" in _one_error_line(capsys)
    assert out.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_finished_video_that_fails_its_check_replaces_nothing(small, tmp_path, monkeypatch, capsys):
    """An encoder whose writes fall short without an error (the moov index never written) is caught before the rename."""
    import cv2

    out = tmp_path / "out.mp4"
    assert main(_segment_video_argv(small, out) + ["--max-frames", "10"]) == 0
    good = out.read_bytes()
    real = cv2.VideoWriter

    class ShortWriter:  # the real encoder; its file loses its tail, as on a disk that filled up
        def __init__(self, path, *args):
            self.path, self.writer = path, real(path, *args)

        def isOpened(self):
            return self.writer.isOpened()

        def write(self, image):
            self.writer.write(image)

        def release(self):
            self.writer.release()
            data = Path(self.path).read_bytes()
            Path(self.path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(cv2, "VideoWriter", ShortWriter)
    monkeypatch.setattr(cv2.VideoWriter, "fourcc", real.fourcc, raising=False)
    capsys.readouterr()
    assert main(_segment_video_argv(small, out) + ["--max-frames", "20"]) == 1
    assert "the finished video failed its check" in _one_error_line(capsys)
    assert out.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_row_cityscapes_labels_never_replace_the_input_image(small, tmp_path, capsys):
    """`segment city/X_leftImg8bit.png -o city --label-format cityscapes`: was the input replaced by its labels."""
    import cv2

    city = tmp_path / "city"
    city.mkdir()
    image = city / "frankfurt_000000_000294_leftImg8bit.png"
    cv2.imwrite(str(image), street_frame(96, 160, seed=1))
    before = image.read_bytes()
    assert main(["segment", str(image), "-o", str(city), "--label-format", "cityscapes", "--engine",
                 str(small["built"]), "--quiet"]) == 1
    line = _one_error_line(capsys)
    assert f"the label PNG of {image} would overwrite an input image, {image}" in line
    assert image.read_bytes() == before and sorted(p.name for p in city.iterdir()) == [image.name]


def test_row_an_input_named_like_another_inputs_labels_is_kept(small, tmp_path, capsys):
    """Inputs a.png and a_labels.png, -o their own folder: was a_labels.png overwritten, then segmented."""
    import cv2

    for name, seed in (("a.png", 1), ("a_labels.png", 2)):
        cv2.imwrite(str(tmp_path / name), street_frame(96, 160, seed=seed))
    before = (tmp_path / "a_labels.png").read_bytes()
    assert main(["segment", str(tmp_path / "a.png"), str(tmp_path / "a_labels.png"), "-o", str(tmp_path),
                 "--engine", str(small["built"]), "--labels", "--quiet"]) == 1
    assert "would overwrite an input image" in _one_error_line(capsys)
    assert (tmp_path / "a_labels.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_labels.png"]


_TRAIN = ["--iters", "1", "--batch", "2", "--crop", "64x32", "--eval-size", "64x32", "--workers", "0",
          "--device", "cpu", "--lr", "1e-3", "--warmup", "0"]


def test_row_train_into_an_earlier_run_is_refused_unless_resumed_or_forced(tiny_data, tmp_path, capsys):
    """`train --data D --out runs/a` where runs/a holds a run, no --resume: was model.pth and train_state.pt replaced."""
    run = tmp_path / "runs" / "a"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *_TRAIN]) == 0
    earlier = {name: (run / name).read_bytes() for name in ("model.pth", "train_state.pt")}
    capsys.readouterr()
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *_TRAIN]) == 1
    line = _one_error_line(capsys)
    assert f"--out {run}: {run} holds an earlier run" in line and "--resume" in line and "--force" in line
    assert {name: (run / name).read_bytes() for name in earlier} == earlier
    other = tmp_path / "runs" / "b"  # resuming another run into this one is refused too
    assert main(["train", "--data", str(tiny_data), "--out", str(other), *_TRAIN, "--iters", "2", "--stop-at", "1"]) == 0
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *_TRAIN, "--iters", "2",
                 "--resume", str(other)]) == 1
    line = _one_error_line(capsys)  # a resumed run goes on in its own folder only
    assert f"--out {run}: a resumed run goes on in its own folder, {other}" in line
    assert {name: (run / name).read_bytes() for name in earlier} == earlier
    assert main(["train", "--data", str(tiny_data), "--out", str(other), *_TRAIN, "--iters", "2",
                 "--resume", str(other)]) == 0  # continuing the run in its own folder
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *_TRAIN, "--force", "--seed", "1"]) == 0
    assert (run / "model.pth").read_bytes() != earlier["model.pth"]


def test_train_never_writes_over_its_weights(tiny_data, tmp_path, capsys):
    from bisenet_rt.model import save_checkpoint
    from conftest import make_confident_model

    weights = save_checkpoint(make_confident_model(), tmp_path / "start.pth")
    before = weights.read_bytes()
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *_TRAIN, "--weights", str(weights),
                 "--export-demo", str(weights)]) == 1
    assert "the --export-demo model would overwrite the --weights checkpoint" in _one_error_line(capsys)
    assert weights.read_bytes() == before and not (tmp_path / "run").exists()


def test_row_planted_links_at_temporary_names_are_never_followed(small, tmp_path, monkeypatch, capsys):
    """Links planted at the temporary names of a shared output folder: was the link's target overwritten."""
    import secrets

    import cv2

    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), street_frame(96, 160, seed=1))
    tokens = iter(["0123456789ab"])
    real_token = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens, None) or real_token(n))
    planted = [shared / f".a_labels.png.tmp{os.getpid()}.png",  # the name earlier releases used
               shared / f".a_labels.png.tmp{os.getpid()}-0123456789ab.png"]  # the first name this run draws
    for link in planted:
        link.symlink_to(victim)
    assert main(["segment", str(image), "-o", str(shared), "--engine", str(small["built"]), "--labels", "--quiet"]) == 0
    assert victim.read_text() == "another user's file\n"
    assert all(link.is_symlink() and link.resolve() == victim for link in planted)
    assert cv2.imread(str(shared / "a_labels.png"), cv2.IMREAD_UNCHANGED).shape == (96, 160)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_row_a_reused_frame_buffer_is_copied_at_submission(small, backend):
    """`p = seg.submit(f); f[:] = 0; p.result()`: was the labels of the changed frame (ORT 2 %, OpenVINO 53 %)."""
    frame = street_frame(512, 1024, seed=3)
    options = {"cache_dir": None} if backend == "openvino" else {}
    with Segmenter(small["src"], backend=backend, **options) as seg:
        expected = seg(frame.copy())
        for _ in range(3):
            buffer = frame.copy()
            pending = seg.submit(buffer)
            buffer[:] = 0
            np.testing.assert_array_equal(pending.result(), expected)


def test_row_export_of_a_huge_model_size_is_refused_before_memory_is_spent(tmp_path):
    """`export --model-size 32000x32000`: was killed by the OOM killer at 22 GB."""
    code, peak_mib, err = _cli_in_a_process(["export", "--model-size", "32000x32000", "-o", str(tmp_path / "m.onnx")])
    assert code != 0 and "model size 32000x32000 is larger than the frame-size limit 8192x8192" in err
    assert "frames are resized to the model size" in err  # the reason
    assert peak_mib < _REFUSED_PEAK_MIB, f"peak {peak_mib:.0f} MiB"
    assert not (tmp_path / "m.onnx").exists()


def _huge_png(path: Path, width: int, height: int) -> Path:
    """A valid greyscale PNG of width x height black pixels, compressed to a few MB (written row by row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(1), b"\x00" * (width + 1)  # filter byte + grey pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_row_an_image_header_beyond_the_frame_limit_is_refused_before_decoding(small, tmp_path):
    """A few-MB PNG whose header says 30000x30000: was decoded whole (5.4 GB, 16 s) before the 8192 limit."""
    png = _huge_png(tmp_path / "huge.png", 30000, 30000)
    assert png.stat().st_size < 8 << 20
    code, peak_mib, err = _cli_in_a_process(["segment", str(png), "-o", str(tmp_path / "out"), "--engine",
                                             str(small["built"]), "--quiet"])
    assert code == 1
    assert "its PNG header says 30000x30000, larger than the frame-size limit 8192x8192" in err
    assert peak_mib < _REFUSED_PEAK_MIB, f"peak {peak_mib:.0f} MiB"


def test_row_concurrent_builds_of_one_output_all_succeed(small, tmp_path, monkeypatch):
    """3 concurrent `build --backend onnxruntime -o x.onnx`: one failed on the shared temporary name `.x.onnx.opt`.

    The builds run on threads that all wait, once ONNX Runtime has written its optimized model, until every
    one has (a barrier around the real optimizer), so they always overlap where they used to collide.
    """
    import onnxruntime

    from bisenet_rt.builder import BuildConfig, build

    builders = 3
    optimized = threading.Barrier(builders, timeout=120)
    real_session = onnxruntime.InferenceSession

    def session_then_wait(*args, **kwargs):
        session = real_session(*args, **kwargs)
        optimized.wait()
        return session

    monkeypatch.setattr(onnxruntime, "InferenceSession", session_then_wait)
    out = tmp_path / "x.onnx"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            build(BuildConfig(backend="onnxruntime", precision="fp32", onnx=small["src"], output=out))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(builders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    monkeypatch.undo()
    assert not errors, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx", "x.onnx.json"]
    with Segmenter(out) as seg:
        assert seg(street_frame(96, 160, seed=0)).shape == (96, 160)


def test_row_an_optimizer_on_a_full_disk_leaves_no_temporary(small, small_disk, capsys):
    """...and on a full disk that build's temporary stayed behind and broke the next build with a protobuf error."""
    disk = small_disk(1 << 20)  # smaller than the optimized model (about 3 MB at this size)
    out = disk / "x.onnx"
    argv = ["build", "--backend", "onnxruntime", "--onnx", str(small["src"]), "-o", str(out)]
    assert main(argv) == 1
    assert f"error: disk full: {out}" in _one_error_line(capsys)
    assert list(disk.iterdir()) == []


def test_a_full_disk_at_the_rename_is_one_line_and_keeps_the_old_file(small, tmp_path, monkeypatch, capsys):
    """Simulated ENOSPC (the same case without a tmpfs): the earlier artifact stays, no temporary is left."""
    import errno

    import bisenet_rt.atomic

    out = tmp_path / "x.onnx"
    shutil.copy(small["built"], out)
    before = out.read_bytes()

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(bisenet_rt.atomic.os, "replace", no_space)
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(small["src"]), "-o", str(out)]) == 1
    assert _one_error_line(capsys).endswith(f"error: disk full: {out} (nothing was replaced; free some space and run "
                                            "again)")
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]


@pytest.mark.parametrize("depth", [100000, 0, True, 2.5, "3"])
def test_row_depth_is_bounded_with_the_reason(small, depth):
    """`bench --mode throughput --depth 100000`: ran for minutes and grew without bound; `depth=True` was accepted."""
    with pytest.raises(InputError, match=r"depth \(submissions in flight\) must be .*1\.\.16"):
        Segmenter(small["built"], depth=depth)


def test_row_bench_depth_and_batch_are_refused_up_front(small, capsys):
    for option, value, match in (("--depth", "100000", "--depth must be in 1..16, got 100000: each submission"),
                                 ("--batch", "100000", "--batch must be in 1..64, got 100000: a batch's frames"),
                                 ("--size", "30000x30000", "--size 30000x30000 is larger than the frame-size limit")):
        assert main(["bench", "--engine", str(small["built"]), "--mode", "throughput", option, value]) == 1
        assert match in _one_error_line(capsys)
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(small["src"]), "--max-batch", "100000"]) == 1
    assert "--max-batch must be in 1..64" in _one_error_line(capsys)


def test_row_stream_returns_the_good_frames_before_a_bad_one(small):
    """A bad frame part-way through `stream()`: the good frames already in flight were never returned."""
    good = [street_frame(96, 160, seed=s) for s in range(3)]
    with Segmenter(small["built"], depth=3) as seg:
        expected = [seg(f) for f in good]
        got = []
        with pytest.raises(InputError, match="channels"):
            for labels in seg.stream([*good, np.zeros((96, 160, 4), np.uint8), good[0]]):
                got.append(labels)
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_row_close_racing_submit_raises_the_closed_error(small):
    """`close()` racing `submit()`: was a bare RuntimeError from the thread pool."""
    from bisenet_rt.errors import ClosedError

    frame = street_frame(96, 160, seed=0)
    for _ in range(5):
        seg = Segmenter(small["built"], depth=2)
        outcomes: list[object] = []
        started = threading.Event()

        def submit_until_closed() -> None:
            try:
                while True:
                    pending = seg.submit(frame)
                    started.set()
                    outcomes.append(pending.result().shape)
            except BaseException as exc:  # the one way out: inspected below
                outcomes.append(exc)
                started.set()

        workers = [threading.Thread(target=submit_until_closed) for _ in range(3)]
        for w in workers:
            w.start()
        started.wait(60)
        seg.close()
        for w in workers:
            w.join(60)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(errors) == 3 and all(isinstance(e, ClosedError) for e in errors), errors
        assert all(o == (96, 160) for o in outcomes if not isinstance(o, BaseException))
    with pytest.raises(ClosedError, match="closed"):
        seg.submit(frame)


def _sidecar_copy(small, tmp_path: Path, edit) -> Path:
    """A copy of the built artifact whose sidecar (rewritten by `edit`, a function of the text) is hostile."""
    art = tmp_path / "m.onnx"
    shutil.copy(small["built"], art)
    sidecar_path(art).write_text(edit(sidecar_path(small["built"]).read_text()))
    return art


def test_row_deeply_nested_sidecar_is_one_line(small, tmp_path, capsys):
    """A sidecar of 100,000 nested `[`: was a RecursionError traceback."""
    art = _sidecar_copy(small, tmp_path, lambda text: "[" * 100000)
    with pytest.raises(ArtifactError, match="nests JSON deeper than 32 levels"):
        Segmenter(art)
    assert main(["segment", str(small["clip"]), "-o", str(tmp_path / "o.avi"), "--engine", str(art)]) == 1
    assert "nests JSON deeper than 32 levels" in _one_error_line(capsys)
    oversized = _sidecar_copy(small, tmp_path, lambda text: text + " " * (2 << 20))
    with pytest.raises(ArtifactError, match="more than the 1048576 a sidecar holds"):
        Segmenter(oversized)


def _with_info(**changes):
    def edit(text: str) -> str:
        data = json.loads(text)
        data["info"].update(changes)
        return json.dumps(data)
    return edit


def test_row_sidecar_without_classes_is_refused(small, tmp_path, capsys):
    """Sidecar `classes: []`: `segment --overlay` and `eval` tracebacked (or succeeded silently)."""
    art = _sidecar_copy(small, tmp_path, _with_info(classes=[]))
    with pytest.raises(ArtifactError, match=r"it names no classes"):
        Segmenter(art)
    assert main(["segment", str(small["clip"]), "-o", str(tmp_path / "o.avi"), "--engine", str(art), "--quiet"]) == 1
    assert "names no classes" in _one_error_line(capsys)


def _graph_with_metadata(small, tmp_path: Path, **meta: str) -> Path:
    """The exported graph with some of its bisenet_rt.* metadata replaced (no sidecar beside it)."""
    proto = onnx.load(str(small["src"]))
    for prop in proto.metadata_props:
        key = prop.key.removeprefix("bisenet_rt.")
        if key in meta:
            prop.value = meta[key]
    path = tmp_path / "edited.onnx"
    onnx.save(proto, str(path))
    return path


def test_row_classes_fewer_than_the_graph_predicts_are_refused(small, tmp_path, capsys):
    """Metadata naming 3 classes on a graph whose arg-max ranges over 19: ids >= classes crashed `--overlay`/eval."""
    path = _graph_with_metadata(small, tmp_path, classes=json.dumps(["road", "sky", "car"]))
    with pytest.raises(ArtifactError, match="its metadata names 3 classes, but the graph's labels range over 19"):
        Segmenter(path)
    assert main(["segment", str(small["clip"]), "-o", str(tmp_path / "o.avi"), "--engine", str(path), "--overlay"]) == 1
    assert "range over 19" in _one_error_line(capsys)


@pytest.mark.parametrize("changes, match", [
    ({"model_size": "99999999999x99999999999"}, "model size 99999999999x99999999999 is larger than the frame-size"),
    ({"max_batch": -1}, r"max_batch must be in 1\.\.64, got -1"),
    ({"max_batch": "abc"}, r"max_batch must be a whole number in 1\.\.64, got 'abc'"),
    ({"max_batch": 1e400}, r"max_batch must be a whole number in 1\.\.64, got inf"),
    ({"max_batch": True}, r"max_batch must be a whole number"),
    ({"max_size": "100000x100000"}, "max_size 100000x100000 is larger than the frame-size limit"),
    ({"classes": [["road"]]}, "at most 255 names"),
    ({"classes": [f"c{i}" for i in range(300)]}, "at most 255 names"),
])
def test_row_sidecar_facts_out_of_bounds_are_refused(small, tmp_path, changes, match):
    """Sidecar `model_size 99999999999x...`, `max_batch -1 / "abc" / 1e400`: accepted, and bench reported the fake size."""
    art = _sidecar_copy(small, tmp_path, _with_info(**changes))
    with pytest.raises(ArtifactError, match=match):
        Segmenter(art)


def test_row_metadata_model_size_must_be_the_graphs(small, tmp_path, capsys):
    """ONNX metadata saying 2048x1024 on a 256x128 graph: `eval` printed "at model size 2048x1024"."""
    path = _graph_with_metadata(small, tmp_path, model_size="2048x1024")
    with pytest.raises(ArtifactError, match="its metadata says model size 2048x1024, but the graph resizes frames to "
                                              "256x128"):
        Segmenter(path)
    sidecar_lies = _sidecar_copy(small, tmp_path, _with_info(model_size="2048x1024"))
    with pytest.raises(ArtifactError, match="says model size 2048x1024, but the graph resizes frames to 256x128"):
        Segmenter(sidecar_lies)


@pytest.fixture
def unwritable_folder(tmp_path):
    """A cache folder nobody can write: a read-only tmpfs where one can be mounted, else a path below a regular file
    (which even root cannot create)."""
    folder = tmp_path / "read_only"
    if _mount_tmpfs(folder, 1 << 20, ",ro") is None:
        yield folder
        subprocess.run(["umount", str(folder)], check=True, timeout=30)
    else:
        (tmp_path / "a_file").write_text("x")
        yield tmp_path / "a_file" / "cache"


def test_row_an_unwritable_cache_folder_is_a_warning(small, tmp_path, unwritable_folder, monkeypatch, capsys):
    """`XDG_CACHE_HOME` read-only, INT8 build: was "Permission denied" after calibration ran, exit 1."""
    import cv2

    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.settings import CACHE_ENV
    from conftest import make_confident_model

    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(unwritable_folder))
    plain = export_onnx(make_confident_model(), tmp_path / "plain.onnx", ExportConfig(model_size=SMALL, plain=True))
    assert plain is not None
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        cv2.imwrite(str(calib / f"{i}.png"), street_frame(128, 256, seed=i))
    out = tmp_path / "int8.onnx"
    assert main(["build", "--precision", "int8", "--backend", "onnxruntime", "--onnx", str(tmp_path / "plain.onnx"),
                 "--calib", str(calib), "--calib-count", "2", "-o", str(out)]) == 0
    assert f"warning: cache folder {unwritable_folder / 'bisenet-rt'} is not writable" in capsys.readouterr().err
    with Segmenter(out) as seg:
        assert seg.precision.value == "int8"
    with Segmenter(small["src"], backend="openvino") as seg:  # OpenVINO's compiled-model cache: the same
        assert seg(street_frame(96, 160, seed=0)).shape == (96, 160)
    assert "openvino: compiled-model cache disabled" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["x\ny", "a b", "../up", ".hidden", "", "x" * 129, "tab\tname"])
def test_row_triton_model_names_are_plain_folder_names(small, tmp_path, name, capsys):
    """A Triton model name with a newline: was a folder named `x<newline>y`."""
    repo = tmp_path / "repo"
    assert main(["export-triton", "-o", str(repo), "--onnx", str(small["built"]), "--name", name]) == 1
    assert "bad model name" in _one_error_line(capsys)
    assert not repo.exists() or list(repo.iterdir()) == []


# -- the mechanisms behind the rows -----------------------------------------------------------------------------
def test_temporary_names_are_unique_across_threads_and_created_exclusively(tmp_path):
    from bisenet_rt.atomic import create_temp

    made: list[Path] = []

    def make() -> None:
        made.extend(create_temp(tmp_path / "out.png") for _ in range(50))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 200 and all(p.name.startswith(f".out.png.tmp{os.getpid()}-") for p in made)
    assert all(p.suffix == ".png" and p.is_file() and not p.is_symlink() for p in made)


def test_stale_temporaries_of_both_name_forms_are_cleaned(tmp_path):
    for stale in (".a.png.tmp999999999.png", ".a.png.tmp999999999-0123456789ab.png"):
        (tmp_path / stale).write_bytes(b"partial")
    mine = tmp_path / f".a.png.tmp{os.getpid()}-feedfeedfeed.png"  # a write in progress in this process: kept
    mine.write_bytes(b"in progress")
    write_atomic(tmp_path / "a.png", b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", mine.name])


@pytest.mark.parametrize("argv, match", [
    (lambda d: ["export", "-o", str(d["ckpt"]), "--weights", str(d["ckpt"])],
     "the exported graph would overwrite the --weights checkpoint"),
    (lambda d: ["build", "--backend", "onnxruntime", "--onnx", str(d["onnx"]), "-o", str(d["onnx"])],
     "the built artifact would overwrite the --onnx graph"),
    (lambda d: ["build", "--backend", "onnxruntime", "--onnx", str(d["onnx"]), "-o", str(d["hardlink"])],
     "the built artifact would overwrite the --onnx graph"),
    (lambda d: ["bench", "--engine", str(d["built"]), "--json", str(d["built"]), "--iters", "1"],
     "the --json report would overwrite an artifact being measured"),
    (lambda d: ["eval", "--data", str(d["data"]), "--engine", str(d["built"]), "--json", str(d["sidecar"])],
     "the --json report would overwrite an artifact's metadata file"),
    (lambda d: ["segment", str(d["clip"]), "-o", str(d["clip"]), "--engine", str(d["built"])],
     "the overlay video of .* would overwrite an input video"),
    (lambda d: ["export-triton", "-o", str(d["dir"] / "repo"), "--onnx", str(d["triton_model"]), "--name", "m",
                "--force"], "the model file would overwrite the artifact being exported"),
])
def test_every_writing_command_refuses_to_overwrite_its_inputs(small, tiny_data, tmp_path, argv, match, capsys):
    from bisenet_rt.model import save_checkpoint
    from conftest import make_confident_model

    onnx_copy = shutil.copy(small["src"], tmp_path / "src.onnx")
    os.link(onnx_copy, tmp_path / "hardlink.onnx")
    built = shutil.copy(small["built"], tmp_path / "built.onnx")
    shutil.copy(sidecar_path(small["built"]), sidecar_path(built))
    triton_model = tmp_path / "repo" / "m" / "1" / "model.onnx"
    triton_model.parent.mkdir(parents=True)
    shutil.copy(small["src"], triton_model)
    files = {"ckpt": save_checkpoint(make_confident_model(), tmp_path / "w.pth"), "onnx": Path(onnx_copy),
             "hardlink": tmp_path / "hardlink.onnx", "built": Path(built), "sidecar": sidecar_path(built),
             "data": tiny_data, "clip": small["clip"], "dir": tmp_path, "triton_model": triton_model}
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(argv(files)) == 1
    assert re.search(match, _one_error_line(capsys))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
