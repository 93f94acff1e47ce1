"""ViT trunks (MVP ViT-S/16, VC-1 ViT-B/16) built with timm, returning the CLS token after the final LayerNorm.

Both baselines are MAE-pretrained ViTs whose checkpoints use timm's key names, so timm's ``VisionTransformer``
loads them without renaming. Two details matter and are easy to get wrong:

* MVP's ViT-S uses **12 heads** (head dim 32), not the 6 of timm's ``vit_small_patch16_224``. The shapes of every
  tensor are identical either way, so the wrong model would load without complaint and compute different
  attention; we therefore build the architecture explicitly instead of by timm model name.
* the feature is ``norm(x)[:, 0]`` (timm's ``global_pool="token"`` with the final ``norm`` and no ``fc_norm``),
  as in MVP's ``extract_feat`` and VC-1's ``use_cls=True``. LayerNorm eps is 1e-6 in both.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = ["fit_pos_embed", "vit_cls"]


def vit_cls(embed_dim: int, depth: int, num_heads: int, *, img_size: int = 224, patch_size: int = 16) -> nn.Module:
    """Randomly initialised ViT whose ``forward`` maps (B, 3, img_size, img_size) to the final-norm CLS token."""
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0,
        global_pool="token",
        class_token=True,
        fc_norm=False,
    )


def fit_pos_embed(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Resample a checkpoint's absolute position embedding if it was trained on another patch grid.

    Only the token count may differ (e.g. a 256-px checkpoint into our 224-px model); a different embedding width is
    left alone so that the strict loader reports it as a shape mismatch.
    """
    pos = state_dict.get("pos_embed")
    target = getattr(model, "pos_embed", None)
    if pos is None or target is None or pos.shape == target.shape or pos.shape[-1] != target.shape[-1]:
        return state_dict
    old_grid = math.isqrt(pos.shape[1] - 1)
    new_grid = math.isqrt(target.shape[1] - 1)
    if old_grid * old_grid != pos.shape[1] - 1:
        return state_dict  # not a square grid + CLS: let the strict loader report it
    out = dict(state_dict)
    out["pos_embed"] = resample_abs_pos_embed(pos, [new_grid, new_grid], [old_grid, old_grid], num_prefix_tokens=1)
    return out
