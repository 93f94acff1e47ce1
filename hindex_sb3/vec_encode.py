"""``VecEncode``: run the frozen encoder inside the VecEnv, so the algorithm stores features instead of pixels.

A frozen encoder makes features a pure function of the observation, so they need computing only once per step, in
one batch across all environments (on the GPU when there is one), instead of again in every gradient epoch. The
algorithm then sees ``features ‖ proprio`` as a flat float vector: a rollout buffer entry is ~8 KB (2048 float32 +
proprioception) instead of ~150 KB of 3x224x224 pixels, and the policy is a plain ``MlpPolicy``
(see :func:`hindex_sb3.extractor.paper_policy_kwargs`). This is the wrapper route SB3's maintainers recommend for
frozen extractors (SB3 issue #409).

EMA-BN works here too: with ``ema_momentum > 0`` every frame of a step's batch (and of each reset batch) updates the
statistics once, in env order, and is normalised with the statistics after its own update, as in the paper's
one-frame-per-forward rollouts (``ema_update="batch"``: one update per batch instead); ``terminal_observation``
entries (needed for value bootstrapping) are encoded too, without updating. An evaluation env can share the encoder
with ``update_stats=False``. Unlike the extractor route, the encoder is not part of the SB3 model: save its
statistics with :meth:`VecEncode.save_encoder` (like ``VecNormalize``).
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from hindex_sb3._io import atomic_torch_save
from hindex_sb3._validation import check_device, check_encoder_options, check_flag, check_precision
from hindex_sb3.ema_bn import EMAScope, EMAUpdate, set_ema_momentum, set_ema_update
from hindex_sb3.encoders import Encoder, create_encoder

__all__ = ["VecEncode"]


class VecEncode(VecEnvWrapper):
    """Replace image observations by frozen-encoder features (plus proprioception).

    :param venv: vectorised env with a uint8 image observation (``Box``) or a ``Dict`` with ``pixels_key`` and an
        optional ``proprio_key``; channel-first (3, H, W) or channel-last (H, W, 3).
    :param encoder: registry name or an :class:`~hindex_sb3.encoders.Encoder` (share one between train and eval envs).
    :param weights: weights for a named encoder (``"default"``, path, or ``None``).
    :param device: ``"auto"`` = CUDA if available.
    :param ema_momentum: EMA-BN momentum m (0 = frozen statistics).
    :param ema_scope: ``"all"`` or ``"stem"`` BatchNorm layers adapt (only used when ``ema_momentum > 0``).
    :param ema_update: ``"frame"`` (one update per env frame, the paper) or ``"batch"`` (one per step batch); set on
        a given encoder too when ``ema_momentum > 0``.
    :param update_stats: ``False`` for evaluation envs sharing a training env's encoder.
    :param channels_last: trunk memory format; ``None`` = the encoder's default (channels-last for ResNets).
    :param precision: the encoder's compute precision, ``"fp32"`` or ``"bf16"``, set on the encoder (on a given one
        too, so wrappers sharing an encoder share it: :meth:`~hindex_sb3.encoders.base.Encoder.set_precision`).
        ``None``: from ``bf16`` when that is given, else bf16 on CUDA and fp32 on CPU (this wrapper's default from
        before the option existed). Features are float32 either way.
    :param bf16: the older spelling of ``precision``: ``True`` is ``"bf16"``, ``False`` is ``"fp32"``; giving both
        only works when they agree.
    :param cuda_graphs: replay the encoder as captured CUDA graphs on a GPU (one per batch size; see
        :meth:`~hindex_sb3.encoders.base.Encoder.use_cuda_graphs`).
    :param flatten: ``True``: ``Box(D + P)`` observations (for ``MlpPolicy``); ``False``: ``Dict(features, proprio)``.
    """

    def __init__(
        self,
        venv: VecEnv,
        encoder: str | Encoder = "hindex",
        weights: str | os.PathLike | None = "default",
        *,
        pixels_key: str = "pixels",
        proprio_key: str = "proprio",
        device: str | torch.device = "auto",
        ema_momentum: float = 0.0,
        ema_scope: EMAScope = "all",
        ema_update: EMAUpdate = "frame",
        update_stats: bool = True,
        channels_last: bool | None = None,
        bf16: bool | None = None,
        cuda_graphs: bool = False,
        flatten: bool = True,
        precision: str | None = None,
    ) -> None:
        check_encoder_options(weights=weights, ema_scope=ema_scope, ema_momentum=ema_momentum,
                              channels_last=channels_last, cuda_graphs=cuda_graphs, ema_update=ema_update)  # fmt: skip
        ema_momentum = float(ema_momentum)
        update_stats, flatten = check_flag("update_stats", update_stats), check_flag("flatten", flatten)
        check_device("device", device)
        if device is None:
            raise TypeError("device must be a device name, a CUDA index or a torch.device, got None (use 'auto')")
        space = venv.observation_space
        self.is_dict = isinstance(space, gym.spaces.Dict)
        pixels_space = space.spaces.get(pixels_key) if self.is_dict else space
        if pixels_space is None or not is_image_space(pixels_space, check_channels=True):
            raise ValueError(f"VecEncode needs a uint8 RGB image observation ({pixels_key!r} for Dict), got {space}")
        if self.is_dict:
            extra = set(space.spaces) - {pixels_key, proprio_key}
            if extra:
                raise ValueError(f"unsupported observation keys {sorted(extra)} (want {pixels_key!r}, {proprio_key!r})")
        self.channels_first = is_image_space_channels_first(pixels_space)
        self.pixels_key = pixels_key
        self.proprio_key = proprio_key if self.is_dict and proprio_key in space.spaces else None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"

        if isinstance(encoder, Encoder):
            self.encoder = encoder
        else:
            scope = ema_scope if ema_momentum > 0 else None
            self.encoder = create_encoder(encoder, weights, ema_scope=scope, ema_update=ema_update)
        self.encoder.to(self.device)
        if channels_last is not None:
            self.encoder.to_channels_last(channels_last)
        if cuda_graphs:
            self.encoder.use_cuda_graphs()
        self.encoder.set_precision(_resolve_precision(precision, bf16, on_cuda))
        if ema_momentum > 0:
            if not self.encoder.ema_layers:
                raise ValueError("ema_momentum > 0 needs an encoder with EMA-BN layers (a ResNet with ema_scope set)")
            set_ema_momentum(self.encoder, ema_momentum)
            set_ema_update(self.encoder, ema_update)
        self.update_stats = bool(update_stats and ema_momentum > 0)

        dim = self.encoder.feature_dim
        proprio_space = space.spaces[self.proprio_key] if self.proprio_key else None
        proprio_dim = int(np.prod(proprio_space.shape)) if proprio_space is not None else 0
        self.flatten = flatten
        if flatten or proprio_space is None:
            obs_space: gym.Space = gym.spaces.Box(-np.inf, np.inf, (dim + proprio_dim,), np.float32)
        else:
            obs_space = gym.spaces.Dict(
                {"features": gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32), "proprio": proprio_space}
            )
        super().__init__(venv, observation_space=obs_space)

    @property
    def precision(self) -> str:
        """The encoder's compute precision (``"fp32"`` / ``"bf16"``)."""
        return self.encoder.precision

    @property
    def bf16(self) -> bool:
        """Whether the encoder runs in bfloat16 (the older spelling of :attr:`precision`)."""
        return self.encoder.precision == "bf16"

    # -- encoding --------------------------------------------------------------------------------------------------
    def encode(self, obs: Any, *, update_stats: bool = False) -> Any:
        """Encode a batch of raw observations (dict or array, leading env axis) into this wrapper's space."""
        update_stats = check_flag("update_stats", update_stats)
        pixels = np.asarray(obs[self.pixels_key] if self.is_dict else obs)
        images = torch.as_tensor(pixels, device=self.device)
        if not self.channels_first:
            images = images.permute(0, 3, 1, 2)
        feats = self.encoder(images, update_bn_stats=update_stats).cpu().numpy()
        if self.proprio_key is None:
            return feats
        proprio = np.asarray(obs[self.proprio_key], dtype=np.float32).reshape(len(feats), -1)
        if self.flatten:
            return np.concatenate([feats, proprio], axis=1)
        return {"features": feats, "proprio": np.asarray(obs[self.proprio_key])}

    def reset(self) -> VecEnvObs:
        return self.encode(self.venv.reset(), update_stats=self.update_stats)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        encoded = self.encode(obs, update_stats=self.update_stats)
        terminal = [i for i, info in enumerate(infos) if info.get("terminal_observation") is not None]
        if terminal:
            # One extra batch for all finished episodes; SB3 bootstraps truncated episodes from these.
            raw = [infos[i]["terminal_observation"] for i in terminal]
            batch = {k: np.stack([r[k] for r in raw]) for k in raw[0]} if self.is_dict else np.stack(raw)
            out = self.encode(batch)
            for j, i in enumerate(terminal):
                entry = {k: v[j] for k, v in out.items()} if isinstance(out, dict) else out[j]
                infos[i]["terminal_observation"] = entry
        return encoded, rewards, dones, infos

    # -- persistence -----------------------------------------------------------------------------------------------
    def save_encoder(self, path: str | os.PathLike) -> None:
        """Save the encoder's state (weights and, with EMA-BN, the adapted statistics).

        Atomically: a save that fails or is interrupted leaves the previous file at ``path`` whole.
        """
        atomic_torch_save(self.encoder.state_dict(), path)

    def load_encoder(self, path: str | os.PathLike) -> None:
        """Restore a state saved by :meth:`save_encoder` (strict: keys and shapes must match)."""
        self.encoder.load_state_dict(torch.load(path, map_location=self.device, weights_only=True), strict=True)


def _resolve_precision(precision: str | None, bf16: bool | None, on_cuda: bool) -> str:
    """``precision``, else the older ``bf16`` flag, else bf16 on CUDA and fp32 on CPU; conflicting values refused."""
    if bf16 is not None:
        from_flag = "bf16" if check_flag("bf16", bf16) else "fp32"
        if precision is not None and check_precision("precision", precision) != from_flag:
            raise ValueError(f"precision={precision!r} contradicts bf16={bf16!r}; give only precision")
        return from_flag
    if precision is not None:
        return check_precision("precision", precision)
    return "bf16" if on_cuda else "fp32"
