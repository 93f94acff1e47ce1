"""The frozen encoder module: preprocessing + trunk, images in, features out.

An :class:`Encoder` owns everything that turns pixels into the representation the paper feeds to its policy, so that
callers (the SB3 extractor, the VecEnv wrapper, benchmarks, Stage 2) cannot get the preprocessing subtly wrong:

``uint8 (B, 3, H, W)`` -> ``/255`` -> ``Resize(256)`` (bilinear, antialiased, shorter side) -> ``CenterCrop(224)``
-> ImageNet mean/std (baselines only; H-InDex uses none) -> trunk -> ``(B, D)`` float32.

Preprocessing always runs in float32; the trunk runs in the encoder's :attr:`~Encoder.precision`: ``"fp32"`` (the
paper's numbers) or ``"bf16"`` (bfloat16 autocast, for speed on GPUs; features stay within :data:`BF16_TOLERANCE` of
fp32, see :meth:`Encoder.set_precision`). Features are float32 either way.

Float input is accepted too, and must already be in [0, 1]: that is what SB3 hands to features extractors after its
own ``/255`` (``preprocess_obs``). The encoder is *frozen*: it always runs under ``no_grad`` and stays in eval mode
whatever ``train()`` says, and it ignores ``apply()``, because SB3's ``ortho_init`` re-initialises extractors with
``module.apply(init_weights)`` and would otherwise overwrite the pretrained weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torchvision.transforms.functional as TF
from torch import nn

from hindex_sb3._validation import PRECISIONS, check_flag, check_int, check_precision
from hindex_sb3.ema_bn import (
    EMABatchNorm2d,
    EMAScope,
    EMAUpdate,
    convert_to_ema_bn,
    ema_bn_modules,
    ema_bn_updates,
)
from hindex_sb3.encoders.cuda_graphs import GraphCache

if TYPE_CHECKING:
    from hindex_sb3.encoders.registry import EncoderSpec

__all__ = ["BF16_TOLERANCE", "MAX_ASPECT", "PRECISIONS", "Encoder", "Preprocess"]

#: Largest accepted image aspect ratio; a 1 x 100,000 strip would otherwise be resized to 256 x 25,600,000.
MAX_ASPECT = 16

#: Stated bound on the per-frame norm-relative feature error ``||f_bf16 - f_fp32|| / ||f_fp32||`` of ``"bf16"``
#: against ``"fp32"``, for the ResNet-50 encoders with and without per-frame EMA-BN: the worst of 64 rendered Adroit
#: frames was 1.3e-2 (median 0.8-1.1e-2) on a ResNet-50 with calibrated statistics, about what +-1 grey level of
#: pixel noise does in fp32 (benchmarks/precision.py; docs/representations.md, "Reduced precision").
BF16_TOLERANCE = 2e-2

_INTERPOLATION = {
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
}


class Preprocess(nn.Module):
    """``[0, 1]`` float images -> resized, centre-cropped, optionally mean/std-normalised network input.

    Same operations as ``transforms.Resize(resize)``, ``CenterCrop(crop)``, ``Normalize(mean, std)`` applied to float
    tensors, which is how H-InDex runs all five encoders (on GPU tensors, bilinear with antialiasing).
    The mean/std buffers are non-persistent: they are constants of the spec, and keeping them out of the state dict
    keeps SB3's exact-match ``load`` and checkpoint layouts independent of them.
    """

    def __init__(
        self,
        resize: int = 256,
        crop: int = 224,
        interpolation: str = "bilinear",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.resize, self.crop = int(resize), int(crop)
        if self.resize < self.crop:  # center_crop would zero-pad every image: black borders, no error
            raise ValueError(
                f"resize ({self.resize}) must be at least the crop ({self.crop}, the spec's input_size): the centre "
                "crop is taken from the resized image, and a larger crop would pad it with black borders"
            )
        self.interpolation = _INTERPOLATION[interpolation]
        self.normalize = mean is not None
        self.register_buffer("mean", torch.tensor(mean or (0.0, 0.0, 0.0)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or (1.0, 1.0, 1.0)).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        norm = f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}" if self.normalize else "none"
        return f"resize={self.resize} ({self.interpolation.value}), crop={self.crop}, normalize={norm}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = TF.resize(x, [self.resize], interpolation=self.interpolation, antialias=True)
        x = TF.center_crop(x, [self.crop, self.crop])
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x


class Encoder(nn.Module):
    """A frozen visual representation: ``forward(images) -> (B, feature_dim)``.

    Build it with :func:`hindex_sb3.encoders.create_encoder`. ``images`` are ``uint8`` in [0, 255] or floats in
    [0, 1], shaped ``(B, 3, H, W)``. Invalid input (wrong rank or channels, NaN/inf, floats outside [0, 1], e.g.
    un-normalised 0-255 floats) raises ``ValueError`` instead of producing plausible-looking garbage features.

    :ivar spec: the :class:`~hindex_sb3.encoders.registry.EncoderSpec` (sizes, normalisation, weight file).
    :ivar weights_source: ``"random"``, or the path the weights were read from.
    :ivar precision: ``"fp32"`` or ``"bf16"``, the trunk's compute precision (:meth:`set_precision`).
    """

    precision: str = "fp32"  # class default: encoders pickled before the option existed unpickle with it

    def __init__(self, spec: EncoderSpec, backbone: nn.Module, weights_source: str = "random") -> None:
        super().__init__()
        self.spec = spec
        try:
            self.preprocess = Preprocess(spec.resize, spec.input_size, spec.interpolation, spec.mean, spec.std)
        except ValueError as err:
            raise ValueError(f"{spec.name} encoder: {err}") from None
        self.backbone = backbone
        self.weights_source = weights_source
        self.channels_last = False
        self.precision = "fp32"
        self._ema_layers: list[EMABatchNorm2d] = []
        self._pending_weights_error: Exception | None = None
        self._graphs: GraphCache | None = None
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)
        self.register_load_state_dict_pre_hook(_clear_pending_if_complete)
        self.register_load_state_dict_post_hook(_drop_graphs_after_load)

    # -- properties ----------------------------------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def ema_layers(self) -> list[EMABatchNorm2d]:
        """The EMA-BN layers (empty unless :meth:`enable_ema_bn` was called)."""
        return list(self._ema_layers)

    # -- frozen behaviour ----------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Encoder:
        """Stay in eval mode: BatchNorm must never switch to batch statistics (that is EMA-BN's job, explicitly)."""
        return super().train(False)

    def apply(self, fn: Callable[[nn.Module], None]) -> Encoder:
        """Ignore ``fn``: a frozen pretrained encoder must survive SB3's ``ortho_init`` (``module.apply(init)``).

        To really transform the weights, call ``fn`` on ``encoder.backbone`` explicitly.
        """
        return self

    def state_dict(self, *args, **kwargs):
        """Refuse while the weights are pending: saving a model now would store random features as if trained."""
        if self._pending_weights_error is not None:
            raise self._pending_weights_error
        return super().state_dict(*args, **kwargs)

    # -- options -------------------------------------------------------------------------------------------------------
    def enable_ema_bn(
        self, scope: EMAScope = "all", momentum: float = 0.0, ema_update: EMAUpdate = "frame"
    ) -> list[str]:
        """Turn the backbone's BatchNorm layers (all, or the stem ``bn1``) into :class:`EMABatchNorm2d`.

        Statistics then move only in forwards called with ``update_bn_stats=True``: by default one update per image
        of the batch, in batch order (``ema_update="batch"``: one per forward). Returns the converted names.
        """
        names = convert_to_ema_bn(self.backbone, scope, momentum, update_stats=False, ema_update=ema_update)
        self._ema_layers = ema_bn_modules(self.backbone)
        self._invalidate_graphs()
        return names

    def to_channels_last(self, enabled: bool = True) -> Encoder:
        """Use the channels-last memory format (faster convolutions on GPUs and for ResNets on recent CPUs)."""
        enabled = check_flag("enabled", enabled)
        self.channels_last = enabled
        self.backbone.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        self._invalidate_graphs()
        return self

    def use_cuda_graphs(self, enabled: bool = True, max_graphs: int = 4) -> Encoder:
        """Replay the forward as a captured CUDA graph for CUDA input (see :mod:`hindex_sb3.encoders.cuda_graphs`).

        Worth it at RL batch sizes, where a GPU forward is bound by kernel launches (on an H100 it makes EMA-BN's
        extra kernels nearly free). One graph per input shape and setting, ``max_graphs`` kept; CPU input and
        inputs that need validation first (floats) still run eagerly up to the graph. Off by default.
        """
        enabled, max_graphs = check_flag("enabled", enabled), check_int("max_graphs", max_graphs, minimum=1)
        self._graphs = GraphCache(self, max_graphs) if enabled else None
        return self

    def set_precision(self, precision: str = "fp32") -> Encoder:
        """Run the trunk in ``"fp32"`` or ``"bf16"`` (``torch.autocast`` with bfloat16, on CPU or CUDA).

        Preprocessing stays float32 and features are returned as float32. The setting is authoritative: the trunk
        computes in this precision whatever autocast state the caller is in, so features do not depend on the
        calling code. With bf16, BatchNorm and EMA-BN statistics stay float32 buffers (EMA-BN accumulates the
        per-frame statistics of the bf16 activations in float32 and keeps its per-frame semantics). The per-frame
        norm-relative feature error against fp32 stayed under :data:`BF16_TOLERANCE` on a ResNet-50 with calibrated
        statistics; weights that amplify every small perturbation can exceed it, and then ±1 grey level of pixel
        noise exceeds it as well (docs/representations.md, "Reduced precision"). bf16 pays off on GPUs and on CPUs
        with bf16 instructions (AVX512-BF16 or AMX; 1.7-2.1x faster on the project's AVX512-BF16 CPU); on CPUs
        without them it can be slower.
        """
        self.precision = check_precision("precision", precision)
        self._invalidate_graphs()
        return self

    @property
    def cuda_graphs(self) -> bool:
        return self._graphs is not None

    def _invalidate_graphs(self) -> None:
        if getattr(self, "_graphs", None) is not None:
            self._graphs.clear()

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()``, ``.half()`` ... replace tensors that captured graphs point to: drop the graphs."""
        self._invalidate_graphs()
        return super()._apply(fn, recurse)

    # -- forward -------------------------------------------------------------------------------------------------------
    def to_float01(self, images: torch.Tensor) -> torch.Tensor:
        """Validate ``images`` and return them as float32 in [0, 1] (uint8 is divided by 255).

        Other float dtypes are cast to float32 after the range check: the weights are float32, and preprocessing is
        defined in float32 whatever precision the trunk runs in.
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__} (use torch.as_tensor)")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.spec.name} encoder expects images shaped (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if min(h, w) < 1 or max(h, w) > MAX_ASPECT * min(h, w):  # the shorter side is resized: bound the longer
            raise ValueError(
                f"images of {h}x{w} pixels: the aspect ratio must be at most {MAX_ASPECT}:1 (resizing the shorter "
                f"side to {self.spec.resize} would make the other {self.spec.resize * max(h, w) // max(min(h, w), 1)})"
            )
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        if not images.is_floating_point():
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        lo, hi = torch.aminmax(images.detach()) if images.numel() else (images.new_zeros(()), images.new_zeros(()))
        lo, hi = float(lo), float(hi)  # NaN propagates through aminmax, so this also catches non-finite input
        if not (lo >= -1e-3 and hi <= 1.0 + 1e-3):
            raise ValueError(
                f"float images must be finite and in [0, 1] (got min {lo}, max {hi}); pass uint8 images or divide "
                "by 255 (SB3 does this for uint8 Box image spaces unless normalize_images=False)"
            )
        return images.float()

    def forward(self, images: torch.Tensor, *, update_bn_stats: bool = False) -> torch.Tensor:
        """Features ``(B, feature_dim)`` of ``images`` (see class doc).

        :param update_bn_stats: fold the images into the EMA-BN running statistics before normalising (Stage 3):
            one update per image in batch order, each image normalised with the statistics after its own update
            (or one update per batch with ``ema_update="batch"``). Requires :meth:`enable_ema_bn`; with momentum 0
            it changes nothing.
        """
        if self._pending_weights_error is not None:
            raise self._pending_weights_error
        update_bn_stats = check_flag("update_bn_stats", update_bn_stats)
        if update_bn_stats and not self._ema_layers:
            raise ValueError(f"{self.spec.name} encoder has no EMA-BN layers; call enable_ema_bn() first")
        x = self.to_float01(images)
        if self._graphs is not None and x.is_cuda:
            key = self._graph_key(update_bn_stats)
            return self._graphs.run(lambda t: self._features(t, update_bn_stats), x, key)
        return self._features(x, update_bn_stats)

    def _graph_key(self, update_bn_stats: bool) -> tuple:
        """The EMA-BN settings a captured graph bakes in (Python floats and branches), beside the input's own."""
        return (
            bool(update_bn_stats),
            self.precision,
            tuple((bn.momentum_ema, bn.update_stats, bn.ema_update) for bn in self._ema_layers),
        )

    def _features(self, x: torch.Tensor, update_bn_stats: bool) -> torch.Tensor:
        with torch.no_grad():
            with _autocast(x.device, None):  # a caller's autocast must not change the preprocessing
                x = self.preprocess(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(x.device, torch.bfloat16 if self.precision == "bf16" else None):
                if update_bn_stats:
                    with ema_bn_updates(self.backbone, enabled=True):
                        feats = self.backbone(x)
                else:
                    feats = self.backbone(x)
        self._check_features(feats, x.shape[0])
        return feats.float()

    def _check_features(self, feats: object, batch: int) -> None:
        """The trunk must give ``(B, feature_dim)``: the extractor sizes the policy by ``spec.feature_dim``, so a
        plugin spec that misstates it (or a trunk that returns a feature map) would fail inside SB3's MLP instead."""
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        if shape != (batch, self.spec.feature_dim):
            raise ValueError(
                f"{self.spec.name} encoder: the trunk returned {shape} for {batch} image(s), but its spec says "
                f"feature_dim={self.spec.feature_dim}, i.e. ({batch}, {self.spec.feature_dim}); fix the spec's "
                "feature_dim or make the builder's network end in pooled, flattened features"
            )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``, or autocast off (``None``), whatever the caller's autocast state.

    Frozen weights never enter autocast's cast cache (it keeps only leaves that require grad); it is disabled anyway,
    so that a CUDA-graph capture can never hold a cached cast that dies after capture.
    """
    if not torch.amp.is_autocast_available(device.type):
        if dtype is not None:
            raise ValueError(f"precision 'bf16' needs autocast, which torch does not support on {device.type} tensors")
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)


def _drop_graphs_after_load(module: Encoder, incompatible_keys) -> None:
    """State-dict post-hook (a module-level function so that encoders stay picklable)."""
    module._invalidate_graphs()


def _clear_pending_if_complete(module: Encoder, state_dict, prefix: str, *args, **kwargs) -> None:
    """State-dict pre-hook: once every tensor of the encoder arrives from a state dict (e.g. SB3 ``load``
    restoring a saved policy), weights that could not be obtained at construction time are no longer needed."""
    if module._pending_weights_error is None:
        return
    if all(prefix + key in state_dict for key in nn.Module.state_dict(module)):
        module._pending_weights_error = None
        module.weights_source = "state_dict"
