"""The pipeline graph's function in PyTorch, laid out as the graph is: for GPUs without TensorRT.

`model.reference.reference_labels` is the oracle: plain and readable, it upsamples FP32 logits in NCHW.
`deployed_labels` is the same function laid out as the ONNX graph is (`prepost`): the frame is
resized before it is normalized, the logits are upsampled in the model's own dtype (FP16 on a GPU)
and channels last, so each pixel's class vector is contiguous for the arg-max, and the labels leave
the device as uint8. `GraphedLabels` captures it in a CUDA graph per input shape and replays it.

The normalization's scale and shift are device tensors made once, before any capture: building them
inside a capture copies from pageable host memory, which synchronizes the stream (PyTorch's
`memcpy_and_sync`) and so fails the capture ("operation not permitted when stream is capturing",
pytorch/pytorch#78549; newer PyTorch refuses the unpinned copy outright).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..classes import DEFAULT_MODEL_SIZE
from ..families import ChannelOrder, family_of

if TYPE_CHECKING:
    import torch

__all__ = ["deployed_labels", "normalization_tensors", "GraphedLabels"]


def normalization_tensors(model: "torch.nn.Module", device: "torch.device") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The graph's scale and shift for the model's checkpoint family, as float32 1 x 3 x 1 x 1 tensors on `device`.

    Make them once, outside any CUDA-graph capture (the host-to-device copy synchronizes)."""
    import torch

    scale, shift = (torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                    for v in family_of(model).normalization.scale_shift())
    return scale, shift


def deployed_labels(model: "torch.nn.Module", frames: "torch.Tensor", model_size: tuple[int, int] = DEFAULT_MODEL_SIZE,
                    scale_shift: tuple["torch.Tensor", "torch.Tensor"] | None = None) -> "torch.Tensor":
    """uint8 N x H x W x 3 BGR frames (on the model's device) -> uint8 N x H x W labels, as the pipeline graph does.

    Normalized as the model's checkpoint family says, with the graph's own scale and shift
    (`normalization_tensors`; pass them when the call is captured, else they are made here).
    """
    import torch
    import torch.nn.functional as F

    param = next(model.parameters())
    w, h = model_size
    x = frames.permute(0, 3, 1, 2).float()  # BGR, 0..255
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    if family_of(model).normalization.order is ChannelOrder.RGB:
        x = x.flip(1)
    scale, shift = scale_shift if scale_shift is not None else normalization_tensors(model, x.device)
    x = (x * scale + shift).to(param.dtype)
    logits = model(x).contiguous(memory_format=torch.channels_last)
    up = F.interpolate(logits, size=tuple(frames.shape[1:3]), mode="bilinear", align_corners=False)
    return up.argmax(dim=1).to(torch.uint8)


class GraphedLabels:
    """`deployed_labels` captured into one CUDA graph per input shape, replayed on the current stream.

    Frames are copied into the graph's static input, the graph replays, the labels are read from its
    static output (copy them before the next call). The first call with a shape warms up on a side
    stream and captures, as PyTorch's CUDA-graph rules ask. Capture errors only on this thread's unsafe
    calls ("thread_local"), so other threads' CUDA work (another backend) cannot break it.
    """

    def __init__(self, model: "torch.nn.Module", model_size: tuple[int, int]) -> None:
        self._model, self._size = model, model_size
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self._scale_shift: tuple[Any, Any] | None = None  # made before the first capture, kept for every replay
        #: Captures and replays so far.
        self.captures = self.replays = 0

    def __call__(self, frames: "torch.Tensor") -> "torch.Tensor":
        import torch

        key = tuple(frames.shape)
        if key not in self._graphs:
            if self._scale_shift is None:
                self._scale_shift = normalization_tensors(self._model, frames.device)
            static_in = frames.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(2):
                    deployed_labels(self._model, static_in, self._size, self._scale_shift)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"), torch.inference_mode():
                static_out = deployed_labels(self._model, static_in, self._size, self._scale_shift)
            self._graphs[key] = (graph, static_in, static_out)
            self.captures += 1
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(frames, non_blocking=True)
        graph.replay()
        self.replays += 1
        return static_out
