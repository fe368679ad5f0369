"""Exceptions bisenet_rt raises for user-facing failures; each message says what to do next."""
from __future__ import annotations

__all__ = [
    "BisenetError",
    "InputError",
    "InputTypeError",
    "ConfigError",
    "UnsupportedError",
    "CheckpointError",
    "ExportError",
    "BuildError",
    "BackendUnavailableError",
    "ArtifactError",
    "DataError",
    "DiskFullError",
    "OutputError",
    "ClosedError",
]


class BisenetError(Exception):
    """Base class of every error bisenet_rt raises on purpose."""


class InputError(BisenetError, ValueError):
    """A frame or argument has the wrong shape, size or value."""


class InputTypeError(InputError, TypeError):
    """A frame or output array is not a numpy array of the dtype asked for."""


class ConfigError(BisenetError, ValueError):
    """An option or setting has a value bisenet_rt cannot use (the message lists the choices)."""


class UnsupportedError(BisenetError, NotImplementedError):
    """This backend cannot do what was asked (the message names one that can)."""


class CheckpointError(BisenetError):
    """A checkpoint is missing, unreadable or not a BiSeNetV2 state dict."""


class ExportError(BisenetError):
    """ONNX export was asked for something it cannot produce."""


class BuildError(BisenetError):
    """Building an engine or optimized model failed."""


class BackendUnavailableError(BisenetError):
    """The requested backend cannot run on this machine (module, driver or device missing)."""


class ArtifactError(BisenetError):
    """An artifact (engine, ONNX graph, IR, checkpoint) is missing, corrupt, or was built for another machine or version."""


class DataError(BisenetError):
    """A dataset file is missing or inconsistent."""


class DiskFullError(BisenetError, OSError):
    """A write found no room on its file system; what it would have replaced is unchanged."""


class OutputError(BisenetError):
    """A finished output failed its check before replacing anything; the earlier file, if any, is kept."""


class ClosedError(BisenetError, RuntimeError):
    """The Segmenter (or backend) was closed; open a new one to go on."""
