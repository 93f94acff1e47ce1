"""SB3 features extractor for H-InDex and the baselines, and the ``policy_kwargs`` factories that wire it up.

``PPO("MultiInputPolicy", env, policy_kwargs=hindex_extractor())`` gives any SB3 algorithm the paper's
representation: the frozen encoder's features, concatenated with proprioception, into the paper's policy MLP
(256-256, tanh); ``CnnPolicy`` on an image-only env gets the features alone. The same dict works for every SB3 and
sb3-contrib algorithm. SB3 behaviours that would silently damage a pretrained frozen encoder are neutralised here:

* ``ortho_init`` (on by default in PPO/A2C/TRPO) re-initialises every conv/linear layer of the extractor. The
  encoder ignores ``apply()`` (see :class:`~hindex_sb3.encoders.base.Encoder`) and is not a registered submodule
  anyway; ``algo="ppo"`` (any on-policy name) also passes ``ortho_init=False`` for mjrl's head initialisation.
* Code that walks every policy parameter (TRPO's gradients, SAC/TD3's target-network averaging) never meets the
  frozen weights: they are outside ``parameters()`` but inside ``state_dict()``.
* ``set_training_mode(True)`` before gradient updates would put BatchNorm into batch-statistics mode; the encoder
  stays in eval mode. Its statistics move only through EMA-BN, in the forward of each environment step, one update
  per env frame (:class:`~hindex_sb3.callbacks.EMABatchNormCallback`), never in gradient updates or evaluation episodes.
* ``load()`` re-runs the extractor's ``__init__`` before restoring the saved tensors: a missing weight file then
  does not fail the load (the zip holds the weights); the encoder only refuses to run if nothing restores it.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import OrderedDict
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from hindex_sb3._validation import check_extractor_options, check_hidden
from hindex_sb3.ema_bn import EMAScope, EMAUpdate
from hindex_sb3.encoders import Encoder, WeightsUnavailableError, create_encoder, get_encoder_spec

__all__ = ["HIndexExtractor", "baseline_extractor", "encoder_extractor", "hindex_extractor", "paper_policy_kwargs"]

BASELINES = ("rrl", "r3m", "mvp", "vc1")
_ON_POLICY = {"ppo", "a2c", "trpo", "dapg", "recurrentppo", "maskableppo"}
_OFF_POLICY = {"sac", "td3", "ddpg", "tqc", "crossq", "dqn", "qrdqn"}
PAPER_HIDDEN = (256, 256)
_ENCODER_PREFIX = "encoder."
#: state-dict entry (under the encoder's prefix) present only while the encoder's weights are pending: its tensors
#: are then random placeholders, which a copy (SAC/TD3's target critic) may carry but nothing may adopt as weights
_PENDING_KEY = "_weights_pending"


class HIndexExtractor(BaseFeaturesExtractor):
    """Frozen pretrained encoder on the image, concatenated with proprioception.

    :param observation_space: a uint8 channel-first image ``Box(0, 255, (3, H, W))`` (``CnnPolicy``), or a ``Dict``
        with that image under ``pixels_key`` and, optionally, a ``Box`` under ``proprio_key`` (flattened and appended;
        ``MultiInputPolicy``). ``k`` stacked frames ``(3k, H, W)`` (``VecFrameStack``) are encoded one by one and
        their features concatenated, oldest first, as RRL-style pipelines do.
    :param encoder: registry name: ``"hindex"``, ``"rrl"``, ``"r3m"``, ``"mvp"``, ``"vc1"``.
    :param weights: ``"default"`` (official file, cached), a local path, or ``None`` (random; smoke tests only).
    :param ema_scope: which BatchNorm layers can follow the observations by EMA (``"all"``: the paper; ``"stem"``:
        the released code); ``"auto"`` is ``"all"`` for ResNets and nothing for ViTs. Updates only happen when
        :class:`~hindex_sb3.callbacks.EMABatchNormCallback` (or :meth:`update_bn_stats`) asks for them.
    :param ema_update: ``"frame"``: one update per image of a batch, in order (the paper); ``"batch"``: one per forward.
    :param channels_last: trunk memory format; ``None`` = the encoder's default (channels-last for ResNets).
    :param cuda_graphs: replay the encoder as captured CUDA graphs on a GPU (much faster at rollout batch sizes,
        where a forward is bound by kernel launches; see :meth:`~hindex_sb3.encoders.base.Encoder.use_cuda_graphs`).
    :param precision: the encoder's compute precision, ``"fp32"`` (the paper's) or ``"bf16"`` (bfloat16 autocast;
        features float32, within :data:`~hindex_sb3.encoders.base.BF16_TOLERANCE` of fp32). Saved with the model
        (it is a ``features_extractor_kwargs`` entry, which SB3 stores in ``policy_kwargs``).

    Features: ``(B, k * encoder_dim + proprio_dim)``, e.g. 2048 + 24 for H-InDex on Adroit.

    The encoder is frozen and deliberately not a registered submodule: ``parameters()`` lists only what trains
    (nothing here), while ``state_dict()``, ``load_state_dict()`` and ``.to()`` include the encoder's tensors.
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
        ema_update: EMAUpdate = "frame",
        precision: str = "fp32",
    ) -> None:
        pixels_space, proprio_space = _split_space(observation_space, pixels_key, proprio_key)
        spec = get_encoder_spec(encoder)
        n_frames = pixels_space.shape[0] // 3
        proprio_dim = int(np.prod(proprio_space.shape)) if proprio_space is not None else 0
        super().__init__(observation_space, features_dim=n_frames * spec.feature_dim + proprio_dim)
        if ema_scope == "auto":
            ema_scope = "all" if spec.has_batchnorm else None
        # "defer": if the file is unavailable (e.g. offline SB3 load()), build anyway; running it unrestored raises.
        encoder_module = create_encoder(
            encoder,
            weights,
            ema_scope=ema_scope,
            ema_update=ema_update,
            channels_last=channels_last,
            cuda_graphs=cuda_graphs,
            precision=precision,
            on_unavailable="defer",
        )
        # Not a registered submodule, so the frozen weights are absent from parameters() / named_parameters(): code
        # that differentiates "every policy parameter" (sb3-contrib's TRPO) or polyak-averages them (SAC/TD3 target
        # critics) then sees only what trains. state_dict(), load_state_dict() and .to() still include the encoder.
        object.__setattr__(self, "_encoder", encoder_module)
        self.is_dict = isinstance(observation_space, gym.spaces.Dict)
        self.pixels_key = pixels_key
        self.proprio_key = proprio_key if proprio_space is not None else None
        self.image_shape = tuple(pixels_space.shape)
        self.n_frames = n_frames
        self._armed: torch.Tensor | None = None

    # -- the hidden encoder --------------------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The frozen encoder (kept out of ``parameters()``; its tensors are in this module's ``state_dict``)."""
        return self._encoder

    def hidden_modules(self) -> list[nn.Module]:
        """Modules held outside ``modules()`` (see :func:`hindex_sb3.ema_bn.all_modules`)."""
        return [self._encoder]

    def extra_repr(self) -> str:
        return f"(encoder): {self._encoder.spec.name} x {self.n_frames} frame(s), frozen"

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._encoder._apply(fn, recurse)
        return self

    def _save_to_state_dict(self, destination, prefix: str, keep_vars: bool) -> None:
        """The encoder's tensors under ``encoder.``; refused while its weights are pending (saving a model then would
        store random features as if trained), except while SB3 builds the model. There SAC, TD3, TQC and (QR-)DQN
        copy ``critic.state_dict()`` into their target network, also inside ``load()`` before the zip's tensors
        arrive: the copy gets the random placeholders and a :data:`_PENDING_KEY` flag that keeps the target pending,
        so that a saved off-policy model loads wherever the weight file is missing."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        own = prefix + _ENCODER_PREFIX
        if self._encoder._pending_weights_error is None or not _in_sb3_setup():
            self._encoder.state_dict(destination=destination, prefix=own, keep_vars=keep_vars)
            return
        nn.Module.state_dict(self._encoder, destination=destination, prefix=own, keep_vars=keep_vars)
        destination[own + _PENDING_KEY] = torch.ones((), dtype=torch.uint8)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)
        own = prefix + _ENCODER_PREFIX
        unexpected_keys[:] = [key for key in unexpected_keys if not key.startswith(own)]
        if own + _PENDING_KEY in state_dict:  # placeholders of an encoder that never got its weights
            self._adopt_pending()
            return
        sub = OrderedDict((key[len(own) :], value) for key, value in state_dict.items() if key.startswith(own))
        metadata = getattr(state_dict, "_metadata", None)
        if metadata is not None:
            sub._metadata = OrderedDict(  # type: ignore[attr-defined]
                (key[len(own) :], value) for key, value in metadata.items() if (key + ".").startswith(own)
            )
        result = self._encoder.load_state_dict(sub, strict=False)
        missing_keys.extend(own + key for key in result.missing_keys)
        unexpected_keys.extend(own + key for key in result.unexpected_keys)

    def _adopt_pending(self) -> None:
        """Keep our encoder's weights (from its file, or an earlier complete state dict) and ignore the incoming
        placeholders; an encoder without real weights becomes pending, so it refuses to run instead of using them."""
        encoder = self._encoder
        if encoder._pending_weights_error is None and encoder.weights_source == "random":
            encoder._pending_weights_error = WeightsUnavailableError(
                f"{encoder.spec.name}: the state dict loaded into this encoder came from one whose pretrained weights "
                "were never available (its tensors are random placeholders); load a state dict saved from a model "
                "that had them, or build the model where the weight file is available"
            )

    # -- EMA-BN control ------------------------------------------------------------------------------------------------
    @property
    def has_ema_bn(self) -> bool:
        return bool(self.encoder.ema_layers)

    def _pixels_tensor(self, obs: Any) -> torch.Tensor:
        """Observation (numpy or tensor, dict or array) -> pixels as SB3 hands them to ``forward`` (float / 255)."""
        pixels = obs[self.pixels_key] if self.is_dict else obs
        # buffers too: a trunk may hold no parameters at all (BatchNorm2d(affine=False) and pooling)
        held = next(itertools.chain(self.encoder.parameters(), self.encoder.buffers()), None)
        device = held.device if held is not None else torch.device("cpu")
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

    @property
    def is_armed(self) -> bool:
        """Whether the next forward on the armed observations will update the EMA-BN statistics."""
        return self._armed is not None

    def apply_armed_update(self) -> bool:
        """Make the armed update now, in a no-grad forward of its own; ``False`` if nothing was armed.

        For an extractor that the step's action forward does not run: SAC's and TD3's critics, with
        ``share_features_extractor=False``, see only replay batches, so without this their statistics would stay
        where they started while the actor's follow the observations.
        """
        armed, self._armed = self._armed, None
        if armed is None:
            return False
        with torch.no_grad():
            self._encode(armed, update_bn_stats=True)
        return True

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
        return self._encode(self._pixels_tensor(obs), update_bn_stats=True)

    # -- forward -------------------------------------------------------------------------------------------------------
    def _encode(self, pixels: torch.Tensor, update_bn_stats: bool) -> torch.Tensor:
        """Encode each 3-channel frame of a stack (``VecFrameStack``) and concatenate, oldest frame first.

        With an EMA-BN update, only the newest frame of each stack (the step's new image) enters the statistics: the
        older ones already did at their own steps, and counting them again would weigh every frame k times.
        """
        if self.n_frames == 1:
            return self._encoder(pixels, update_bn_stats=update_bn_stats)
        batch, size = pixels.shape[0], pixels.shape[2:]
        frames = pixels.reshape(batch, self.n_frames, 3, *size)
        if not update_bn_stats:
            return self._encoder(frames.reshape(batch * self.n_frames, 3, *size), update_bn_stats=False).reshape(
                batch, -1
            )
        newest = self._encoder(frames[:, -1], update_bn_stats=True)
        older = self._encoder(frames[:, :-1].reshape(batch * (self.n_frames - 1), 3, *size), update_bn_stats=False)
        return torch.cat([older.reshape(batch, -1), newest], dim=1)

    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = observations[self.pixels_key] if self.is_dict else observations
        features = self._encode(pixels, update_bn_stats=self._take_arm(pixels))
        if self.proprio_key is not None:
            proprio = observations[self.proprio_key].flatten(1).to(features.dtype)
            features = torch.cat([features, proprio], dim=1)
        return features


def _in_sb3_setup() -> bool:
    """Whether SB3 is building a model: a policy's ``_build`` (off-policy policies copy their target networks there)
    or an algorithm's ``_setup_model`` (SAC/TD3 list the critics' ``running_*`` buffers from ``state_dict()``)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_name
        if name in ("_build", "_setup_model") and isinstance(frame.f_locals.get("self"), BasePolicy | BaseAlgorithm):
            return True
        frame = frame.f_back
    return False


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
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype != np.uint8:
        raise ValueError(
            f"{what} must be a uint8 image Box(0, 255, (3, H, W)), got {space}. If the env is wrapped in "
            "VecNormalize(norm_obs=True), that wrapper turned the pixels into normalised floats: normalise only the "
            "proprioception with VecNormalize(venv, norm_obs_keys=['proprio']) (Dict observations), or use "
            "norm_obs=False for image-only observations (obs_mode='rgb')"
        )
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 4:
        raise ValueError(
            f"{what} must be a uint8 image Box(0, 255, (3, H, W)), got shape {space.shape}: Gymnasium's "
            "FrameStackObservation adds a stack axis; stack frames with SB3's VecFrameStack instead, which stacks "
            "along channels (3k, H, W), a layout this extractor encodes frame by frame"
        )
    if not (isinstance(space, gym.spaces.Box) and is_image_space(space, check_channels=False)):
        raise ValueError(f"{what} must be a uint8 image Box(0, 255, (3, H, W)), got {space}")
    channels = space.shape[0]
    if not is_image_space_channels_first(space):
        raise ValueError(
            f"{what} must be channel-first RGB (3, H, W), got shape {space.shape}; SB3 transposes channel-last "
            "image envs itself (VecTransposeImage), so pass the transposed space when building the extractor by hand"
        )
    if channels % 3 != 0:
        raise ValueError(
            f"{what} must be channel-first RGB (3, H, W), or k stacked RGB frames (3k, H, W) as VecFrameStack makes "
            f"them; got {channels} channels in {space.shape} (the pretrained encoders take exactly 3 channels: no "
            "grayscale or depth)"
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
    if not isinstance(algo, str):
        raise TypeError(f"algo must be an algorithm name or an SB3 algorithm class, got {algo!r}")
    name = algo.lower()
    if name in _OFF_POLICY:
        return True
    if name in _ON_POLICY:
        return False
    raise ValueError(f"unknown algorithm {algo!r}; use one of {sorted(_ON_POLICY | _OFF_POLICY)} or the class")


def paper_policy_kwargs(algo: str | type | None = "ppo", hidden: tuple[int, ...] = PAPER_HIDDEN) -> dict[str, Any]:
    """The paper's policy network (MLP 256-256, tanh) as SB3 ``policy_kwargs``.

    ``net_arch`` is a list, which every SB3 / sb3-contrib policy reads the same way (separate 256-256 policy and
    value MLPs on-policy; 256-256 actor and critics off-policy). For an on-policy ``algo`` it adds
    ``ortho_init=False`` (PyTorch's default init of the heads, as mjrl); off-policy policies reject that keyword,
    and ``algo=None`` leaves it out so that one dict serves every algorithm (the heads then get SB3's default init).
    Use this alone for policies on pre-computed features (:class:`~hindex_sb3.vec_encode.VecEncode`).
    """
    # "ab" would make net_arch ['a', 'b'], and (0, -1) a network SB3 fails to build far from here
    kwargs: dict[str, Any] = {"net_arch": list(check_hidden("hidden", hidden)), "activation_fn": nn.Tanh}
    if algo is not None and not _is_off_policy(algo):
        kwargs["ortho_init"] = False
    return kwargs


def _extractor_kwargs(
    encoder: str,
    weights: str | os.PathLike | None,
    algo: str | type | None,
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
    pixels_key: str, proprio_key: str, channels_last: bool | None, cuda_graphs: bool, precision: str
) -> dict[str, Any]:
    """The :class:`HIndexExtractor` keywords that the factories pass through unchanged."""
    return {
        "pixels_key": pixels_key,
        "proprio_key": proprio_key,
        "channels_last": channels_last,
        "cuda_graphs": cuda_graphs,
        "precision": precision,
    }


def hindex_extractor(
    weights: str | os.PathLike | None = "default",
    *,
    algo: str | type | None = None,
    ema_scope: EMAScope | None = "all",
    hidden: tuple[int, ...] = PAPER_HIDDEN,
    pixels_key: str = "pixels",
    proprio_key: str = "proprio",
    channels_last: bool | None = None,
    cuda_graphs: bool = False,
    ema_update: EMAUpdate = "frame",
    precision: str = "fp32",
    **policy_overrides: Any,
) -> dict[str, Any]:
    """A fresh ``policy_kwargs`` dict giving an SB3 policy the H-InDex representation.

    :param weights: ``"default"`` (FrankMocap hand encoder, downloaded once), a checkpoint path (FrankMocap, the
        authors' adapted checkpoints, or ``hindex_sb3.adapted/1`` files), or ``None`` (random, smoke tests).
    :param algo: ``None`` (default): one dict for every SB3 / sb3-contrib algorithm (PPO, A2C, SAC, TD3, DDPG, TQC,
        TRPO, RecurrentPPO, CrossQ, DAPG). An on-policy name or class (``"ppo"``, ``"a2c"``, ``"trpo"``, ``"dapg"``)
        adds ``ortho_init=False`` for the paper's (mjrl's) head initialisation; see :func:`paper_policy_kwargs`.
    :param ema_scope: BatchNorm layers that EMA-BN may adapt (with :class:`~hindex_sb3.callbacks.EMABatchNormCallback`).
    :param hidden: policy (and value/critic) MLP sizes; the paper uses 256-256 with tanh.
    :param cuda_graphs: replay the encoder as CUDA graphs on a GPU (see :class:`HIndexExtractor`).
    :param ema_update: EMA-BN updates per frame (default, the paper) or per batch (see :class:`HIndexExtractor`).
    :param precision: ``"fp32"`` (default, the paper's numbers) or ``"bf16"`` (see :class:`HIndexExtractor`).
    :param policy_overrides: any other SB3 policy keyword, applied last (e.g. ``share_features_extractor=False``).
    """
    options = _extractor_options(pixels_key, proprio_key, channels_last, cuda_graphs, precision)
    options["ema_update"] = ema_update
    return _extractor_kwargs("hindex", weights, algo, ema_scope, hidden, policy_overrides, options)


def baseline_extractor(
    name: Literal["rrl", "r3m", "mvp", "vc1"],
    weights: str | os.PathLike | None = "default",
    *,
    algo: str | type | None = None,
    hidden: tuple[int, ...] = PAPER_HIDDEN,
    pixels_key: str = "pixels",
    proprio_key: str = "proprio",
    channels_last: bool | None = None,
    cuda_graphs: bool = False,
    precision: str = "fp32",
    **policy_overrides: Any,
) -> dict[str, Any]:
    """Like :func:`hindex_extractor` for one of the paper's baselines (frozen, plain eval-mode BatchNorm)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES} (or use hindex_extractor)")
    options = _extractor_options(pixels_key, proprio_key, channels_last, cuda_graphs, precision)
    return _extractor_kwargs(name, weights, algo, None, hidden, policy_overrides, options)


def encoder_extractor(
    name: str,
    weights: str | os.PathLike | None = "default",
    *,
    algo: str | type = "ppo",
    ema_scope: EMAScope | Literal["auto"] | None = "auto",
    hidden: tuple[int, ...] = PAPER_HIDDEN,
    pixels_key: str = "pixels",
    proprio_key: str = "proprio",
    channels_last: bool | None = None,
    cuda_graphs: bool = False,
    precision: str = "fp32",
    **policy_overrides: Any,
) -> dict[str, Any]:
    """``policy_kwargs`` for any registered encoder: a plugin's, ``"timm:<model>"``, ``"torchvision:<model>"``...

    ``ema_scope="auto"`` converts every BatchNorm layer to EMA-BN when the encoder has plain ``BatchNorm2d`` layers
    (momentum 0 until :class:`~hindex_sb3.callbacks.EMABatchNormCallback` sets one), none otherwise.
    """
    options = _extractor_options(pixels_key, proprio_key, channels_last, cuda_graphs, precision)
    return _extractor_kwargs(name, weights, algo, ema_scope, hidden, policy_overrides, options)
