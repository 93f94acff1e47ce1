"""The encoder registry: one :class:`EncoderSpec` per representation, and :func:`create_encoder`.

In the manner of timm's registry, a spec records everything needed to reproduce a representation: the trunk builder,
the feature size, the exact preprocessing (resize, crop, normalisation) and the weight file (URL, cache name, key
layout). ``create_encoder(name, weights=...)`` returns a frozen :class:`~hindex_sb3.encoders.base.Encoder`.

The weight files registered here include one that is not an encoder (``vgg16_imagenet``, for the Stage-2 perceptual
loss), so that every pretrained download in the package goes through the same cache, offline error and strict loading.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, VGG16_Weights

from hindex_sb3._validation import (
    check_choice,
    check_device,
    check_encoder_options,
    check_flag,
    check_int,
    check_real,
    check_str,
)
from hindex_sb3.ema_bn import EMAScope, EMAUpdate
from hindex_sb3.encoders import layouts
from hindex_sb3.encoders.base import _INTERPOLATION, Encoder
from hindex_sb3.encoders.external import EXTERNAL_PREFIXES, external_spec, is_external
from hindex_sb3.encoders.resnet import resnet50_trunk
from hindex_sb3.encoders.vit import fit_pos_embed, vit_cls
from hindex_sb3.encoders.weights import (
    WeightsError,
    WeightSpec,
    load_state_dict_strict,
    load_weights,
    register_weights,
)

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EncoderSpec",
    "RandomWeightsWarning",
    "create_encoder",
    "get_encoder_spec",
    "list_encoders",
    "register_encoder",
    "unregister_encoder",
]


class RandomWeightsWarning(UserWarning):
    """An encoder was built without pretrained weights (fine for smoke tests, meaningless for experiments)."""


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that defines one representation.

    :param name: registry key (``"hindex"``, ``"rrl"``, ``"r3m"``, ``"mvp"``, ``"vc1"``, ...).
    :param feature_dim: size D of the feature vector.
    :param weights: the official weight file (URL, cache file name, key layout, converter); ``None`` for an encoder
        without a published file (then ``weights=path`` loads a plain ``state_dict`` of the trunk, strictly).
    :param builder: returns the randomly initialised trunk, ``(B, 3, input_size, input_size) -> (B, D)``. Use a
        module-level function or ``functools.partial`` (specs travel with encoders, e.g. into copies).
    :param family: ``"resnet"``, ``"vit"`` or any label (``"timm"``, ``"torchvision"``, ``"user"``).
    :param batchnorm: whether the trunk normalises with ``nn.BatchNorm2d`` layers (EMA-BN and ``hindex adapt`` need
        them); ``None`` means "if ``family == 'resnet'``".
    :param input_size: centre-crop size fed to the trunk.
    :param resize: shorter-side resize before the crop.
    :param interpolation: resize filter (H-InDex uses bilinear for every encoder).
    :param mean: per-channel mean for normalisation, ``None`` for no normalisation (H-InDex).
    :param std: per-channel std, ``None`` with ``mean``.
    :param channels_last: default memory format of the trunk. Channels-last runs ResNet-50 faster on CPUs (oneDNN)
        and GPUs, and makes EMA-BN's per-channel statistics a cheap vectorised pass.
    :param description: one line for listings and docs.
    :param feature_map: ``(trunk, x) -> (B, C, h, w)``, the spatial map Stage 2's keypoint head reads
        (``hindex adapt --encoder NAME``); ``None`` finds it (timm ``forward_features``, the input of the last
        adaptive pooling layer, or the last 4-D activation; see :mod:`hindex_sb3.adapt.feature_map`).
    """

    name: str
    feature_dim: int
    weights: WeightSpec | None
    builder: Callable[[], nn.Module] = field(repr=False)
    family: str = "resnet"
    input_size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    channels_last: bool = False
    description: str = ""
    batchnorm: bool | None = None
    feature_map: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"encoder name must be a non-empty string without spaces, got {self.name!r}")
        # Checked here, at registration: a malformed spec would otherwise fail (or give NaN features) much later.
        for key in ("feature_dim", "input_size", "resize"):
            object.__setattr__(self, key, check_int(f"{self.name}: {key}", getattr(self, key), minimum=1))
        if not callable(self.builder):
            raise TypeError(f"{self.name}: builder must be callable")
        if self.weights is not None and not isinstance(self.weights, WeightSpec):
            raise TypeError(f"{self.name}: weights must be a WeightSpec or None, got {type(self.weights).__name__}")
        check_str(f"{self.name}: family", self.family)
        check_choice(f"{self.name}: interpolation", self.interpolation, _INTERPOLATION)
        check_flag(f"{self.name}: channels_last", self.channels_last)
        if self.batchnorm is not None:
            check_flag(f"{self.name}: batchnorm", self.batchnorm)
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"{self.name}: give both mean and std, or neither")
        if self.mean is not None:
            object.__setattr__(self, "mean", _rgb(f"{self.name}: mean", self.mean, positive=False))
            object.__setattr__(self, "std", _rgb(f"{self.name}: std", self.std, positive=True))
        if self.weights is None:  # no published file: a local state_dict of the trunk, loaded strictly
            object.__setattr__(
                self,
                "weights",
                WeightSpec(
                    name=self.name,
                    url="",
                    file_name=f"{self.name}.pth",
                    key_layout="the trunk's own state_dict",
                    converter=layouts.torchvision_plain,
                    description=f"{self.name}: no published weights",
                ),
            )

    @property
    def url(self) -> str:
        return self.weights.url

    @property
    def file_name(self) -> str:
        return self.weights.file_name

    @property
    def key_layout(self) -> str:
        return self.weights.key_layout

    @property
    def has_batchnorm(self) -> bool:
        return self.family == "resnet" if self.batchnorm is None else bool(self.batchnorm)


def _rgb(name: str, values: object, *, positive: bool) -> tuple[float, float, float]:
    """Three finite per-channel values (a zero std would divide every image by zero: NaN features, no error)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of 3 numbers (R, G, B), got {values!r}")
    values = tuple(values)
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {len(values)}")
    return tuple(  # type: ignore[return-value]
        check_real(f"{name}[{i}]", v, minimum=0.0 if positive else None, min_inclusive=False)
        for i, v in enumerate(values)
    )


_ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> EncoderSpec:
    """Add an encoder to the registry (raises on a duplicate name unless ``overwrite``).

    A registered name works everywhere an encoder name does: :func:`create_encoder`, ``HIndexExtractor`` /
    ``baseline_extractor``, ``VecEncode`` and ``hindex train --encoder NAME`` (EMA-BN where ``spec.has_batchnorm``).
    Other packages register on install through the ``hindex_sb3.encoders`` entry-point group
    (:mod:`hindex_sb3.encoders.plugins`). Names with a ``timm:`` / ``torchvision:`` prefix are reserved.
    """
    if not isinstance(spec, EncoderSpec):
        raise TypeError(f"register_encoder expects an EncoderSpec, got {type(spec).__name__}")
    if is_external(spec.name):
        raise ValueError(f"encoder names starting with {EXTERNAL_PREFIXES} are reserved for timm/torchvision models")
    overwrite = check_flag("overwrite", overwrite)
    if spec.name in _ENCODERS and not overwrite:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    _ENCODERS[spec.name] = spec
    return spec


def unregister_encoder(name: str) -> EncoderSpec:
    """Remove ``name`` from the registry and return its spec (e.g. to undo a test's registration)."""
    return _ENCODERS.pop(name)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder, a ``timm:<model>`` / ``torchvision:<model>`` name, or one that an
    installed package provides through the ``hindex_sb3.encoders`` entry points (loaded on first miss)."""
    if not isinstance(name, str):
        raise TypeError(f"encoder name must be a str, got {type(name).__name__}")
    if name in _ENCODERS:
        return _ENCODERS[name]
    if is_external(name):
        return external_spec(name)
    from hindex_sb3.encoders.plugins import load_plugins, plugin_errors

    load_plugins()
    if name in _ENCODERS:
        return _ENCODERS[name]
    failed = plugin_errors()
    note = f"; entry points that failed to load: {failed}" if failed else ""
    raise KeyError(
        f"unknown encoder {name!r}; available: {list_encoders()}, or any 'timm:<model>' / 'torchvision:<model>'" + note
    )


def list_encoders(*, plugins: bool = True) -> list[str]:
    """Registered encoder names (with ``plugins``, after loading the installed packages' entry points)."""
    if plugins:
        from hindex_sb3.encoders.plugins import load_plugins

        load_plugins()
    return sorted(_ENCODERS)


def _defer_weights_error(name: str, err: WeightsError) -> WeightsError:
    """Warn that ``name`` has no usable weights yet; the error is raised at the first forward unless a complete
    state dict (e.g. SB3 ``load`` of a saved model, whose zip holds every encoder tensor) replaces it first."""
    warnings.warn(
        f"{name}: pretrained weights unavailable or unreadable; the encoder will refuse to run unless a saved "
        f"model's state dict is loaded into it.\n{err}",
        RandomWeightsWarning,
        stacklevel=3,
    )
    return err


def create_encoder(
    name: str,
    weights: str | os.PathLike | None = "default",
    *,
    ema_scope: EMAScope | None = None,
    ema_momentum: float = 0.0,
    ema_update: EMAUpdate = "frame",
    device: torch.device | str | None = None,
    channels_last: bool | None = None,
    cuda_graphs: bool = False,
    precision: str = "fp32",
    progress: bool = True,
    on_unavailable: Literal["raise", "defer"] = "raise",
) -> Encoder:
    """Build the frozen encoder ``name`` and load its weights.

    :param weights: ``"default"`` (official file, cached in ``$HINDEX_SB3_HOME/weights``, downloaded on first use),
        a local file path (for ``hindex``: FrankMocap's ``pose_shape_best.pth``, an H-InDex adapted checkpoint, or
        one written by :func:`~hindex_sb3.encoders.weights.save_adapted_checkpoint`), or ``None`` for random
        initialisation (warns with :class:`RandomWeightsWarning`).
    :param ema_scope: ``"all"`` / ``"stem"`` turns BatchNorm layers into EMA-BN (Stage 3); ``None`` keeps plain BN.
    :param ema_momentum: EMA momentum m (weight of the new frame) for those layers.
    :param ema_update: ``"frame"``: one update per image of a batch (the paper); ``"batch"``: one per forward.
    :param channels_last: memory format of the trunk; ``None`` = the spec's default (on for ResNets).
    :param cuda_graphs: replay CUDA input through captured CUDA graphs (:meth:`Encoder.use_cuda_graphs`): removes the
        kernel-launch cost that dominates GPU forwards at RL batch sizes. No effect on CPU input.
    :param precision: ``"fp32"`` (default, the paper's numbers) or ``"bf16"``: the trunk under bfloat16 autocast (CPU
        or CUDA), features float32 and within :data:`~hindex_sb3.encoders.base.BF16_TOLERANCE` of fp32
        (:meth:`Encoder.set_precision`).
    :param on_unavailable: ``"defer"`` builds the encoder even when the weight file cannot be obtained or read
        (missing, truncated, non-finite, another network's file); it then refuses to run, raising that error, until a
        complete state dict is loaded into it (used by the SB3 extractor so that ``load()`` of a saved model works
        whatever the cache holds: the zip holds the weights). ``"raise"`` raises immediately.
    :raises WeightsUnavailableError: no file and no way to download it (names the URL and where to put the file).
    :raises CheckpointError: unreadable file, foreign layout, or any key/shape mismatch (listed).
    """
    check_str("name", name)
    check_encoder_options(
        weights=weights,
        ema_scope=ema_scope,
        ema_momentum=ema_momentum,
        channels_last=channels_last,
        cuda_graphs=cuda_graphs,
        precision=precision,
        ema_update=ema_update,
    )
    if ema_scope is None and ema_momentum > 0:  # without EMA-BN layers the momentum would be dropped silently
        raise ValueError(f"ema_momentum={ema_momentum} needs EMA-BN layers: pass ema_scope='all' or 'stem' too")
    check_flag("progress", progress)
    check_device("device", device)
    check_choice("on_unavailable", on_unavailable, ("raise", "defer"))
    spec = get_encoder_spec(name)
    backbone, source, pending = _backbone_with_weights(name, spec, weights, progress, defer=on_unavailable == "defer")
    encoder = Encoder(spec, backbone, weights_source=source)
    encoder._pending_weights_error = pending
    if ema_scope is not None:
        if not spec.has_batchnorm:
            raise ValueError(f"{name} ({spec.family}) has no BatchNorm layers, so EMA-BN does not apply")
        encoder.enable_ema_bn(ema_scope, ema_momentum, ema_update)
    if spec.channels_last if channels_last is None else channels_last:
        encoder.to_channels_last()
    encoder.set_precision(precision)
    if device is not None:
        encoder.to(device)
    if cuda_graphs:
        encoder.use_cuda_graphs()
    return encoder


def _backbone_with_weights(
    name: str, spec: EncoderSpec, weights: str | os.PathLike | None, progress: bool, defer: bool
) -> tuple[nn.Module, str, Exception | None]:
    """The spec's network with ``weights`` loaded: ``(backbone, source, pending)``, where ``source`` is the file
    loaded (or ``"random"``) and ``pending`` the weights error that ``defer`` kept instead of raising."""
    pending: Exception | None = None
    try:
        state, path = load_weights(spec.weights, weights, progress=progress, encoder=name)
    except WeightsError as err:  # missing, unreadable, truncated, non-finite
        if not defer:
            raise
        state, path, pending = None, None, _defer_weights_error(name, err)
    backbone = spec.builder()  # after resolving the file: a missing file fails before a costly ViT-B init
    if not isinstance(backbone, nn.Module):  # a plain function would run but never move, save or load weights
        raise TypeError(f"{name}: the spec's builder must return a torch nn.Module, got {type(backbone).__name__}")
    if state is not None:
        try:
            if spec.family == "vit":
                state = fit_pos_embed(backbone, state)
            load_state_dict_strict(backbone, state, what=f"{name} weights from {path}")
        except WeightsError as err:  # a file of another network in the cache
            if not defer:
                raise
            pending = _defer_weights_error(name, err)
    if state is not None and pending is None:
        logger.info("%s encoder: loaded %s", name, path)
        return backbone, str(path), None
    if pending is None:
        warnings.warn(
            f"{name} encoder is randomly initialised (weights=None): use only for smoke tests.",
            RandomWeightsWarning,
            stacklevel=3,  # create_encoder's caller
        )
    return backbone, "random", pending


# ---------------------------------------------------------------------------------------------------------------------
# Weight files. URLs and layouts: docs/representations.md (from the H-InDex, FrankMocap, R3M, MVP and VC-1 sources).

FRANKMOCAP_HAND = register_weights(
    WeightSpec(
        name="frankmocap_hand",
        url="https://dl.fbaipublicfiles.com/eft/fairmocap_data/hand_module/checkpoints_best/pose_shape_best.pth",
        file_name="pose_shape_best.pth",
        key_layout=(
            "FrankMocap 'main_encoder.*' (+ fc1, feat_encoder.1, regressor.0); or H-InDex adapted "
            "'module.pose_net.*'; or {'format': 'hindex_sb3.adapted/1', 'state_dict', 'provenance'}"
        ),
        converter=layouts.hindex_any,
        description="FrankMocap hand-module ResNet-50 (H-InDex Stage 1); also reads Stage-2 adapted checkpoints",
        manual_download=(
            "the authors' per-task adapted encoders (Stage 2) are a Google Drive archive "
            "(https://drive.google.com/file/d/1TPCAnZMOcgErMruZ45R8MAg7b4iWu5DT; with gdown installed: "
            "`gdown 1TPCAnZMOcgErMruZ45R8MAg7b4iWu5DT`); pass one file as weights=path."
        ),
    )
)
RESNET50_IMAGENET = register_weights(
    WeightSpec(
        name="resnet50_imagenet_v1",
        url=ResNet50_Weights.IMAGENET1K_V1.url,
        file_name=ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1],
        key_layout="torchvision resnet50 state_dict (fc.* dropped)",
        converter=layouts.torchvision_resnet_no_fc,
        sha256_prefix=ResNet50_Weights.IMAGENET1K_V1.url.rsplit("-", 1)[-1].split(".")[0],
        description="torchvision ImageNet ResNet-50 (IMAGENET1K_V1), the RRL baseline as H-InDex runs it",
    )
)
R3M_RESNET50 = register_weights(
    WeightSpec(
        name="r3m_resnet50",
        url="https://drive.google.com/uc?id=1Xu0ssuG0N1zjZS54wmWzJ7-nb0-7XzbA",
        file_name="r3m_resnet50_model.pt",
        key_layout="{'r3m': {'module.convnet.<resnet50 key>', 'module.lang_enc.*', 'module.lang_rew.*', ...}}",
        converter=layouts.r3m_resnet,
        description="R3M ResNet-50 (Nair et al. 2022)",
        manual_download=(
            "Google Drive downloads go through gdown (pip install gdown); if Drive refuses (quota, confirmation "
            "page), download it in a browser (it is R3M's r3m_50/model.pt) and place it at the path above."
        ),
    )
)
MVP_VITS = register_weights(
    WeightSpec(
        name="mvp_vits_mae_hoi",
        url="https://berkeley.box.com/shared/static/m93ynem558jo8vltlads5rcmnahgsyzr.pth",
        file_name="mae_pretrain_hoi_vit_small.pth",
        key_layout="{'model': {cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*, decoder_*, mask_token}}",
        converter=layouts.mae_vit,
        description="MVP ViT-S/16 MAE on HOI data (Xiao et al. 2022), 12 heads",
    )
)
VC1_VITB = register_weights(
    WeightSpec(
        name="vc1_vitb",
        url="https://dl.fbaipublicfiles.com/eai-vc/vc1_vitb.pth",
        file_name="vc1_vitb.pth",
        key_layout="{'model': {cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*, decoder_*, mask_token}}",
        converter=layouts.mae_vit,
        description="VC-1 base ViT-B/16 MAE (Majumdar et al. 2023)",
    )
)
FRANKMOCAP_BODY = register_weights(
    WeightSpec(
        name="frankmocap_body",
        url="https://dl.fbaipublicfiles.com/eft/2020_05_31-00_50_43-best-51.749683916568756.pt",
        file_name="2020_05_31-00_50_43-best-51.749683916568756.pt",
        key_layout=(
            "{'model': {<torchvision resnet50 key>, fc1, fc2, decpose, decshape, deccam, init_pose/shape/cam}, "
            "'optimizer', ...} (SPIN HMR regressor)"
        ),
        converter=layouts.frankmocap_body,
        description="FrankMocap body module: SPIN/EFT HMR ResNet-50 SMPL regressor (ablation in H-InDex Fig. 5)",
    )
)
ALPHAPOSE_FASTPOSE = register_weights(
    WeightSpec(
        name="alphapose_fast_res50",
        url="https://drive.google.com/uc?id=1kQhnMRURFiy7NsdS8EFL-8vtqEXOgECn",
        file_name="fast_res50_256x192.pth",
        key_layout="{preact.<SE-ResNet-50 key>, duc1.*, duc2.*, conv_out.*} (AlphaPose FastPose, COCO 17 keypoints)",
        converter=layouts.alphapose_fastpose,
        description="AlphaPose FastPose ResNet-50 256x192 (COCO); SE gates dropped as H-InDex ran it",
        manual_download=(
            "AlphaPose publishes it on Google Drive (docs/MODEL_ZOO.md, 'Fast Pose' ResNet50 256x192); download "
            "fast_res50_256x192.pth in a browser and place it at the path above."
        ),
    )
)
VGG16_IMAGENET = register_weights(
    WeightSpec(
        name="vgg16_imagenet",
        url=VGG16_Weights.IMAGENET1K_V1.url,
        file_name=VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1],
        key_layout="torchvision vgg16 state_dict",
        converter=layouts.torchvision_plain,
        sha256_prefix=VGG16_Weights.IMAGENET1K_V1.url.rsplit("-", 1)[-1].split(".")[0],
        description="torchvision ImageNet VGG16 (IMAGENET1K_V1), the Stage-2 perceptual loss network",
    )
)

# ---------------------------------------------------------------------------------------------------------------------
# Encoders (H-InDex's make_encoder: every encoder gets Resize(256) -> CenterCrop(224), bilinear, on [0, 1] input).

register_encoder(
    EncoderSpec(
        name="hindex",
        feature_dim=2048,
        weights=FRANKMOCAP_HAND,
        builder=resnet50_trunk,
        channels_last=True,
        family="resnet",
        mean=None,
        std=None,
        description="H-InDex: FrankMocap hand ResNet-50, pooled layer4, [0,1] input without mean/std",
    )
)
register_encoder(
    EncoderSpec(
        name="rrl",
        feature_dim=2048,
        weights=RESNET50_IMAGENET,
        builder=resnet50_trunk,
        channels_last=True,
        description="RRL baseline: ImageNet ResNet-50, pooled layer4",
    )
)
register_encoder(
    EncoderSpec(
        name="r3m",
        feature_dim=2048,
        weights=R3M_RESNET50,
        builder=resnet50_trunk,
        channels_last=True,
        description="R3M ResNet-50 convnet, pooled layer4",
    )
)
register_encoder(
    EncoderSpec(
        name="mvp",
        feature_dim=384,
        weights=MVP_VITS,
        builder=functools.partial(vit_cls, embed_dim=384, depth=12, num_heads=12),  # picklable, unlike a lambda
        family="vit",
        description="MVP ViT-S/16 (12 heads), CLS token after the final LayerNorm",
    )
)
register_encoder(
    EncoderSpec(
        name="vc1",
        feature_dim=768,
        weights=VC1_VITB,
        builder=functools.partial(vit_cls, embed_dim=768, depth=12, num_heads=12),
        family="vit",
        description="VC-1 base ViT-B/16, CLS token after the final LayerNorm",
    )
)
register_encoder(
    EncoderSpec(
        name="frankmocap_body",
        feature_dim=2048,
        weights=FRANKMOCAP_BODY,
        builder=resnet50_trunk,
        channels_last=True,
        description="FrankMocap body (HMR) ResNet-50, pooled layer4, ImageNet mean/std (H-InDex ablation)",
    )
)
register_encoder(
    EncoderSpec(
        name="alphapose",
        feature_dim=2048,
        weights=ALPHAPOSE_FASTPOSE,
        builder=resnet50_trunk,
        channels_last=True,
        description="AlphaPose FastPose ResNet-50 backbone without SE gates, pooled layer4, ImageNet mean/std",
    )
)
