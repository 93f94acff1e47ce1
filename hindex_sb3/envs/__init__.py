"""The ``HInDex/*`` Gymnasium environments, registered when :mod:`hindex_sb3` is imported.

``gym.make("HInDex/Door-v0")`` works after ``import hindex_sb3``; ``gym.make("hindex_sb3:HInDex/Door-v0")`` imports
the package for you.
"""

from __future__ import annotations

import gymnasium as gym

from hindex_sb3.envs.adroit import ADROIT_TASKS, AdroitEnv, DoorEnv, HammerEnv, PenEnv, RelocateEnv
from hindex_sb3.envs.base import ManipulationEnv
from hindex_sb3.envs.dexmv import DEXMV_TASKS, DexMVEnv

NAMESPACE = "HInDex"


ALL_TASKS: dict[str, type[ManipulationEnv]] = {**ADROIT_TASKS, **DEXMV_TASKS}


def env_ids() -> list[str]:
    """All environment ids this package registers: the four Adroit tasks, then the nine DexMV tasks."""
    return [f"{NAMESPACE}/{name}-v0" for name in ALL_TASKS]


def register_envs() -> None:
    """Register every task (idempotent, so re-imports and ``gym.make("hindex_sb3:...")`` are harmless)."""
    for name, cls in ALL_TASKS.items():
        env_id = f"{NAMESPACE}/{name}-v0"
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=f"{cls.__module__}:{cls.__name__}",
            max_episode_steps=cls.default_horizon,
        )


__all__ = [
    "ALL_TASKS",
    "NAMESPACE",
    "AdroitEnv",
    "DexMVEnv",
    "DoorEnv",
    "HammerEnv",
    "ManipulationEnv",
    "PenEnv",
    "RelocateEnv",
    "env_ids",
    "register_envs",
]
