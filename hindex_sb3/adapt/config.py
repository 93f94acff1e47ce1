"""The settings of a Stage-2 run (:func:`hindex_sb3.adapt.pipeline.adapt`, ``hindex adapt``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hindex_sb3.adapt.model import GAUSSIAN_SIGMA, NUM_KEYPOINTS

__all__ = ["PAPER_PAIR_WINDOW", "AdaptConfig"]

#: the authors' ``VIDEO_LENGH_LIMIT``: pairs are drawn among the first L frames of each episode
PAPER_PAIR_WINDOW = {
    "Door": 150,
    "Hammer": 150,
    "Pen": 100,
    "Relocate": 100,
    "Pour": 200,
    "PlaceInside": 200,
    "RelocateMug": 100,
    "RelocateMustardBottle": 100,
    "RelocatePottedMeatCan": 100,
    "RelocateTomatoSoupCan": 100,
    "RelocateSugarBox": 100,
    "RelocateLargeClamp": 100,
    "RelocateFoamBrick": 100,
}


@dataclass
class AdaptConfig:
    """Settings of :func:`adapt` (and ``hindex adapt``); defaults are the paper's where it has one."""

    task: str
    weights: str | None = "default"  #: base encoder: "default", a path, or "random"
    episodes: int = 50
    iterations: int = 100_000
    batch_size: int = 8
    lr: float = 1e-4
    image_size: int = 224
    frame_size: int | None = None  #: render size for our tasks; default image_size * 256/224 (256 at 224)
    trainable: str = "bn"  #: "bn": backbone BN gamma/beta (the paper); "all": every parameter (Fig. 7 ablation)
    num_keypoints: int = NUM_KEYPOINTS
    sigma: float = GAUSSIAN_SIGMA
    policy: str = "auto"  #: auto | random | scripted | expert:PATH.npz | DEMOS.npz | ALGO:PATH.zip
    deterministic: bool = False  #: mean actions for experts / SB3 policies (the authors sampled)
    camera: str | None = None
    max_steps: int | None = None  #: actions per collected episode (default: the env's horizon)
    pair_window: int | None = None  #: None: the paper's per-task limit for our tasks, whole episodes otherwise
    dataset: str | None = None  #: an existing frames .npz instead of collecting
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vgg_weights: str | None = "default"  #: "default", a path, or "random" (labelled; smoke tests only)
    calibrate_batches: int = 8  #: head-BN calibration batches (0: keep default statistics)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500
    out_dir: str = "runs/adapt"
    resume: bool = False
    overwrite: bool = False  #: replace the adapt run already in out_dir (its frames, checkpoints and outputs)
    figures: bool = True
    progress_bar: bool = True
    encoder: str = "hindex"  #: the registered encoder to adapt (needs BatchNorm); its trunk is what the export holds

    def frame_side(self) -> int:
        return self.frame_size or round(self.image_size * 256 / 224)
