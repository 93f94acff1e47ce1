"""Evaluation as the paper reports it: mean-action episodes from fixed seeds, success by the task's episode rule.

SB3's ``evaluate_policy`` returns rewards only; H-InDex reports ``eval_success`` (the fraction of episodes whose final
``info["is_success"]`` is true) next to the mean undiscounted return, over 25 episodes started from the same seeds
every iteration so that curves are comparable across iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class EvalResult:
    success_rate: float
    mean_return: float
    std_return: float
    returns: list[float]
    successes: list[bool]
    lengths: list[int]

    def as_dict(self) -> dict[str, float]:
        return {"success_rate": self.success_rate, "mean_return": self.mean_return, "std_return": self.std_return}


def evaluate(
    policy: Callable[[object], np.ndarray] | object,
    env: gym.Env,
    n_episodes: int = 25,
    seed: int = 0,
    deterministic: bool = True,
) -> EvalResult:
    """Run ``n_episodes`` episodes from seeds ``seed, seed + 1, ...``.

    ``policy`` is an SB3 model or policy (anything with ``predict``), or a callable ``obs -> action``.
    The env must end episodes (``gym.make`` adds the time limit of every ``HInDex/*`` id).
    """
    if hasattr(policy, "predict"):

        def act(obs):
            return policy.predict(obs, deterministic=deterministic)[0]  # type: ignore[union-attr]
    else:
        act = policy  # type: ignore[assignment]
    returns, successes, lengths = [], [], []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total, steps, info = False, 0.0, 0, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info.get("is_success", False)))
        lengths.append(steps)
    return EvalResult(
        success_rate=float(np.mean(successes)),
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        returns=returns,
        successes=successes,
        lengths=lengths,
    )
