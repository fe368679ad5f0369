"""PyTorch backend: the reference pipeline itself, from a checkpoint, on the CPU or a CUDA GPU."""
from __future__ import annotations

import os

import numpy as np

from ..artifacts import ArtifactInfo
from ..classes import DEFAULT_MODEL_SIZE, class_names
from ..errors import BackendUnavailableError, InputError
from ..precision import Precision
from ..sizes import check_model_size
from .base import Backend

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Eager PyTorch over a checkpoint (`.pt`/`.pth`); fp16 runs on CUDA only."""

    name = "torch"
    suffixes = (".pt", ".pth", ".ckpt")

    def __init__(self, path: str | os.PathLike, *, device: str | None = None, precision: str | Precision = "fp32",
                 model_size: tuple[int, int] | str = DEFAULT_MODEL_SIZE, compile: bool = False) -> None:
        super().__init__(path)
        import torch

        from ..model import file_sha256, load_checkpoint

        self._precision = Precision.parse(precision)
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                                          "use device='cpu'")
        if self._precision not in (Precision.FP32, Precision.FP16):
            raise InputError(f"the torch backend runs fp32 or fp16, not {self._precision}")
        if self._precision is Precision.FP16 and not device.startswith("cuda"):
            raise InputError("fp16 on the torch backend needs a CUDA GPU; on the CPU use fp32 "
                             "(or an fp16 ONNX graph through onnxruntime)")
        self._device = torch.device(device)
        self._model_size = check_model_size(model_size)
        model = load_checkpoint(self.path).to(self._device)
        if self._precision is Precision.FP16:
            model = model.half()
        self._model = torch.compile(model) if compile else model
        self._info = ArtifactInfo(classes=class_names(model.num_classes), model_size=self._model_size,
                                  precision=self._precision, source_sha256=file_sha256(self.path))

    @property
    def device(self) -> str:
        import torch

        if self._device.type == "cuda":
            return f"GPU: {torch.cuda.get_device_name(self._device)}"
        from .onnxruntime import cpu_name

        return f"CPU: {cpu_name()}"

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from ..pipeline import reference_labels

        frames = torch.from_numpy(batch).to(self._device, non_blocking=True)
        return reference_labels(self._model, frames, self._model_size).cpu().numpy()

    def _close(self) -> None:
        self._model = None
