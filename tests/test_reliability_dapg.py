"""``DAPG`` constructor arguments: types, ranges and finiteness checked before SB3 builds anything (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from hindex_sb3.dapg import DAPG


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_trajectories": 0}, ValueError, "n_trajectories must be >= 1, got 0"),
        ({"n_trajectories": True}, TypeError, "n_trajectories must be an integer"),
        ({"n_trajectories": 2.5}, TypeError, "n_trajectories must be an integer"),
        ({"step_size": float("nan")}, ValueError, "step_size must be finite"),
        ({"step_size": 0.0}, ValueError, "step_size must be > 0.0"),
        ({"gamma": 1.5}, ValueError, "gamma must be <= 1.0"),
        ({"gae_lambda": -0.1}, ValueError, "gae_lambda must be >= 0.0"),
        ({"lam0": float("inf")}, ValueError, "lam0 must be finite"),
        ({"lam1": "0.95"}, TypeError, "lam1 must be a real number"),
        ({"bc_epochs": -1}, ValueError, "bc_epochs must be >= 0"),
        ({"bc_batch_size": 0}, ValueError, "bc_batch_size must be >= 1"),
        ({"bc_lr": float("nan")}, ValueError, "bc_lr must be finite"),
        ({"cg_iters": 0}, ValueError, "cg_iters must be >= 1"),
        ({"cg_damping": -1e-4}, ValueError, "cg_damping must be >= 0.0"),
        ({"hvp_sample_frac": 0.0}, ValueError, "hvp_sample_frac must be > 0.0"),
        ({"vf_batch_size": False}, TypeError, "vf_batch_size must be an integer"),
        ({"input_scale_floor": -1.0}, ValueError, "input_scale_floor must be >= 0.0"),
        ({"feature_batch_size": 0}, ValueError, "feature_batch_size must be >= 1"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be finite"),
        ({"learning_rate": -1e-3}, ValueError, "learning_rate must be > 0.0"),
        ({"demo_weight": "max"}, ValueError, "demo_weight must be one of"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": True}, TypeError, "seed must be an integer"),
    ],
)
def test_dapg_checks_its_arguments_before_building_anything(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DAPG("MlpPolicy", "Pendulum-v1", **kwargs)


def test_valid_dapg_arguments_still_build():
    model = DAPG(
        "MlpPolicy", "Pendulum-v1", n_trajectories=np.int64(2), gamma=np.float32(0.99), learning_rate=lambda _: 1e-3
    )
    assert model.n_trajectories == 2


def test_a_numpy_integer_seed_seeds_as_the_same_python_int():
    # np.random.randint and friends hand out numpy integers; Python's random.seed refuses them (3.11+)
    def params(seed):
        model = DAPG("MlpPolicy", "Pendulum-v1", seed=seed, n_trajectories=2)
        assert type(model.seed) is int and model.seed == 7
        return [p.detach().clone() for p in model.policy.parameters()]

    for a, b in zip(params(np.int64(7)), params(7), strict=True):
        assert (a == b).all()
