"""SB3 features extractor for H-InDex and the baselines, and the ``policy_kwargs`` factories that wire it up.

``PPO("MultiInputPolicy", env, policy_kwargs=hindex_extractor())`` gives any SB3 algorithm the paper's
representation: the frozen encoder's features, concatenated with proprioception, into the paper's policy MLP
(256-256, tanh). Three SB3 behaviours would silently damage a pretrained frozen encoder and are neutralised here:

* ``ortho_init`` (on by default in PPO/A2C/TRPO) re-initialises every conv/linear layer of the extractor. The
  encoder ignores ``apply()`` (see :class:`~hindex_sb3.encoders.base.Encoder`) and the factories also pass
  ``ortho_init=False`` for on-policy algorithms (off-policy policies do not accept that argument at all).
* ``set_training_mode(True)`` before gradient updates would put BatchNorm into batch-statistics mode; the encoder
  stays in eval mode. Its statistics move only through EMA-BN, one update per environment step
  (:class:`~hindex_sb3.callbacks.EMABatchNormCallback`), never in gradient updates or evaluation episodes.
* ``load()`` re-runs the extractor's ``__init__`` before restoring the saved tensors: a missing weight file then
  does not fail the load (the zip holds the weights); the encoder only refuses to run if nothing restores it.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from hindex_sb3._validation import check_extractor_options
from hindex_sb3.ema_bn import EMAScope
from hindex_sb3.encoders import create_encoder, get_encoder_spec

__all__ = ["HIndexExtractor", "baseline_extractor", "hindex_extractor", "paper_policy_kwargs"]

BASELINES = ("rrl", "r3m", "mvp", "vc1")
_ON_POLICY = {"ppo", "a2c", "trpo", "dapg", "recurrentppo", "maskableppo"}
_OFF_POLICY = {"sac", "td3", "ddpg", "tqc", "crossq", "dqn", "qrdqn"}
PAPER_HIDDEN = (256, 256)


class HIndexExtractor(BaseFeaturesExtractor):
    """Frozen pretrained encoder on the image, concatenated with proprioception.

    :param observation_space: a uint8 channel-first image ``Box(0, 255, (3, H, W))``, or a ``Dict`` with that
        image under ``pixels_key`` and, optionally, a ``Box`` under ``proprio_key`` (flattened and appended).
    :param encoder: registry name: ``"hindex"``, ``"rrl"``, ``"r3m"``, ``"mvp"``, ``"vc1"``.
    :param weights: ``"default"`` (official file, cached), a local path, or ``None`` (random; smoke tests only).
    :param ema_scope: which BatchNorm layers can follow the observations by EMA (``"all"``: the paper; ``"stem"``:
        the released code); ``"auto"`` is ``"all"`` for ResNets and nothing for ViTs. Updates only happen when
        :class:`~hindex_sb3.callbacks.EMABatchNormCallback` (or :meth:`update_bn_stats`) asks for them.
    :param channels_last: trunk memory format; ``None`` = the encoder's default (channels-last for ResNets).
    :param cuda_graphs: replay the encoder as captured CUDA graphs on a GPU (much faster at rollout batch sizes,
        where a forward is bound by kernel launches; see :meth:`~hindex_sb3.encoders.base.Encoder.use_cuda_graphs`).

    Features: ``(B, encoder_dim + proprio_dim)``, e.g. 2048 + 24 for H-InDex on Adroit.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        encoder: str = "hindex",
        weights: str | None = "default",
        ema_scope: EMAScope | Literal["auto"] | None = "auto",
        pixels_key: str = "pixels",
        proprio_key: str = "proprio",
        channels_last: bool | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        pixels_space, proprio_space = _split_space(observation_space, pixels_key, proprio_key)
        spec = get_encoder_spec(encoder)
        proprio_dim = int(np.prod(proprio_space.shape)) if proprio_space is not None else 0
        super().__init__(observation_space, features_dim=spec.feature_dim + proprio_dim)
        if ema_scope == "auto":
            ema_scope = "all" if spec.has_batchnorm else None
        # "defer": if the file is unavailable (e.g. offline SB3 load()), build anyway; running it unrestored raises.
        self.encoder = create_encoder(
            encoder,
            weights,
            ema_scope=ema_scope,
            channels_last=channels_last,
            cuda_graphs=cuda_graphs,
            on_unavailable="defer",
        )
        self.is_dict = isinstance(observation_space, gym.spaces.Dict)
        self.pixels_key = pixels_key
        self.proprio_key = proprio_key if proprio_space is not None else None
        self.image_shape = tuple(pixels_space.shape)
        self._armed: torch.Tensor | None = None

    # -- EMA-BN control ------------------------------------------------------------------------------------------------
    @property
    def has_ema_bn(self) -> bool:
        return bool(self.encoder.ema_layers)

    def _pixels_tensor(self, obs: Any) -> torch.Tensor:
        """Observation (numpy or tensor, dict or array) -> pixels as SB3 hands them to ``forward`` (float / 255)."""
        pixels = obs[self.pixels_key] if self.is_dict else obs
        device = next(self.encoder.parameters()).device
        pixels = torch.as_tensor(pixels, device=device)
        if pixels.ndim == len(self.image_shape):
            pixels = pixels.unsqueeze(0)
        return pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels

    def arm_bn_update(self, obs: Any) -> None:
        """Let the next no-grad forward on exactly these observations update the EMA-BN statistics (once).

        SB3 computes a step's action from ``obs`` *before* a callback can see the step, so the callback announces the
        next step's observations instead. Matching on content (not "the next forward") is what keeps value
        bootstrapping, evaluation episodes and gradient updates from touching the statistics.
        """
        self._armed = self._pixels_tensor(obs)

    def disarm_bn_update(self) -> None:
        self._armed = None

    def _take_arm(self, pixels: torch.Tensor) -> bool:
        armed = self._armed
        if armed is None or torch.is_grad_enabled() or pixels.shape != armed.shape or pixels.device != armed.device:
            return False
        if not torch.equal(pixels, armed.to(pixels.dtype)):
            return False
        self._armed = None
        return True

    def update_bn_stats(self, obs: Any) -> torch.Tensor:
        """One explicit EMA-BN update with ``obs`` (e.g. demonstration frames); returns their features."""
        if not self.has_ema_bn:
            raise ValueError("this extractor has no EMA-BN layers (ema_scope=None or a ViT encoder)")
        return self.encoder(self._pixels_tensor(obs), update_bn_stats=True)

    # -- forward -------------------------------------------------------------------------------------------------------
    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = observations[self.pixels_key] if self.is_dict else observations
        features = self.encoder(pixels, update_bn_stats=self._take_arm(pixels))
        if self.proprio_key is not None:
            proprio = observations[self.proprio_key].flatten(1).to(features.dtype)
            features = torch.cat([features, proprio], dim=1)
        return features


def _split_space(space: gym.Space, pixels_key: str, proprio_key: str) -> tuple[gym.spaces.Box, gym.spaces.Box | None]:
    if isinstance(space, gym.spaces.Dict):
        keys = set(space.spaces)
        if pixels_key not in keys:
            raise ValueError(f"Dict observation space has no {pixels_key!r} key (keys: {sorted(keys)})")
        extra = keys - {pixels_key, proprio_key}
        if extra:
            raise ValueError(
                f"unsupported observation keys {sorted(extra)}: HIndexExtractor takes {pixels_key!r} and optionally "
                f"{proprio_key!r} (Box); flatten other entries into {proprio_key!r}"
            )
        proprio = space.spaces.get(proprio_key)
        if proprio is not None and not isinstance(proprio, gym.spaces.Box):
            raise ValueError(f"{proprio_key!r} must be a Box space, got {proprio}")
        _check_image(space.spaces[pixels_key], pixels_key)
        return space.spaces[pixels_key], proprio
    if isinstance(space, gym.spaces.Box):
        _check_image(space, "observation")
        return space, None
    raise ValueError(f"HIndexExtractor needs a Box image space or a Dict with {pixels_key!r}, got {space}")


def _check_image(space: gym.Space, what: str) -> None:
    if not (isinstance(space, gym.spaces.Box) and is_image_space(space, check_channels=False)):
        raise ValueError(f"{what} must be a uint8 image Box(0, 255, (3, H, W)), got {space}")
    if space.shape[0] != 3 or not is_image_space_channels_first(space):
        raise ValueError(
            f"{what} must be channel-first RGB (3, H, W), got shape {space.shape}; SB3 transposes channel-last "
            "image envs itself (VecTransposeImage), so pass the transposed space when building the extractor by hand"
        )


# ---------------------------------------------------------------------------------------------------------------------
# policy_kwargs factories


def _is_off_policy(algo: str | type) -> bool:
    if isinstance(algo, type):
        if issubclass(algo, OffPolicyAlgorithm):
            return True
        if issubclass(algo, OnPolicyAlgorithm):
            return False
        raise ValueError(f"{algo.__name__} is neither an SB3 on-policy nor off-policy algorithm")
    name = algo.lower()
    if name in _OFF_POLICY:
        return True
    if name in _ON_POLICY:
        return False
    raise ValueError(f"unknown algorithm {algo!r}; use one of {sorted(_ON_POLICY | _OFF_POLICY)} or the class")


def paper_policy_kwargs(algo: str | type = "ppo", hidden: tuple[int, ...] = PAPER_HIDDEN) -> dict[str, Any]:
    """The paper's policy network (MLP 256-256, tanh) as SB3 ``policy_kwargs`` for ``algo``.

    On-policy: separate 256-256 policy and value MLPs and ``ortho_init=False`` (PyTorch's default init, as mjrl;
    SB3's orthogonal init would also target the extractor). Off-policy: 256-256 actor and critics. Use this alone
    for policies on pre-computed features (:class:`~hindex_sb3.vec_encode.VecEncode`).
    """
    layers = list(hidden)
    if _is_off_policy(algo):
        return {"net_arch": layers, "activation_fn": nn.Tanh}
    return {"net_arch": {"pi": layers, "vf": list(layers)}, "activation_fn": nn.Tanh, "ortho_init": False}


def _extractor_kwargs(
    encoder: str,
    weights: str | os.PathLike | None,
    algo: str | type,
    ema_scope: EMAScope | Literal["auto"] | None,
    hidden: tuple[int, ...],
    overrides: dict[str, Any],
    extractor_options: dict[str, Any],
) -> dict[str, Any]:
    check_extractor_options(weights=weights, ema_scope=ema_scope, hidden=hidden, **extractor_options)
    get_encoder_spec(encoder)  # fail early on a typo, not inside SB3
    kwargs = paper_policy_kwargs(algo, hidden)
    kwargs.update(
        features_extractor_class=HIndexExtractor,
        features_extractor_kwargs={
            "encoder": encoder,
            "weights": os.fspath(weights) if isinstance(weights, os.PathLike) else weights,
            "ema_scope": ema_scope,
            **extractor_options,
        },
        # One frozen trunk for actor and critic: half the memory and forwards, one set of EMA statistics.
        share_features_extractor=True,
    )
    kwargs.update(overrides)
    return kwargs


def _extractor_options(
    pixels_key: str, proprio_key: str, channels_last: bool | None, cuda_graphs: bool
) -> dict[str, Any]:
    """The :class:`HIndexExtractor` keywords that both factories pass through unchanged."""
    return {
        "pixels_key": pixels_key,
        "proprio_key": proprio_key,
        "channels_last": channels_last,
        "cuda_graphs": cuda_graphs,
    }


def hindex_extractor(
    weights: str | os.PathLike | None = "default",
    *,
    algo: str | type = "ppo",
    ema_scope: EMAScope | None = "all",
    hidden: tuple[int, ...] = PAPER_HIDDEN,
    pixels_key: str = "pixels",
    proprio_key: str = "proprio",
    channels_last: bool | None = None,
    cuda_graphs: bool = False,
    **policy_overrides: Any,
) -> dict[str, Any]:
    """A fresh ``policy_kwargs`` dict giving an SB3 policy the H-InDex representation.

    :param weights: ``"default"`` (FrankMocap hand encoder, downloaded once), a checkpoint path (FrankMocap, the
        authors' adapted checkpoints, or ``hindex_sb3.adapted/1`` files), or ``None`` (random, smoke tests).
    :param algo: algorithm name or class (``"ppo"``, ``"a2c"``, ``"trpo"``, ``"dapg"``, ``"sac"``, ...): off-policy
        policies take different keyword arguments.
    :param ema_scope: BatchNorm layers that EMA-BN may adapt (with :class:`~hindex_sb3.callbacks.EMABatchNormCallback`).
    :param hidden: policy (and value/critic) MLP sizes; the paper uses 256-256 with tanh.
    :param cuda_graphs: replay the encoder as CUDA graphs on a GPU (see :class:`HIndexExtractor`).
    :param policy_overrides: any other SB3 policy keyword, applied last (e.g. ``share_features_extractor=False``).
    """
    options = _extractor_options(pixels_key, proprio_key, channels_last, cuda_graphs)
    return _extractor_kwargs("hindex", weights, algo, ema_scope, hidden, policy_overrides, options)


def baseline_extractor(
    name: Literal["rrl", "r3m", "mvp", "vc1"],
    weights: str | os.PathLike | None = "default",
    *,
    algo: str | type = "ppo",
    hidden: tuple[int, ...] = PAPER_HIDDEN,
    pixels_key: str = "pixels",
    proprio_key: str = "proprio",
    channels_last: bool | None = None,
    cuda_graphs: bool = False,
    **policy_overrides: Any,
) -> dict[str, Any]:
    """Like :func:`hindex_extractor` for one of the paper's baselines (frozen, plain eval-mode BatchNorm)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES} (or use hindex_extractor)")
    options = _extractor_options(pixels_key, proprio_key, channels_last, cuda_graphs)
    return _extractor_kwargs(name, weights, algo, None, hidden, policy_overrides, options)
