"""Synthetic checkpoints in the official key layouts, and independent reference networks, for the encoder tests.

Nothing here may be downloaded; the official files are described in docs/representations.md. The tensors are random
but the *layouts* (prefixes, head keys, nesting, the extra non-encoder entries) follow each source, and BatchNorm
statistics are randomised so that a loader that forgot them would be caught.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give every ``BatchNorm2d`` of ``model`` random statistics and affine parameters; returns it in eval mode.

    Default BN (mean 0, variance 1, gamma 1, beta 0) would let a loader that drops or mixes up BN tensors pass.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def random_resnet50_state(seed: int, with_fc: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict with random weights *and* non-trivial BN statistics/affine."""
    torch.manual_seed(seed)
    model = randomise_bn(torchvision.models.resnet50(weights=None), seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.fill_(1234)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if not with_fc:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    return sd


def frankmocap_checkpoint(backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FrankMocap ``pose_shape_best.pth``: bare H3DWEncoder state dict (no ``module.`` prefix)."""
    ckpt = {f"main_encoder.{k}": v for k, v in backbone.items() if not k.startswith("fc.")}
    ckpt["main_encoder.fc1.weight"] = torch.randn(1024, 2048) * 0.01
    ckpt["main_encoder.fc1.bias"] = torch.zeros(1024)
    ckpt["feat_encoder.1.weight"] = torch.randn(1024, 1024) * 0.01
    ckpt["feat_encoder.1.bias"] = torch.zeros(1024)
    ckpt["regressor.0.weight"] = torch.randn(61, 1024 + 61) * 0.01
    ckpt["regressor.0.bias"] = torch.zeros(61)
    return ckpt


def hindex_adapted_checkpoint(backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Authors' Stage-2 output: ``DataParallel(HumanIMMModel).state_dict()`` (representative subset of heads)."""
    ckpt = {f"module.pose_net.{k}": v for k, v in backbone.items() if not k.startswith("fc.")}
    extra = {
        "module.pose_net.deconv_layers.0.weight": (2048, 256, 4, 4),
        "module.pose_net.deconv_layers.1.weight": (256,),
        "module.pose_net.deconv_layers.1.running_mean": (256,),
        "module.pose_net.final_layer_unsup.weight": (30, 256, 1, 1),
        "module.pose_net.final_layer_unsup.bias": (30,),
        "module.pose_net.sup_query.weight": (13, 256),
        "module.pose_net.mh_attn.layers.0.self_attn.in_proj_weight": (768, 256),
        "module.pose_net.mh_attn.norm.weight": (256,),
        "module.pose_net.sup_weight.weight": (30, 256),
        "module.pose_net.sup_weight.bias": (30,),
        "module.image_encoder.0.0.weight": (32, 3, 7, 7),
        "module.image_encoder.0.1.running_var": (32,),
        "module.pose_encoder.0.0.weight": (32, 30, 7, 7),
        "module.image_renderer.3.4.weight": (3, 32, 3, 3),
    }
    for k, shape in extra.items():
        ckpt[k] = torch.randn(shape) * 0.01
    return ckpt


def r3m_checkpoint(backbone: dict[str, torch.Tensor]) -> dict:
    """R3M ``model.pt``: ``{'r3m': DataParallel(R3M).state_dict()}``; the convnet has fc = Identity (no fc keys)."""
    inner = {f"module.convnet.{k}": v for k, v in backbone.items() if not k.startswith("fc.")}
    inner["module.lang_enc.model.embeddings.word_embeddings.weight"] = torch.randn(100, 16)
    inner["module.lang_rew.0.weight"] = torch.randn(1024, 2048 + 768) * 0.01
    inner["module.lang_rew.0.bias"] = torch.zeros(1024)
    return {"r3m": inner, "global_step": 1_000_000}


def random_vit_state(seed: int, embed_dim: int, depth: int = 12, grid: int = 14, patch: int = 16) -> dict:
    """timm/MAE ViT encoder keys with random tensors, shapes written out by hand (not taken from timm)."""
    g = torch.Generator().manual_seed(seed)
    d, h = embed_dim, 4 * embed_dim

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def ln() -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 + rnd(d, std=0.1), rnd(d, std=0.05)

    sd = {
        "cls_token": rnd(1, 1, d),
        "pos_embed": rnd(1, grid * grid + 1, d),
        "patch_embed.proj.weight": rnd(d, 3, patch, patch, std=0.05),
        "patch_embed.proj.bias": rnd(d),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"], sd[p + "norm1.bias"] = ln()
        sd[p + "attn.qkv.weight"] = rnd(3 * d, d, std=0.08)
        sd[p + "attn.qkv.bias"] = rnd(3 * d)
        sd[p + "attn.proj.weight"] = rnd(d, d, std=0.05)
        sd[p + "attn.proj.bias"] = rnd(d)
        sd[p + "norm2.weight"], sd[p + "norm2.bias"] = ln()
        sd[p + "mlp.fc1.weight"] = rnd(h, d, std=0.05)
        sd[p + "mlp.fc1.bias"] = rnd(h)
        sd[p + "mlp.fc2.weight"] = rnd(d, h, std=0.05)
        sd[p + "mlp.fc2.bias"] = rnd(d)
    sd["norm.weight"], sd["norm.bias"] = ln()
    return sd


def mae_checkpoint(encoder_state: dict[str, torch.Tensor], decoder_dim: int = 64) -> dict:
    """MAE/MVP/VC-1 training checkpoint: ``{'model': encoder + decoder + mask_token, 'epoch', 'args'}``."""
    model = dict(encoder_state)
    d = encoder_state["cls_token"].shape[-1]
    model["mask_token"] = torch.zeros(1, 1, decoder_dim)
    model["decoder_embed.weight"] = torch.randn(decoder_dim, d) * 0.02
    model["decoder_embed.bias"] = torch.zeros(decoder_dim)
    model["decoder_pos_embed"] = torch.zeros(1, 197, decoder_dim)
    model["decoder_blocks.0.norm1.weight"] = torch.ones(decoder_dim)
    model["decoder_norm.weight"] = torch.ones(decoder_dim)
    model["decoder_pred.weight"] = torch.randn(16 * 16 * 3, decoder_dim) * 0.02
    # MAE's save_model stores its argparse arguments next to the weights.
    return {"model": model, "epoch": 399, "args": argparse.Namespace(model="mae_vit", mask_ratio=0.75, lr=1.5e-4)}


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Independent references: documented preprocessing written out by hand, plain networks.


def reference_preprocess(images_u8: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``/255`` -> shorter side 256 (bilinear, antialias) -> centre 224 -> optional ImageNet mean/std."""
    x = images_u8.float() / 255.0
    h, w = x.shape[-2:]
    if min(h, w) != 256:
        size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    h, w = x.shape[-2:]
    top, left = round((h - 224) / 2.0), round((w - 224) / 2.0)
    x = x[..., top : top + 224, left : left + 224]
    if normalize:
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return x


def reference_resnet(backbone_state: dict[str, torch.Tensor]) -> nn.Module:
    """Plain torchvision ResNet-50, fc = Identity, loaded strictly with the given (fc-free) tensors."""
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()
    model.load_state_dict({k: v for k, v in backbone_state.items() if not k.startswith("fc.")}, strict=True)
    return model.eval()


def reference_vit_cls(sd: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int, patch: int = 16) -> torch.Tensor:
    """Hand-written ViT forward (MAE/timm semantics): CLS token after the final LayerNorm (eps 1e-6)."""
    d = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    b = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(b, -1, -1)
    t = torch.cat([cls, t], dim=1)
    n, hd = t.shape[1], d // num_heads
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(b, n, 3, num_heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        t = t + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"])
        t = t + y + sd[p + "mlp.fc2.bias"]
    t = F.layer_norm(t, (d,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return t[:, 0]
