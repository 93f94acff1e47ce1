"""Frozen visual encoders: H-InDex, the paper's baselines and ablations, any timm/torchvision model, and plugins.

>>> from hindex_sb3.encoders import create_encoder
>>> enc = create_encoder("hindex")            # FrankMocap hand ResNet-50, downloaded once into the cache
>>> feats = enc(uint8_images)                 # (B, 3, H, W) uint8 -> (B, 2048)

See :mod:`hindex_sb3.encoders.registry` for the specs and :mod:`hindex_sb3.encoders.weights` for caching/loading.
"""

from hindex_sb3.encoders.base import Encoder, Preprocess
from hindex_sb3.encoders.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    RandomWeightsWarning,
    create_encoder,
    get_encoder_spec,
    list_encoders,
    register_encoder,
    unregister_encoder,
)
from hindex_sb3.encoders.weights import (
    ADAPTED_FORMAT,
    CheckpointError,
    CheckpointMismatchError,
    WeightsError,
    WeightSpec,
    WeightsUnavailableError,
    cache_home,
    get_weight_spec,
    list_weights,
    load_checkpoint,
    load_state_dict_strict,
    load_weights,
    read_adapted_checkpoint,
    register_weights,
    save_adapted_checkpoint,
    weights_dir,
)

__all__ = [
    "ADAPTED_FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointError",
    "CheckpointMismatchError",
    "Encoder",
    "EncoderSpec",
    "Preprocess",
    "RandomWeightsWarning",
    "WeightSpec",
    "WeightsError",
    "WeightsUnavailableError",
    "cache_home",
    "create_encoder",
    "get_encoder_spec",
    "get_weight_spec",
    "list_encoders",
    "list_weights",
    "load_checkpoint",
    "load_state_dict_strict",
    "load_weights",
    "read_adapted_checkpoint",
    "register_encoder",
    "register_weights",
    "save_adapted_checkpoint",
    "unregister_encoder",
    "weights_dir",
]
