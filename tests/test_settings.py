"""Settings: the engines and cache folders, and their environment overrides, honoured by every reader."""
from __future__ import annotations

from pathlib import Path

from bisenet_rt.artifacts import newest_artifact
from bisenet_rt.builder import BuildConfig
from bisenet_rt.settings import CACHE_ENV, ENGINES_ENV, cache_dir, engines_dir


def test_engines_folder_follows_the_environment_everywhere(monkeypatch, tmp_path):
    monkeypatch.delenv(ENGINES_ENV, raising=False)
    assert engines_dir() == Path("engines") and BuildConfig().engines_dir == Path("engines")
    monkeypatch.setenv(ENGINES_ENV, str(tmp_path))
    assert engines_dir() == tmp_path and BuildConfig().engines_dir == tmp_path
    assert newest_artifact() is None
    (tmp_path / "bisenetv2_fp32.onnx").write_bytes(b"")
    assert newest_artifact() == tmp_path / "bisenetv2_fp32.onnx"


def test_cache_folder_is_the_users_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "bisenet-rt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("openvino") == tmp_path / "xdg" / "bisenet-rt" / "openvino"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir("calibration") == tmp_path / "mine" / "calibration"
    assert BuildConfig().cache_dir == tmp_path / "mine"
