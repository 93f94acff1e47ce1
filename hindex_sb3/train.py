"""``hindex train`` from Python: the names scripts and notebooks import, kept stable.

The implementation lives in :mod:`hindex_sb3.runs` (configuration, paper settings, checkpoints, the runner).
"""

from __future__ import annotations

from hindex_sb3.runs.build import make_env_kwargs, policy_setup, vec_env_class
from hindex_sb3.runs.config import ConfigError, TrainConfig, TrainingError, resolve_task
from hindex_sb3.runs.demos import load_demos
from hindex_sb3.runs.paper import paper_settings, paper_tasks
from hindex_sb3.runs.runner import train

#: H-InDex's per-task EMA-BN momentum (from the shipped paper settings; tasks not listed use 0)
PAPER_MOMENTUM = {
    env_id.split("/")[1].removesuffix("-v0"): paper_settings(env_id)["ema_momentum"]
    for env_id in paper_tasks()
    if paper_settings(env_id).get("ema_momentum")
}

__all__ = [
    "PAPER_MOMENTUM",
    "ConfigError",
    "TrainConfig",
    "TrainingError",
    "load_demos",
    "make_env_kwargs",
    "paper_settings",
    "policy_setup",
    "resolve_task",
    "train",
    "vec_env_class",
]
