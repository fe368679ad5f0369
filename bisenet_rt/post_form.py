"""The layouts of the exact post-processing a pipeline graph can have, named once.

A fact of every pipeline graph and artifact (`artifacts.ArtifactInfo.post`) and a choice of every backend's
build (`backends.spec.GraphForm`); the nodes themselves are made by `graph.prepost`.
"""
from __future__ import annotations

import enum

__all__ = ["PostForm"]


class PostForm(str, enum.Enum):
    """How the exact upsample + arg-max is laid out; the same function in every form.

    RESIZE: the model's x8 upsample and the resize to the frame size as two 2-D Resizes of the
    channels-last logits, then one arg-max over the full-size logits (TensorRT).
    ROW_BANDS: the columns resized first, while only the model's coarse rows exist; then, per static
    band of output rows, the two row resizes as one product with their interpolation matrix and the
    band's arg-max over the contiguous class axis while the band is small (ONNX Runtime).
    COLUMN_BANDS: the rows resized first, at the coarse width; then, per static band of output
    columns, the column resizes as one matrix product and the arg-max over the classes, each class
    a plane of the band's pixels (OpenVINO, whose arg-max is slow over a contiguous class axis).
    The banded forms never hold the full-size logits. Resizes along H and W commute and each is
    linear, so the same Resizes applied to an identity give the matrix (`graph.prepost`).
    """

    RESIZE = "resize"
    ROW_BANDS = "row_bands"
    COLUMN_BANDS = "column_bands"

    def __str__(self) -> str:
        return self.value
