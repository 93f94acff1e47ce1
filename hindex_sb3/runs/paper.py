"""The paper's per-task settings, shipped as data (``hindex_sb3/runs/paper/<task>.json``).

One JSON file per task holds what H-InDex's Stage 3 used: trajectories per iteration, iterations, number of
demonstrations, the EMA-BN momentum, the RL horizon, the camera and the reward (H-InDex's vendored Adroit envs
reward door, hammer and pen sparsely). Each file names its public sources: the
authors' per-task configs (``stage3_RL/examples/config/{adroit,dexmv}/<task>_dapg.yaml`` in
https://github.com/YanjieZe/H-InDex) and the paper (arXiv:2310.01404) for the momentum. A setting a user gives
(flag, ``--set``, ``--config``, or a Python field) always wins; a task without a file uses :data:`GENERIC`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import gymnasium as gym

from hindex_sb3._io import read_json
from hindex_sb3.runs.config import TrainConfig, resolve_task

__all__ = ["GENERIC", "PAPER_FIELDS", "paper_settings", "paper_tasks", "resolve_settings"]

#: the fields a task file may set
PAPER_FIELDS = ("trajectories", "iterations", "num_demos", "ema_momentum", "horizon", "camera", "reward_type")
#: used for tasks without a file (and fields a file leaves out); horizon/camera: the env's own
GENERIC: dict[str, Any] = {
    "trajectories": 100,
    "iterations": 100,
    "num_demos": 25,
    "ema_momentum": 0.0,
    "reward_type": "dense",
}


def _files() -> dict[str, dict[str, Any]]:
    """``env_id -> file contents`` for every shipped task file."""
    out = {}
    for entry in resources.files("hindex_sb3.runs").joinpath("paper").iterdir():
        if entry.name.endswith(".json"):
            data = read_json(entry.read_text(encoding="utf-8"), text=True)
            out[data["task"]] = data
    return out


def paper_tasks() -> list[str]:
    """Env ids that have a settings file."""
    return sorted(_files())


def paper_settings(env_id: str) -> dict[str, Any]:
    """The paper's settings for ``env_id`` (empty when the task has no file).

    Any task name every command accepts (``door``, ``HInDex/Door-v0``) gives the same settings; an unknown task raises
    :class:`~hindex_sb3.runs.config.TrainingError` rather than reading as a task without a file.
    """
    env_id = resolve_task(env_id)
    data = _files().get(env_id)
    if data is None:
        return {}
    unknown = set(data["settings"]) - set(PAPER_FIELDS)
    if unknown:  # a packaging error, not user input
        raise ValueError(f"paper settings for {env_id}: unknown fields {sorted(unknown)}")
    return dict(data["settings"])


def resolve_settings(cfg: TrainConfig, env_id: str) -> TrainConfig:
    """``cfg`` with every unset (``None``) paper field filled: the paper's value, else the generic / env default.

    The result has concrete values only, so its ``config.json`` repeats the run even if a default changes later.
    """
    paper = paper_settings(env_id)
    spec = gym.spec(env_id)
    env_defaults = {"horizon": spec.max_episode_steps, "camera": _default_camera(spec)}
    changes = {}
    for name in PAPER_FIELDS:
        if getattr(cfg, name) is None:
            changes[name] = paper.get(name, GENERIC.get(name, env_defaults.get(name)))
    return cfg.replace(**changes) if changes else cfg


def _default_camera(spec: gym.envs.registration.EnvSpec) -> str | None:
    entry = spec.entry_point
    if not isinstance(entry, str):
        return None
    module, _, name = entry.partition(":")
    import importlib

    cls = getattr(importlib.import_module(module), name, None)
    return getattr(cls, "default_camera", None)
