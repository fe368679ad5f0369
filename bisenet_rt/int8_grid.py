"""The INT8 weight grid an artifact was quantized to, and whether it fits this CPU: what the runtime checks at load.

Light on purpose (no ONNX, no quantizer): the ONNX Runtime and OpenVINO backends import it to warn when an
artifact's grid does not fit the CPU they run on; the build chooses the grid for its target (`builder.choice`).
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .host import CpuFeatures

__all__ = ["WeightRange", "cpu_fit_warning"]


class WeightRange(str, enum.Enum):
    """The grid int8 weights are rounded to, chosen for the CPU an artifact targets.

    FULL uses all 8 bits ([-127, 127]): exact on CPUs with VNNI or AMX int8 dot products, and on
    TensorRT. REDUCED uses 7 bits ([-64, 63]), ONNX Runtime's advice for CPUs with only AVX2: their
    u8 x s8 kernels (vpmaddubsw) add pairs of products into int16, which saturates for 8-bit weights
    and pushes labels away from FP32; with 7-bit weights no pair can overflow. Both are symmetric
    int8 Q/DQ graphs, so TensorRT builds either.
    """

    FULL = "int8"
    REDUCED = "int7"

    @property
    def description(self) -> str:
        """The grid in words, as the quantization facts record it."""
        return "int8" if self is WeightRange.FULL else "7-bit int8 ([-64, 63], reduce_range)"


def cpu_fit_warning(quantization: Mapping[str, Any] | None, cpu: "CpuFeatures", artifact: str) -> str | None:
    """Why an INT8 artifact will lose accuracy on this CPU, or None when it fits.

    `quantization` is the artifact's quantization facts (`ArtifactInfo.quantization`; artifacts from
    before the weight grid was recorded had 8-bit weights). 8-bit weights on a CPU without VNNI or AMX go
    through saturating int16 pair sums on ONNX Runtime's and OpenVINO's CPU int8 kernels.
    """
    try:
        weights = WeightRange((quantization or {}).get("weight_range", WeightRange.FULL.value))
    except (ValueError, TypeError, AttributeError):
        weights = WeightRange.FULL
    if weights is WeightRange.FULL and not cpu.exact_int8:
        return (f"{artifact} has 8-bit int8 weights, built for CPUs with VNNI or AMX; this CPU ({cpu.label}) sums int8 "
                "products in saturating int16 pairs, so more labels differ from FP32. Rebuild it for this CPU: "
                "'bisenet-rt build --precision int8 --int8-target avx2'")
    return None
