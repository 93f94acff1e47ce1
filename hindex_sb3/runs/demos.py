"""Where a run's demonstrations come from (``--demos``), in the training env's observation format.

The runner calls :func:`load_demos` at exactly one place; the resolution of demonstration sources may move to
``hindex_sb3.demos`` without the runner changing shape.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

from hindex_sb3.demos import Trajectory, load_dapg_pickle, load_minari, load_npz, replay, rollout
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
    source = cfg.demos
    pixel = cfg.encoder != "state"
    record = ("pixels", "proprio") if pixel else None
    env_kwargs = make_env_kwargs(cfg, obs_mode="all" if pixel else "state")
    if source == "scripted":
        try:
            from hindex_sb3.demonstrators import demonstration_horizon, make_demonstrator
        except ImportError as err:
            raise TrainingError("scripted demonstrators are not available in this installation") from err
        # the task's own horizon, or longer if its demonstrator needs it (place-inside: 200), whatever --horizon
        # says: demonstrations only feed BC and DAPG's demo term, so they need not match RL episodes
        env_kwargs["max_episode_steps"] = demonstration_horizon(env_id)
    env = gym.make(env_id, **env_kwargs)
    try:
        if source == "scripted":
            try:
                demonstrator = make_demonstrator(env)
            except (KeyError, ValueError, TypeError) as err:
                raise TrainingError(f"no scripted demonstrator for {env_id}: {err}; pass --demos FILE") from err
            return rollout(
                env, demonstrator, cfg.num_demos, seed=10_000 + cfg.seed, record_keys=record, only_successful=True
            )
        if source.startswith("expert:"):
            return rollout(
                env,
                source.split(":", 1)[1],
                cfg.num_demos,
                seed=10_000 + cfg.seed,
                policy_obs_key="state" if pixel else None,
                record_keys=record,
            )
        if source.startswith("minari:"):
            demos = load_minari(source.split(":", 1)[1])
        else:
            path = Path(source)
            if not path.is_file():
                raise TrainingError(f"--demos {source!r}: no such file (or use scripted, expert:PATH, minari:ID)")
            demos = load_dapg_pickle(path) if path.suffix in (".pickle", ".pkl") else load_npz(path)
        demos = demos[: cfg.num_demos]
        if pixel and demos and not isinstance(demos[0].observations, dict):
            demos = replay(demos, env, keys=record)  # state demos -> pixel demos from their start states
        return demos
    finally:
        env.close()
