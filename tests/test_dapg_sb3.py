"""DAPG under SB3's conventions: callback forms and locals, progress bars, policy files, ``set_env``, policy kwargs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from test_dapg import LinearEnv, linear_demos, make_model

from hindex_sb3.dapg import DAPG
from hindex_sb3.dapg.callbacks import StepProgressBar
from hindex_sb3.dapg.dapg import _learn_callbacks
from hindex_sb3.dapg.policies import DAPGPolicy

HORIZON = 20  # LinearEnv's


def two_env_model(**kwargs) -> DAPG:
    """Two envs, three episodes an iteration: the third episode runs alone, the other env idle."""
    venv = DummyVecEnv([LinearEnv, LinearEnv])
    kwargs.setdefault("policy_kwargs", {"net_arch": [8, 8]})
    return DAPG("MlpPolicy", venv, n_trajectories=3, seed=0, device="cpu", **kwargs)


class _Spy(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.total_at_start: list[int] = []
        self.steps: list[dict] = []

    def _on_training_start(self) -> None:
        self.total_at_start.append(self.locals["total_timesteps"])

    def _on_step(self) -> bool:
        self.steps.append({k: self.locals.get(k) for k in ("env_indices", "rewards", "dones", "infos", "new_obs")})
        return True


def test_a_function_is_a_callback_as_in_sb3():
    calls = []

    def stop_after_five(local_vars, global_vars) -> bool:
        calls.append(local_vars["dones"])
        return len(calls) < 5

    model = make_model()
    model.learn(total_timesteps=10 * HORIZON, callback=stop_after_five)
    assert len(calls) == 5 and model.num_timesteps == 5  # False stopped the rollout at once, as SB3's do
    with pytest.raises(TypeError, match="callback must be a BaseCallback, a function"):
        make_model().learn(total_timesteps=1, callback=[5])


def test_callbacks_read_the_absolute_step_target_and_the_envs_each_step_stepped():
    model, spy = two_env_model(), _Spy()
    model.learn(total_timesteps=3 * HORIZON, callback=spy)
    model.learn(total_timesteps=3 * HORIZON, callback=spy, reset_num_timesteps=False)
    assert spy.total_at_start == [3 * HORIZON, 6 * HORIZON]  # what SB3's learn() leaves in total_timesteps
    sizes = [len(s["env_indices"]) for s in spy.steps]
    assert sum(sizes) == model.num_timesteps == 6 * HORIZON
    assert sizes[:HORIZON] == [2] * HORIZON and sizes[HORIZON : 2 * HORIZON] == [1] * HORIZON  # the third episode
    for step in spy.steps:
        n = len(step["env_indices"])
        assert len(step["rewards"]) == len(step["dones"]) == len(step["infos"]) == n
        assert set(step["env_indices"]) <= {0, 1}
    assert spy.steps[2 * HORIZON - 1]["new_obs"] is None  # the iteration's last step: nothing left to encode


def test_the_step_progress_bar_counts_the_steps_taken_not_num_envs_per_step():
    assert isinstance(_learn_callbacks(None, True, None)[-1], StepProgressBar)  # what progress_bar=True adds
    model = two_env_model()
    model.learn(total_timesteps=3 * HORIZON)
    bar = StepProgressBar()
    model.learn(total_timesteps=3 * HORIZON, callback=bar, reset_num_timesteps=False)
    assert bar.pbar.total == 3 * HORIZON  # the steps still to run, not 0
    assert bar.pbar.n == model.num_timesteps - 3 * HORIZON == 3 * HORIZON  # SB3's bar would count 4 * HORIZON


def test_policy_files_keep_the_baseline_optimiser(tmp_path):
    kwargs = {"net_arch": [8, 8], "optimizer_class": th.optim.AdamW, "optimizer_kwargs": {"weight_decay": 0.5}}
    model = make_model(policy_kwargs=kwargs)
    model.policy.save(tmp_path / "policy.pt")
    loaded = DAPGPolicy.load(tmp_path / "policy.pt")
    assert loaded.optimizer_class is th.optim.AdamW and loaded.optimizer_kwargs == {"weight_decay": 0.5}
    assert isinstance(loaded.optimizer, th.optim.AdamW) and loaded.optimizer.defaults["weight_decay"] == 0.5


def test_net_arch_vf_sizes_the_value_baseline_as_sb3_reads_it():
    model = make_model(policy_kwargs={"net_arch": {"pi": [8], "vf": [7, 5]}})
    sizes = [m.out_features for m in model.policy.value_net if isinstance(m, th.nn.Linear)]
    assert model.policy.net_arch == [8] and sizes == [7, 5, 1]
    assert [m.out_features for m in make_model().policy.value_net if isinstance(m, th.nn.Linear)] == [128, 128, 1]
    for policy_kwargs, match in [
        ({"net_arch": {"pi": [8], "vf": [7]}, "vf_arch": [5]}, "given twice"),
        ({"net_arch": {"pi": [8], "qf": [7]}}, "net_arch keys must be 'pi' and 'vf'"),
        ({"share_features_extractor": False}, "share_features_extractor=False is not supported"),
        ({"share_features_extractor": "no"}, "share_features_extractor must be True or False"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            make_model(policy_kwargs=policy_kwargs)


def test_set_env_refuses_a_wrapper_learn_would_refuse_and_keeps_the_env_it_had():
    model = two_env_model()
    env = model.get_env()
    with pytest.raises(ValueError, match="VecNormalize"):
        model.set_env(VecNormalize(DummyVecEnv([LinearEnv, LinearEnv])))
    assert model.get_env() is env
    model.set_env(DummyVecEnv([LinearEnv, LinearEnv]))  # a plain one is taken


def test_learn_warns_when_a_loaded_model_lost_its_demonstrations(tmp_path):
    model = make_model(demos=linear_demos(), n_trajectories=2)
    model.learn(total_timesteps=1)
    model.save(tmp_path / "dapg.zip")
    loaded = DAPG.load(tmp_path / "dapg.zip", env=LinearEnv(), device="cpu")
    with pytest.warns(UserWarning, match="learned with 4 demonstrations"):
        loaded.learn(total_timesteps=1, reset_num_timesteps=False)
    loaded.set_demonstrations(linear_demos())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.learn(total_timesteps=1, reset_num_timesteps=False)
        make_model(n_trajectories=2).learn(total_timesteps=1)  # NPG from the start: nothing was lost
    np.testing.assert_equal(loaded.dapg_iterations, 3)
