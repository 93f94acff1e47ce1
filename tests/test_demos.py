"""Demonstration formats, safe loading, expert rollouts and pixel conversion."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest

from hindex_sb3.demos import (
    Trajectory,
    check_compatible,
    load_dapg_pickle,
    load_minari,
    load_npz,
    render_states,
    replay,
    rollout,
    save_npz,
    stack_transitions,
    to_trajectories,
)
from hindex_sb3.experts import NpzMLPPolicy


def _dapg_dicts(n=3, t=7):
    rng = np.random.default_rng(0)
    return [
        {
            "observations": rng.normal(size=(t, 39)),
            "actions": rng.normal(size=(t, 28)),
            "rewards": rng.normal(size=t),
            "init_state_dict": {"qpos": np.zeros(30), "qvel": np.zeros(30), "door_body_pos": np.array([-0.2, 0.3, 0.3])}
            | {"extra": np.zeros(1)},
        }
        for _ in range(n)
    ]


def test_duck_typed_containers():
    @dataclass
    class ImitationLike:  # imitation's Trajectory: T + 1 observations
        obs: np.ndarray
        acts: np.ndarray
        infos: None = None
        terminal: bool = True

    @dataclass
    class MinariLike:  # Minari's EpisodeData
        observations: np.ndarray
        actions: np.ndarray
        rewards: np.ndarray

    obs = np.arange(12.0).reshape(6, 2)
    a = to_trajectories(ImitationLike(obs, np.ones((5, 1))))
    b = to_trajectories([MinariLike(obs, np.ones((5, 1)), np.zeros(5))])
    c = to_trajectories({"observations": obs[:5], "actions": np.ones((5, 1))})
    for trajs in (a, b, c):
        assert len(trajs) == 1 and len(trajs[0]) == 5
        np.testing.assert_array_equal(trajs[0].observations, obs[:5])
    with pytest.raises(TypeError, match="observations/actions"):
        to_trajectories([{"foo": 1}])
    with pytest.raises(ValueError, match="empty"):
        to_trajectories([])


def test_stack_and_dict_observations():
    t1 = Trajectory({"pixels": np.zeros((3, 3, 16, 16), np.uint8), "proprio": np.ones((3, 24))}, np.zeros((3, 28)))
    t2 = Trajectory({"pixels": np.ones((2, 3, 16, 16), np.uint8), "proprio": np.zeros((2, 24))}, np.ones((2, 28)))
    obs, acts = stack_transitions([t1, t2])
    assert obs["pixels"].shape == (5, 3, 16, 16) and obs["pixels"].dtype == np.uint8 and acts.shape == (5, 28)
    env = gym.make("HInDex/Door-v0", image_size=16)
    check_compatible([t1, t2], env.observation_space, env.action_space)
    with pytest.raises(ValueError, match="'pixels' has shape"):
        check_compatible([t1], gym.make("HInDex/Door-v0", image_size=32).observation_space, env.action_space)
    env.close()


def test_dapg_pickle_loads_and_malicious_pickle_is_refused(tmp_path):
    good = tmp_path / "door-v0_demos.pickle"
    good.write_bytes(pickle.dumps(_dapg_dicts()))
    trajs = load_dapg_pickle(good)
    assert len(trajs) == 3 and trajs[0].observations.shape == (7, 39)
    assert set(trajs[0].init_state) == {"qpos", "qvel", "door_body_pos", "extra"}

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pickle"
    bad.write_bytes(pickle.dumps([{"observations": np.zeros((1, 2)), "actions": Exploit()}]))
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load posix\.system"):
        load_dapg_pickle(bad)
    assert not marker.exists()
    corrupt = tmp_path / "corrupt.pickle"
    corrupt.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        load_dapg_pickle(corrupt)


def test_npz_round_trip_array_and_dict(tmp_path):
    trajs = to_trajectories(_dapg_dicts())
    path = save_npz(trajs, tmp_path / "demos.npz")
    back = load_npz(path)
    assert len(back) == 3
    for a, b in zip(trajs, back, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        np.testing.assert_array_equal(a.init_state["door_body_pos"], b.init_state["door_body_pos"])
    pix = Trajectory({"pixels": np.zeros((2, 3, 4, 4), np.uint8), "proprio": np.ones((2, 24))}, np.zeros((2, 28)))
    back = load_npz(save_npz([pix], tmp_path / "pix.npz"))
    assert back[0].observations["pixels"].dtype == np.uint8 and set(back[0].observations) == {"pixels", "proprio"}
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="n_demos"):
        load_npz(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_reads_shared_door_demos(shared_data):
    trajs = load_npz(shared_data / "door-human-v0.npz")
    assert len(trajs) == 25 and sum(len(t) for t in trajs) == 6729
    assert set(trajs[0].init_state) == {"qpos", "qvel", "door_body_pos"}


def test_rollout_of_npz_expert_and_pixel_replay(shared_data):
    expert = NpzMLPPolicy.load(shared_data / "door-expert-v0.npz")
    state_demos = rollout("HInDex/Door-v0", expert, n_episodes=2, seed=0, env_kwargs={"obs_mode": "state"})
    assert all(t.infos["is_success"] for t in state_demos) and len(state_demos[0]) == 200
    pixel_env = gym.make("HInDex/Door-v0", image_size=32, obs_mode="all")
    pixel_demos = replay(state_demos, pixel_env, keys=("pixels", "proprio", "state"))
    # deterministic physics: the replay reproduces the state trajectory and its success
    np.testing.assert_allclose(pixel_demos[0].observations["state"], state_demos[0].observations, atol=1e-9)
    assert pixel_demos[0].observations["pixels"].shape == (200, 3, 32, 32)
    assert pixel_demos[0].infos["is_success"]
    pixel_env.close()


def test_rollout_feeds_state_to_expert_in_pixel_env(shared_data):
    expert = NpzMLPPolicy.load(shared_data / "relocate-expert-v0.npz")
    env = gym.make("HInDex/Relocate-v0", obs_mode="all", image_size=24, max_episode_steps=5)
    trajs = rollout(env, expert, n_episodes=1, policy_obs_key="state", record_keys=("pixels", "proprio"))
    assert set(trajs[0].observations) == {"pixels", "proprio"} and len(trajs[0]) == 5
    env.close()


def test_rollout_of_sb3_model_and_callable():
    env = gym.make("HInDex/Pen-v0", obs_mode="state", max_episode_steps=4)
    calls = []

    class Scripted:
        def reset(self):
            calls.append("reset")

        def __call__(self, obs):
            return np.zeros(24)

    trajs = rollout(env, Scripted(), n_episodes=2)
    assert calls == ["reset", "reset"] and len(trajs) == 2 and trajs[0].actions.shape == (4, 24)
    with pytest.raises(RuntimeError, match="only 0 of 1"):
        rollout(env, Scripted(), n_episodes=1, only_successful=True, max_attempts=2)
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, n_steps=8, seed=0)
    assert len(rollout(env, model, n_episodes=1)[0]) == 4
    env.close()


def test_minari_dataset_with_states_renders_exactly(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("HInDex/Door-v0", obs_mode="state", max_episode_steps=6)
    obs, _ = env.reset(seed=1)
    states = {k: [] for k in ("qpos", "qvel", "door_body_pos")}
    observations, actions, rewards = [obs], [], []
    rng = np.random.default_rng(0)
    for _ in range(6):
        for k, v in env.unwrapped.get_env_state().items():
            states[k].append(v)
        a = rng.uniform(-1, 1, 28).astype(np.float32)
        obs, r, *_ = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(r)
    buffer = EpisodeBuffer(
        observations=observations,
        actions=actions,
        rewards=rewards,
        terminations=[False] * 6,
        truncations=[False] * 5 + [True],
        infos={"state": {k: np.stack(v) for k, v in states.items()}},
    )
    minari.create_dataset_from_buffers(
        "hindex/door/test-v0",
        [buffer],
        observation_space=env.observation_space,
        action_space=env.action_space,
        algorithm_name="random",
    )
    trajs = load_minari("hindex/door/test-v0")
    assert len(trajs) == 1 and len(trajs[0]) == 6 and set(trajs[0].init_state) == set(states)
    pix_env = gym.make("HInDex/Door-v0", obs_mode="all", image_size=24)
    rendered = render_states(trajs, pix_env, keys=("pixels", "state"))
    assert rendered[0].observations["pixels"].shape == (6, 3, 24, 24)
    # restoring each recorded state reproduces the (consistent) recorded hinge angle exactly
    np.testing.assert_allclose(rendered[0].observations["state"][:, 28], np.stack(states["qpos"])[:, 28])
    with pytest.raises(FileNotFoundError, match="MINARI_DATASETS_PATH"):
        load_minari("hindex/door/absent-v0")
    env.close()
    pix_env.close()
