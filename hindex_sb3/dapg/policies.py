"""The DAPG policy: mjrl's Gaussian MLP and MLP value baseline, behind SB3's policy interface.

mjrl's policy differs from SB3's ``ActorCriticPolicy`` in ways that matter for reproducing DAPG:

* the mean network normalises its input and output with statistics of the demonstrations
  (``(x - in_shift) / (in_scale + 1e-8)`` and ``y * out_scale + out_shift``), set by behaviour cloning;
* its last layer starts at 1/100 of its default initialisation, and ``log_std`` is clamped at ``min_log_std``;
* the value baseline is a separate ReLU MLP on ``clip(features, -10, 10) / 10`` plus time features ``(t/1000)^k``,
  k = 1..4, trained by regression on Monte-Carlo returns after each policy step. It never shares gradients with
  the policy, so it lives here as a second head with its own optimiser.

Policy kwargs accepted for compatibility with SB3 and :func:`hindex_sb3.hindex_extractor`: ``net_arch`` (a list, or a
dict with ``pi`` and ``vf``, the latter for the baseline), ``activation_fn``, ``features_extractor_class/kwargs``,
``share_features_extractor`` (``True`` only), ``normalize_images``, ``optimizer_class/kwargs`` (the baseline's),
``ortho_init`` (ignored: DAPG never re-initialises the extractor), ``log_std_init``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from hindex_sb3._validation import check_flag

TIME_FEATURES = 4


def _mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def time_features(timesteps: th.Tensor) -> th.Tensor:
    """mjrl's baseline time features: ``[(t/1000), (t/1000)^2, (t/1000)^3, (t/1000)^4]``."""
    t = timesteps.float().reshape(-1, 1) / 1000.0
    return th.cat([t**k for k in range(1, TIME_FEATURES + 1)], dim=1)


def _architectures(
    net_arch: list[int] | dict[str, list[int]] | None, vf_arch: list[int] | None
) -> tuple[list[int], list[int]]:
    """The mean network's and the value baseline's hidden sizes: 256-256 and mjrl's 128-128 unless given.

    A dict ``net_arch`` is read as SB3's actor-critic policies read it: ``pi`` for the policy, ``vf`` for the value
    network (here the baseline); ``vf_arch`` says the same as ``vf``, so both at once are refused.
    """
    pi_arch, vf_from_dict = [256, 256], None
    if isinstance(net_arch, dict):
        unknown = set(net_arch) - {"pi", "vf"}
        if unknown:
            raise ValueError(f"net_arch keys must be 'pi' and 'vf', got {sorted(unknown)}")
        pi_arch = list(net_arch.get("pi", pi_arch))
        vf_from_dict = net_arch.get("vf")
    elif net_arch is not None:
        pi_arch = list(net_arch)
    if vf_from_dict is not None and vf_arch is not None:
        raise ValueError("the value baseline's sizes are given twice: net_arch['vf'] and vf_arch (pass one)")
    chosen = vf_arch if vf_arch is not None else vf_from_dict
    return pi_arch, list(chosen) if chosen is not None else [128, 128]


class DAPGPolicy(BasePolicy):
    """Gaussian MLP policy with demo-derived normalisation, plus mjrl's time-feature value baseline."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        vf_arch: list[int] | None = None,
        log_std_init: float = 0.0,
        min_log_std: float = -3.0,
        last_layer_scale: float = 1e-2,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        use_sde: bool = False,
        ortho_init: bool = False,
    ):
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"DAPG needs a continuous (Box) action space, got {action_space}")
        if use_sde:
            raise ValueError("DAPG does not support gSDE (use_sde=True)")
        # the baseline reads the policy's features: one extractor by design
        if not check_flag("share_features_extractor", share_features_extractor):
            raise ValueError(
                "DAPG's policy and value baseline share one features extractor; "
                "share_features_extractor=False is not supported"
            )
        pi_arch, vf_arch = _architectures(net_arch, vf_arch)
        if optimizer_kwargs is None:
            optimizer_kwargs = {"weight_decay": 1e-3}  # mjrl's baseline reg_coef
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
            squash_output=False,
        )
        self.net_arch = pi_arch
        self.vf_arch = vf_arch
        self.activation_fn = activation_fn
        self.log_std_init = log_std_init
        self.min_log_std = min_log_std
        self.last_layer_scale = last_layer_scale
        self.share_features_extractor = True

        self.features_extractor = self.make_features_extractor()
        self.features_dim = self.features_extractor.features_dim
        act_dim = int(np.prod(action_space.shape))
        f = self.features_dim

        self.register_buffer("in_shift", th.zeros(f))
        self.register_buffer("in_scale", th.ones(f))
        self.register_buffer("out_shift", th.zeros(act_dim))
        self.register_buffer("out_scale", th.ones(act_dim))
        self.mean_net = _mlp([f, *self.net_arch, act_dim], activation_fn)
        with th.no_grad():
            last = self.mean_net[-1]
            last.weight.mul_(last_layer_scale)
            last.bias.mul_(last_layer_scale)
        self.log_std = nn.Parameter(th.full((act_dim,), float(log_std_init)))
        self.value_net = _mlp([f + TIME_FEATURES, *self.vf_arch, 1], nn.ReLU)
        self.action_dist = DiagGaussianDistribution(act_dim)
        # Only the value baseline is trained by gradient descent; the policy moves by natural-gradient steps.
        self.optimizer = self.optimizer_class(self.value_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    # ------------------------------------------------------------------ parameters
    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters the natural gradient moves: trainable extractor weights, the mean network and ``log_std``."""
        params = [p for p in self.features_extractor.parameters() if p.requires_grad]
        return params + list(self.mean_net.parameters()) + [self.log_std]

    def clamp_log_std(self) -> None:
        with th.no_grad():
            self.log_std.clamp_(min=self.min_log_std)

    def extractor_is_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.features_extractor.parameters())

    # ------------------------------------------------------------------ forward passes
    def features(self, obs: PyTorchObs) -> th.Tensor:
        return self.extract_features(obs, self.features_extractor)

    def mean_from_features(self, features: th.Tensor) -> th.Tensor:
        z = (features - self.in_shift) / (self.in_scale + 1e-8)
        return self.mean_net(z) * self.out_scale + self.out_shift

    def distribution_from_features(self, features: th.Tensor) -> DiagGaussianDistribution:
        return self.action_dist.proba_distribution(self.mean_from_features(features), self.log_std)

    def get_distribution(self, obs: PyTorchObs) -> DiagGaussianDistribution:
        return self.distribution_from_features(self.features(obs))

    def value_from_features(self, features: th.Tensor, timesteps: th.Tensor) -> th.Tensor:
        x = th.cat([th.clamp(features, -10.0, 10.0) / 10.0, time_features(timesteps).to(features.device)], dim=1)
        return self.value_net(x).flatten()

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, features and log-probabilities (DAPG's rollouts store features, not values)."""
        features = self.features(obs)
        dist = self.distribution_from_features(features)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, features, dist.log_prob(actions)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            vf_arch=self.vf_arch,
            log_std_init=self.log_std_init,
            min_log_std=self.min_log_std,
            last_layer_scale=self.last_layer_scale,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            lr_schedule=self._dummy_schedule,
        )
        return data

    @staticmethod
    def _dummy_schedule(_: float) -> float:
        return 1e-3


class CnnDAPGPolicy(DAPGPolicy):
    """DAPG policy on image observations (default extractor: NatureCNN; pass an H-InDex extractor instead)."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputDAPGPolicy(DAPGPolicy):
    """DAPG policy on Dict observations (default extractor: SB3's CombinedExtractor)."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


MlpPolicy = DAPGPolicy
CnnPolicy = CnnDAPGPolicy
MultiInputPolicy = MultiInputDAPGPolicy
