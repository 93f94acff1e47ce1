"""The Stage-2 keypoint-bottleneck reconstruction model (H-InDex's ``HumanIMMModel``, TTP/IMM style).

Why this model: H-InDex adapts the FrankMocap hand encoder to the robot's images *without labels*. A keypoint
bottleneck forces the backbone to find a few points that explain how the target frame differs from another frame of
the same episode; the only thing that reaches the RL encoder afterwards is the backbone's BatchNorm affine parameters
(see :mod:`hindex_sb3.adapt.params`). Architecture and sizes follow the authors' ``stage2_adapt`` code
(github.com/YanjieZe/H-InDex)::

    target ─ ResNet-50 (conv1..layer4, 2048 x s/32) ─ 3 x [ConvT 4/2 -> BN -> ReLU] (256 x s/4)
           ─ 1x1 conv -> K heatmaps (K = 30, 56 x 56 at s = 224) ─ marginal soft-argmax -> (y, x) per map
           ─ Gaussian maps (sigma = 2 heatmap pixels) ─ bilinear x4 ─ pose encoder (256 x s/8)
    source ─ appearance encoder (256 x s/8)
    [appearance ‖ pose] (512 x s/8) ─ renderer ─ reconstructed target (3 x s x s, linear output)

``pose_net.backbone`` is a torchvision ``resnet50`` whose ``fc`` is Identity, i.e. exactly the ``hindex`` encoder's
trunk, so its ``state_dict()`` is the adapted encoder checkpoint without any key conversion. The Penn-Action
supervised head of the authors' model (``sup_query``, ``mh_attn``, ``sup_weight``) is frozen and unused by the loss,
and its weights (``penn_joint.pth``) are not available here, so it is left out.

Parameter counts (tested): appearance encoder 1,177,056; pose encoder 1,219,392; renderer 2,352,867;
deconvolution block 10,487,296; keypoint layer 7,710; backbone 23,508,032 (53,120 of them BN affine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hindex_sb3.adapt.feature_map import FeatureMap, FeatureMapFn
from hindex_sb3.encoders.base import Preprocess
from hindex_sb3.encoders.resnet import resnet50_trunk

if TYPE_CHECKING:
    from hindex_sb3.encoders.registry import EncoderSpec

__all__ = [
    "GAUSSIAN_SIGMA",
    "NUM_KEYPOINTS",
    "ImageEncoder",
    "ImageRenderer",
    "KeypointModel",
    "KeypointOutput",
    "PoseNet",
    "adaptable_spec",
    "gaussian_maps",
    "input_preprocess",
    "soft_argmax",
]

NUM_KEYPOINTS = 30
GAUSSIAN_SIGMA = 2.0
#: H-InDex renders at 256 and centre-crops 224; a model of input size s resizes the shorter side to s * 256 / 224
RESIZE_RATIO = 256 / 224


def input_preprocess(image_size: int, ratio: float = RESIZE_RATIO) -> Preprocess:
    """uint8-derived [0, 1] frames -> model input: resize the shorter side to ``image_size * ratio``, crop.

    ``ratio`` is the encoder's resize / crop (256/224 for every paper encoder). At 224 this is exactly the ``hindex``
    encoder's ``Resize(256) -> CenterCrop(224)``, so Stage 2 adapts BatchNorm to the same view of the scene that
    Stage 3 will encode. Mean/std normalisation, where the encoder has one, is applied in front of the trunk only: the
    appearance encoder and the reconstruction target work on [0, 1] images.
    """
    return Preprocess(resize=round(image_size * ratio), crop=image_size, mean=None, std=None)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ImageEncoder(nn.Module):
    """Four conv stages, 32 -> 64 -> 128 -> 256 channels, stride 8 overall: ``(B, C, s, s) -> (B, 256, s/8, s/8)``.

    Used twice: on the source frame (appearance, C = 3) and on the upsampled Gaussian maps (pose, C = K).
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        stages = [nn.Sequential(*_conv_bn_relu(in_channels, width, 7), *_conv_bn_relu(width, width))]
        c = width
        for _ in range(3):
            stages.append(nn.Sequential(*_conv_bn_relu(c, 2 * c, stride=2), *_conv_bn_relu(2 * c, 2 * c)))
            c *= 2
        self.stages = nn.Sequential(*stages)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class ImageRenderer(nn.Module):
    """The decoder: three [conv-BN-ReLU x2, nearest x2] blocks halving the channels, then 64 -> 32 -> 32 -> 3.

    The last convolution has a bias and no activation: the reconstruction is a linear output compared with [0, 1]
    targets by the perceptual loss.
    """

    def __init__(self, in_channels: int = 512) -> None:
        super().__init__()
        blocks, c = [], in_channels
        for _ in range(3):
            blocks.append(
                nn.Sequential(*_conv_bn_relu(c, c // 2), *_conv_bn_relu(c // 2, c // 2), nn.Upsample(scale_factor=2.0))
            )
            c //= 2
        blocks.append(
            nn.Sequential(*_conv_bn_relu(c, c // 2), *_conv_bn_relu(c // 2, c // 2), nn.Conv2d(c // 2, 3, 3, padding=1))
        )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class PoseNet(nn.Module):
    """Encoder trunk + SimpleBaseline-style deconvolution head -> ``K`` unsupervised keypoint heatmaps.

    :ivar backbone: the encoder's trunk (for ``hindex``: torchvision ResNet-50 with ``fc = Identity``; same keys).
    :ivar deconv_layers: 3 x [ConvTranspose2d(4, stride 2, pad 1, 256, no bias), BN, ReLU]: stride 32 -> 4.
    :ivar final_layer_unsup: 1x1 conv 256 -> K (frozen during adaptation, as in the reference).

    The trunk sees the encoder's own normalisation (``mean``/``std``, none for ``hindex``), as in Stage 3. A trunk
    whose map has another stride than 32 gets heatmaps resized to ``s/4``, so that the Gaussian width (in heatmap
    pixels) means the same image-space size for every encoder.
    """

    def __init__(
        self,
        num_keypoints: int = NUM_KEYPOINTS,
        deconv_channels: int = 256,
        *,
        backbone: nn.Module | None = None,
        feature_map: FeatureMapFn | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        self.backbone = resnet50_trunk() if backbone is None else backbone
        self._map = FeatureMap(self.backbone, feature_map, probe_size=image_size)
        self.normalize = mean is not None
        self.register_buffer("mean", torch.tensor(mean or (0.0, 0.0, 0.0)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or (1.0, 1.0, 1.0)).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = []
        c = self._map.channels
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(c, deconv_channels, 4, stride=2, padding=1, output_padding=0, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            c = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer_unsup = nn.Conv2d(deconv_channels, num_keypoints, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's spatial map (ResNet-50: ``layer4``, ``(B, 2048, s/32, s/32)``; see :mod:`.feature_map`)."""
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self._map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heatmaps = self.final_layer_unsup(self.deconv_layers(self.features(x)))
        side = x.shape[-1] // 4
        if heatmaps.shape[-2:] != (side, side):
            heatmaps = F.interpolate(heatmaps, size=(side, side), mode="bilinear", align_corners=False)
        return heatmaps


def adaptable_spec(encoder: str | EncoderSpec) -> EncoderSpec:
    """The registry spec of ``encoder``, refused (``ValueError``) if it has no BatchNorm for Stage 2 to adapt."""
    from hindex_sb3.encoders.registry import EncoderSpec, get_encoder_spec

    spec = encoder if isinstance(encoder, EncoderSpec) else get_encoder_spec(encoder)
    if not spec.has_batchnorm:
        raise ValueError(
            f"encoder {spec.name!r} ({spec.family}) has no BatchNorm layers: Stage 2 adapts BatchNorm, so it does not "
            "apply (register the encoder with batchnorm=True if its trunk does normalise with nn.BatchNorm2d)"
        )
    return spec


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """Expected ``(y, x)`` of each map, in heatmap pixel units (0 .. H-1): ``(B, K, H, W) -> (B, K, 2)``.

    Marginal soft-argmax as in IMM/TTP: the logits are summed over columns (rows), a softmax over the remaining axis
    gives a distribution over rows (columns), and its mean is the coordinate. Marginalising first keeps each
    coordinate a 1-D expectation, which is smoother to train than a 2-D softmax over H*W cells.
    """
    _, _, h, w = heatmaps.shape
    p_y = torch.softmax(heatmaps.sum(dim=3), dim=-1)
    p_x = torch.softmax(heatmaps.sum(dim=2), dim=-1)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device)
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device)
    return torch.stack(((p_y * ys).sum(-1), (p_x * xs).sum(-1)), dim=-1)


def gaussian_maps(keypoints: torch.Tensor, size: tuple[int, int], sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """Isotropic Gaussians ``exp(-((i - y)^2 + (j - x)^2) / (2 sigma^2))`` on an ``size`` grid: ``(B, K, H, W)``.

    Redrawing every keypoint as a fixed-width blob is the bottleneck: the renderer sees only *where* the K points are,
    never the heatmaps' shapes, so appearance must come from the source frame.
    """
    h, w = size
    ys = torch.arange(h, dtype=keypoints.dtype, device=keypoints.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=keypoints.dtype, device=keypoints.device).view(1, 1, 1, w)
    dy = ys - keypoints[..., 0, None, None]
    dx = xs - keypoints[..., 1, None, None]
    return torch.exp(-(dy**2 + dx**2) / (2.0 * sigma**2))


@dataclass
class KeypointOutput:
    """What one forward produces (all tensors batch-first)."""

    heatmaps: torch.Tensor  #: (B, K, s/4, s/4) keypoint logits of the target frame
    keypoints: torch.Tensor  #: (B, K, 2) soft-argmax (y, x) in heatmap pixels
    gaussians: torch.Tensor  #: (B, K, s/4, s/4) Gaussian maps drawn at the keypoints
    reconstruction: torch.Tensor  #: (B, 3, s, s) reconstructed target (linear, ~[0, 1])


class KeypointModel(nn.Module):
    """Source (appearance) + target (keypoints) -> reconstructed target; see the module docstring.

    The model never leaves eval mode (``train()`` is a no-op): H-InDex calls ``model.eval()`` once and trains with
    BatchNorm normalising by its running statistics, so the backbone's FrankMocap statistics never move and only
    BN's gamma/beta adapt. Switching to train mode would silently replace the running statistics.

    :param image_size: input side s (multiple of 32); 224 gives 56 x 56 heatmaps, 64 gives 16 x 16.
    :param encoder: the registered encoder whose trunk is adapted (default ``"hindex"``, the paper), by name or spec.
        It must normalise with BatchNorm; its preprocessing ratio and mean/std are used, and its trunk's
        ``state_dict()`` is what the export holds (see :mod:`hindex_sb3.adapt.feature_map` for the map the head reads).
    """

    def __init__(
        self,
        num_keypoints: int = NUM_KEYPOINTS,
        sigma: float = GAUSSIAN_SIGMA,
        image_size: int = 224,
        *,
        encoder: str | EncoderSpec = "hindex",
    ):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (ResNet stride), got {image_size}")
        if num_keypoints < 1 or sigma <= 0:
            raise ValueError(f"need num_keypoints >= 1 and sigma > 0, got {num_keypoints}, {sigma}")
        spec = adaptable_spec(encoder)
        self.encoder_name = spec.name
        self.num_keypoints, self.sigma, self.image_size = int(num_keypoints), float(sigma), int(image_size)
        self.preprocess = input_preprocess(image_size, spec.resize / spec.input_size)
        self.pose_net = PoseNet(
            num_keypoints,
            backbone=spec.builder(),
            feature_map=spec.feature_map,
            mean=spec.mean,
            std=spec.std,
            image_size=image_size,
        )
        self.image_encoder = ImageEncoder(3)
        self.pose_encoder = ImageEncoder(num_keypoints)
        self.image_renderer = ImageRenderer(self.image_encoder.out_channels + self.pose_encoder.out_channels)
        super().train(False)

    @property
    def heatmap_size(self) -> int:
        return self.image_size // 4

    @property
    def backbone(self) -> nn.Module:
        """The encoder's trunk, whose ``state_dict()`` is the (adapted) encoder checkpoint."""
        return self.pose_net.backbone

    def train(self, mode: bool = True) -> KeypointModel:
        """Stay in eval mode whatever ``mode`` says (see class docstring)."""
        return super().train(False)

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` frames (any size >= the input) -> float model input ``(B, 3, s, s)`` in [0, 1]."""
        if frames.dtype == torch.uint8:
            frames = frames.float().div_(255.0)
        return self.preprocess(frames)

    def keypoints(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps and soft-argmax keypoints of preprocessed target frames."""
        heatmaps = self.pose_net(target)
        return heatmaps, soft_argmax(heatmaps)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> KeypointOutput:
        """Reconstruct ``target`` from ``source``'s appearance and ``target``'s keypoints (preprocessed inputs)."""
        heatmaps, keypoints = self.keypoints(target)
        gauss = gaussian_maps(keypoints, heatmaps.shape[-2:], self.sigma)
        pose = self.pose_encoder(F.interpolate(gauss, size=target.shape[-2:], mode="bilinear", align_corners=False))
        appearance = self.image_encoder(source)
        reconstruction = self.image_renderer(torch.cat((appearance, pose), dim=1))
        return KeypointOutput(heatmaps, keypoints, gauss, reconstruction)
