"""Training BiSeNetV2 with the booster recipe: OHEM losses, augmentation, SGD schedule and the loop;
quantization-aware fine-tuning (`qat`)."""
from .augment import DEFAULT_SCALES, AugmentConfig, TrainAugment, sample_rng
from .losses import OhemCrossEntropy, ohem_cross_entropy
from .loop import TrainConfig, TrainResult, evaluate_model, export_inference_model, train
from .optim import WarmupPolyLR, build_optimizer, lr_factor, param_groups

__all__ = ["AugmentConfig", "TrainAugment", "DEFAULT_SCALES", "sample_rng", "OhemCrossEntropy", "ohem_cross_entropy",
           "TrainConfig", "TrainResult", "train", "evaluate_model", "export_inference_model", "WarmupPolyLR",
           "build_optimizer", "lr_factor", "param_groups"]
