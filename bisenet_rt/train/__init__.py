"""Training BiSeNetV2 with the booster recipe: OHEM losses, augmentation, SGD schedule and the loop;
quantization-aware fine-tuning (`qat`); the fine-tuning recipe and resumed runs (`config`)."""
from .augment import DEFAULT_SCALES, AugmentConfig, TrainAugment, sample_rng
from .losses import OhemCrossEntropy, ohem_cross_entropy
from .config import FINE_TUNE_LR, SCRATCH_LR, TrainConfig, describe_recipe, resume_config
from .loop import TrainResult, evaluate_model, export_inference_model, train
from .optim import WarmupPolyLR, aux_push, build_optimizer, lr_factor, param_groups

__all__ = ["AugmentConfig", "TrainAugment", "DEFAULT_SCALES", "sample_rng", "OhemCrossEntropy", "ohem_cross_entropy",
           "TrainConfig", "TrainResult", "train", "evaluate_model", "export_inference_model", "WarmupPolyLR",
           "build_optimizer", "lr_factor", "param_groups", "aux_push", "resume_config", "describe_recipe",
           "SCRATCH_LR", "FINE_TUNE_LR"]
