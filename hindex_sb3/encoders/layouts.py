"""Key layouts: convert each official checkpoint into the ``state_dict`` of the module we build for it.

Each converter takes whatever ``torch.load`` returned and gives a flat ``{name: tensor}`` dict in the target module's
own key names. Converters only *select and rename*; they never drop keys the target needs. Whether the result fits
is decided afterwards by :func:`hindex_sb3.encoders.weights.load_state_dict_strict`, so a file in the wrong layout
fails loudly with a list of missing/unexpected keys instead of loading half a network.

Layouts (sources in ``docs/representations.md``):

* FrankMocap hand regressor ``pose_shape_best.pth``: ``main_encoder.<torchvision resnet50 key>`` plus the
  ``main_encoder.fc1``, ``feat_encoder.1`` and ``regressor.0`` heads, which H-InDex does not use.
* H-InDex adapted checkpoints (authors' Stage 2): the ``state_dict`` of ``DataParallel(HumanIMMModel)``; the backbone
  is ``module.pose_net.<torchvision key>``, next to keypoint heads (``deconv_layers``, ``final_layer_unsup``,
  ``sup_query``, ``mh_attn``, ``sup_weight``) and the reconstruction networks (``module.image_encoder`` etc.).
* this package's adapted format ``{"format": "hindex_sb3.adapted/1", "state_dict", "provenance"}``.
* R3M ``model.pt``: ``ckpt["r3m"]["module.convnet.<torchvision key>"]`` next to ``module.lang_enc.*`` etc.
* torchvision ``resnet50`` (ImageNet, RRL): plain torchvision keys including the ``fc.*`` classifier.
* MAE-style ViTs (MVP, VC-1): ``ckpt["model"]`` with timm ``VisionTransformer`` keys plus the MAE decoder
  (``decoder_*``) and ``mask_token``.
* FrankMocap body module (SPIN's HMR regressor): ``ckpt["model"]`` with torchvision ResNet-50 backbone keys and the
  SMPL regression head ``fc1``, ``fc2``, ``decpose``, ``decshape``, ``deccam`` plus the ``init_pose/shape/cam``
  buffers; ``optimizer`` and counters beside ``model``.
* AlphaPose FastPose ResNet-50 (``fast_res50_256x192.pth``): a plain state dict, backbone under ``preact.`` (an
  SE-ResNet-50: the first block of each stage has an ``se.fc.{0,2}`` squeeze-excitation gate), heads ``duc1``,
  ``duc2``, ``conv_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from hindex_sb3.encoders.weights import ADAPTED_FORMAT, CheckpointError, StateDict

__all__ = [
    "ALPHAPOSE_SE_KEYS",
    "HINDEX_ADAPTED_HEADS",
    "HMR_HEAD_KEYS",
    "alphapose_fastpose",
    "frankmocap_body",
    "frankmocap_hand",
    "hindex_any",
    "hindex_authors_adapted",
    "hindex_sb3_adapted",
    "mae_vit",
    "r3m_resnet",
    "torchvision_plain",
    "torchvision_resnet_no_fc",
]

# Sub-modules of the authors' PoseDoubleHeadResNet that are not part of the ResNet-50 backbone.
HINDEX_ADAPTED_HEADS = (
    "deconv_layers.",
    "final_layer_unsup.",
    "final_layer.",
    "sup_query.",
    "mh_attn.",
    "sup_weight.",
    "sup_f.",
)


#: SPIN/FrankMocap HMR regressor parts after the backbone (the SMPL iterative regressor and its mean-parameter init)
HMR_HEAD_KEYS = ("fc1.", "fc2.", "decpose.", "decshape.", "deccam.", "init_pose", "init_shape", "init_cam")

#: the squeeze-excitation gates of AlphaPose's SE-ResNet-50 (first block of each stage). H-InDex loaded the backbone
#: into a plain torchvision ResNet-50 with strict=False, so these were never used; we drop exactly these keys.
ALPHAPOSE_SE_KEYS = tuple(f"layer{i}.0.se.fc.{j}.{p}" for i in range(1, 5) for j in (0, 2) for p in ("weight", "bias"))


def _flat(obj: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{what}: expected a non-empty dict of tensors, got {type(obj).__name__}")
    non_str = [k for k in obj if not isinstance(k, str)]
    if non_str:
        raise CheckpointError(f"{what}: non-string keys {non_str[:5]}")
    return dict(obj)


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _sample_keys(sd: Mapping[str, Any], n: int = 6) -> str:
    return ", ".join(list(sd)[:n])


def torchvision_plain(ckpt: Any) -> StateDict:
    """A plain torchvision ``state_dict``, used as is (e.g. VGG16 for the Stage-2 perceptual loss)."""
    return _flat(ckpt, "torchvision checkpoint")


def torchvision_resnet_no_fc(ckpt: Any) -> StateDict:
    """torchvision ResNet-50 with its ImageNet classifier: drop ``fc.*`` (our backbone ends at the pooled 2048-d)."""
    sd = _flat(ckpt, "torchvision ResNet checkpoint")
    if "conv1.weight" not in sd:
        raise CheckpointError(f"no 'conv1.weight' key; this is not a torchvision ResNet (keys: {_sample_keys(sd)})")
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def r3m_resnet(ckpt: Any) -> StateDict:
    """R3M ``model.pt``: keep ``ckpt['r3m']['module.convnet.*']`` (strip the prefix); language parts are dropped."""
    if not (isinstance(ckpt, Mapping) and "r3m" in ckpt):
        keys = _sample_keys(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"no 'r3m' entry at the top level (found: {keys})")
    sd = _strip(_flat(ckpt["r3m"], "ckpt['r3m']"), "module.convnet.")
    if not sd:
        raise CheckpointError(f"no 'module.convnet.*' keys in ckpt['r3m'] (keys: {_sample_keys(ckpt['r3m'])})")
    return sd


def frankmocap_hand(ckpt: Any) -> StateDict:
    """FrankMocap ``pose_shape_best.pth``: ``main_encoder.*`` without the ``fc1`` head (as H-InDex loads it)."""
    sd = _strip(_flat(ckpt, "FrankMocap checkpoint"), "main_encoder.")
    if not sd:
        raise CheckpointError("no 'main_encoder.*' keys")
    return {k: v for k, v in sd.items() if not k.startswith("fc1.")}


def hindex_authors_adapted(ckpt: Any) -> StateDict:
    """The authors' Stage-2 output: ``module.pose_net.*`` (or ``pose_net.*`` if saved without DataParallel),
    minus the keypoint heads; the appearance encoder / pose encoder / renderer are outside ``pose_net``."""
    sd = _flat(ckpt, "H-InDex adapted checkpoint")
    prefix = "module.pose_net." if any(k.startswith("module.pose_net.") for k in sd) else "pose_net."
    backbone = _strip(sd, prefix)
    if not backbone:
        raise CheckpointError("no 'module.pose_net.*' keys")
    return {k: v for k, v in backbone.items() if not k.startswith(HINDEX_ADAPTED_HEADS)}


def hindex_sb3_adapted(ckpt: Any) -> StateDict:
    """This package's adapted format (see :func:`hindex_sb3.encoders.weights.save_adapted_checkpoint`)."""
    if not (isinstance(ckpt, Mapping) and ckpt.get("format") == ADAPTED_FORMAT):
        raise CheckpointError(f"not a {ADAPTED_FORMAT} checkpoint")
    return _flat(ckpt.get("state_dict"), f"{ADAPTED_FORMAT} state_dict")


def hindex_any(ckpt: Any) -> StateDict:
    """Detect which of the three H-InDex layouts ``ckpt`` is in and convert it.

    A bare torchvision ResNet ``state_dict`` is refused on purpose: an ImageNet file passed as ``hindex`` weights
    would otherwise load "successfully" and silently give the RRL baseline instead of the hand representation.
    """
    if isinstance(ckpt, Mapping) and "format" in ckpt:
        fmt = ckpt["format"]
        if fmt != ADAPTED_FORMAT:
            raise CheckpointError(f"unsupported checkpoint format {fmt!r} (this version reads {ADAPTED_FORMAT!r})")
        return hindex_sb3_adapted(ckpt)
    sd = _flat(ckpt, "H-InDex checkpoint")
    if any(k.startswith("main_encoder.") for k in sd):
        return frankmocap_hand(sd)
    if any(k.startswith(("module.pose_net.", "pose_net.")) for k in sd):
        return hindex_authors_adapted(sd)
    raise CheckpointError(
        "not an H-InDex checkpoint: expected FrankMocap 'main_encoder.*' keys, the authors' adapted "
        f"'module.pose_net.*' keys or a {ADAPTED_FORMAT!r} dict (keys: {_sample_keys(sd)})"
    )


def mae_vit(ckpt: Any) -> StateDict:
    """MAE-style ViT checkpoint (MVP, VC-1): ``ckpt['model']`` minus the MAE decoder and ``mask_token``."""
    if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
        sd = _flat(ckpt["model"], "ckpt['model']")
    else:
        sd = _flat(ckpt, "ViT checkpoint")
    if "cls_token" not in sd:
        raise CheckpointError(f"no 'cls_token' key; this is not an MAE/timm ViT checkpoint (keys: {_sample_keys(sd)})")
    return {k: v for k, v in sd.items() if not (k.startswith("decoder") or k == "mask_token")}


def frankmocap_body(ckpt: Any) -> StateDict:
    """FrankMocap body regressor (``2020_05_31-00_50_43-best-51.749683916568756.pt``): ``ckpt['model']`` minus the
    HMR regression head, as H-InDex's ``FrankMocapBodyEncoder`` loads it (a ``module.`` prefix is stripped)."""
    if not (isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping)):
        keys = _sample_keys(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"no 'model' state dict at the top level (found: {keys})")
    sd = _flat(ckpt["model"], "ckpt['model']")
    if all(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    if "decpose.weight" not in sd:
        raise CheckpointError(
            f"no 'decpose.weight' key: this is not a FrankMocap/SPIN HMR body regressor (keys: {_sample_keys(sd)})"
        )
    return {k: v for k, v in sd.items() if not k.startswith(HMR_HEAD_KEYS)}


def alphapose_fastpose(ckpt: Any) -> StateDict:
    """AlphaPose FastPose: the ``preact.*`` backbone without its SE gates, as H-InDex's ``AlphaPoseEncoder`` runs it.

    The heads (``duc1``, ``duc2``, ``conv_out``) are outside ``preact.``; any other extra backbone key (e.g. the
    ``conv2_offset`` of the DCN variant) stays and is reported by the strict loader.
    """
    sd = _flat(ckpt, "AlphaPose checkpoint")
    if all(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    backbone = _strip(sd, "preact.")
    if not backbone:
        raise CheckpointError(f"no 'preact.*' keys: this is not an AlphaPose FastPose checkpoint ({_sample_keys(sd)})")
    return {k: v for k, v in backbone.items() if k not in ALPHAPOSE_SE_KEYS}
