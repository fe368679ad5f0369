"""benchmarks/gpu_check.py rehearsed on the CPU: the whole GPU plan runs, and its JSON has every step and number.

The rehearsal (`--plan-on-cpu`) is the GPU plan with ONNX Runtime running each engine's own source graph and
sidecar, so an orchestration bug (a dataset outside the engines' profile, timings lost to a later failure, a
check that cannot pass) fails here rather than in a short GPU window. Kept small: one timed iteration, two
calibration frames, one evaluation frame, at the plan's real frame size.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
STEPS = ["environment", "gpu_tests", "cuda_layer", "torch_reference", "tensorrt"]
PRECISIONS = ["fp32", "fp16", "int8"]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--plan-on-cpu", "--quick", "--iters", "1", "--warmup", "0",
                           "--calib-count", "2", "--eval-frames", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    written = sorted(out.glob("gpu_check_plan_on_cpu_*.json"))
    assert len(written) == 1, proc.stderr[-4000:]
    return proc, json.loads(written[0].read_text())


def test_the_rehearsal_passes_every_step(rehearsal):
    proc, report = rehearsal
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list(report["summary"]) == STEPS
    expected = {"environment": "ok", "gpu_tests": "ok", "torch_reference": "ok", "tensorrt": "ok"}
    assert {k: v for k, v in report["summary"].items() if k != "cuda_layer"} == expected
    assert report["plan"]["on_cpu"] is True and report["plan"]["frame"] == "2048x1024"
    for step in STEPS:
        assert report[step]["status"] == report["summary"][step] and report[step]["seconds"] >= 0
    cuda_layer = report["cuda_layer"]
    if cuda_layer["status"] == "skipped":  # no driver here: the reason names what to install
        assert "driver" in cuda_layer["reason"] or "cuda-python" in cuda_layer["reason"]
    else:
        assert cuda_layer["graph_replay_copied_the_data"] is True


def test_the_environment_states_the_driver_against_the_wheels(rehearsal):
    env = rehearsal[1]["environment"]
    assert {"python", "torch", "onnxruntime", "tensorrt", "cuda-bindings", "driver", "tensorrt_usable", "gpu"} <= set(env)
    driver = env["driver"]
    assert driver["wheels_cuda_major"]["cuda-bindings"] in (12, 13)
    assert (driver["problem"] is None) == (env["tensorrt_usable"] == "yes" or env["gpu"] != "unavailable")


def test_the_engines_step_times_and_scores_all_three_at_the_plan_frame(rehearsal):
    trt = rehearsal[1]["tensorrt"]
    assert sorted(trt["engines"]) == sorted(PRECISIONS)
    assert all(p.endswith(".onnx") for p in trt["engines"].values())  # ONNX Runtime stood in
    assert all(prof == {"min_size": "2048x1024", "max_size": "2048x1024", "max_batch": 1}
               for prof in trt["profiles"].values())  # the sidecar an engine of `bisenet-rt build` would get
    assert trt["dataset"] == {"frames": 3, "val": 1, "size": "2048x1024"}
    for mode, depth in (("latency", 1), ("throughput", 3)):
        bench = trt["bench"][mode]
        assert bench["config"]["size"] == "2048x1024" and bench["config"]["mode"] == mode
        results = bench["results"]
        assert [r["precision"] for r in results] == PRECISIONS
        assert all(r["iterations"] == 1 and r["depth"] == depth and r["fps"] > 0 for r in results)
    assert trt["cuda_graphs"] == {p: None for p in PRECISIONS}
    scored = trt["accuracy_on_synth_val"]["results"]
    assert [r["precision"] for r in scored] == PRECISIONS
    assert all(0.0 <= r["miou_percent"] <= 100.0 and r["frames"] == 1 for r in scored)
    assert scored[1]["agreement_with_first_percent"] >= 95.0  # the FP16 graph labels as the FP32 one does


def test_the_torch_step_runs_fp32_and_says_why_fp16_is_skipped(rehearsal):
    torch_step = rehearsal[1]["torch_reference"]
    assert torch_step["fp32/latency"]["iterations"] == 1 and torch_step["fp32/throughput"]["depth"] == 3
    assert torch_step["fp16"] == {"status": "skipped", "reason": "fp16 on the torch backend needs CUDA"}


def test_the_stand_in_refuses_frames_outside_the_engine_profile(tmp_path):
    """A dataset of another frame size than the engines' profile (the first GPU run's bug) fails here too."""
    from bisenet_rt import Segmenter
    from bisenet_rt.errors import InputError

    gpu_check = _gpu_check()
    plan = gpu_check.Plan(on_cpu=True, iters=1, warmup=0, calib_count=1, eval_frames=1, run_tests=False)
    artifact = gpu_check._stand_in(gpu_check._engine_config("fp32", tmp_path, plan))
    with Segmenter(artifact, backend="onnxruntime") as seg:
        with pytest.raises(InputError, match=r"frame size 1024x512 is outside the range 2048x1024 \.\. 2048x1024"):
            seg(np.zeros((512, 1024, 3), np.uint8))


def test_without_bisenet_rt_it_says_so_and_exits_2(tmp_path):
    """Run from a copy outside any checkout, with no site-packages: it names the import, not a missing GPU."""
    (tmp_path / "benchmarks").mkdir()
    script = shutil.copy(SCRIPT, tmp_path / "benchmarks" / "gpu_check.py")
    proc = subprocess.run([sys.executable, "-S", str(script), "--plan-on-cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "gpu_check: bisenet_rt is not importable (No module named 'bisenet_rt'); install it: pip install -e '.[gpu]'"]
    assert not list(tmp_path.glob("*.json"))
