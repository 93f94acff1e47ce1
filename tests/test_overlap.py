"""DAPG with two env groups in flight (``overlap=True``): the same episodes, frames and actions as lockstep sampling.

The overlapped loop encodes one half of the envs while the other half steps in its worker processes. It keeps the
lockstep order of encodes and of episode assignment, so without EMA-BN updates a run is bit-identical on the CPU to a
lockstep run (and to a one-env run); with per-frame EMA-BN updates the statistics cross a half-batch boundary in
float32 instead of one float64 pass, a rounding-level difference.
"""

from __future__ import annotations

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from hindex_sb3.callbacks import EMABatchNormCallback
from hindex_sb3.dapg import DAPG
from hindex_sb3.dapg.dapg import _env_groups
from hindex_sb3.dapg.npg import get_flat_params
from hindex_sb3.vec_env import SharedMemoryVecEnv

pytestmark = pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")

ENV_KWARGS = {"image_size": 32, "max_episode_steps": 6}
N_TRAJECTORIES = 5  # more episodes than envs: freed envs take the next episode mid-iteration


def _venv(kind, n_envs: int):
    if kind is None:
        return make_vec_env("HInDex/Door-v0", n_envs=n_envs, env_kwargs=ENV_KWARGS)
    return make_vec_env("hindex_sb3:HInDex/Door-v0", n_envs=n_envs, env_kwargs=ENV_KWARGS, vec_env_cls=kind)


def record_paths(model: DAPG) -> list:
    """Each iteration's sampled episodes, copied before the update (which frees ``model._paths``)."""
    recorded: list = []
    train = model.train

    def recording_train() -> None:
        recorded.extend(model._paths)
        train()

    model.train = recording_train  # type: ignore[method-assign]
    return recorded


def _run(venv, overlap: bool, momentum: float = 0.0, monkeypatch=None) -> dict:
    from tiny_encoder import tiny_policy_kwargs

    calls = {"overlapped": 0}
    if monkeypatch is not None:
        original = DAPG._overlapped_steps

        def counting(self, *args, **kwargs):
            calls["overlapped"] += 1
            yield from original(self, *args, **kwargs)

        monkeypatch.setattr(DAPG, "_overlapped_steps", counting)
    try:
        model = DAPG(
            "MultiInputPolicy",
            venv,
            n_trajectories=N_TRAJECTORIES,
            policy_kwargs=tiny_policy_kwargs(),
            seed=3,
            device="cpu",
            overlap=overlap,
        )
        callback = EMABatchNormCallback(momentum) if momentum else None
        recorded = record_paths(model)
        for k in range(2):
            model.learn(1, reset_num_timesteps=k == 0, callback=callback)
        buffers = {k: v.clone() for k, v in model.policy.state_dict().items() if "running_" in k}
        paths = [(p.actions.copy(), p.rewards.copy()) for p in recorded]
        assert len(paths) == 2 * N_TRAJECTORIES
        return {
            "params": get_flat_params(list(model.policy.parameters())),
            "buffers": buffers,
            "paths": paths,
            "timesteps": model.num_timesteps,
            "overlapped": calls["overlapped"],
        }
    finally:
        venv.close()


def test_env_groups_split_the_used_envs_in_order():
    assert _env_groups(5, True) == [[0, 1, 2], [3, 4]]
    assert _env_groups(2, True) == [[0], [1]]
    assert _env_groups(1, True) == [[0]]
    assert _env_groups(4, False) == [[0, 1, 2, 3]]
    # workers of several envs: the halves split between workers, so that no worker serves both
    assert _env_groups(32, True, 4) == [list(range(16)), list(range(16, 32))]
    assert _env_groups(10, True, 4) == [list(range(8)), [8, 9]]
    assert _env_groups(12, True, 8) == [list(range(8)), [8, 9, 10, 11]]
    assert _env_groups(4, True, 4) == [[0, 1], [2, 3]]  # one worker: no boundary to split at


@pytest.mark.parametrize(("kind", "n_envs"), [(SharedMemoryVecEnv, 3), (SubprocVecEnv, 4)])
def test_overlapped_rollouts_are_bit_identical_to_lockstep(kind, n_envs, monkeypatch):
    reference = _run(_venv(None, 1), overlap=False)
    overlapped = _run(_venv(kind, n_envs), overlap=True, monkeypatch=monkeypatch)
    assert overlapped["overlapped"] == 2  # one overlapped rollout per iteration: the path under test ran
    assert overlapped["timesteps"] == reference["timesteps"] == 2 * N_TRAJECTORIES * 6
    for (a, r), (a_ref, r_ref) in zip(overlapped["paths"], reference["paths"], strict=True):
        assert (a == a_ref).all() and (r == r_ref).all()
    assert th.equal(overlapped["params"], reference["params"])


def test_overlap_has_no_effect_without_worker_processes(monkeypatch):
    run = _run(_venv(None, 3), overlap=True, monkeypatch=monkeypatch)
    assert run["overlapped"] == 0


def test_overlapped_ema_bn_updates_follow_the_lockstep_frame_order():
    """Same envs and frame order as a lockstep run of 4 envs; per-frame statistics agree to float32 rounding."""
    lockstep = _run(_venv(SubprocVecEnv, 4), overlap=False, momentum=0.1)
    overlapped = _run(_venv(SubprocVecEnv, 4), overlap=True, momentum=0.1)
    assert lockstep["buffers"] and lockstep["buffers"].keys() == overlapped["buffers"].keys()
    initial = {k: v for k, v in _run(_venv(None, 1), overlap=False)["buffers"].items()}
    for key, value in lockstep["buffers"].items():
        assert not th.equal(value, initial[key])  # the statistics did move
        assert th.allclose(overlapped["buffers"][key], value, rtol=1e-5, atol=1e-6), key
    # first iteration: the same policy and statistics equal to float32 rounding, so the same actions; the second
    # starts from an NPG step on features that differed by that rounding (measured: 4e-4 to 7e-4)
    for i, ((a, _), (a_ref, _)) in enumerate(zip(overlapped["paths"], lockstep["paths"], strict=True)):
        assert abs(a - a_ref).max() < (1e-6 if i < N_TRAJECTORIES else 3e-3), i


def test_overlap_must_be_a_bool():
    with pytest.raises(TypeError, match="overlap"):
        DAPG("MlpPolicy", "HInDex/Door-v0", overlap=1)
