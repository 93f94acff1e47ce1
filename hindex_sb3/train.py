"""``hindex train`` from Python: the names scripts and notebooks import, kept stable.

The implementation lives in :mod:`hindex_sb3.runs` (configuration, paper settings, checkpoints, the runner).
"""

from __future__ import annotations

from hindex_sb3.runs.build import make_env_kwargs, policy_setup, vec_env_class
from hindex_sb3.runs.config import ConfigError, TrainConfig, TrainingError, resolve_task
from hindex_sb3.runs.demos import load_demos
from hindex_sb3.runs.paper import paper_settings
from hindex_sb3.runs.runner import train

__all__ = [
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
