"""What a newcomer meets in the first hour (issue 25): random weights said wherever they are used, outputs whose
names say another kind refused, advice that matches what was done."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import pytest

from bisenet_rt.artifacts import RANDOM_WEIGHTS, ArtifactInfo
from bisenet_rt.cli import main
from bisenet_rt.classes import CITYSCAPES_CLASSES
from bisenet_rt.families import COINCHEUNG, DEMO_CHECKPOINT, MMSEG, OWN_WEIGHTS
from conftest import street_frame


@pytest.fixture(scope="module")
def frame_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "street.png"
    cv2.imwrite(str(path), street_frame(128, 256, seed=3))
    return path


# -- random weights --------------------------------------------------------------------------------------------------
def test_segmenter_says_random_weights_in_its_repr_and_log(exported, checkpoint, caplog):
    """The `exported` graphs were made without a checkpoint (their facts say 'random-init'); a checkpoint is not."""
    from bisenet_rt import Segmenter

    with caplog.at_level(logging.WARNING, logger="bisenet_rt"):
        with Segmenter(exported["fp32"]) as seg:
            assert seg.random_weights and f"weights={RANDOM_WEIGHTS!r}" in repr(seg)
    assert [r.getMessage() for r in caplog.records if RANDOM_WEIGHTS in r.getMessage()] == [
        f"{exported['fp32']}: {RANDOM_WEIGHTS}; build from a checkpoint: 'bisenet-rt build --weights CKPT' "
        "(the demo model: bisenet_rt/assets/demo_bisenetv2_synth.pth)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bisenet_rt"):
        with Segmenter(checkpoint) as seg:
            assert not seg.random_weights and "random" not in repr(seg)
    assert not any(RANDOM_WEIGHTS in r.getMessage() for r in caplog.records)


def test_segment_and_bench_say_random_weights(exported, frame_png, tmp_path, capsys):
    assert main(["segment", str(frame_png), "-o", str(tmp_path / "out"), "--artifact", str(exported["fp32"]),
                 "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"warning: {exported['fp32']}: {RANDOM_WEIGHTS}")  # when it opens
    assert err[-1].endswith(f"under {tmp_path / 'out'}; {RANDOM_WEIGHTS}")  # and where the run ends
    assert main(["bench", "--artifact", str(exported["fp32"]), "--iters", "1", "--warmup", "0",
                 "--size", "256x128"]) == 0
    captured = capsys.readouterr()
    assert f"warning: {exported['fp32']}: {RANDOM_WEIGHTS}" in captured.err
    assert f"fp32.onnx: {RANDOM_WEIGHTS} (the timings hold)" in captured.out


def test_build_from_random_weights_says_so_at_the_end(exported, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["build", "--backend", "onnxruntime", "--onnx", str(exported["fp32"]), "--engines-dir", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"warning: {out / 'bisenetv2_fp32.onnx'} holds random weights: predictions are "
                              "meaningless (timings hold); build from a checkpoint: 'bisenet-rt build --weights CKPT'")


def test_bench_without_artifacts_builds_from_the_demo_checkpoint(tmp_path, monkeypatch, exported, capsys):
    """`make bench` on a fresh clone: the artifact it builds holds the demo model, not random weights."""
    import bisenet_rt.builder

    asked = []

    def build(config):  # the build itself is tested in test_build_bench; here: what bench asks for
        asked.append(config)
        return exported["fp32"]

    monkeypatch.setattr(bisenet_rt.builder, "build", build)
    assert main(["bench", "--engines-dir", str(tmp_path), "--iters", "1", "--warmup", "0", "--size", "256x128"]) == 0
    (config,) = asked
    assert config.weights == DEMO_CHECKPOINT and DEMO_CHECKPOINT.is_file() and config.engines_dir == tmp_path
    assert f"building the default for this machine from the demo checkpoint {DEMO_CHECKPOINT}" in capsys.readouterr().err


def test_demo_checkpoint_is_ours_and_has_no_published_score():
    """Published-protocol notes go only with weights that may be published: not random, not the demo (known by
    its sha256), not a head of other classes."""
    import hashlib

    demo_sha = hashlib.sha256(DEMO_CHECKPOINT.read_bytes()).hexdigest()
    assert demo_sha in OWN_WEIGHTS
    facts = ArtifactInfo(classes=CITYSCAPES_CLASSES, source_sha256="0" * 64)
    assert facts.published_family is COINCHEUNG
    assert ArtifactInfo(classes=CITYSCAPES_CLASSES, source_sha256="0" * 64, family="mmseg").published_family is MMSEG
    assert ArtifactInfo(classes=CITYSCAPES_CLASSES, source_sha256=demo_sha).published_family is None
    assert ArtifactInfo(classes=CITYSCAPES_CLASSES).published_family is COINCHEUNG  # unknown source: may be published
    assert ArtifactInfo(classes=CITYSCAPES_CLASSES, source_sha256="random-init").published_family is None
    assert ArtifactInfo(classes=("a", "b"), source_sha256="0" * 64).published_family is None


# -- outputs whose names say another kind ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (128, 64))
    for i in range(3):
        writer.write(street_frame(64, 128, seed=i))
    writer.release()
    return path


@pytest.mark.parametrize("inputs, out", [("clip", "o.png"), ("frame", "o.png"), ("frame", "labels.json"),
                                         ("both", "o.mp4")])
def test_segment_refuses_a_file_name_for_its_output_folder(inputs, out, clip, frame_png, exported, tmp_path, capsys):
    """`segment clip.mp4 -o o.png` would have made a folder o.png/; it is refused in one line, before any work."""
    given = {"clip": [clip], "frame": [frame_png], "both": [clip, frame_png]}[inputs]
    target = tmp_path / out
    assert main(["segment", *map(str, given), "-o", str(target), "--artifact", str(exported["fp32"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bisenet-rt segment: error: -o {target}")
    assert "give a folder" in err[0] and not target.exists()


def test_an_existing_folder_with_a_file_suffix_is_still_a_folder(frame_png, exported, tmp_path):
    out = tmp_path / "v1.png"
    out.mkdir()
    assert main(["segment", str(frame_png), "-o", str(out), "--artifact", str(exported["fp32"]), "--quiet"]) == 0
    assert (out / "street_labels.png").is_file()


@pytest.mark.parametrize("argv", [["bench", "--json", "reports/"], ["eval", "--data", "d", "--json", "reports/"],
                                  ["export", "-o", "graphs/"], ["build", "-o", "engines/"]])
def test_a_file_output_ending_in_a_slash_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "ends in '/', so it names a folder; give a file name" in capsys.readouterr().err


@pytest.mark.parametrize("argv, option", [(["synth", "-o", "data.json", "--n", "1"], "-o"),
                                          (["build", "--engines-dir", "engines.onnx"], "--engines-dir"),
                                          (["export-triton", "-o", "repo.pbtxt", "--onnx", "x.onnx"], "-o")])
def test_a_folder_output_named_like_a_file_is_refused(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {option} {argv[argv.index(option) + 1]}: ends in ." in err and "give a folder name such as" in err
    assert not any(tmp_path.iterdir())


# -- eval: advice that matches what it did -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def city_root(tmp_path_factory) -> Path:
    from bisenet_rt.data.synth import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, n=2, seed=7, size=(256, 128), val_fraction=0.5, progress=False)
    return root


@pytest.fixture(scope="module")
def published_onnx(checkpoint, confident_model, tmp_path_factory) -> Path:
    """A pipeline graph exported from `checkpoint` as `bisenet-rt export --weights` does (its sha256 in the facts):
    weights of the CoinCheung layout that are neither random nor ours, so they may be the published ones."""
    from bisenet_rt.artifacts import artifact_sha256
    from bisenet_rt.graph.export import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("published") / "city.onnx"
    export_onnx(confident_model, path, ExportConfig(), source_sha256=artifact_sha256(checkpoint))
    return path


def _eval(capsys, root: Path, *argv: str) -> tuple[str, list[str]]:
    assert main(["eval", "--data", str(root), "--no-progress", "--limit", "1", *argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err.strip().splitlines()


def test_eval_of_a_built_artifact_never_recommends_the_size_it_ignored(city_root, published_onnx, capsys):
    """`eval --artifact built.onnx --model-size 2048x1024` says the graph keeps its size and how to get the other;
    it does not also recommend `--model-size 2048x1024`."""
    _, err = _eval(capsys, city_root, "--artifact", str(published_onnx), "--model-size", "2048x1024")
    assert err == [
        "note: city.onnx was exported at model size 1024x512 and keeps it (--model-size applies to checkpoints, .pth); "
        "to run it at 2048x1024, export or build it again with --model-size 2048x1024",
        "CoinCheung/BiSeNet weights: the published ones score 74.95 mIoU on Cityscapes val at model size 2048x1024; "
        "city.onnx resize to 1024x512, so expect another mIoU (city.onnx: export or build it again with "
        "--model-size 2048x1024)"]


def test_eval_says_the_published_protocol_once_for_a_family(city_root, checkpoint, published_onnx, capsys):
    out, err = _eval(capsys, city_root, "--artifact", str(checkpoint), "--model-size", "1024x512", "--model-size",
                     "2048x1024", "--artifact", str(published_onnx))
    assert [line for line in err if "published" in line] == [
        "CoinCheung/BiSeNet weights: the published ones score 74.95 mIoU on Cityscapes val at model size 2048x1024; "
        "confident.pth@1024x512, city.onnx@1024x512 resize to 1024x512, so expect another mIoU (--model-size "
        "2048x1024 scores a checkpoint at it; city.onnx@1024x512: export or build it again with --model-size "
        "2048x1024)"]
    assert any(line.startswith("mAcc ") for line in out.splitlines())


def test_eval_of_the_demo_model_says_nothing_of_published_scores(city_root, capsys):
    out, err = _eval(capsys, city_root, "--artifact", str(DEMO_CHECKPOINT))
    assert not any("published" in line for line in err) and "demo_bisenetv2_synth.pth" in out


# -- --device ----------------------------------------------------------------------------------------------------------
def _cuda_usable() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_usable(), reason="refusals of a GPU are checked where PyTorch sees none")
@pytest.mark.parametrize("command, artifact, extra, says", [
    ("segment", "checkpoint", ["--device", "cuda"],
     "device cuda: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False); run on the CPU (device cpu)"),
    ("eval", "checkpoint", ["--device", "cuda:1"], "device cuda:1: PyTorch sees no CUDA GPU here"),
    ("bench", "onnx", ["--device", "cuda"], "device cuda: ONNX Runtime has no CUDA provider here; swap in "
                                            "onnxruntime-gpu"),
    ("segment", "onnx", ["--device", "cuda", "--backend", "openvino"],
     "device cuda: OpenVINO artifacts run on the CPU only; on a GPU, use a TensorRT engine (.engine), a checkpoint "
     "(.pth) or an ONNX graph with onnxruntime-gpu"),
    ("bench", "onnx", ["--device", "gpu"], "unknown device 'gpu'; choose cpu, cuda or cuda:N (N: the GPU's index), "
                                           "or auto"),
])
def test_a_device_that_cannot_be_used_is_one_line(command, artifact, extra, says, checkpoint, exported, frame_png,
                                                  city_root, tmp_path, capsys):
    path = str(checkpoint if artifact == "checkpoint" else exported["fp32"])
    argv = {"segment": ["segment", str(frame_png), "-o", str(tmp_path / "o"), "--artifact", path, "--quiet"],
            "eval": ["eval", "--data", str(city_root), "--artifact", path, "--no-progress"],
            "bench": ["bench", "--artifact", path, "--iters", "1"]}[command]
    assert main([*argv, *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"bisenet-rt {command}: error: {says}") and len(err) <= 2  # (+ the random-weights line)
    assert not (tmp_path / "o").exists()


def test_device_cpu_runs_every_cpu_artifact(checkpoint, exported, frame_png, tmp_path):
    from bisenet_rt import Segmenter
    from bisenet_rt.errors import ConfigError

    for path, backend in ((checkpoint, "auto"), (exported["fp32"], "auto"), (exported["fp32"], "openvino")):
        with Segmenter(path, backend=backend, device="cpu") as seg:
            assert seg.device.startswith("CPU")
    with pytest.raises(ConfigError, match="TensorRT runs on the current CUDA device; choose GPU 1 with "
                                          "CUDA_VISIBLE_DEVICES=1"):
        Segmenter(tmp_path / "x.engine", device="cuda:1")
    with pytest.raises(ConfigError, match="TensorRT artifacts run on a CUDA GPU only; on the CPU, use the ONNX graph"):
        Segmenter(tmp_path / "x.engine", device="cpu")


def test_onnxruntime_providers_follow_the_device():
    """What ONNX Runtime is handed for each device (its GPU providers named as a GPU build lists them)."""
    from bisenet_rt.backends.onnxruntime.run import execution_providers as providers

    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers("cpu", gpu_build) == ["CPUExecutionProvider"]
    assert providers(None, gpu_build) == gpu_build and providers("cuda", gpu_build) == gpu_build
    assert providers("cuda:1", gpu_build) == [("TensorrtExecutionProvider", {"device_id": 1}),
                                              ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
