"""Turn state-based demonstrations into pixel demonstrations by running them in a pixel environment.

* :func:`replay` restores each demonstration's start state and replays its actions open-loop, recording the
  observation before every action: H-InDex's recipe for the Adroit demos. (H-InDex recorded observation 0 before
  restoring the start state, so its first frame shows a random reset scene; we record it after restoring.)
* :func:`render_states` restores every recorded simulator state in turn (no drift at all), for datasets that store
  per-step states (``infos["states"]``, e.g. from :func:`hindex_sb3.demos.load_minari`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from hindex_sb3.demos.core import Trajectory, to_trajectories
from hindex_sb3.demos.sources import check_key_list


def _stack(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


def _select(obs: Any, keys: Sequence[str] | None) -> Any:
    return {k: obs[k] for k in keys} if keys is not None and isinstance(obs, dict) else obs


def replay(demos: Any, env: gym.Env, keys: Sequence[str] | None = ("pixels", "proprio")) -> list[Trajectory]:
    """Replay demonstrations open-loop from their start states in ``env``; returns the recorded observations.

    Demonstrations without a start state cannot be replayed faithfully and raise ``ValueError``.
    """
    check_key_list("keys", keys, env.observation_space)
    out = []
    for i, t in enumerate(to_trajectories(demos)):
        if not t.init_state:
            raise ValueError(f"demonstration {i} has no start state (init_state) to replay from")
        obs, _ = env.reset(seed=i, options={"initial_state_dict": t.init_state})
        observations, rewards, info = [], [], {}
        for action in t.actions:
            observations.append(_select(obs, keys))
            obs, reward, terminated, _, info = env.step(action)
            rewards.append(reward)
            if terminated:
                break
        n = len(observations)
        replayed = Trajectory(_stack(observations), t.actions[:n], np.asarray(rewards), t.init_state)
        replayed.infos["is_success"] = bool(info.get("is_success", False))
        out.append(replayed)
    return out


def render_states(demos: Any, env: gym.Env, keys: Sequence[str] | None = ("pixels", "proprio")) -> list[Trajectory]:
    """Observe every recorded state (``trajectory.infos["states"]``) in ``env``; exact, no open-loop drift."""
    base = env.unwrapped
    if not hasattr(base, "restore_state"):
        raise TypeError(f"{type(base).__name__} cannot restore recorded states (no restore_state method)")
    check_key_list("keys", keys, env.observation_space)
    out = []
    for i, t in enumerate(to_trajectories(demos)):
        states = t.infos.get("states")
        if not states:
            raise ValueError(f"demonstration {i} carries no per-step states (infos['states'])")
        env.reset(seed=i)
        observations = [
            _select(base.restore_state({k: v[step] for k, v in states.items()}), keys) for step in range(len(t))
        ]
        out.append(Trajectory(_stack(observations), t.actions, t.rewards, t.init_state, {"states": states}))
    return out
