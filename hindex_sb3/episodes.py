"""One Gymnasium episode loop for every place that plays an episode outside the training sampler.

Evaluation, the training video, demonstration recording, Stage 2 frame collection and ``hindex demo`` all reset an
env, step it with some action rule until it ends or a step cap is hit, and keep different things along the way. The
loop lives here once so that they agree on what "an episode" is: reset with the given seed/options, then step until
``terminated or truncated`` or ``max_steps`` actions. What each caller keeps is its own business, told through
``on_reset`` / ``on_step``. (DAPG's vectorised sampler, :mod:`hindex_sb3.dapg.rollout`, is a different thing.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass
class Step:
    """One transition: the action chosen from ``obs`` and what ``env.step`` answered."""

    obs: Any
    action: Any
    reward: Any  # as the env returned it (callers that record rewards keep the env's type)
    next_obs: Any
    terminated: bool
    truncated: bool
    info: dict[str, Any]


@dataclass
class Episode:
    """What every caller needs at the end of an episode."""

    total_return: float  #: undiscounted sum of ``float(reward)``
    length: int  #: actions taken
    final_obs: Any  #: last observation (the reset observation if no action was taken)
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)  #: the last step's info ({} if no action was taken)

    @property
    def done(self) -> bool:
        """Whether the env ended the episode (as opposed to ``max_steps`` stopping it, or no step at all)."""
        return self.terminated or self.truncated

    @property
    def success(self) -> bool:
        """The task's episode rule: the final ``info["is_success"]``."""
        return bool(self.info.get("is_success", False))


def run_episode(
    env: gym.Env,
    act: Callable[[Any], Any],
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    max_steps: int | None = None,
    on_reset: Callable[[Any], None] | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Episode:
    """Reset ``env`` (``seed``, ``options``) and step it with ``act(obs)`` until it ends or ``max_steps`` actions.

    ``act`` returns the action exactly as ``env.step`` gets it (callers cast dtypes there). ``on_reset(obs)`` runs
    right after the reset, before the first action (policy resets, start states, first frames); ``on_step(step)``
    after every ``env.step``. ``max_steps=None`` relies on the env to end the episode (a time limit); ``0`` only
    resets.
    """
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer)):
        raise TypeError(f"max_steps must be an int or None, got {type(max_steps).__name__}")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    obs, _ = env.reset(seed=seed) if options is None else env.reset(seed=seed, options=options)
    if on_reset is not None:
        on_reset(obs)
    episode = Episode(total_return=0.0, length=0, final_obs=obs)
    while not episode.done and (max_steps is None or episode.length < max_steps):
        action = act(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        episode.total_return += float(reward)
        episode.length += 1
        episode.terminated, episode.truncated, episode.info = bool(terminated), bool(truncated), info
        if on_step is not None:
            on_step(Step(obs, action, reward, next_obs, bool(terminated), bool(truncated), info))
        obs = episode.final_obs = next_obs
    return episode
