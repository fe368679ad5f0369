"""The numeric precision of an exported graph or engine."""
from __future__ import annotations

import enum

from .errors import ConfigError

__all__ = ["Precision"]


class Precision(str, enum.Enum):
    """Precision of the model's weights and activations; I/O stays uint8 frames and labels."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @classmethod
    def parse(cls, value: "str | Precision") -> "Precision":
        """Accept a Precision or its name ('fp16', 'FP16'); raise ValueError listing the choices."""
        if isinstance(value, Precision):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ConfigError(f"unknown precision {value!r}; choose one of: {choices}") from None

    def __str__(self) -> str:
        return self.value
