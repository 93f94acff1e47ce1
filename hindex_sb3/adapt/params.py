"""What Stage 2 may train: the trainable scopes, freezing, parameter counts and the heads' BatchNorm calibration.

What changes, and why (the authors' ``stage2_adapt`` code, github.com/YanjieZe/H-InDex): the authors freeze every
``nn.Conv2d`` of the pose network (backbone convolutions, downsample convolutions and the 1x1 keypoint layer) and
train everything else: the backbone's
BatchNorm gamma/beta (53,120 numbers, 0.23 % of the 23.5 M backbone parameters), the deconvolution block (a
``ConvTranspose2d`` is not an ``nn.Conv2d``), the appearance and pose encoders and the renderer. The model stays in
eval mode throughout, so BatchNorm normalises with its running statistics and never updates them.

``trainable="all"`` is the ablation of the paper's Fig. 6c / 7 (Stage 2 on all parameters; the reference's
``freeze_conv=0``): nothing is frozen, so every backbone parameter (23,508,032) and the 1x1 keypoint layer train as
well.

Without the authors' TTP-Penn initialisation (``penn_joint.pth``, Google-Drive only) the heads, encoders and renderer
start random. Their BatchNorm layers then hold the default statistics (mean 0, variance 1), which in eval mode makes
them plain affine maps and leaves the 9-layer renderer without any normalisation, so its output starts near zero and
learns slowly. :func:`calibrate_head_batchnorm` therefore estimates the *heads'* BN statistics once, on task frames,
before training (a data-dependent initialisation standing in for TTP-Penn's statistics); the backbone's statistics
are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hindex_sb3.adapt.errors import AdaptError
from hindex_sb3.adapt.model import KeypointModel

__all__ = [
    "TRAINABLE_SCOPES",
    "backbone_bn_affine",
    "calibrate_head_batchnorm",
    "check_trainable",
    "freeze_for_adaptation",
    "trainable_summary",
]

#: what Stage 2 may train: "bn" = the paper's method (BN gamma/beta of the backbone), "all" = Fig. 7's ablation
TRAINABLE_SCOPES = ("bn", "all")


def backbone_bn_affine(backbone: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """The backbone's BatchNorm layers by name (53 in a ResNet-50)."""
    return {name: m for name, m in backbone.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def check_trainable(trainable: object) -> str:
    """``trainable`` must be one of :data:`TRAINABLE_SCOPES`."""
    if not isinstance(trainable, str) or trainable not in TRAINABLE_SCOPES:
        raise ValueError(f"trainable must be one of {TRAINABLE_SCOPES}, got {trainable!r}")
    return trainable


def freeze_for_adaptation(model: KeypointModel, trainable: str = "bn") -> None:
    """Set ``requires_grad`` for Stage 2.

    ``"bn"`` (the paper's method): in the backbone only the BatchNorm gamma/beta train; in the keypoint head the 1x1
    keypoint layer is frozen and the deconvolution block trains; the appearance encoder, pose encoder and renderer
    train whole. For the ResNet-50 this is exactly the reference's rule (freeze every ``nn.Conv2d`` of ``pose_net``;
    a ``ConvTranspose2d`` is not a ``Conv2d``), stated so that it holds for any trunk: a user's encoder with, say, a
    Linear layer or squeeze-excitation gates keeps those frozen too, which is what the export then checks.
    ``"all"`` (Fig. 7's ablation, the reference's ``freeze_conv=0``): every parameter trainable.
    """
    check_trainable(trainable)
    for p in model.parameters():
        p.requires_grad_(True)
    if trainable == "all":
        return
    affine = {id(p) for bn in backbone_bn_affine(model.backbone).values() for p in bn.parameters(recurse=False)}
    for p in model.backbone.parameters():
        if id(p) not in affine:
            p.requires_grad_(False)
    for p in model.pose_net.final_layer_unsup.parameters():
        p.requires_grad_(False)


def trainable_summary(model: KeypointModel) -> dict[str, Any]:
    """Parameter counts: backbone total / trainable (and the fraction), per part, and the trainable total."""

    def count(module: nn.Module, trainable: bool | None = None) -> int:
        return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)

    backbone_total = count(model.backbone)
    backbone_trainable = count(model.backbone, True)
    parts = {
        "deconv_layers": model.pose_net.deconv_layers,
        "final_layer_unsup": model.pose_net.final_layer_unsup,
        "image_encoder": model.image_encoder,
        "pose_encoder": model.pose_encoder,
        "image_renderer": model.image_renderer,
    }
    return {
        "backbone_total": backbone_total,
        "backbone_trainable": backbone_trainable,
        "backbone_trainable_fraction": backbone_trainable / backbone_total,
        "backbone_bn_layers": len(backbone_bn_affine(model.backbone)),
        "parts_trainable": {k: count(m, True) for k, m in parts.items()},
        "trainable_total": count(model, True),
        "total": count(model),
    }


def _head_batchnorms(model: KeypointModel) -> list[nn.modules.batchnorm._BatchNorm]:
    in_backbone = {id(m) for m in model.backbone.modules()}
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_backbone]


@torch.no_grad()
def calibrate_head_batchnorm(model: KeypointModel, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Set the running statistics of every BatchNorm *outside the backbone* to their average over ``batches``.

    The backbone stays in eval mode (its FrankMocap statistics are part of the representation and must not move);
    the head BNs run in train mode with ``momentum=None`` (a cumulative average) for these forwards only. Afterwards
    the whole model is back in eval mode with the original momenta. Returns the number of batches used.
    """
    bns = _head_batchnorms(model)
    saved = [(m, m.momentum) for m in bns]
    n = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            nn.Module.train(m, True)
        for source, target in batches:
            model(source, target)
            n += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
            nn.Module.train(m, False)
    if n == 0:
        raise AdaptError("no batches to calibrate the heads' BatchNorm statistics with")
    return n
