"""One training run from one configuration: :class:`TrainConfig` (every setting, validated), the paper's per-task
settings as package data, checkpoints that load without executing code, and the runner behind ``hindex train``."""

from hindex_sb3.runs.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from hindex_sb3.runs.config import ConfigError, TrainConfig, TrainingError, resolve_task
from hindex_sb3.runs.paper import paper_settings, paper_tasks
from hindex_sb3.runs.runner import train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "TrainConfig",
    "TrainingError",
    "load_checkpoint",
    "paper_settings",
    "paper_tasks",
    "read_checkpoint_info",
    "resolve_task",
    "save_checkpoint",
    "train",
]
