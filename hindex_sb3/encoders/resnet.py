"""ResNet-50 trunks (H-InDex, R3M, RRL): torchvision's ``resnet50`` with the classifier removed.

All three representations are the globally average-pooled ``layer4`` output of a standard bottleneck ResNet-50
(2048-d). FrankMocap's hand encoder, R3M's ``convnet`` and torchvision use the same module names, so one builder
serves all of them and only the key layout of the checkpoint differs (see :mod:`hindex_sb3.encoders.layouts`).
FrankMocap's ``AvgPool2d(7)`` equals torchvision's adaptive pooling at the 224x224 input every encoder here receives.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet50

__all__ = ["resnet50_trunk"]


def resnet50_trunk() -> nn.Module:
    """Randomly initialised torchvision ResNet-50 whose ``fc`` is Identity: (B, 3, 224, 224) -> (B, 2048)."""
    model = resnet50(weights=None)
    model.fc = nn.Identity()
    return model
