"""Triton model repositories: config.pbtxt parsed with Triton's own ModelConfig schema, I/O checked
against the model it ships."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import street_frame

try:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
except (ImportError, RuntimeError):  # tritonclient raises RuntimeError when installed without its grpc extra
    model_config_pb2 = None

needs_schema = pytest.mark.skipif(model_config_pb2 is None,
                                  reason="tritonclient[grpc] is not installed (it ships Triton's model_config_pb2)")


def parse_config(model_dir: Path):
    """config.pbtxt parsed strictly (unknown fields are errors) into Triton's ModelConfig message."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@needs_schema
def test_onnx_repository_config_parses_and_names_the_graph_io(exported, tmp_path):
    import onnx

    from bisenet_rt.classes import CITYSCAPES_CLASSES
    from bisenet_rt.apps.triton import export_triton

    model_dir = export_triton(exported["fp32"], tmp_path / "repo")
    assert model_dir == tmp_path / "repo" / "bisenetv2"
    config = parse_config(model_dir)
    mc = model_config_pb2
    assert config.name == "bisenetv2" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    (inp,), (out,) = config.input, config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("frames", mc.TYPE_UINT8, [-1, -1, 3])
    assert (out.name, out.data_type, list(out.dims)) == ("labels", mc.TYPE_UINT8, [-1, -1])
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    (group,) = config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_CPU, 1)
    assert config.parameters["bisenet_rt.precision"].string_value == "fp32"
    assert tuple(__import__("json").loads(config.parameters["bisenet_rt.classes"].string_value)) == CITYSCAPES_CLASSES
    assert (model_dir / "labels.txt").read_text().splitlines() == list(CITYSCAPES_CLASSES)

    # The shipped model is the artifact, and its graph has exactly the I/O the config declares
    # (Triton's batch dimension in front of the config's dims).
    shipped = model_dir / "1" / "model.onnx"
    assert shipped.read_bytes() == Path(exported["fp32"]).read_bytes()
    graph = onnx.load(str(shipped)).graph
    to_triton = {onnx.TensorProto.UINT8: mc.TYPE_UINT8}
    assert [(v.name, to_triton[v.type.tensor_type.elem_type], len(v.type.tensor_type.shape.dim)) for v in graph.input] \
        == [(inp.name, inp.data_type, len(inp.dims) + 1)]
    assert [(v.name, to_triton[v.type.tensor_type.elem_type], len(v.type.tensor_type.shape.dim)) for v in graph.output] \
        == [(out.name, out.data_type, len(out.dims) + 1)]


def test_shipped_onnx_runs_a_batch_shaped_as_the_config_says(exported, tmp_path):
    """What Triton would send: a uint8 [batch, *dims] 'frames' tensor; what it expects back: [batch, H, W]."""
    import onnxruntime as ort

    from bisenet_rt import Segmenter
    from bisenet_rt.apps.triton import export_triton

    model_dir = export_triton(exported["fp32"], tmp_path / "repo", max_batch=2)
    batch = np.stack([street_frame(64, 96, seed=s) for s in (1, 2)])
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (labels,) = session.run(["labels"], {"frames": batch})
    assert labels.dtype == np.uint8 and labels.shape == (2, 64, 96)
    with Segmenter(exported["fp32"]) as seg:
        np.testing.assert_array_equal(labels, seg(batch))


@needs_schema
def test_onnx_options_gpu_instances_batch_and_pinned_size(exported, tmp_path):
    from bisenet_rt.apps.triton import export_triton

    model_dir = export_triton(exported["fp16"], tmp_path / "repo", name="seg_fp16", max_batch=6, instances=2,
                              device="gpu", queue_delay_us=500, frame_size=(2048, 1024), version=3)
    config = parse_config(model_dir)
    assert config.name == "seg_fp16" and (model_dir / "3" / "model.onnx").is_file()
    assert config.max_batch_size == 6 and list(config.dynamic_batching.preferred_batch_size) == [2, 4, 6]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.input[0].dims) == [1024, 2048, 3] and list(config.output[0].dims) == [1024, 2048]
    assert (config.instance_group[0].kind, config.instance_group[0].count) == \
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)
    assert config.parameters["bisenet_rt.precision"].string_value == "fp16"


def _placeholder_engine(tmp_path: Path, *, min_size, max_size, max_batch) -> Path:
    """A placeholder file with a real sidecar, for config generation ONLY: it is not a TensorRT
    engine and nothing here loads or runs it (there is no TensorRT on this machine)."""
    from bisenet_rt.artifacts import ArtifactInfo, write_sidecar
    from bisenet_rt.classes import class_names
    from bisenet_rt.precision import Precision

    path = tmp_path / "placeholder_fp16.engine"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"placeholder for config-generation tests; not a TensorRT engine\n")
    info = ArtifactInfo(classes=class_names(19), precision=Precision.FP16).with_profile(min_size, max_size, max_batch)
    io = [{"name": "frames", "mode": "input", "shape": [-1, -1, -1, 3], "dtype": "uint8"},
          {"name": "labels", "mode": "output", "shape": [-1, -1, -1], "dtype": "uint8"}]
    write_sidecar(path, {"info": info.to_dict(), "backend": "tensorrt", "tensorrt_version": "11.4.0", "io": io,
                         "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}})
    return path


@needs_schema
def test_engine_config_generation_from_sidecar(tmp_path):
    """Config-generation test (not a runtime test): platform, batch and dims come from the sidecar."""
    from bisenet_rt.apps.triton import export_triton

    fixed = _placeholder_engine(tmp_path, min_size=(2048, 1024), max_size=(2048, 1024), max_batch=4)
    model_dir = export_triton(fixed, tmp_path / "repo")
    config = parse_config(model_dir)
    assert config.platform == "tensorrt_plan" and (model_dir / "1" / "model.plan").read_bytes() == fixed.read_bytes()
    assert config.max_batch_size == 4  # the engine's optimisation profile maximum
    assert list(config.input[0].dims) == [1024, 2048, 3] and list(config.output[0].dims) == [1024, 2048]
    assert config.input[0].data_type == config.output[0].data_type == model_config_pb2.TYPE_UINT8
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.parameters["bisenet_rt.precision"].string_value == "fp16"

    ranged = _placeholder_engine(tmp_path / "ranged", min_size=(512, 256), max_size=(2048, 1024), max_batch=1)
    config = parse_config(export_triton(ranged, tmp_path / "repo2"))
    assert list(config.input[0].dims) == [-1, -1, 3] and config.max_batch_size == 1
    assert not config.HasField("dynamic_batching")  # nothing to batch with a batch limit of 1


def test_engine_limits_are_enforced(tmp_path):
    from bisenet_rt.errors import InputError
    from bisenet_rt.apps.triton import describe_artifact, export_triton

    engine = _placeholder_engine(tmp_path, min_size=(512, 256), max_size=(2048, 1024), max_batch=4)
    with pytest.raises(InputError, match="exceeds the largest batch 4.*--max-batch 8"):
        export_triton(engine, tmp_path / "repo", max_batch=8)
    with pytest.raises(InputError, match="GPU only"):
        export_triton(engine, tmp_path / "repo", device="cpu")
    with pytest.raises(InputError, match="outside the frame range"):
        export_triton(engine, tmp_path / "repo", frame_size=(4096, 2048))
    assert "TensorRT 11.4.0 for NVIDIA H100" in describe_artifact(engine).notes[0]


def test_engine_with_other_io_is_refused(tmp_path):
    """Config-generation guard: an engine whose sidecar lists other tensors is not our pipeline."""
    import json

    from bisenet_rt.errors import ArtifactError
    from bisenet_rt.apps.triton import export_triton

    engine = _placeholder_engine(tmp_path, min_size=(512, 256), max_size=(2048, 1024), max_batch=4)
    sidecar = Path(str(engine) + ".json")
    data = json.loads(sidecar.read_text())
    data["io"][0].update(name="input", dtype="float32")
    sidecar.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="not the pipeline's uint8 'frames' -> 'labels'"):
        export_triton(engine, tmp_path / "repo")


def test_bad_artifacts_and_overwrites_error_clearly(exported, tmp_path):
    from bisenet_rt.errors import ArtifactError, InputError
    from bisenet_rt.apps.triton import export_triton

    with pytest.raises(ArtifactError, match="not a bisenet-rt pipeline graph"):
        export_triton(exported["plain"], tmp_path / "repo")
    lone = tmp_path / "lone.engine"
    lone.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="lone.engine.json is missing"):
        export_triton(lone, tmp_path / "repo")
    with pytest.raises(ArtifactError, match="Triton export takes"):
        export_triton(Path(__file__), tmp_path / "repo")
    export_triton(exported["fp32"], tmp_path / "repo")
    with pytest.raises(InputError, match="already exists; pass --force"):
        export_triton(exported["fp32"], tmp_path / "repo")
    export_triton(exported["fp32"], tmp_path / "repo", force=True)
    with pytest.raises(InputError, match="bad model name"):
        export_triton(exported["fp32"], tmp_path / "repo", name="../escape")


def test_export_triton_command(exported, tmp_path, capsys):
    from bisenet_rt.cli import main

    repo = tmp_path / "repo"
    assert main(["export-triton", "-o", str(repo), "--onnx", str(exported["fp32"]), "--max-batch", "4"]) == 0
    assert capsys.readouterr().out.strip() == str(repo / "bisenetv2")
    assert "max_batch_size: 4" in (repo / "bisenetv2" / "config.pbtxt").read_text()
    assert main(["export-triton", "-o", str(repo), "--onnx", str(tmp_path / "x.engine")]) == 1
    assert "expected a .onnx file" in capsys.readouterr().err


def test_preferred_batch_sizes():
    from bisenet_rt.apps.triton import preferred_batch_sizes

    assert [preferred_batch_sizes(n) for n in (1, 2, 3, 6, 8, 16)] == [[], [2], [2, 3], [2, 4, 6], [2, 4, 8],
                                                                      [2, 4, 8, 16]]
