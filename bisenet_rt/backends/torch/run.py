"""PyTorch backend over a checkpoint: the reference (the oracle) on the CPU; the graph's layout on a CUDA GPU.

On the CPU it runs `model.reference.reference_labels`, the oracle itself. On a CUDA GPU (the usual box
without TensorRT) it runs `model.deployed.deployed_labels`, the same function laid out as the ONNX
graph is (logits upsampled in FP16 when the model is, channels last, uint8 labels leave the device),
captured in a CUDA graph per input shape unless `cuda_graphs=False`.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ...artifacts import ArtifactInfo, artifact_sha256
from ...classes import DEFAULT_MODEL_SIZE
from ...errors import BackendUnavailableError, InputError
from ...precision import Precision
from ...sizes import check_model_size
from ..base import Backend
from ..submission import DEFAULT_DEPTH

if TYPE_CHECKING:
    import torch

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Eager PyTorch over a checkpoint (`.pt`/`.pth`); fp16 runs on CUDA only."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH, device: str | None = None,
                 precision: str | Precision = "fp32", model_size: tuple[int, int] | str = DEFAULT_MODEL_SIZE,
                 compile: bool = False, cuda_graphs: bool = True) -> None:
        super().__init__(path, depth=depth)
        import torch

        from ...model import load_checkpoint

        self._precision = Precision.parse(precision)
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device}: PyTorch sees no CUDA GPU here (torch.cuda.is_available() "
                                          "is False); run on the CPU (device cpu)")
        index = torch.device(device).index if device.startswith("cuda") else None
        if index is not None and index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"device {device}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s) here, "
                                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
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
        self._model: Any = torch.compile(model) if compile else model  # a module, or the compiled callable
        self._graphed: Any = None
        self._scale_shift: Any = None  # the eager CUDA path's normalization tensors, made on first use
        self._lock = threading.Lock()
        if self._device.type == "cuda" and cuda_graphs and not compile:
            from ...model.deployed import GraphedLabels

            self._graphed = GraphedLabels(model, self._model_size)
        self._info = ArtifactInfo(classes=model.family.class_names(model.num_classes), model_size=self._model_size,
                                  precision=self._precision, source_sha256=artifact_sha256(self.path),
                                  family=model.family.name, normalization=model.family.normalization)

    @property
    def device(self) -> str:
        import torch

        if self._device.type == "cuda":
            return f"GPU: {torch.cuda.get_device_name(self._device)}"
        from ...host import cpu_name

        return f"CPU: {cpu_name()}"

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}

    def _labels(self, batch: np.ndarray) -> "torch.Tensor":
        import torch

        frames = torch.from_numpy(batch).to(self._device, non_blocking=True)
        if self._device.type != "cuda":
            from ...model.reference import reference_labels

            return reference_labels(self._model, frames, self._model_size)
        if self._graphed is not None:
            return self._graphed(frames)
        from ...model.deployed import deployed_labels, normalization_tensors

        if self._scale_shift is None:
            self._scale_shift = normalization_tensors(self._model, self._device)
        with torch.inference_mode():
            return deployed_labels(self._model, frames, self._model_size, self._scale_shift)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_into(batch, None)

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """With `out`, the labels are copied from the device straight into it. On a GPU one call runs at a
        time (a captured graph has one set of static buffers), with this backend's GPU current."""
        import torch

        on_gpu = self._device.type == "cuda"
        # torch.cuda.device: streams and graphs made on the way (GraphedLabels) belong to this GPU, not cuda:0
        with self._lock if on_gpu else contextlib.nullcontext(), \
                torch.cuda.device(self._device) if on_gpu else contextlib.nullcontext():
            labels = self._labels(batch)
            if out is None:
                return labels.cpu().numpy()
            torch.from_numpy(out).copy_(labels)
            return out

    @property
    def graph_stats(self) -> dict[str, int] | None:
        """CUDA-graph captures and replays so far (None where the backend does not capture)."""
        return None if self._graphed is None else {"captures": self._graphed.captures, "replays": self._graphed.replays}

    def _close(self) -> None:
        self._model = None
