"""Record scripted demonstrations as :class:`~hindex_sb3.demos.Trajectory` objects (the package's demo format)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from hindex_sb3.demonstrators.base import Demonstrator, make_demonstrator
from hindex_sb3.demos.core import Trajectory


def _episode_limit(env: gym.Env, max_steps: int | None) -> int:
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        return max_steps
    spec_limit = env.spec.max_episode_steps if env.spec is not None else None
    return int(spec_limit or getattr(env.unwrapped, "default_horizon", 200))


def _stack(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


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
    """Roll out the task's scripted demonstrator for ``n_episodes`` episodes.

    Episode ``i`` starts from ``env.reset(seed=seed + i)`` (``i`` counts attempts when ``only_successful`` skips
    failures), and its action noise, if any, comes from an RNG seeded by ``(seed, i)``, so every episode can be
    reproduced on its own.

    :param env: an environment, or an id made with ``env_kwargs`` (default ``{"obs_mode": "state"}``: no rendering)
        and closed afterwards
    :param record_keys: for Dict observations, keep only these keys (e.g. ``("pixels", "proprio")``)
    :param only_successful: keep only episodes whose last ``info["is_success"]`` is true, trying further seeds
        (at most ``max_attempts``, default ``10 * n_episodes``)
    :param max_steps: episode length when the env has no time limit (default: the registered ``max_episode_steps``)
    :returns: one :class:`~hindex_sb3.demos.Trajectory` per episode: ``observations[t]`` is the observation before
        ``actions[t]`` (the final observation is not kept), ``init_state`` is ``env.unwrapped.get_env_state()`` right
        after the reset, and ``infos`` holds ``is_success``, ``seed``, ``goal_steps``, ``goal_achieved`` (per step)
        and ``demonstrator``.
    """
    if n_episodes < 0:
        raise ValueError(f"n_episodes must be >= 0, got {n_episodes}")
    own_env = isinstance(env, str)
    if isinstance(env, str):
        env = gym.make(env, **({"obs_mode": "state"} if env_kwargs is None else env_kwargs))
    try:
        demo = demonstrator if demonstrator is not None else make_demonstrator(env, noise_std=noise_std)
        limit = _episode_limit(env, max_steps)
        if max_attempts is None:
            max_attempts = 10 * n_episodes if only_successful else n_episodes
        trajectories: list[Trajectory] = []
        attempt = 0
        while len(trajectories) < n_episodes and attempt < max_attempts:
            episode_seed = seed + attempt
            obs, _ = env.reset(seed=episode_seed)
            demo.reset(seed=int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0]))
            attempt += 1
            base = env.unwrapped
            init_state = base.get_env_state() if hasattr(base, "get_env_state") else None
            observations, actions, rewards, goals = [], [], [], []
            info: dict[str, Any] = {}
            for _ in range(limit):
                if isinstance(obs, dict) and record_keys is not None:
                    observations.append({k: obs[k] for k in record_keys})
                else:
                    observations.append(obs)
                action = demo(obs)
                obs, reward, terminated, truncated, info = env.step(action)
                actions.append(action)
                rewards.append(reward)
                goals.append(bool(info.get("goal_achieved", False)))
                if terminated or truncated:
                    break
            success = bool(info.get("is_success", False))
            if only_successful and not success:
                continue
            trajectory = Trajectory(_stack(observations), np.stack(actions), np.asarray(rewards), init_state)
            trajectory.infos.update(
                is_success=success,
                seed=episode_seed,
                goal_achieved=np.asarray(goals),
                goal_steps=int(np.sum(goals)),
                demonstrator=demo.name,
            )
            trajectories.append(trajectory)
        return trajectories
    finally:
        if own_env:
            env.close()
