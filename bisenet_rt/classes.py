"""Dataset facts that travel with the weights: class names, colours, normalisation constants.

Named once here; every other module imports them instead of repeating numbers.
"""
from __future__ import annotations

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_LABEL_ID_TO_TRAIN_ID",
    "CAMVID_CLASSES",
    "CAMVID_VOID",
    "MEAN_RGB",
    "STD_RGB",
    "MMSEG_MEAN_RGB",
    "MMSEG_STD_RGB",
    "IGNORE_INDEX",
    "DEFAULT_MODEL_SIZE",
    "class_names",
    "palette",
]

#: The 19 Cityscapes train classes, in train-id order.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

#: The standard Cityscapes colours (RGB) for the 19 train ids.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

#: Cityscapes label id (gtFine *_labelIds.png) -> train id; every id not listed maps to IGNORE_INDEX.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

#: The 11 CamVid classes (SegNet layout: label PNGs hold 0..10, and CAMVID_VOID for unlabelled pixels).
CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car", "pedestrian", "bicyclist",
)
CAMVID_VOID: int = 11

#: Label value that losses and metrics skip.
IGNORE_INDEX: int = 255

#: Normalisation the CoinCheung/BiSeNet checkpoints (and ours) were trained with (RGB order, after /255).
MEAN_RGB: tuple[float, float, float] = (0.3257, 0.3690, 0.3223)
STD_RGB: tuple[float, float, float] = (0.2112, 0.2148, 0.2115)

#: Normalisation of the MMSegmentation checkpoints (its SegDataPreProcessor: RGB order, on the 0..255 scale).
MMSEG_MEAN_RGB: tuple[float, float, float] = (123.675, 116.28, 103.53)
MMSEG_STD_RGB: tuple[float, float, float] = (58.395, 57.12, 57.375)

#: The paper's inference size, (width, height).
DEFAULT_MODEL_SIZE: tuple[int, int] = (1024, 512)


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names for `num_classes` classes: Cityscapes names for 19, generic names otherwise."""
    if num_classes == len(CITYSCAPES_CLASSES):
        return CITYSCAPES_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


def palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """RGB colours for `num_classes` classes: Cityscapes colours for 19, a fixed spread otherwise."""
    if num_classes == len(CITYSCAPES_PALETTE):
        return CITYSCAPES_PALETTE
    colours = []
    for i in range(num_classes):
        # Bit-interleaved colour map (as in PASCAL VOC): distinct, deterministic colours.
        r = g = b = 0
        c = i + 1
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)
