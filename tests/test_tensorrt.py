"""TensorRT build and runtime, and the CUDA layer under them.

Here (no TensorRT, no GPU) the build and the Segmenter must fail with one clear message, and the
`__cuda_array_interface__` validation is checked on objects that carry only the interface dict.
On a machine with TensorRT and a GPU, engines are built from the exported graphs and compared with
ONNX Runtime on the same frames; those tests skip here with the reason.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bisenet_rt.backends.tensorrt import tensorrt_availability
from bisenet_rt.errors import BackendUnavailableError, BisenetError, ArtifactError, InputError
from conftest import REPO, street_frame

TRT_MISSING = tensorrt_availability()
needs_trt = pytest.mark.skipif(TRT_MISSING is not None, reason=f"TensorRT cannot run here: {TRT_MISSING}")
without_trt = pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT and a GPU are usable here")


def _cuda_missing() -> str | None:
    """None when cuda-python and a CUDA device are usable (TensorRT or not), else what is missing (never raises:
    cuda-python 12.6 without a driver raises from cudaGetDeviceCount, which `device_problem` catches)."""
    from bisenet_rt.backends.tensorrt.cuda import device_problem

    return device_problem()


CUDA_MISSING = _cuda_missing()
needs_cuda = pytest.mark.skipif(CUDA_MISSING is not None, reason=f"CUDA cannot run here: {CUDA_MISSING}")

MIN_SIZE, MAX_SIZE, MAX_BATCH = (256, 128), (640, 384), 2
FRAME_H, FRAME_W = 256, 512


# -- on every machine ----------------------------------------------------------------------------------
class CudaArrayLike:
    """Carries only a `__cuda_array_interface__` dict, as a foreign library's device array does."""

    def __init__(self, **fields) -> None:
        self.__cuda_array_interface__ = {"version": 3, "strides": None, "stream": None, **fields}


def frames_like(shape=(2, 4, 6, 3), typestr="|u1", **fields) -> CudaArrayLike:
    return CudaArrayLike(shape=shape, typestr=typestr, data=(0x7F0000000000, False), **fields)


@without_trt
def test_build_for_tensorrt_fails_in_one_line_naming_the_way_that_works(tmp_path, capsys):
    from bisenet_rt.backends import SPECS
    from bisenet_rt.cli import main

    assert main(["build", "--backend", "tensorrt", "--engines-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "tensorrt" in lines[0] and TRT_MISSING in lines[0]
    suggested = lines[0].rsplit("bisenet-rt build --backend ", 1)[1].split()[0]
    assert SPECS[suggested].availability() is None, f"suggested backend {suggested!r} cannot run here"
    assert not list(tmp_path.iterdir()), "nothing may be exported or written when the backend is unusable"


@without_trt
def test_segmenter_on_an_engine_says_what_is_missing(tmp_path):
    from bisenet_rt import Segmenter

    with pytest.raises(BackendUnavailableError, match="tensorrt backend cannot run here") as info:
        Segmenter(tmp_path / "x.engine")
    assert TRT_MISSING in str(info.value)


def test_import_stays_light():
    """`import bisenet_rt` loads neither the CUDA layer nor TensorRT; the CUDA layer loads cuda.bindings lazily."""
    code = ("import sys, bisenet_rt; assert 'bisenet_rt.backends.tensorrt.cuda' not in sys.modules; import bisenet_rt.backends.tensorrt.cuda; "
            "import bisenet_rt.backends.tensorrt.run; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'torch', 'onnxruntime') "
            "or m.startswith('cuda.bindings')]; assert not heavy, heavy")  # bare 'cuda': cuda-bindings' own .pth
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_device_pointer_reads_a_valid_interface():
    from bisenet_rt.backends.tensorrt.cuda import device_pointer

    arr = device_pointer(frames_like(stream=7), (None, None, None, 3), np.uint8, name="frames")
    assert (arr.ptr, arr.shape, arr.stream) == (0x7F0000000000, (2, 4, 6, 3), 7)
    explicit = frames_like(strides=(72, 18, 3, 1))
    assert device_pointer(explicit, (None, None, None, 3)).shape == (2, 4, 6, 3)
    single = frames_like(shape=(1, 4, 6, 3), strides=(999, 18, 3, 1))  # a size-1 dimension's stride is free
    assert device_pointer(single, (None, None, None, 3)).shape == (1, 4, 6, 3)
    labels = CudaArrayLike(shape=(2, 4, 6), typestr="|u1", data=(0x7F0000001000, False))
    assert device_pointer(labels, (2, 4, 6), np.uint8, name="labels", writable=True).ptr == 0x7F0000001000


@pytest.mark.parametrize("obj, expected, error, match", [
    (frames_like(typestr="<f4"), (None, None, None, 3), TypeError, r"frames has dtype float32.*uint8"),
    (frames_like(shape=(4, 6, 3)), (None, None, None, 3), InputError,
     r"frames has shape 4 x 6 x 3; expected.*\? x \? x \? x 3"),
    (frames_like(shape=(2, 4, 6, 4)), (None, None, None, 3), InputError, r"shape 2 x 4 x 6 x 4"),
    (frames_like(shape=(0, 4, 6, 3)), (None, None, None, 3), InputError, r"frames is empty"),
    (frames_like(strides=(72, 18, 6, 2)), (None, None, None, 3), InputError, r"not C-contiguous.*contiguous\(\)"),
    (frames_like(mask=(0x1, False)), (None, None, None, 3), InputError, r"masked"),
    (CudaArrayLike(shape=(2, 4, 6, 3), typestr="|u1"), (None, None, None, 3), TypeError,
     r"'shape', 'typestr' and 'data'"),
    (np.zeros((2, 4, 6, 3), np.uint8), (None, None, None, 3), TypeError, r"ndarray without __cuda_array_interface__"),
])
def test_device_pointer_rejects_bad_arrays(obj, expected, error, match):
    from bisenet_rt.backends.tensorrt.cuda import device_pointer

    with pytest.raises(error, match=match):
        device_pointer(obj, expected, np.uint8, name="frames")


def test_device_pointer_checks_the_output_shape_and_writability():
    from bisenet_rt.backends.tensorrt.cuda import device_pointer

    wrong = CudaArrayLike(shape=(2, 4, 5), typestr="|u1", data=(0x1000, False))
    with pytest.raises(InputError, match=r"labels has shape 2 x 4 x 5; expected .* 2 x 4 x 6"):
        device_pointer(wrong, (2, 4, 6), np.uint8, name="labels", writable=True)
    readonly = CudaArrayLike(shape=(2, 4, 6), typestr="|u1", data=(0x1000, True))
    with pytest.raises(InputError, match=r"labels is read-only"):
        device_pointer(readonly, (2, 4, 6), np.uint8, name="labels", writable=True)
    assert device_pointer(readonly, (2, 4, 6), np.uint8, name="frames").ptr == 0x1000  # inputs may be read-only


def test_check_names_the_failed_call():
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (pip install .[gpu])")
    from bisenet_rt.backends.tensorrt.cuda import CudaError, check

    with pytest.raises(CudaError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation \(.+\)"):
        check((runtime.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc")
    assert check((runtime.cudaError_t.cudaSuccess, 5), "cudaMalloc") == 5
    assert check((runtime.cudaError_t.cudaSuccess,), "cudaFree") is None
    assert check((runtime.cudaError_t.cudaSuccess, 1, 2), "cudaX") == (1, 2)


# -- with TensorRT and a GPU --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engines(tmp_path_factory, exported):
    """fp32 and fp16 engines of the exported pipeline graphs, with a small frame-size profile."""
    from bisenet_rt.builder import BuildConfig, build

    out = tmp_path_factory.mktemp("engines")
    paths = {}
    for precision in ("fp32", "fp16"):
        config = BuildConfig(precision=precision, backend="tensorrt", onnx=exported[precision], engines_dir=out,
                             cache_dir=out / "cache",
                             min_size=MIN_SIZE, max_size=MAX_SIZE, max_batch=MAX_BATCH, opt_level=1,
                             output=out / f"{precision}.engine")
        paths[precision] = build(config)
    return paths


@pytest.fixture(scope="module")
def street_batch():
    return np.stack([street_frame(FRAME_H, FRAME_W, seed=s) for s in (11, 12)])


@pytest.fixture(scope="module")
def ort_labels(exported, street_batch):
    """The ONNX Runtime result over the fp32 pipeline graph: the reference for both engines."""
    from bisenet_rt import Segmenter

    with Segmenter(exported["fp32"], backend="onnxruntime") as seg:
        return seg(street_batch)


@needs_trt
def test_build_writes_engine_sidecar_and_timing_cache(engines):
    import tensorrt as trt

    from bisenet_rt.artifacts import read_sidecar

    sidecar = read_sidecar(engines["fp16"])
    assert sidecar["tensorrt_version"] == trt.__version__
    assert sidecar["gpu"]["name"] and sidecar["gpu"]["compute_capability"].count(".") == 1
    assert sidecar["info"]["precision"] == "fp16" and sidecar["info"]["max_batch"] == MAX_BATCH
    assert (sidecar["info"]["min_size"], sidecar["info"]["max_size"]) == ("256x128", "640x384")
    assert sidecar["profile"] == {"min": [1, 128, 256, 3], "opt": [1, 384, 640, 3], "max": [MAX_BATCH, 384, 640, 3]}
    assert sorted(sidecar["io"], key=lambda t: t["name"]) == [
        {"name": "frames", "mode": "input", "shape": [-1, -1, -1, 3], "dtype": "uint8"},
        {"name": "labels", "mode": "output", "shape": [-1, -1, -1], "dtype": "uint8"}]
    assert sidecar["rebuild_command"].startswith("bisenet-rt build --backend tensorrt --precision fp16 --onnx ")
    assert (engines["fp16"].parent / "cache" / "tensorrt" / "timing.cache").stat().st_size > 0


@needs_trt
@pytest.mark.parametrize("precision, bar", [("fp32", 0.999), ("fp16", 0.99)])
def test_engine_matches_onnxruntime(engines, street_batch, ort_labels, precision, bar):
    from bisenet_rt import Segmenter

    with Segmenter(engines[precision]) as seg:
        assert seg.backend.name == "tensorrt" and seg.device.startswith("GPU: ")
        batch = seg(street_batch)
        singles = [seg(frame) for frame in street_batch]
    assert batch.shape == (2, FRAME_H, FRAME_W) and batch.dtype == np.uint8
    for got in (batch, np.stack(singles)):
        agreement = float(np.mean(got == ort_labels))
        assert agreement >= bar, f"{precision} engine agrees with ONNX Runtime on {agreement:.4%} of pixels"


@needs_trt
def test_graph_replay_gives_the_plain_result(engines, street_batch):
    """Calls 1, 2, 3 with one shape run plainly, capture a CUDA graph, replay it: same labels each time. On one
    lane a new shape drops the graph (it belongs to the old binding) and the old shape starts over plainly;
    with two lanes the new shape takes the second lane and the first keeps replaying."""
    from bisenet_rt import Segmenter

    frame = street_batch[0]
    with Segmenter(engines["fp32"], cuda_graphs=False) as plain:
        expected = plain(frame)
    with Segmenter(engines["fp32"], depth=1) as seg:
        for _ in range(3):
            np.testing.assert_array_equal(seg(frame), expected)
            assert seg.backend.last_device_time_ms() > 0
        stats = seg.backend.graph_stats
        assert (stats.fallback, stats.captures, stats.replays, stats.plain_runs) == (None, 1, 2, 1), stats
        other = seg(street_batch)  # a new shape on the one lane, then the old one again
        for _ in range(3):
            np.testing.assert_array_equal(seg(frame), expected)
        stats = seg.backend.graph_stats
        assert (stats.fallback, stats.captures, stats.replays, stats.plain_runs) == (None, 2, 4, 3), stats
    assert other.shape == (2, FRAME_H, FRAME_W)
    with Segmenter(engines["fp32"], depth=2) as seg:
        for _ in range(3):
            seg(frame)
        np.testing.assert_array_equal(seg(street_batch), other)
        np.testing.assert_array_equal(seg(frame), expected)
        stats = seg.backend.graph_stats
        assert (stats.fallback, stats.captures, stats.replays, stats.plain_runs) == (None, 1, 3, 2), stats


@needs_trt
def test_threads_spread_over_lanes(engines, street_batch):
    """Synchronous calls from two threads run on two lanes (contexts) at once and give the single-thread labels."""
    import concurrent.futures

    from bisenet_rt import Segmenter

    frames = [street_batch[i % 2] for i in range(16)]
    with Segmenter(engines["fp32"], depth=2) as seg:
        expected = [seg(f) for f in frames]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            got = list(pool.map(seg, frames))
        assert all(np.array_equal(g, e) for g, e in zip(got, expected))
        assert seg.backend.graph_stats.fallback is None


@needs_trt
def test_host_inputs_outside_the_profile_are_refused(engines, street_batch):
    from bisenet_rt import Segmenter

    with Segmenter(engines["fp32"]) as seg:
        with pytest.raises(InputError, match=r"frame size 1024x512 is outside the range 256x128 \.\. 640x384"):
            seg(np.zeros((512, 1024, 3), np.uint8))
        with pytest.raises(InputError, match=r"batch of 3 frames exceeds the maximum batch 2"):
            seg(np.concatenate([street_batch, street_batch[:1]]))


@pytest.fixture(scope="module")
def torch_cuda():
    """PyTorch with CUDA, the usual source of device frames."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    return torch


@needs_trt
def test_device_pointers_from_torch(engines, street_batch, torch_cuda):
    from bisenet_rt import Segmenter

    torch = torch_cuda

    frames = torch.from_numpy(street_batch).cuda()
    with Segmenter(engines["fp32"]) as seg:
        expected = seg(street_batch)
        labels = torch.empty((2, FRAME_H, FRAME_W), dtype=torch.uint8, device="cuda")
        seg.infer_device(frames, labels)
        assert float(np.mean(labels.cpu().numpy() == expected)) >= 0.9999  # same engine; only atomics could differ
        stream = torch.cuda.Stream()
        again = torch.zeros_like(labels)
        stream.wait_stream(torch.cuda.current_stream())  # `again` is zeroed on the default stream
        with torch.cuda.stream(stream):
            seg.infer_device(frames, again, stream=stream.cuda_stream)
        stream.synchronize()
        assert torch.equal(again, labels)
        assert seg.backend.last_device_time_ms() > 0
        for _ in range(2):  # the same buffers again: captured once, then replayed, ordered on the caller's stream
            with torch.cuda.stream(stream):
                seg.infer_device(frames, again, stream=stream.cuda_stream)
        stream.synchronize()
        assert torch.equal(again, labels)
        stats = seg.backend.graph_stats
        assert stats.fallback is None and stats.captures >= 1 and stats.replays >= 1, stats
        default = torch.cuda.current_stream()
        assert default.cuda_stream == 0  # PyTorch's default stream: TensorRT must not run on it
        zeroed = torch.zeros_like(labels)
        seg.infer_device(frames, zeroed, stream=default.cuda_stream)
        assert torch.equal(zeroed, labels)  # queued on the default stream after the call: ordered after the labels
        other_frames, other_labels = frames.clone(), torch.empty_like(labels)
        before = seg.backend.graph_stats.captures
        for _ in range(3):  # two buffer sets in turn: a graph each, on two lanes
            seg.infer_device(frames, again)
            seg.infer_device(other_frames, other_labels)
        assert torch.equal(other_labels, labels) and seg.backend.graph_stats.captures >= before + 1


@needs_trt
def test_bad_device_inputs_are_refused(engines, street_batch, torch_cuda):
    from bisenet_rt import Segmenter

    torch = torch_cuda

    frames = torch.from_numpy(street_batch).cuda()
    labels = torch.empty((2, FRAME_H, FRAME_W), dtype=torch.uint8, device="cuda")
    with Segmenter(engines["fp32"]) as seg:
        with pytest.raises(TypeError, match="frames has dtype float32"):
            seg.infer_device(frames.float(), labels)
        with pytest.raises(InputError, match="labels has shape 1 x 256 x 512"):
            seg.infer_device(frames, labels[:1])
        with pytest.raises(InputError, match="frames is not C-contiguous"):
            seg.infer_device(frames[:, :, ::2], labels[:, :, ::2].contiguous())
        with pytest.raises(InputError, match="outside the range"):
            seg.infer_device(torch.zeros((1, 64, 64, 3), dtype=torch.uint8, device="cuda"),
                             torch.zeros((1, 64, 64), dtype=torch.uint8, device="cuda"))
        with pytest.raises(TypeError, match="without __cuda_array_interface__"):
            seg.infer_device(frames.cpu(), labels)
        odd = torch.zeros((2, 255, 257, 3), dtype=torch.uint8, device="cuda")  # frames[1:] starts 253 bytes off
        with pytest.raises(InputError, match="256-byte boundary"):
            seg.infer_device(odd[1:], torch.zeros((1, 255, 257), dtype=torch.uint8, device="cuda"))


@needs_trt
def test_engine_from_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(engines, tmp_path):
    from bisenet_rt import Segmenter
    from bisenet_rt.artifacts import sidecar_path

    other_gpu = {"name": "Some Other GPU", "compute_capability": "1.0"}
    for field, value, match in (("tensorrt_version", "9.9.9", "built by TensorRT 9.9.9"),
                                ("gpu", other_gpu, "built for Some Other GPU")):
        engine = shutil.copy(engines["fp32"], tmp_path / f"{field}.engine")
        sidecar = json.loads(sidecar_path(engines["fp32"]).read_text())
        sidecar[field] = value
        sidecar_path(engine).write_text(json.dumps(sidecar))
        with pytest.raises(ArtifactError, match=match) as info:
            Segmenter(engine)
        assert "bisenet-rt build --backend tensorrt" in str(info.value)


@needs_trt
def test_corrupt_engine_is_refused(engines, tmp_path):
    from bisenet_rt import Segmenter
    from bisenet_rt.artifacts import sidecar_path

    engine = tmp_path / "corrupt.engine"
    engine.write_bytes(engines["fp32"].read_bytes()[:4096])
    shutil.copy(sidecar_path(engines["fp32"]), sidecar_path(engine))
    with pytest.raises(ArtifactError, match="does not match its metadata file"):  # the sidecar holds its hash
        Segmenter(engine)
    sidecar = json.loads(sidecar_path(engine).read_text())
    del sidecar["artifact_sha256"]  # as an older build wrote it: TensorRT itself must refuse the file
    sidecar_path(engine).write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="corrupt or was built by another TensorRT"):
        Segmenter(engine)


@needs_trt
def test_close_is_idempotent_and_final(engines, street_batch):
    from bisenet_rt import Segmenter

    seg = Segmenter(engines["fp32"])
    seg(street_batch[0])
    assert "tensorrt" in seg.backend.versions() and "cuda_runtime" in seg.backend.versions()
    seg.close()
    seg.close()
    with pytest.raises(BisenetError, match="closed"):
        seg(street_batch[0])


@needs_trt
def test_fixed_size_graph_builds_without_a_profile(confident_model, tmp_path, street_batch):
    """A graph exported with a fixed frame size and batch builds for exactly that and runs."""
    from bisenet_rt import Segmenter
    from bisenet_rt.builder import BuildConfig, build
    from bisenet_rt.errors import BuildError
    from bisenet_rt.graph.export import ExportConfig, export_onnx

    onnx_path = tmp_path / "fixed.onnx"
    export_onnx(confident_model, onnx_path, ExportConfig(frame_size=(FRAME_W, FRAME_H), batch=1))
    size = (FRAME_W, FRAME_H)
    with pytest.raises(BuildError, match="fixed to"):
        build(BuildConfig(precision="fp32", backend="tensorrt", onnx=onnx_path, engines_dir=tmp_path,
                          min_size=MIN_SIZE, max_size=MAX_SIZE, output=tmp_path / "no.engine"))
    engine = build(BuildConfig(precision="fp32", backend="tensorrt", onnx=onnx_path, engines_dir=tmp_path,
                               min_size=size, max_size=size, opt_level=1, output=tmp_path / "fixed.engine"))
    with Segmenter(engine) as seg:
        for _ in range(3):
            labels = seg(street_batch[0])
        assert labels.shape == (FRAME_H, FRAME_W) and seg.backend.graph_stats.replays == 2


@needs_cuda
def test_cuda_graph_replays_captured_copies():
    """Pinned -> device -> pinned copies captured once; replay after changing the source copies the new data."""
    from bisenet_rt.backends.tensorrt import cuda

    with cuda.PinnedBuffer(1024) as src, cuda.PinnedBuffer(1024) as dst, cuda.DeviceBuffer(1024) as dev:
        stream = cuda.Stream()
        graph = cuda.CudaGraph.capture(stream, lambda: (dev.copy_from_host(src, 1024, stream),
                                                        dev.copy_to_host(dst, 1024, stream)))
        for value in (3, 200):
            src.view((1024,))[:] = value
            graph.launch(stream)
            stream.synchronize()
            assert np.all(dst.view((1024,)) == value)
        graph.close()
        graph.close()
        stream.close()


@needs_cuda
def test_pinned_and_device_buffers_round_trip():
    """Host -> device -> another device buffer's host copy: the bytes arrive, timed by events on one stream."""
    from bisenet_rt.backends.tensorrt import cuda

    n = 3 << 20
    with cuda.PinnedBuffer(n) as src, cuda.PinnedBuffer(n) as dst, cuda.DeviceBuffer(n) as dev:
        data = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
        src.view((n,))[:] = data
        stream, start, end = cuda.Stream(), cuda.Event(), cuda.Event()
        start.record(stream)
        dev.copy_from_host(src, n, stream)
        dev.copy_to_host(dst, n, stream)
        end.record(stream)
        assert end.elapsed_ms(start) > 0
        np.testing.assert_array_equal(dst.view((n,)), data)
        other = cuda.Stream()
        other.wait_for(stream.handle)  # orders without a host wait; nothing is pending, so it returns at once
        other.synchronize()
        for obj in (other, stream, start, end):
            obj.close()
            obj.close()


@needs_cuda
def test_device_pointer_reads_torch_cuda_tensors(torch_cuda):
    from bisenet_rt.backends.tensorrt.cuda import device_pointer

    torch = torch_cuda
    frames = torch.zeros((2, 8, 16, 3), dtype=torch.uint8, device="cuda")
    arr = device_pointer(frames, (None, None, None, 3), np.uint8, name="frames")
    assert arr.ptr == frames.data_ptr() and arr.shape == (2, 8, 16, 3)
    with pytest.raises(InputError, match="not C-contiguous"):
        device_pointer(frames.permute(0, 2, 1, 3), (None, None, None, 3), np.uint8, name="frames")


@needs_trt
def test_submit_pipelines_on_streams_in_order(engines, street_batch):
    """Submissions on TensorRT lanes (own stream and context each): results in order, equal to calls,
    at most `depth` in flight, pinned frames and outputs used in place."""
    import bisenet_rt
    from bisenet_rt import Segmenter

    frames = [street_batch[i % 2] for i in range(7)]
    with Segmenter(engines["fp32"], depth=3) as seg:
        expected = [seg(f) for f in frames]
        pending = [seg.submit(f) for f in frames]
        assert all(np.array_equal(p.result(), e) for p, e in zip(pending, expected))
        assert seg.backend.most_in_flight <= 3
        pinned = bisenet_rt.pinned_frames(1, FRAME_H, FRAME_W)
        pinned[0] = street_batch[0]
        out = np.empty((FRAME_H, FRAME_W), np.uint8)
        assert seg(pinned[0], out=out) is out and np.array_equal(out, expected[0])
        assert all(np.array_equal(s, e) for s, e in zip(seg.stream(frames), expected))


@needs_cuda
@pytest.mark.parametrize("precision, bar", [("fp32", 0.999), ("fp16", 0.99)])
def test_torch_cuda_deployed_pipeline(checkpoint, street_batch, torch_cuda, precision, bar):
    """PyTorch on CUDA: the deployed layout, graph-captured, agrees with the CPU oracle; replays happen."""
    from bisenet_rt import Segmenter

    with Segmenter(checkpoint, device="cpu") as cpu:
        expected = cpu(street_batch)
    with Segmenter(checkpoint, device="cuda", precision=precision) as seg:
        for _ in range(3):
            got = seg(street_batch)
        assert float(np.mean(got == expected)) >= bar
        assert seg.backend.graph_stats == {"captures": 1, "replays": 3}
