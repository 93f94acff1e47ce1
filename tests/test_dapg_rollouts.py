"""DAPG's episode sampling: exactly N seeded episodes per iteration, the same run whatever n_envs or processes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
)

from hindex_sb3.dapg import DAPG
from hindex_sb3.dapg.npg import get_flat_params
from hindex_sb3.dapg.rollout import EpisodeRunner, episode_seeds


class SeedLengthEnv(gym.Env):
    """Episodes whose length depends on the reset seed (3..6 steps), terminating early for odd seeds.

    Every reset and step is written to ``log`` (shared by the envs of a DummyVecEnv) as ``(env, event, seed)``.
    The first observation encodes the seed, so a path can be traced back to the episode it came from.
    """

    def __init__(self, log: list, name: int) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)
        self.log, self.name = log, name
        self._seed: int | None = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._seed, self._t = (-1 if seed is None else seed), 0  # -1: an unseeded (auto-)reset
        self._length = 3 + self._seed % 4
        self.log.append((self.name, "reset", seed))
        return np.array([self._seed, 0], np.float32), {}

    def step(self, action):
        assert self._t < self._length, "stepped after the episode ended"
        self._t += 1
        self.log.append((self.name, "step", self._seed))
        end = self._t >= self._length
        terminated = end and self._seed % 2 == 1
        reward = float(self._seed) + self._t / 10  # identifies the episode and the step
        return np.array([self._seed, self._t], np.float32), reward, terminated, end and not terminated, {}


def _counting_model(n_envs: int, n_trajectories: int, seed: int = 7) -> tuple[DAPG, list]:
    log: list = []
    venv = DummyVecEnv([lambda j=j: SeedLengthEnv(log, j) for j in range(n_envs)])
    model = DAPG(
        "MlpPolicy", venv, n_trajectories=n_trajectories, bc_epochs=0, policy_kwargs={"net_arch": [4]}, seed=seed
    )
    model.set_logger(configure(None, []))
    return model, log


class _Nothing(BaseCallback):
    def _on_step(self) -> bool:
        return True


def _collect(model: DAPG) -> None:
    _, callback = model._setup_learn(1, _Nothing(), reset_num_timesteps=False)
    model.env.envs[0].log.clear()  # SB3's set-up reset of every env is not part of the iteration
    assert model.collect_rollouts(model.env, callback, None, 1)


@pytest.mark.parametrize("n_envs", [1, 2, 3, 5])
def test_each_iteration_runs_exactly_n_complete_episodes_with_mjrl_seeds(n_envs):
    """2 envs, 3 trajectories used to run 4 episodes and drop one; now every started episode is used, in order."""
    model, log = _counting_model(n_envs, n_trajectories=3)
    for k in range(2):
        before = model.num_timesteps
        _collect(model)
        expected = [7 + 3 * k + i for i in range(3)]  # mjrl: base = seed + k * N, episode i: base + i
        resets = [s for _, event, s in log if event == "reset"]
        assert None not in resets and sorted(resets) == expected  # no auto-reset, no episode beyond the N
        lengths = [3 + s % 4 for s in expected]
        assert sum(event == "step" for _, event, _ in log) == sum(lengths)  # no episode started and dropped
        assert model.num_timesteps - before == sum(lengths)
        paths = model._paths  # in episode order, not in the order they finished
        assert [int(p.features[0, 0]) for p in paths] == expected
        assert [int(p.rewards[0]) for p in paths] == expected
        assert [len(p.rewards) for p in paths] == lengths
        assert [p.terminated for p in paths] == [s % 2 == 1 for s in expected]
        model.dapg_iterations += 1
        log.clear()


def test_an_env_with_no_episode_left_is_not_stepped():
    model, log = _counting_model(n_envs=4, n_trajectories=2)
    _collect(model)
    assert {name for name, _, _ in log} == {0, 1}  # envs 2 and 3 rest: neither reset nor stepped


def test_episode_seeds_and_noise_streams_are_distinct_and_depend_only_on_seed_iteration_and_index():
    a = episode_seeds(5, 3, 4)
    assert [e.env_seed for e in a] == [17, 18, 19, 20]
    assert a == episode_seeds(5, 3, 4)
    noise = {e.noise_seed for k in range(3) for e in episode_seeds(5, k, 4)}
    assert len(noise) == 12
    assert {e.noise_seed for e in episode_seeds(6, 0, 4)}.isdisjoint(noise)
    with pytest.raises(ValueError, match="seed"):
        episode_seeds(-1, 0, 4)


def _door_run(n_envs: int, subproc: bool, pixels: bool = False) -> th.Tensor:
    kwargs = {"obs_mode": "state", "max_episode_steps": 12}
    env_id = "HInDex/Door-v0"
    vec_kwargs = {"vec_env_cls": SubprocVecEnv} if subproc else {}
    venv = make_vec_env(f"hindex_sb3:{env_id}" if subproc else env_id, n_envs=n_envs, env_kwargs=kwargs, **vec_kwargs)
    try:
        model = DAPG("MlpPolicy", venv, n_trajectories=5, policy_kwargs={"net_arch": [16, 16]}, seed=3, device="cpu")
        for k in range(2):
            model.learn(1, reset_num_timesteps=k == 0)
        assert model.dapg_iterations == 2 and model.num_timesteps == 2 * 5 * 12
        return get_flat_params(list(model.policy.parameters()))
    finally:
        venv.close()


def test_state_door_run_is_bit_identical_whatever_n_envs_and_processes():
    reference = _door_run(1, subproc=False)
    assert th.equal(reference, _door_run(3, subproc=False))
    assert th.equal(reference, _door_run(3, subproc=True))


def test_vec_env_wrappers_that_would_be_bypassed_are_refused_with_the_reason():
    def venv():
        return DummyVecEnv([lambda: SeedLengthEnv([], 0)])

    with pytest.raises(ValueError, match=r"VecNormalize.*raw demonstration.*in_shift"):
        DAPG("MlpPolicy", VecNormalize(venv()), seed=0)
    for wrapper in (VecMonitor, lambda v: VecFrameStack(v, 2)):
        with pytest.raises(ValueError, match=r"cannot run under Vec(Monitor|FrameStack).*gymnasium wrapper"):
            DAPG("MlpPolicy", wrapper(venv()), seed=0)


class ChannelLastEnv(gym.Env):
    observation_space = spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.integers(0, 255, (16, 16, 3), dtype=np.uint8), {}

    def step(self, action):
        self._t += 1
        return self.np_random.integers(0, 255, (16, 16, 3), dtype=np.uint8), 0.0, False, self._t >= 3, {}


def test_transposed_images_are_supported_and_seen_as_the_vec_env_would_show_them():
    venv = VecTransposeImage(DummyVecEnv([ChannelLastEnv, ChannelLastEnv]))
    runner = EpisodeRunner(venv)
    obs = runner.reset({1: 4})[1]
    assert obs.shape == (3, 16, 16) and obs.dtype == np.uint8
    direct, _ = ChannelLastEnv().reset(seed=4)
    np.testing.assert_array_equal(obs, direct.transpose(2, 0, 1))
    kwargs = {"net_arch": [4], "features_extractor_class": FlattenExtractor}
    model = DAPG("CnnPolicy", venv, n_trajectories=3, bc_epochs=0, seed=0, device="cpu", policy_kwargs=kwargs)
    model.learn(1)
    assert model.num_timesteps == 9 and model.dapg_iterations == 1


def _pixel_run(venv) -> th.Tensor:
    from tiny_encoder import tiny_policy_kwargs

    try:
        model = DAPG(
            "MultiInputPolicy", venv, n_trajectories=5, policy_kwargs=tiny_policy_kwargs(), seed=3, device="cpu"
        )
        for k in range(2):
            model.learn(1, reset_num_timesteps=k == 0)
        return get_flat_params(list(model.policy.parameters()))
    finally:
        venv.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")
def test_pixel_door_run_with_a_frozen_encoder_is_bit_identical_whatever_n_envs():
    """The encoder runs batched over the active envs; on the CPU its features did not change with the batch size."""
    kwargs = {"image_size": 32, "max_episode_steps": 10}
    reference = _pixel_run(make_vec_env("HInDex/Door-v0", n_envs=1, env_kwargs=kwargs))
    assert th.equal(reference, _pixel_run(make_vec_env("HInDex/Door-v0", n_envs=3, env_kwargs=kwargs)))
    subproc = make_vec_env("hindex_sb3:HInDex/Door-v0", n_envs=2, env_kwargs=kwargs, vec_env_cls=SubprocVecEnv)
    assert th.equal(reference, _pixel_run(subproc))
