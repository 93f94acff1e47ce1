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


class UnknownTaskError(ValueError):
    """A task name that is none of ours; the message lists the known names."""


def task_names() -> list[str]:
    """Short task names, as every ``hindex`` command accepts them: ``Door``, ..., ``Relocate-Mug``, ``Pour``."""
    return [env_id.split("/")[1].removesuffix("-v0") for env_id in env_ids()]


def _task_key(name: str) -> str:
    return name.lower().removeprefix(f"{NAMESPACE.lower()}/").removesuffix("-v0").replace("-", "").replace("_", "")


def resolve_env_id(task: str) -> str:
    """``door`` / ``Door`` / ``HInDex/Door-v0`` / ``relocate-mug`` / ``relocate_mug`` -> ``HInDex/...-v0``.

    One resolver for every command (``hindex train``, ``adapt``, ``demo``), so that a name one accepts the others
    accept too. Raises :class:`UnknownTaskError` listing the known names.
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a string, got {task!r} ({type(task).__name__})")
    ids = env_ids()
    if task in ids:
        return task
    key = _task_key(task)
    for env_id in ids:
        if key and _task_key(env_id) == key:
            return env_id
    raise UnknownTaskError(f"unknown task {task!r}; known tasks: {task_names()}")


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
    "UnknownTaskError",
    "env_ids",
    "register_envs",
    "resolve_env_id",
    "task_names",
]
