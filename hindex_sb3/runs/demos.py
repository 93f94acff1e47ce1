"""Where a run's demonstrations come from (``--demos``), in the training env's observation format.

The runner calls :func:`load_demos` at exactly one place; the sources themselves (``scripted``, ``expert:FILE``,
files, ``minari:ID``) are resolved by :func:`hindex_sb3.demos.load_demonstrations`, which ``DAPG(demos=...)`` uses
too, so the command line and the Python API accept the same sources.
"""

from __future__ import annotations

from hindex_sb3.demos import Trajectory, load_demonstrations
from hindex_sb3.runs.build import make_env_kwargs
from hindex_sb3.runs.config import TrainConfig, TrainingError

__all__ = ["load_demos"]


def load_demos(cfg: TrainConfig, env_id: str) -> list[Trajectory]:
    """Demonstrations in the training env's observation format (pixels are rendered here when needed).

    ``cfg.demos``: ``scripted`` (the task's scripted demonstrator), ``expert:PATH.npz`` (a state expert rolled out
    with mean actions), a ``.npz`` / ``.pickle`` demonstration file, ``minari:DATASET_ID``, or ``none``.
    An empty set is an error unless ``none`` was asked for.
    """
    if cfg.demos == "none":
        return []
    demos = _load(cfg, env_id)
    if not demos:
        raise TrainingError(f"--demos {cfg.demos!r} gave no demonstrations (use --demos none to train without)")
    return demos


def _load(cfg: TrainConfig, env_id: str) -> list[Trajectory]:
    obs_mode = "state" if cfg.encoder == "state" else "pixels"
    try:
        return load_demonstrations(
            cfg.demos,
            env_id,
            num_demos=cfg.num_demos,
            seed=cfg.seed,
            env_kwargs=make_env_kwargs(cfg, obs_mode=obs_mode),
        )
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise TrainingError(f"--demos {cfg.demos!r}: {err}") from err
