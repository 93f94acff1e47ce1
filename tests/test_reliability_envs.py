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
