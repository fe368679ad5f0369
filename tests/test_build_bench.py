"""`bisenet-rt build` for ONNX Runtime and `bisenet-rt bench`: artifacts, sidecars, reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bisenet_rt import Segmenter
from bisenet_rt.artifacts import read_sidecar
from bisenet_rt.cli import main
from conftest import street_frame


@pytest.fixture(scope="module")
def built(tmp_path_factory, exported):
    out = tmp_path_factory.mktemp("engines")
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(exported["fp32"]),
                 "--engines-dir", str(out)]) == 0
    return out / "bisenetv2_fp32.onnx"


def test_build_writes_optimized_model_and_sidecar(built, exported):
    side = read_sidecar(built)
    assert side["backend"] == "onnxruntime" and side["info"]["precision"] == "fp32"
    assert side["info"]["classes"][0] == "road" and side["info"]["model_size"] == "1024x512"
    assert len(side["onnx_sha256"]) == 64
    frame = street_frame(512, 1024, seed=4)
    with Segmenter(built) as a, Segmenter(exported["fp32"]) as b:
        assert np.array_equal(a(frame), b(frame))


def test_build_refuses_precision_mismatch(exported, tmp_path, capsys):
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(exported["fp32"]), "--precision", "fp16",
                 "--engines-dir", str(tmp_path)]) == 1
    assert "fp32 graph but --precision fp16" in capsys.readouterr().err


def test_build_bad_arguments(tmp_path, capsys):
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(tmp_path / "none.onnx"),
                 "--engines-dir", str(tmp_path)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["build", "--min-size", "4096x2048", "--max-size", "2048x1024"]) == 1
    assert "larger than" in capsys.readouterr().err


def test_bench_writes_valid_report(built, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["bench", "--engine", str(built), "--iters", "5", "--warmup", "1", "--size", "640x320", "--json", str(out)]
    assert main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["command"] == "bisenet-rt " + " ".join(argv)
    assert rep["config"]["iters"] == 5 and rep["config"]["size"] == "640x320"
    (res,) = rep["results"]
    assert res["iterations"] == 5 and res["backend"] == "onnxruntime"
    lat = res["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert res["fps"] == pytest.approx(1000 / lat["mean"], rel=0.01)
    assert rep["machine"]["cpu"] and "onnxruntime" in res["versions"]
    assert "| bisenetv2_fp32.onnx | onnxruntime | fp32 |" in capsys.readouterr().out


def test_bench_side_by_side(built, exported, tmp_path):
    out = tmp_path / "two.json"
    assert main(["bench", "--engine", str(built), "--engine", str(exported["fp16"]), "--iters", "4", "--warmup", "0",
                 "--rounds", "2", "--size", "320x160", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["precision"] for r in results] == ["fp32", "fp16"] and results[0]["fps_ratio_to_first"] == 1.0
    assert all(r["iterations"] == 4 for r in results)


def test_bench_bad_arguments(capsys):
    assert main(["bench", "--iters", "0", "--engine", "x.onnx"]) == 1
    assert "--iters must be at least 1" in capsys.readouterr().err
    assert main(["bench", "--iters", "5", "--duration", "3", "--engine", "x.onnx"]) == 1
    assert "give --iters (a number of calls) or --duration (seconds per artifact), not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a prefix of --engines-dir is not taken for it
        main(["bench", "--engines", "x.onnx"])
    assert "unrecognized arguments: --engines" in capsys.readouterr().err


def test_bench_by_default_is_bounded_by_time_and_says_how_long_first(built, tmp_path, capsys):
    """Without --iters each artifact is timed for --duration seconds and at least --min-iters calls; the plan and
    its expected length (from the warm-up) come before the timed calls; the table names what its columns hold."""
    out = tmp_path / "t.json"
    assert main(["bench", "--artifact", str(built), "--duration", "0.2", "--min-iters", "3", "--warmup", "1",
                 "--size", "320x160", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "bench: timing for 0.2 s (at least 3 iterations): about " in captured.err
    rep = json.loads(out.read_text())
    assert rep["config"]["iters"] is None and rep["config"]["duration_s"] == 0.2 and rep["config"]["min_iters"] == 3
    (res,) = rep["results"]
    assert res["iterations"] >= 3 and res["random_weights"] is True  # the `exported` graphs hold untrained weights
    assert set(rep["machine"]["load_average"]) == {"1min", "5min", "15min"}
    header = next(line for line in captured.out.splitlines() if line.startswith("| artifact"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "artifact", "backend", "precision", "device", "iterations", "frames/s", "mean ms", "min ms", "p50 ms",
        "p90 ms", "p99 ms", "max ms", "frames/s vs first row"]
    row = next(line for line in captured.out.splitlines() if line.startswith(f"| {built.name}"))
    assert f"| {res['latency_ms']['min']:.2f} |" in row
    assert f"{built.name}: random weights: predictions are meaningless (the timings hold)" in captured.out


def test_bench_config_defaults_end_in_seconds():
    from bisenet_rt.apps.bench import PAPER_ITERS, WARMUP_S, BenchConfig

    config = BenchConfig()
    # warm-up and timed calls of a default run leave half of half a minute for loading and the slowest last call
    assert config.by_time and WARMUP_S + config.duration <= 15 and config.min_iters >= 1
    assert BenchConfig(iters=PAPER_ITERS).describe() == "5000 iterations"


def test_newest_artifact_skips_export_sources(built, exported, tmp_path):
    import shutil

    from bisenet_rt.artifacts import newest_artifact

    shutil.copy(built, tmp_path / built.name)
    shutil.copy(exported["fp32"], tmp_path / "bisenetv2_fp32.src.onnx")  # written after the artifact
    (tmp_path / ".bisenetv2_fp32.tmp99.xml").write_text("")  # a builder's temporary name, also newer
    assert newest_artifact(tmp_path) == tmp_path / built.name
    assert newest_artifact(tmp_path / "none") is None
