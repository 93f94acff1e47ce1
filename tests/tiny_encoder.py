"""A tiny registered ResNet-like encoder (one conv, one BatchNorm) and a synthetic pixel env, for DAPG plumbing tests.

Registered under :data:`NAME` with random weights (``weights=None``), so nothing is read or downloaded; it has a
``BatchNorm2d``, hence EMA-BN, like the ResNet-50 encoders it stands in for.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from torch import nn

from hindex_sb3.encoders import EncoderSpec, WeightSpec, register_encoder
from hindex_sb3.extractor import HIndexExtractor

NAME = "dapg_test_tiny"
FEATURES = 6


def _builder() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, FEATURES, 5, stride=4), nn.BatchNorm2d(FEATURES), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def _no_file(_: Any) -> dict:
    raise ValueError("the tiny test encoder has no weight file")


register_encoder(
    EncoderSpec(
        name=NAME,
        feature_dim=FEATURES,
        weights=WeightSpec(name=NAME, url="none://", file_name=f"{NAME}.pth", key_layout="none", converter=_no_file),
        builder=_builder,
        input_size=32,
        resize=32,
        mean=None,
        std=None,
        description="tests only",
    ),
    overwrite=True,
)


def tiny_policy_kwargs(**extra: Any) -> dict[str, Any]:
    """DAPG ``policy_kwargs`` with the tiny encoder (frozen, EMA-BN on every BatchNorm) behind HIndexExtractor."""
    return {
        "features_extractor_class": HIndexExtractor,
        "features_extractor_kwargs": {"encoder": NAME, "weights": None, "ema_scope": "all"},
        "net_arch": [16],
        **extra,
    }


class PixelEnv(gym.Env):
    """Random 3x32x32 frames + 4-d proprio, 6-step episodes, frames reproducible from the reset seed."""

    observation_space = spaces.Dict(
        {"pixels": spaces.Box(0, 255, (3, 32, 32), np.uint8), "proprio": spaces.Box(-1, 1, (4,), np.float32)}
    )
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def _obs(self):
        pixels = self.np_random.integers(0, 256, (3, 32, 32), dtype=np.uint8)
        return {"pixels": pixels, "proprio": self.np_random.uniform(-1, 1, 4).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), -float(np.sum(action**2)), False, self._t >= 6, {}
