"""The TensorRT backend (NVIDIA GPUs): its spec, and whether TensorRT can run here.

`run.py` runs engines (lanes of execution contexts, CUDA graphs), `build.py` builds them from the pipeline
graph, `conformance.py` holds the ONNX parser's rules a graph is checked against first, `cuda.py` is the
checked layer over cuda-python, `lanes.py` the lane bookkeeping. Only this file is imported until one is used.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...graph.prepost import PostForm
from ...precision import Precision
from ..spec import BackendSpec, BuildConfig, GraphForm

if TYPE_CHECKING:
    from ...artifacts import Artifact, ArtifactInfo
    from ..base import Backend

__all__ = ["SPEC", "tensorrt_availability", "tensorrt_cuda_major"]

_MIN_MAJOR = 10  # execute_async_v3, name-based I/O, strong typing: TensorRT 10 and 11


def tensorrt_availability() -> str | None:
    """None when TensorRT, the CUDA runtime bindings, a driver that runs their CUDA major and a GPU are all
    present; else one line naming what is missing and what to install."""
    try:
        import tensorrt
    except ImportError:
        return "the tensorrt Python module is not installed (pip install '.[gpu]' from the clone, TensorRT 10 or 11)"
    except OSError as exc:  # the module is there but its shared libraries are not
        return (f"the tensorrt module cannot load its libraries ({exc}); reinstall TensorRT (pip install '.[gpu]' from "
                "the clone)")
    major = int(str(tensorrt.__version__).split(".", 1)[0])
    if major < _MIN_MAJOR:
        return (f"TensorRT {tensorrt.__version__} is too old; bisenet-rt needs TensorRT 10 or 11 "
                "(pip install '.[gpu]' from the clone)")
    from . import cuda

    trt_cuda = tensorrt_cuda_major()
    return cuda.device_problem({"tensorrt": trt_cuda} if trt_cuda is not None else None)


@functools.cache
def tensorrt_cuda_major() -> int | None:
    """The CUDA major the installed TensorRT wheels were built for (from their names, tensorrt-cu12 / -cu13 and
    their -libs / -bindings parts); None where that is unknown (TensorRT from a tar or deb package)."""
    from importlib import metadata

    for dist in metadata.distributions():
        name = str(dist.metadata["Name"] or "").lower().replace("_", "-")
        found = re.fullmatch(r"tensorrt-cu(\d+)(?:-libs|-bindings)?", name)
        if found:
            return int(found.group(1))
    return None




def _runtime() -> "type[Backend]":
    from .run import TensorRTBackend

    return TensorRTBackend


def _admit(source: "Artifact", config: BuildConfig) -> "ArtifactInfo":
    from .build import admit

    return admit(source, config)


def _compile(source: "Artifact", info: "ArtifactInfo", config: BuildConfig, output: Path) -> dict[str, Any]:
    from .build import compile_engine

    return compile_engine(source, info, config, output)


#: Precision is the graph's (TensorRT 11 builds strongly typed networks only); the post-processing stays two Resizes.
SPEC = BackendSpec(
    name="tensorrt", title="TensorRT", extra="gpu", opens=(".engine", ".plan", ".trt"), writes=(".engine", ".plan", ".trt"),
    availability=tensorrt_availability, runtime=_runtime, on_gpu=True, caches=("tensorrt",), admit=_admit,
    compile=_compile, devices=("cuda",),
    graph_forms={p: GraphForm(p, PostForm.RESIZE) for p in (Precision.FP32, Precision.FP16, Precision.INT8)})
