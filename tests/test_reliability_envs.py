"""Env constructor and ``reset`` arguments from a careless or hostile caller (issue 11; docs/reliability.md)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest


@pytest.mark.parametrize(
    ("task", "kwargs", "exc", "match"),
    [
        ("Door", {"camera": True}, TypeError, "camera must be a camera name"),
        ("Door", {"camera": 2.0}, TypeError, "camera must be a camera name"),
        ("Door", {"camera": "nope"}, ValueError, "unknown camera 'nope'"),
        ("Door", {"image_size": True}, TypeError, "image_size must be an int"),
        ("Door", {"image_size": 10**6}, ValueError, "image_size 1000000 out of range"),
        ("Door", {"obs_mode": ["pixels"]}, ValueError, "obs_mode must be one of"),
        ("Pour", {"tank_height": "0.1"}, TypeError, "tank_height must be a real number"),
        ("Pour", {"tank_height": float("nan")}, ValueError, "tank_height must be finite"),
        ("PlaceInside", {"mug_scale": True}, TypeError, "mug_scale must be a real number"),
        ("PlaceInside", {"mug_scale": "1.5"}, TypeError, "mug_scale must be a real number"),
        ("RelocateMug", {"background": ["plain"]}, TypeError, "background must be a string"),
        ("RelocateMug", {"background": "space"}, ValueError, "unknown background 'space'"),
    ],
)
def test_constructor_arguments_are_checked_naming_the_argument(task, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gym.make(f"HInDex/{task}-v0", obs_mode=kwargs.pop("obs_mode", "state"), **kwargs)


@pytest.fixture(scope="module")
def door():
    env = gym.make("HInDex/Door-v0", obs_mode="state")
    yield env
    env.close()


def test_a_misspelt_reset_option_is_refused(door):
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['initial_state'\].*initial_state_dict"):
        door.reset(seed=0, options={"initial_state": {}})


def test_a_bool_seed_is_refused(door):
    with pytest.raises(TypeError, match="seed must be a non-negative integer"):
        door.reset(seed=True)


@pytest.mark.parametrize(
    ("state", "exc", "match"),
    [
        (5, TypeError, "initial_state_dict must be a dict"),
        ({}, ValueError, "lacks keys"),
    ],
)
def test_initial_state_dicts_are_checked(door, state, exc, match):
    with pytest.raises(exc, match=match):
        door.reset(seed=0, options={"initial_state_dict": state})


def test_valid_arguments_still_work(door):
    obs, _ = door.reset(seed=np.int64(3), options={"initial_state_dict": None})
    assert np.all(np.isfinite(obs))
    state = door.unwrapped.get_env_state()
    again, _ = door.reset(seed=4, options={"initial_state_dict": state})
    np.testing.assert_allclose(again, obs)


@pytest.mark.parametrize("task", ["Door", "RelocateMug"])
def test_state_entries_must_be_real_numbers_of_the_expected_shape(task):
    env = gym.make(f"HInDex/{task}-v0", obs_mode="state")
    env.reset(seed=0)
    state = env.unwrapped.get_env_state()
    n = state["qpos"].size
    bad = [
        ({"qpos": state["qpos"].reshape(2, n // 2) if n % 2 == 0 else np.zeros((3, n))}, "has shape"),  # was flattened
        ({"qpos": state["qpos"] > 0}, "holds bool values"),  # was cast to 0 / 1
        ({"qvel": state["qvel"].astype(complex)}, "holds complex128 values"),
        ({"qpos": np.array(["0.1"] * n)}, "holds <U3 values"),  # "could not convert string to float" before
    ]
    for override, match in bad:
        with pytest.raises(ValueError, match=r"initial_state_dict\['q(pos|vel)'\] " + match):
            env.reset(seed=0, options={"initial_state_dict": {**state, **override}})
    # a stored (1, n) row and a list of numbers are the same state
    obs, _ = env.reset(seed=1, options={"initial_state_dict": state})
    row = {**state, "qpos": state["qpos"][None], "qvel": state["qvel"].tolist()}
    again, _ = env.reset(seed=2, options={"initial_state_dict": row})
    np.testing.assert_array_equal(again, obs)
    env.close()


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.ones(28, bool), "hold real numbers, got bool"),
        (np.ones(28, complex), "hold real numbers, got complex128"),
        (np.array(["0.5"] * 28), "hold real numbers, got <U3"),
    ],
)
def test_an_action_must_hold_real_numbers(action, match):
    # (without gymnasium's passive checker, which cannot take a step after a first step that raised)
    env = gym.make("HInDex/Door-v0", obs_mode="state", disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must " + match):
        env.step(action)
    env.step(np.zeros(28, np.int64))  # integers are numbers
    env.close()
