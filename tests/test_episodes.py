"""The shared episode loop (hindex_sb3.episodes) against hand-computed episodes of a tiny deterministic env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hindex_sb3.episodes import run_episode


class Counter(gym.Env):
    """obs = step count t; reward = action * (t + 1); terminates when obs reaches ``goal``, truncates at ``horizon``.

    ``reset(seed=s)`` starts the count at ``s % 3`` so seeds are visible in the result; ``options={"start": k}``
    overrides it.
    """

    observation_space = gym.spaces.Box(0, 100, (), np.int64)
    action_space = gym.spaces.Box(-10, 10, (), np.float32)

    def __init__(self, goal: int = 5, horizon: int = 100):
        self.goal, self.horizon = goal, horizon
        self.resets: list[tuple] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets.append((seed, options))
        self.t = (options or {}).get("start", 0 if seed is None else seed % 3)
        self.n = 0
        return self.t, {}

    def step(self, action):
        self.t += 1
        self.n += 1
        reward = float(action) * self.t
        terminated = self.t >= self.goal
        truncated = not terminated and self.n >= self.horizon
        return self.t, reward, terminated, truncated, {"is_success": terminated, "t": self.t}


def test_termination_return_length_success_and_steps():
    env = Counter(goal=5)
    steps, starts = [], []
    ep = run_episode(env, lambda obs: 2.0, seed=4, on_reset=starts.append, on_step=steps.append)
    # seed 4 -> start at 1; actions until t = 5: t = 2, 3, 4, 5, rewards 2 * t
    assert starts == [1]
    assert env.resets == [(4, None)]
    assert ep.length == 4
    assert ep.total_return == 2.0 * (2 + 3 + 4 + 5)
    assert ep.terminated and not ep.truncated and ep.done and ep.success
    assert ep.final_obs == 5 and ep.info == {"is_success": True, "t": 5}
    assert [s.obs for s in steps] == [1, 2, 3, 4]
    assert [s.next_obs for s in steps] == [2, 3, 4, 5]
    assert [s.reward for s in steps] == [4.0, 6.0, 8.0, 10.0]
    assert [s.terminated for s in steps] == [False, False, False, True]


def test_truncation_is_not_success():
    ep = run_episode(Counter(goal=50, horizon=3), lambda obs: 1.0, seed=0)
    assert ep.length == 3 and ep.truncated and not ep.terminated and ep.done and not ep.success
    assert ep.total_return == 1.0 + 2.0 + 3.0


def test_max_steps_stops_before_the_env_does():
    ep = run_episode(Counter(goal=50), lambda obs: 1.0, options={"start": 10}, max_steps=2)
    assert ep.length == 2 and not ep.done and not ep.success
    assert ep.total_return == 11.0 + 12.0 and ep.final_obs == 12


def test_max_steps_zero_only_resets():
    env = Counter()
    ep = run_episode(env, lambda obs: pytest.fail("no action expected"), seed=2, max_steps=0)
    assert (ep.length, ep.total_return, ep.final_obs, ep.info, ep.done) == (0, 0.0, 2, {}, False)
    assert env.resets == [(2, None)]


def test_act_sees_each_observation_and_its_action_is_stepped():
    seen = []

    def act(obs):
        seen.append(obs)
        return float(obs)  # reward = t_before * t_after

    ep = run_episode(Counter(goal=4), act, seed=0)
    assert seen == [0, 1, 2, 3]
    assert ep.total_return == 0 * 1 + 1 * 2 + 2 * 3 + 3 * 4


@pytest.mark.parametrize("bad", [-1, True, 2.0])
def test_bad_max_steps(bad):
    with pytest.raises((TypeError, ValueError), match="max_steps"):
        run_episode(Counter(), lambda obs: 1.0, max_steps=bad)


# seed 7 starts the count at 1 and the goal is 3: steps 1, 2 reach t = 2, 3 (terminated, so reset to 0 unseeded),
# step 3 reaches t = 1
@pytest.mark.parametrize(("steps", "last_obs", "resets"), [(0, 1, 1), (1, 2, 1), (2, 0, 2), (3, 1, 2)])
def test_demo_step_budget_restarts_ended_episodes(steps, last_obs, resets):
    """``hindex demo``: a budget of random steps across episodes; an episode ending on the last step is reset."""
    from hindex_sb3.cli import _random_steps

    env = Counter(goal=3)
    obs, rate = _random_steps(env, 7, steps)
    assert env.resets == [(7, None)] + [(None, None)] * (resets - 1)
    assert obs == last_obs
    assert (rate is None) == (steps == 0)
