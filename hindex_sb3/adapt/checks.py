"""Checks of a whole :class:`~hindex_sb3.adapt.config.AdaptConfig` before Stage 2 spends any time.

Collecting frames takes minutes; a configuration that can only fail afterwards (an image size the model cannot
take, a zero batch, a NaN learning rate, a missing policy file, an encoder without BatchNorm) must fail first, with
one message naming the setting. Everything here looks at the configuration and the file system only: no weights,
no environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hindex_sb3._validation import check_device, check_flag, check_int, check_output_dir, check_real, check_str
from hindex_sb3.envs.rendering import MAX_IMAGE_SIZE

if TYPE_CHECKING:
    from hindex_sb3.adapt.config import AdaptConfig

__all__ = ["check_adapt_config"]

_BUILTIN_POLICIES = ("auto", "random", "scripted")
# Keys that would silently override what adapt() itself sets for our tasks (it renders at frame_size, obs_mode all).
_RESERVED_ENV_KWARGS = {"obs_mode": "it is set to 'all' by adapt", "image_size": "use --frame-size"}


def _optional(check, name: str, value: Any, **bounds: Any) -> Any:
    return None if value is None else check(name, value, **bounds)


def _check_numbers(cfg: AdaptConfig) -> None:
    check_int("episodes", cfg.episodes, minimum=1, maximum=100_000)
    check_int("iterations", cfg.iterations, minimum=1)
    check_int("batch_size", cfg.batch_size, minimum=1, maximum=4096)
    check_real("lr", cfg.lr, minimum=0.0, maximum=1.0, min_inclusive=False)
    image = check_int("image_size", cfg.image_size, minimum=32, maximum=MAX_IMAGE_SIZE)
    if image % 32:
        raise ValueError(f"image_size must be a multiple of 32 (the ResNet's stride), got {image}")
    frame = _optional(check_int, "frame_size", cfg.frame_size, minimum=16, maximum=MAX_IMAGE_SIZE)
    if frame is not None and frame < image:
        raise ValueError(f"frame_size {frame} is smaller than image_size {image}: the model would see upsampled blur")
    if cfg.frame_size is None and cfg.frame_side() > MAX_IMAGE_SIZE:
        raise ValueError(f"image_size {image} needs frames of {cfg.frame_side()} px, beyond {MAX_IMAGE_SIZE}")
    check_int("num_keypoints", cfg.num_keypoints, minimum=1, maximum=1024)
    check_real("sigma", cfg.sigma, minimum=0.0, min_inclusive=False)
    _optional(check_int, "max_steps", cfg.max_steps, minimum=1, maximum=1_000_000)
    _optional(check_int, "pair_window", cfg.pair_window, minimum=2)
    check_int("calibrate_batches", cfg.calibrate_batches, minimum=0, maximum=100_000)
    check_int("seed", cfg.seed, minimum=0, maximum=2**32 - 1)
    check_int("checkpoint_every", cfg.checkpoint_every, minimum=0)  # 0: only at the end


def _check_env_kwargs(env_kwargs: Any) -> None:
    if not isinstance(env_kwargs, dict):
        raise TypeError(f"env_kwargs must be a dict (a JSON object), got {type(env_kwargs).__name__}: {env_kwargs!r}")
    bad = [k for k in env_kwargs if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise ValueError(f"env_kwargs keys must be Python identifiers, got {bad}")
    try:
        json.dumps(env_kwargs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"env_kwargs must hold plain finite values: {err}") from None


def _check_files(cfg: AdaptConfig) -> None:
    policy = check_str("policy", cfg.policy)
    if policy not in _BUILTIN_POLICIES:
        file = policy.split(":", 1)[1] if ":" in policy else policy
        if not Path(file).expanduser().is_file():
            raise FileNotFoundError(f"policy {policy!r}: no file at {file}")
    if cfg.dataset is not None and not Path(check_str("dataset", cfg.dataset)).expanduser().is_file():
        raise FileNotFoundError(f"dataset: no frames file at {cfg.dataset}")
    for name in ("weights", "vgg_weights"):
        value = getattr(cfg, name)
        if value is not None:
            check_str(name, value)
            if value not in ("default", "random") and not Path(value).expanduser().is_file():
                raise FileNotFoundError(f"{name}: no file at {value}")
    check_output_dir("out_dir", cfg.out_dir)


def _check_encoder(name: Any) -> None:
    """A registered encoder with BatchNorm (the check builds no network)."""
    from hindex_sb3.adapt.model import adaptable_spec

    check_str("encoder", name)
    try:
        adaptable_spec(name)
    except KeyError as err:
        raise ValueError(f"encoder: {err.args[0] if err.args else name}") from None


def check_adapt_config(cfg: AdaptConfig, *, our_task: bool) -> None:
    """Raise ``TypeError`` / ``ValueError`` / ``OSError`` naming the first bad setting of ``cfg``.

    :param our_task: the task is one of this package's envs (then ``env_kwargs`` may not override what Stage 2 sets).
    """
    _check_numbers(cfg)
    _check_encoder(cfg.encoder)
    for name in ("deterministic", "resume", "overwrite", "figures", "progress_bar"):
        check_flag(name, getattr(cfg, name))
    if cfg.resume and cfg.overwrite:
        raise ValueError("resume and overwrite: choose one (continue the run in out_dir, or replace it)")
    if cfg.camera is not None:
        check_str("camera", cfg.camera)
    _check_env_kwargs(cfg.env_kwargs)
    if our_task:
        for key, why in _RESERVED_ENV_KWARGS.items():
            if key in cfg.env_kwargs:
                raise ValueError(f"env_kwargs may not set {key!r} for this package's tasks ({why})")
    check_device("device", check_str("device", cfg.device))
    _check_files(cfg)
