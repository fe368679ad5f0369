"""What the PyTorch backend captures into a CUDA graph must be capturable: checked on the CPU at the dispatcher.

Under CUDA-graph capture a tensor built from host values (`torch.tensor(v, device="cuda")`) is a copy from
pageable memory, which synchronizes the stream (c10 `memcpy_and_sync`: cudaMemcpyAsync + cudaStreamSynchronize)
and fails the capture ("operation not permitted when stream is capturing", pytorch/pytorch#78549); newer
PyTorch refuses it in `copy_kernel_cuda` (aten/src/ATen/native/cuda/Copy.cu). At the dispatcher such a tensor
shows as `lift_fresh`, on any device, so the rule is tested here without a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import street_frame  # noqa: E402

#: Ops that make a tensor from host (Python) values.
FROM_HOST = {"aten.lift_fresh.default", "aten.lift.default", "aten.scalar_tensor.default"}


def _ops(call) -> set[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func))
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), _Record() as record:
        call()
    return record.ops


def test_the_captured_call_builds_no_tensor_from_host_values(confident_model):
    from bisenet_rt.model.deployed import deployed_labels, normalization_tensors

    frames = torch.from_numpy(np.stack([street_frame(128, 256, seed=5)]))
    scale_shift = normalization_tensors(confident_model, frames.device)  # made once, before capture
    captured = _ops(lambda: deployed_labels(confident_model, frames, (256, 128), scale_shift))
    assert not captured & FROM_HOST, sorted(captured & FROM_HOST)
    eager = _ops(lambda: deployed_labels(confident_model, frames, (256, 128)))
    assert eager & FROM_HOST, "the recording must see the tensors an eager call builds (else this test proves nothing)"
    with torch.inference_mode():
        same = deployed_labels(confident_model, frames, (256, 128), scale_shift)
        assert torch.equal(same, deployed_labels(confident_model, frames, (256, 128)))
