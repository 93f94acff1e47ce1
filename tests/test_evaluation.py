"""Evaluation episodes: their seeds never coincide with a training episode's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from hindex_sb3.dapg.rollout import episode_seeds
from hindex_sb3.evaluation import EVAL_SEED_OFFSET, eval_seeds, evaluate


class SeedRecorder(gym.Env):
    """Two-step episodes; records reset seeds; success when the seed is even."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self) -> None:
        self.seeds: list[int | None] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._t += 1
        seed = self.seeds[-1]
        return np.zeros(1, np.float32), 1.0, False, self._t >= 2, {"is_success": seed % 2 == 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluation_seeds_are_disjoint_from_the_training_episodes(seed):
    env = SeedRecorder()
    result = evaluate(lambda obs: np.zeros(1, np.float32), env, n_episodes=25, seed=seed)
    # the paper's largest run: 200 trajectories per iteration, 400 iterations
    training = {e.env_seed for k in range(400) for e in episode_seeds(seed, k, 200)}
    assert env.seeds == eval_seeds(seed, 25) and training.isdisjoint(env.seeds)
    assert env.seeds == [EVAL_SEED_OFFSET + seed + j for j in range(25)]
    # the same episodes every time they are asked for (curves comparable across iterations)
    assert evaluate(lambda obs: np.zeros(1, np.float32), SeedRecorder(), 25, seed=seed).returns == result.returns
    assert result.success_rate == pytest.approx(np.mean([(EVAL_SEED_OFFSET + seed + j) % 2 == 0 for j in range(25)]))


def test_explicit_seeds_and_bad_arguments():
    env = SeedRecorder()
    result = evaluate(lambda obs: np.zeros(1, np.float32), env, seeds=[4, 5, 7])
    assert env.seeds == [4, 5, 7] and result.successes == [True, False, False] and result.lengths == [2, 2, 2]
    with pytest.raises(ValueError, match="seed"):
        eval_seeds(-1, 3)
    with pytest.raises(ValueError, match="n_episodes must be >= 1, got 0"):
        evaluate(lambda obs: np.zeros(1, np.float32), env, n_episodes=0)
    with pytest.raises(ValueError, match="at least one episode"):
        evaluate(lambda obs: np.zeros(1, np.float32), env, seeds=[])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_episodes": True}, TypeError, "n_episodes must be an integer"),  # it ran one episode
        ({"n_episodes": 2.0}, TypeError, "n_episodes must be an integer"),
        ({"deterministic": "no"}, TypeError, "deterministic"),  # it meant True
        ({"seeds": [3, -1]}, ValueError, r"seeds\[\] must be >= 0"),
        ({"seeds": [3.5]}, TypeError, r"seeds\[\] must be an integer"),
    ],
)
def test_evaluate_refuses_bad_arguments_naming_them(kwargs, exc, match):
    env = SeedRecorder()
    with pytest.raises(exc, match=match):
        evaluate(lambda obs: np.zeros(1, np.float32), env, **kwargs)
    assert env.seeds == []  # refused before any episode ran


def test_evaluate_takes_numpy_integer_seeds():
    env = SeedRecorder()
    evaluate(lambda obs: np.zeros(1, np.float32), env, seeds=[np.int64(4), np.uint8(5)])
    assert env.seeds == [4, 5] and all(type(s) is int for s in env.seeds)


def test_a_numpy_bool_is_a_flag():
    # numpy 2 names its bool scalar type "bool", and the check looked for "bool_": np.bool_(True) was refused
    env = SeedRecorder()
    evaluate(lambda obs: np.zeros(1, np.float32), env, seeds=[2], deterministic=np.bool_(False))
    assert env.seeds == [2]
