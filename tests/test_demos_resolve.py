"""Demonstrations by name: the same sources in ``DAPG(demos=...)`` as on the command line, in the env's format."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

from hindex_sb3.dapg import DAPG
from hindex_sb3.demos import Trajectory, save_npz
from hindex_sb3.demos.resolve import DEMO_SEED_OFFSET, load_demonstrations
from hindex_sb3.train import TrainConfig, load_demos

DOOR = "HInDex/Door-v0"


def _state_demos(n: int = 2, steps: int = 4) -> list[Trajectory]:
    """Short random-action door episodes in state mode, with their start states (what a teleop file holds)."""
    env = gym.make(DOOR, obs_mode="state")
    out = []
    for i in range(n):
        obs, _ = env.reset(seed=i)
        env.action_space.seed(i)
        init = env.unwrapped.get_env_state()
        observations, actions = [], []
        for _ in range(steps):
            action = env.action_space.sample() * 0.3
            observations.append(obs)
            actions.append(action)
            obs, *_ = env.step(action)
        out.append(Trajectory(np.stack(observations), np.stack(actions), init_state=init))
    env.close()
    return out


def _equal(a: list[Trajectory], b: list[Trajectory]) -> bool:
    def same(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        return np.array_equal(x, y)

    return len(a) == len(b) and all(
        same(s.observations, t.observations) and np.array_equal(s.actions, t.actions) for s, t in zip(a, b, strict=True)
    )


def test_dapg_takes_a_demonstration_file_by_name(tmp_path):
    path = save_npz(_state_demos(), tmp_path / "door-demos.npz")
    venv = make_vec_env(DOOR, n_envs=1, env_kwargs={"obs_mode": "state", "max_episode_steps": 5})
    for source in (str(path), path):
        model = DAPG("MlpPolicy", venv, demos=source, n_trajectories=2, bc_epochs=1, seed=0, device="cpu")
        assert _equal(model.demos, _state_demos())
    model.learn(1)
    assert model.bc_done and model.dapg_iterations == 1


def test_state_demonstrations_given_to_a_pixel_env_are_rerendered_from_their_start_states():
    demos = _state_demos()
    kwargs = {"image_size": 36, "max_episode_steps": 5}
    venv = make_vec_env(DOOR, n_envs=1, env_kwargs=kwargs)
    model = DAPG("MultiInputPolicy", venv, demos=demos, n_trajectories=1, bc_epochs=0, seed=0, device="cpu")
    assert model.demos[0].observations["pixels"].shape == (4, 3, 36, 36)
    from hindex_sb3.demos import replay

    expected = replay(demos, gym.make(DOOR, obs_mode="all", **kwargs), keys=("pixels", "proprio"))
    assert _equal(model.demos, expected)
    np.testing.assert_array_equal(model.demos[1].actions, demos[1].actions)


def test_state_demonstrations_without_start_states_name_replay():
    demos = [Trajectory(t.observations, t.actions) for t in _state_demos(1)]
    venv = make_vec_env(DOOR, n_envs=1, env_kwargs={"image_size": 36})
    with pytest.raises(ValueError, match=r"hindex_sb3\.demos\.replay"):
        DAPG("MultiInputPolicy", venv, demos=demos, seed=0, device="cpu")


def test_resolver_matches_train_load_demos_for_scripted_demonstrations():
    cfg = TrainConfig(task="door", encoder="state", demos="scripted", num_demos=2, seed=1)
    ours = load_demonstrations("scripted", DOOR, num_demos=2, seed=1, env_kwargs={"obs_mode": "state"})
    assert _equal(ours, load_demos(cfg, DOOR))
    assert ours[0].infos["seed"] >= DEMO_SEED_OFFSET + 1


def test_resolver_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"minari:ID.*scripted"):
        load_demonstrations(str(tmp_path / "nope.npz"), DOOR)
    (tmp_path / "demos.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown file type"):
        load_demonstrations(str(tmp_path / "demos.txt"), DOOR)
    with pytest.raises(ValueError, match="environment id"):
        load_demonstrations("scripted", None)
    with pytest.raises(ValueError, match="unknown demonstration source"):
        load_demonstrations("expert:", DOOR, env_kwargs={"obs_mode": "state"})
    with pytest.raises(TypeError, match="num_demos must be an integer"):
        load_demonstrations("scripted", DOOR, num_demos=True)
    assert load_demonstrations("none", DOOR) == []


def test_human_door_demos_by_name(shared_data):
    path = shared_data / "door-human-v0.npz"
    venv = make_vec_env(DOOR, n_envs=1, env_kwargs={"obs_mode": "state"})
    model = DAPG("MlpPolicy", venv, demos=str(path), seed=0, device="cpu")
    assert len(model.demos) == 25 and model.demos[0].observations.shape[1] == 39
    cfg = TrainConfig(task="door", encoder="state", demos=str(path), num_demos=3)
    assert _equal(
        load_demonstrations(str(path), DOOR, num_demos=3, env_kwargs={"obs_mode": "state"}), load_demos(cfg, DOOR)
    )
