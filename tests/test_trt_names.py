"""Every TensorRT name the build and runtime code uses exists in TensorRT 11.4; every CUDA runtime
name exists in cuda-python.

TensorRT cannot be installed here, so the TensorRT side is checked against
`tests/data/tensorrt_11.4_binding_names.txt` (a copy of the project's shared/reference/ file), the identifiers
found in the 11.4 Python
binding. That list is a strings dump of a linked library: a name that is the tail of a longer
string (`ERROR` of `INTERNAL_ERROR`, `num_errors` of `get_num_errors`) was merged into it by the
linker and is absent as a line. Such names are accepted only from TAIL_MERGED, and only while the
list really holds a longer identifier ending in them.
"""
from __future__ import annotations

import ast

import pytest

from conftest import DATA, REPO

NAMES_FILE = DATA / "tensorrt_11.4_binding_names.txt"
TRT_FILES = [REPO / "bisenet_rt" / "backends" / "tensorrt" / name for name in ("build.py", "run.py")]
CUDA_FILES = [REPO / "bisenet_rt" / "backends" / "tensorrt" / name for name in ("cuda.py", "run.py")]

#: Variables and `self.` attributes that hold TensorRT objects in TRT_FILES.
TRT_VARIABLES = {"trt", "builder", "network", "parser", "builder_config", "profile", "runtime", "engine", "context",
                 "error"}
TRT_SELF_ATTRIBUTES = {"_runtime", "_engine", "_context", "context"}
#: Names that exist in the binding but whose line the linker merged into a longer string.
TAIL_MERGED = {
    "Builder": "tensorrt.Builder", "Runtime": "tensorrt.Runtime", "ERROR": "ILogger.Severity.ERROR",
    "num_errors": "OnnxParser.num_errors", "desc": "ParserError.desc()", "serialize": "ITimingCache.serialize()",
    "name": "the .name of TensorRT enums (TensorIOMode)",
}
#: Defined in the Python part of the tensorrt package (tensorrt/__init__.py), not in the binding.
PYTHON_LEVEL = {"__version__", "nptype"}
#: Methods of our own on classes derived from TensorRT interfaces (not overrides TensorRT calls).
OWN_METHODS = {"take_errors", "close"}
#: Roots through which bisenet_rt reaches cuda.bindings.runtime.
CUDA_ROOTS = {"rt", "cudart"}


@pytest.fixture(scope="module")
def binding_names() -> set[str]:
    return {line.strip() for line in NAMES_FILE.read_text().splitlines() if line.strip()}


def _trt_chain_root(node: ast.AST) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "trt"


def _is_trt_object(node: ast.AST) -> bool:
    """Whether an expression is the tensorrt module or an object of it (calls on TRT objects give TRT objects)."""
    if isinstance(node, ast.Name):
        return node.id in TRT_VARIABLES
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "backend"):  # a lane holds its backend
            return node.attr in TRT_SELF_ATTRIBUTES
        return _trt_chain_root(node)
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Attribute) and _is_trt_object(node.func.value)
    return False


def trt_names(source: str) -> set[str]:
    """Attribute names used on the tensorrt module or TensorRT objects, plus overridden interface methods."""
    tree = ast.parse(source)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and _is_trt_object(node.value)}
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if any(_trt_chain_root(base) for base in cls.bases):
            used |= {f.name for f in cls.body if isinstance(f, ast.FunctionDef)
                     if not f.name.startswith("__") and f.name not in OWN_METHODS}
    return used


def missing_trt_names(used: set[str], binding: set[str]) -> set[str]:
    def known(name: str) -> bool:
        if name in binding or name in PYTHON_LEVEL:
            return True
        return name in TAIL_MERGED and any(b.endswith(name) and b != name for b in binding)
    return {name for name in used if not known(name)}


def cuda_chains(source: str) -> set[tuple[str, ...]]:
    """Maximal attribute chains rooted at the CUDA runtime module (`rt.X.Y`, `_runtime().X`)."""
    tree = ast.parse(source)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    chains = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        parts, root = [], node
        while isinstance(root, ast.Attribute):
            parts.append(root.attr)
            root = root.value
        is_root = (isinstance(root, ast.Name) and root.id in CUDA_ROOTS) or (
            isinstance(root, ast.Call) and isinstance(root.func, ast.Name) and root.func.id == "_runtime")
        if is_root:
            chains.add(tuple(reversed(parts)))
    return chains


def test_checker_rejects_names_removed_from_tensorrt(binding_names):
    source = ("import tensorrt as trt\n"
              "flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n"
              "builder_config.set_flag(trt.BuilderFlag.FP16)\n"
              "shape = engine.get_binding_shape(0)\n"
              "context.execute_async_v2(bindings, stream)\n")
    assert missing_trt_names(trt_names(source), binding_names) == {"EXPLICIT_BATCH", "FP16", "get_binding_shape",
                                                                   "execute_async_v2"}


def test_tail_merged_names_are_tails_of_listed_identifiers(binding_names):
    for name, what in TAIL_MERGED.items():
        assert name not in binding_names, f"{name} is listed; drop it from TAIL_MERGED"
        assert any(b.endswith(name) and b != name for b in binding_names), f"{name} ({what}): no evidence in the list"


def test_tensorrt_names_exist_in_11_4(binding_names):
    used = set().union(*(trt_names(path.read_text()) for path in TRT_FILES))
    # The checker sees the calls that matter (guards against it silently matching nothing).
    assert {"STRONGLY_TYPED", "build_serialized_network", "parse_from_file", "set_timing_cache", "progress_monitor",
            "deserialize_cuda_engine", "set_input_shape", "set_tensor_address", "execute_async_v3", "step_complete",
            "log"} <= used
    missing = missing_trt_names(used, binding_names)
    assert not missing, f"not in the TensorRT 11.4 binding: {sorted(missing)}"


def test_cuda_runtime_names_exist():
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (pip install .[gpu])")
    chains = set().union(*(cuda_chains(path.read_text()) for path in CUDA_FILES))
    assert {("cudaMalloc",), ("cudaMemcpyAsync",), ("cudaStreamBeginCapture",), ("cudaGraphLaunch",),
            ("cudaEventElapsedTime",)} <= chains
    missing = []
    for chain in chains:
        obj = runtime
        for part in chain:
            if not hasattr(obj, part):
                missing.append(".".join(chain))
                break
            obj = getattr(obj, part)
    assert not missing, f"not in cuda.bindings.runtime: {sorted(missing)}"
