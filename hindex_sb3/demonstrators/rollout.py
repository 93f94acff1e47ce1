"""Record scripted demonstrations as :class:`~hindex_sb3.demos.Trajectory` objects (the package's demo format)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from hindex_sb3._validation import check_int, check_real
from hindex_sb3.demonstrators.base import Demonstrator, demonstration_horizon, make_demonstrator
from hindex_sb3.demos.core import Trajectory
from hindex_sb3.demos.sources import rollout


def rollout_demonstrations(
    env: gym.Env | str,
    n_episodes: int,
    seed: int = 0,
    noise_std: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
    record_keys: Sequence[str] | None = None,
    only_successful: bool = False,
    max_attempts: int | None = None,
    max_steps: int | None = None,
    demonstrator: Demonstrator | None = None,
) -> list[Trajectory]:
    """Roll out the task's scripted demonstrator for ``n_episodes`` episodes (see :func:`hindex_sb3.demos.rollout`).

    Episode ``i`` starts from ``env.reset(seed=seed + i)`` and its action noise, if any, comes from an RNG seeded by
    ``(seed, i)``, so every episode can be reproduced on its own. An env given by id is made with ``env_kwargs``
    (default ``{"obs_mode": "state"}``: no rendering) and closed afterwards. Besides what ``rollout`` records, each
    trajectory's ``infos["demonstrator"]`` names the controller.
    """
    n_episodes = check_int("n_episodes", n_episodes, minimum=1)  # an empty demonstration set is an error, not []
    check_real("noise_std", noise_std, minimum=0.0)  # before an env is made
    own_env = isinstance(env, str)
    if isinstance(env, str):
        kwargs = {"obs_mode": "state"} if env_kwargs is None else dict(env_kwargs)
        if "max_episode_steps" not in kwargs and demonstrator is None:
            # e.g. place-inside: the scripted controller needs 200 steps where RL episodes have 100
            kwargs["max_episode_steps"] = demonstration_horizon(env)
        env = gym.make(env, **kwargs)
    try:
        demo = demonstrator if demonstrator is not None else make_demonstrator(env, noise_std=noise_std)
        trajectories = rollout(
            env,
            demo,
            n_episodes,
            seed=seed,
            record_keys=record_keys,
            only_successful=only_successful,
            max_attempts=max_attempts,
            max_steps=max_steps,
        )
    finally:
        if own_env:
            env.close()
    for trajectory in trajectories:
        trajectory.infos["demonstrator"] = demo.name
    return trajectories
