"""benchmarks/results_file.py: a benchmark's result never replaces an earlier run's file."""
from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def test_results_are_numbered_never_overwritten(tmp_path):
    spec = importlib.util.spec_from_file_location("results_file", REPO / "benchmarks" / "results_file.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = module.write_result(tmp_path / "results", "cpu_limit_x", {"run": 1})
    second = module.write_result(tmp_path / "results", "cpu_limit_x", {"run": 2})
    assert first != second and second.name == first.name.replace(".json", "_2.json")
    assert json.loads(first.read_text()) == {"run": 1} and json.loads(second.read_text()) == {"run": 2}
