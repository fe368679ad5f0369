"""Labels into the caller's array (`out=`) and pipelined submission (`submit`, `stream`) on every CPU backend.

Each backend gives the same labels through `__call__`, `__call__(out=...)`, `submit(...).result()` and
`stream(...)`; submissions keep at most `depth` frames in flight and bad input fails at submission with
the errors a call raises. (TensorRT's stream-pipelined `submit` is tested in test_tensorrt.py on a GPU.)
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from bisenet_rt.errors import InputError
from conftest import street_frame

SMALL = (512, 256)
H, W = 192, 320


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, confident_model, checkpoint):
    """One artifact per CPU backend: the pipeline ONNX (ONNX Runtime and OpenVINO) and the checkpoint (PyTorch)."""
    from bisenet_rt.graph.export import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("submit") / "small.onnx"
    export_onnx(confident_model, path, ExportConfig(model_size=SMALL, post="row_bands"))
    return {"onnxruntime": (path, {}), "openvino": (path, {"precision": "fp32", "cache_dir": None}),
            "torch": (checkpoint, {"model_size": SMALL})}


@pytest.fixture(scope="module")
def frames():
    return [street_frame(H, W, seed=s) for s in range(5)]


BACKENDS = ["onnxruntime", "openvino", "torch"]


def _open(artifacts, backend, depth=2):
    from bisenet_rt import Segmenter

    path, options = artifacts[backend]
    return Segmenter(path, backend=backend, depth=depth, **options)


@pytest.fixture(scope="module")
def segs(artifacts):
    """One Segmenter (depth 2) per CPU backend, shared by the tests that do not change it."""
    opened = {backend: _open(artifacts, backend) for backend in BACKENDS}
    yield opened
    for seg in opened.values():
        seg.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_writes_in_place_and_returns_it(segs, frames, backend):
    seg = segs[backend]
    expected = seg(frames[0])
    out = np.full((H, W), 255, np.uint8)
    got = seg(frames[0], out=out)
    assert got is out and np.array_equal(out, expected)
    batch = np.stack(frames[:2])
    out2 = np.zeros((2, H, W), np.uint8)
    assert seg(batch, out=out2) is out2 and np.array_equal(out2, seg(batch))


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((H, W), np.int32), TypeError, "dtype int32"),
    (np.zeros((H + 1, W), np.uint8), InputError, "shape"),
    (np.zeros((W, H), np.uint8).T, InputError, "not C-contiguous"),
    ([0] * 3, InputError, "H x W uint8 array"),
])
def test_bad_out_is_refused(segs, frames, bad, error, match):
    with pytest.raises(error, match=match):
        segs["onnxruntime"](frames[0], out=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_returns_ordered_results_equal_to_calls(segs, frames, backend):
    seg = segs[backend]
    expected = [seg(f) for f in frames]
    pending = [seg.submit(f) for f in frames]
    assert [p.result().shape for p in pending] == [(H, W)] * len(frames)
    for p, e in zip(pending, expected):
        assert np.array_equal(p.result(), e)
    streamed = list(seg.stream(iter(frames)))
    assert all(np.array_equal(s, e) for s, e in zip(streamed, expected)) and len(streamed) == len(frames)
    assert 1 <= seg.backend.most_in_flight <= seg.depth == 2


def test_submit_into_out_and_batches(artifacts, frames):
    with _open(artifacts, "onnxruntime", depth=3) as seg:
        outs = [np.zeros((H, W), np.uint8) for _ in frames]
        pending = [seg.submit(f, out=o) for f, o in zip(frames, outs)]
        for p, o, f in zip(pending, outs, frames):
            assert p.result() is o
            assert np.array_equal(o, seg(f))
        batch = np.stack(frames[:3])
        assert np.array_equal(seg.submit(batch).result(), seg(batch))


def test_in_flight_never_exceeds_depth(artifacts, frames):
    """Submissions wait while `depth` are running: with slow inference, the count in flight is capped."""
    with _open(artifacts, "onnxruntime", depth=2) as seg:
        runner = seg.backend
        running, most = [0], [0]
        lock = threading.Lock()
        original = runner._infer_into

        def counting(batch, out):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                return original(batch, out)
            finally:
                with lock:
                    running[0] -= 1

        runner._infer_into = counting
        pending = [seg.submit(frames[i % len(frames)]) for i in range(8)]
        [p.result() for p in pending]
        runner._infer_into = original
    assert most[0] <= 2 and runner.most_in_flight <= 2


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((H, W, 3), np.float32), TypeError, "dtype float32"),
    (np.zeros((H, W, 4), np.uint8), InputError, "4 channels"),
    (np.zeros((0, W, 3), np.uint8), InputError, "empty"),
    ([np.zeros((H, W, 3), np.uint8)], InputError, "frame by frame"),
])
def test_bad_input_fails_at_submission_as_a_call_does(segs, bad, error, match):
    seg = segs["onnxruntime"]
    with pytest.raises(error, match=match):
        seg.submit(bad)
    if not isinstance(bad, list):
        with pytest.raises(error, match=match):
            seg(bad)


def test_depth_must_be_positive(artifacts):
    with pytest.raises(InputError, match="depth"):
        _open(artifacts, "onnxruntime", depth=0)


def test_threads_share_one_segmenter(segs, frames):
    """Two threads calling one OpenVINO Segmenter each get an idle infer request: same labels, no 'busy' error."""
    seg = segs["openvino"]
    expected = [seg(f) for f in frames]
    got: dict[int, list] = {}

    def work(k: int) -> None:
        got[k] = [seg(f) for f in frames for _ in range(2)][::2]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(got[k], expected))


def test_throughput_bench_mode(artifacts):
    from bisenet_rt import Segmenter
    from bisenet_rt.apps.bench import BenchConfig, report, run_bench

    config = BenchConfig(iters=4, warmup=1, size=(W, H), rounds=2, mode="throughput")
    with Segmenter(artifacts["onnxruntime"][0], depth=2) as seg:
        rep = report(run_bench([seg], config, progress=False), config, ["bench", "--mode", "throughput"])
    (result,) = rep["results"]
    assert rep["config"]["mode"] == "throughput" and result["depth"] == 2 and result["iterations"] == 4
    assert result["fps"] > 0
    with pytest.raises(ValueError, match="--mode"):
        BenchConfig(mode="fast")


@pytest.mark.parametrize("size", [(H, W), (300, 200)])
def test_deployed_torch_pipeline_matches_the_oracle(confident_model, size):
    """The GPU path's layout (resize before normalizing, channels-last upsample) is the oracle's function (CPU, FP32)."""
    import torch

    from bisenet_rt.model.reference import reference_labels
    from bisenet_rt.model.deployed import deployed_labels

    frames = torch.from_numpy(np.stack([street_frame(*size, seed=3),
                                        np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)]))
    with torch.inference_mode():
        got = deployed_labels(confident_model, frames, SMALL)
    ref = reference_labels(confident_model, frames, SMALL)
    assert got.dtype == torch.uint8 and got.shape == ref.shape
    assert float((got == ref).float().mean()) >= 0.999
