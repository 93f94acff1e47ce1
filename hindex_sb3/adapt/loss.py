"""The Stage-2 perceptual loss: VGG16 feature distances, each divided by its own running mean.

H-InDex (via TTP/IMM) compares the reconstruction with the target frame at six levels: the raw image and VGG16's
``relu1_2``, ``relu2_2``, ``relu3_2``, ``relu4_2``, ``relu5_2``. Each level's MSE has a very different scale (0.2
for pixels, 7.4 for ``relu3_2``); dividing every term by a running mean of itself gives each level a comparable
weight throughout training without hand-tuned coefficients. Facts (the authors' ``stage2_adapt`` code,
github.com/YanjieZe/H-InDex):

* VGG16 from torchvision, ImageNet weights, frozen, eval mode, fed **un-normalised** [0, 1] images;
* running means start at ``INITIAL_RUNNING_MEANS`` and after every call move by ``m <- m + 0.01 (l - m)``;
* the loss of a call is ``sum_i l_i / m_i`` with the running means *before* that call's update.

VGG16 weights come through the package's weight registry (``vgg16_imagenet``: cached download, local path, clear
error with ``HINDEX_SB3_OFFLINE``), and are loaded strictly into the 28 feature layers the loss uses.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from hindex_sb3.encoders.weights import load_state_dict_strict, load_weights

__all__ = [
    "INITIAL_RUNNING_MEANS",
    "TERM_NAMES",
    "VGG_SLICES",
    "PerceptualLoss",
    "vgg16_features",
]

#: feature slices of ``torchvision.models.vgg16().features`` ending at relu1_2, relu2_2, relu3_2, relu4_2, relu5_2
VGG_SLICES = ((0, 4), (4, 9), (9, 14), (14, 21), (21, 28))
TERM_NAMES = ("pixels", "relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
INITIAL_RUNNING_MEANS = (0.1966, 0.8725, 3.4260, 7.4396, 4.1430, 1.1304)
RUNNING_MEAN_RATE = 0.01


def vgg16_features(weights: str | os.PathLike | None = "default", *, progress: bool = True) -> nn.Sequential:
    """The first 28 layers of torchvision's VGG16 ``features`` (up to ``relu5_2``), frozen, in eval mode.

    :param weights: ``"default"`` (the registry's ``vgg16_imagenet`` file: cached, downloaded on first use), a path to
        a torchvision ``vgg16`` state dict, or ``None`` for random weights (tests, benchmarks).
    :raises WeightsUnavailableError: offline (``HINDEX_SB3_OFFLINE``) or download failed; names URL and cache path.
    :raises CheckpointMismatchError: the file lacks one of the feature tensors or has another shape.
    """
    layers = make_layers(cfgs["D"])[: VGG_SLICES[-1][1]]
    state, path = load_weights("vgg16_imagenet", weights, progress=progress)
    if state is not None:
        # The file holds the whole classifier too; the loss needs only features[:28]. Strictness applies to those.
        prefix = "features."
        wanted = {f"{prefix}{k}" for k in layers.state_dict()}
        sub = {k[len(prefix) :]: v for k, v in state.items() if k in wanted}
        if not sub:
            sub = {k: v for k, v in state.items() if k in layers.state_dict()}  # a bare features state dict
        load_state_dict_strict(layers, sub, what=f"VGG16 features from {path}")
    for p in layers.parameters():
        p.requires_grad_(False)
    return layers.eval()


class PerceptualLoss(nn.Module):
    """``loss(reconstruction, target)``: sum over 6 levels of MSE / running mean (see module docstring).

    The running means are a buffer, so they are saved with the trainer's checkpoint and a resumed run continues with
    the same normalisation. Gradients flow into ``reconstruction`` only; VGG16 is frozen and stays in eval mode.

    :param features: VGG16 ``features`` (at least 28 layers), e.g. :func:`vgg16_features`.
    """

    def __init__(
        self,
        features: nn.Sequential,
        initial_means: tuple[float, ...] = INITIAL_RUNNING_MEANS,
        rate: float = RUNNING_MEAN_RATE,
    ) -> None:
        super().__init__()
        if len(features) < VGG_SLICES[-1][1]:
            raise ValueError(f"need at least {VGG_SLICES[-1][1]} VGG16 feature layers, got {len(features)}")
        if len(initial_means) != len(TERM_NAMES):
            raise ValueError(f"need {len(TERM_NAMES)} initial running means, got {len(initial_means)}")
        self.slices = nn.ModuleList(features[a:b] for a, b in VGG_SLICES)
        for p in self.slices.parameters():
            p.requires_grad_(False)
        self.rate = float(rate)
        self.register_buffer("running_means", torch.tensor(initial_means, dtype=torch.float32))
        self.register_buffer("initial_means", torch.tensor(initial_means, dtype=torch.float32), persistent=False)
        super().train(False)

    @classmethod
    def from_weights(cls, weights: str | os.PathLike | None = "default", *, progress: bool = True) -> PerceptualLoss:
        """Build the loss with VGG16 weights from the registry (``"default"``), a file, or random (``None``)."""
        return cls(vgg16_features(weights, progress=progress))

    def train(self, mode: bool = True) -> PerceptualLoss:
        """VGG16 is a fixed feature extractor: always eval mode."""
        return super().train(False)

    def terms(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The 6 raw (un-normalised) MSE terms, shape ``(6,)``; differentiable w.r.t. ``prediction``."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        out = [F.mse_loss(prediction, target)]
        x, y = prediction, target.detach()
        for block in self.slices:
            x = block(x)
            with torch.no_grad():
                y = block(y)
            out.append(F.mse_loss(x, y))
        return torch.stack(out)

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, *, update: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(loss, raw_terms)``; ``loss = sum(raw_terms / running_means)`` with the means before the update.

        :param update: fold this call's terms into the running means (``m <- m + rate (l - m)``). Pass ``False``
            for evaluation forwards that must not change the training normalisation.
        """
        raw = self.terms(prediction, target)
        loss = (raw / self.running_means.clone()).sum()  # a copy: the in-place update below must not touch autograd
        if update:
            with torch.no_grad():
                self.running_means.add_(self.rate * (raw.detach() - self.running_means))
        return loss, raw.detach()

    def fixed_normalised(self, raw_terms: torch.Tensor) -> torch.Tensor:
        """``sum(raw / initial_means)``: a loss value comparable across iterations (the running means move)."""
        return (raw_terms / self.initial_means.to(raw_terms.device)).sum(-1)
