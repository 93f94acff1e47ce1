"""H-InDex Stage 2: offline adaptation of the hand encoder to a task by self-supervised keypoints.

Only the backbone's BatchNorm gamma/beta reach the RL encoder; see :mod:`hindex_sb3.adapt.params` for why and
``docs/adapt.md`` for the whole story::

    from hindex_sb3.adapt import AdaptConfig, adapt
    summary = adapt(AdaptConfig("door", weights="default", episodes=50, iterations=100_000, out_dir="runs/door"))
    encoder = create_encoder("hindex", weights=summary["encoder"])

Lower-level pieces: :class:`FrameDataset` / :func:`collect_frames` (frames), :class:`KeypointModel` (the model),
:class:`PerceptualLoss` (the loss), :mod:`~hindex_sb3.adapt.params` (what trains), :class:`Adapter` (the loop,
checkpoints, export), :mod:`~hindex_sb3.adapt.pipeline` (the steps of :func:`adapt`).
"""

from hindex_sb3.adapt.base import load_base_backbone
from hindex_sb3.adapt.config import PAPER_PAIR_WINDOW, AdaptConfig
from hindex_sb3.adapt.errors import AdaptConfigError, AdaptError
from hindex_sb3.adapt.frames import FRAMES_FORMAT, FrameDataset, FrameDatasetError, collect_frames, resolve_policy
from hindex_sb3.adapt.loss import INITIAL_RUNNING_MEANS, TERM_NAMES, PerceptualLoss, vgg16_features
from hindex_sb3.adapt.model import KeypointModel, KeypointOutput, gaussian_maps, soft_argmax
from hindex_sb3.adapt.params import calibrate_head_batchnorm, freeze_for_adaptation, trainable_summary
from hindex_sb3.adapt.pipeline import adapt
from hindex_sb3.adapt.trainer import Adapter

__all__ = [
    "FRAMES_FORMAT",
    "INITIAL_RUNNING_MEANS",
    "PAPER_PAIR_WINDOW",
    "TERM_NAMES",
    "AdaptConfig",
    "AdaptConfigError",
    "AdaptError",
    "Adapter",
    "FrameDataset",
    "FrameDatasetError",
    "KeypointModel",
    "KeypointOutput",
    "PerceptualLoss",
    "adapt",
    "calibrate_head_batchnorm",
    "collect_frames",
    "freeze_for_adaptation",
    "gaussian_maps",
    "load_base_backbone",
    "resolve_policy",
    "soft_argmax",
    "trainable_summary",
    "vgg16_features",
]
