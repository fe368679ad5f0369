"""The reference PyTorch BiSeNetV2 and checkpoint loading."""
from .bisenetv2 import AUX_HEAD_NAMES, BiSeNetV2
from .checkpoint import load_checkpoint, load_state_dict, model_and_sha, read_checkpoint, save_checkpoint

__all__ = ["BiSeNetV2", "AUX_HEAD_NAMES", "load_checkpoint", "load_state_dict", "read_checkpoint", "save_checkpoint", "model_and_sha"]
