"""Evaluation as the paper reports it: mean-action episodes from fixed seeds, success by the task's episode rule.

SB3's ``evaluate_policy`` returns rewards only; H-InDex reports ``eval_success`` (the fraction of episodes whose final
``info["is_success"]`` is true) next to the mean undiscounted return, over 25 episodes started from the same seeds
every iteration so that curves are comparable across iterations.

Seeds. Training episode ``i`` of DAPG iteration ``k`` starts from env seed ``seed + k * N + i`` (mjrl's sampler, see
:mod:`hindex_sb3.dapg.rollout`), a range that grows from ``seed`` by at most a few hundred thousand over a run (the
paper's largest: 200 trajectories x 400 iterations = 80,000). mjrl evaluated from ``seed, seed + 1, ...`` too, i.e. on
start states the policy had been trained on. Here evaluation episode ``j`` of a run seeded ``seed`` starts from
``EVAL_SEED_OFFSET + seed + j`` (:func:`eval_seeds`): disjoint from every training episode as long as
``seed + k * N + i < EVAL_SEED_OFFSET`` (one billion), and still below 2**31 for seeds up to about a billion.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from hindex_sb3._validation import check_flag, check_int
from hindex_sb3.episodes import run_episode

#: evaluation seeds start here, far above any training episode's seed (see the module docstring)
EVAL_SEED_OFFSET = 1_000_000_000


def eval_seeds(seed: int, n_episodes: int) -> list[int]:
    """Env seeds of the evaluation episodes of a run seeded ``seed``: ``EVAL_SEED_OFFSET + seed + j``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return [EVAL_SEED_OFFSET + int(seed) + j for j in range(n_episodes)]


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


def _step_cap(env: gym.Env) -> int | None:
    """The episode length to stop at: ``None`` when a ``TimeLimit`` ends the episodes, else an ``HInDex/*`` task's
    registered horizon (its env class built without ``gym.make`` never ends an episode: evaluation would not return).
    """
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, gym.wrappers.TimeLimit):
            return None
        layer = layer.env
    horizon = getattr(env.unwrapped, "default_horizon", None)
    return horizon if isinstance(horizon, int) and not isinstance(horizon, bool) else None


def _takes_state(predict: Callable) -> bool:
    """Whether ``predict`` takes SB3's ``state`` and ``episode_start`` (every SB3 model and policy does)."""
    try:
        params = inspect.signature(predict).parameters.values()
    except (TypeError, ValueError):  # no signature to read: call it as SB3's
        return True
    names = {p.name for p in params}
    return {"state", "episode_start"} <= names or any(p.kind is p.VAR_KEYWORD for p in params)


class _Predictor:
    """``obs -> action`` through an SB3 ``predict``, carrying its recurrent state through an episode.

    A recurrent policy (sb3-contrib's ``RecurrentPPO``) returns its LSTM state from ``predict`` and needs it back with
    the next observation, plus ``episode_start`` at the first step: without them every step would start from a
    zero state, and the evaluation would score another policy. Feed-forward policies return ``None`` and ignore both.
    """

    def __init__(self, policy: object, deterministic: bool) -> None:
        self.policy, self.deterministic = policy, deterministic
        self.state: object = None
        self.start = True
        self.stateful = _takes_state(policy.predict)  # type: ignore[attr-defined]

    def reset(self, _obs: object) -> None:
        self.state, self.start = None, True

    def __call__(self, obs: object) -> object:
        if not self.stateful:  # a duck-typed predict(obs, deterministic=...)
            return self.policy.predict(obs, deterministic=self.deterministic)[0]  # type: ignore[attr-defined]
        action, self.state = self.policy.predict(  # type: ignore[attr-defined]
            obs, state=self.state, episode_start=np.array([self.start]), deterministic=self.deterministic
        )
        self.start = False
        return action


def evaluate(
    policy: Callable[[object], np.ndarray] | object,
    env: gym.Env,
    n_episodes: int = 25,
    seed: int = 0,
    deterministic: bool = True,
    *,
    seeds: Sequence[int] | None = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes from the evaluation seeds of a run seeded ``seed`` (:func:`eval_seeds`).

    ``seeds`` gives the episodes' env seeds explicitly instead (one per episode; ``n_episodes`` is then ignored).
    ``policy`` is an SB3 model or policy (anything with SB3's ``predict(obs, state, episode_start, deterministic)``;
    a recurrent policy's state is carried through each episode), or a callable ``obs -> action``.
    The env must end episodes (``gym.make`` adds the time limit of every ``HInDex/*`` id; an ``HInDex/*`` env
    class built directly is stopped at that limit here).
    """
    check_flag("deterministic", deterministic)  # a string such as "no" would be truthy
    if isinstance(env, VecEnv):  # SB3's evaluate_policy takes one; its reset() has no seed, so say so here
        raise TypeError(f"env must be one gymnasium Env (episodes are played one by one), got a {type(env).__name__}")
    if seeds is not None:
        episode_seeds = [check_int("seeds[]", s, minimum=0) for s in seeds]
    else:
        episode_seeds = eval_seeds(seed, check_int("n_episodes", n_episodes, minimum=1))
    if not episode_seeds:
        raise ValueError("evaluation needs at least one episode")
    if hasattr(policy, "predict"):
        act: Callable[[object], object] = _Predictor(policy, deterministic)
        on_reset = act.reset  # type: ignore[attr-defined]
    else:
        act, on_reset = policy, None  # type: ignore[assignment]
    cap = _step_cap(env)
    episodes = [run_episode(env, act, seed=int(s), max_steps=cap, on_reset=on_reset) for s in episode_seeds]
    returns = [ep.total_return for ep in episodes]
    successes = [ep.success for ep in episodes]
    lengths = [ep.length for ep in episodes]
    return EvalResult(
        success_rate=float(np.mean(successes)),
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        returns=returns,
        successes=successes,
        lengths=lengths,
    )
