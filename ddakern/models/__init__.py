"""Model hosts (ResNet, VGG-BN), the registry, pretrained weights and the drop-in `attach`."""

from ddakern.models.attach import attach
from ddakern.models.original import convert_original_state_dict, load_original_checkpoint
from ddakern.models.registry import create, list_models, register_model
from ddakern.models.resnet import ResNet
from ddakern.models.vgg import VGG
from ddakern.models.weights import WeightsError

__all__ = [
    "ResNet",
    "VGG",
    "WeightsError",
    "attach",
    "convert_original_state_dict",
    "create",
    "list_models",
    "load_original_checkpoint",
    "register_model",
]
