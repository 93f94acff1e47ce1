"""One in-memory format for demonstrations, and duck-typed conversion from the formats people already have.

A :class:`Trajectory` holds ``T`` observations (one per action: the observation *before* each action), ``T`` actions,
optional rewards, and the simulator start state when known (so state demos can be replayed in a pixel env).
Observations are an array, or a dict of arrays for ``Dict`` observation spaces.

:func:`to_trajectories` accepts, without importing their libraries:

* :class:`Trajectory` objects;
* mappings with ``observations``/``actions`` (DAPG pickles, our ``.npz``), optionally ``rewards`` and
  ``init_state_dict``;
* objects with ``obs``/``acts`` (imitation's ``Trajectory``, ``T + 1`` observations) or ``observations``/``actions``
  (Minari's ``EpisodeData``, ``T + 1`` observations); the final observation, which no action follows, is dropped;
* a list or tuple of any of these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

Obs = np.ndarray | dict[str, np.ndarray]


def _obs_len(obs: Obs) -> int:
    if isinstance(obs, dict):
        lengths = {k: len(v) for k, v in obs.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"observation keys have different lengths: {lengths}")
        return next(iter(lengths.values()))
    return len(obs)


def _obs_slice(obs: Obs, sl: slice) -> Obs:
    if isinstance(obs, dict):
        return {k: v[sl] for k, v in obs.items()}
    return obs[sl]


@dataclass
class Trajectory:
    """One demonstration: ``observations[t]`` is what the demonstrator saw before taking ``actions[t]``."""

    observations: Obs
    actions: np.ndarray
    rewards: np.ndarray | None = None
    init_state: dict[str, np.ndarray] | None = None
    infos: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.observations, Mapping):
            self.observations = {k: np.asarray(v) for k, v in self.observations.items()}
        else:
            self.observations = np.asarray(self.observations)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.ndim == 1:
            self.actions = self.actions[:, None]
        n_obs, n_act = _obs_len(self.observations), len(self.actions)
        if n_obs == n_act + 1:  # imitation / Minari convention: the final observation has no action
            self.observations = _obs_slice(self.observations, slice(0, n_act))
        elif n_obs != n_act:
            raise ValueError(f"a trajectory needs one observation per action: {n_obs} observations, {n_act} actions")
        if self.rewards is not None:
            self.rewards = np.asarray(self.rewards, dtype=np.float64).reshape(-1)
            if len(self.rewards) != n_act:
                raise ValueError(f"{len(self.rewards)} rewards for {n_act} actions")

    def __len__(self) -> int:
        return len(self.actions)


def _from_object(obj: Any) -> Trajectory:
    if isinstance(obj, Trajectory):
        return obj
    if isinstance(obj, Mapping):
        get = obj.get
        obs = get("observations", get("obs"))
        acts = get("actions", get("acts"))
        rewards = get("rewards", get("rews"))
        init = get("init_state_dict", get("init_state"))
    else:
        obs = getattr(obj, "observations", getattr(obj, "obs", None))
        acts = getattr(obj, "actions", getattr(obj, "acts", None))
        rewards = getattr(obj, "rewards", getattr(obj, "rews", None))
        init = getattr(obj, "init_state_dict", None)
    if obs is None or acts is None:
        raise TypeError(
            f"cannot read a demonstration from {type(obj).__name__}: expected observations/actions "
            "(or obs/acts) as keys or attributes"
        )
    if hasattr(obs, "__getitem__") and not isinstance(obs, (np.ndarray, Mapping, list, tuple)):
        obs = dict(obs) if hasattr(obs, "keys") else np.asarray(obs)  # e.g. imitation's DictObs
    return Trajectory(obs, acts, rewards, dict(init) if init is not None else None)


def _is_single(obj: Any) -> bool:
    return isinstance(obj, (Trajectory, Mapping)) or hasattr(obj, "actions") or hasattr(obj, "acts")


def to_trajectories(demos: Any) -> list[Trajectory]:
    """Convert any supported demonstration container to a list of :class:`Trajectory` (see module docstring)."""
    if demos is None:
        return []
    if _is_single(demos):
        return [_from_object(demos)]
    try:
        items = list(demos)
    except TypeError:
        raise TypeError(f"cannot read demonstrations from {type(demos).__name__}") from None
    if not items:
        raise ValueError("no demonstrations given (an empty collection)")
    return [_from_object(d) for d in items]


def stack_transitions(trajectories: Sequence[Trajectory]) -> tuple[Obs, np.ndarray]:
    """All ``(observation, action)`` pairs of the trajectories, concatenated."""
    if not trajectories:
        raise ValueError("no demonstrations to stack")
    first = trajectories[0].observations
    if isinstance(first, dict):
        keys = set(first)
        for i, t in enumerate(trajectories):
            if not isinstance(t.observations, dict) or set(t.observations) != keys:
                raise ValueError(f"trajectory {i} has different observation keys than trajectory 0")
        obs: Obs = {k: np.concatenate([t.observations[k] for t in trajectories]) for k in first}
    else:
        obs = np.concatenate([t.observations for t in trajectories])
    return obs, np.concatenate([t.actions for t in trajectories])


def check_compatible(
    trajectories: Sequence[Trajectory], observation_space: spaces.Space, action_space: spaces.Space
) -> None:
    """Raise a clear error when demonstrations do not fit an environment's spaces."""
    act_shape = action_space.shape
    for i, t in enumerate(trajectories):
        if t.actions.shape[1:] != act_shape:
            raise ValueError(f"demonstration {i} has actions of shape {t.actions.shape[1:]}, the env takes {act_shape}")
        if isinstance(observation_space, spaces.Dict):
            if not isinstance(t.observations, dict):
                raise ValueError(
                    f"demonstration {i} has array observations, the env has Dict observations "
                    f"{list(observation_space.spaces)}"
                )
            missing = [k for k in observation_space.spaces if k not in t.observations]
            if missing:
                raise ValueError(f"demonstration {i} lacks observation keys {missing}")
            for k, sub in observation_space.spaces.items():
                if t.observations[k].shape[1:] != sub.shape:
                    raise ValueError(
                        f"demonstration {i} observation {k!r} has shape {t.observations[k].shape[1:]}, "
                        f"the env's is {sub.shape}"
                    )
        else:
            if isinstance(t.observations, dict):
                raise ValueError(f"demonstration {i} has Dict observations, the env has {observation_space}")
            if t.observations.shape[1:] != observation_space.shape:
                raise ValueError(
                    f"demonstration {i} has observations of shape {t.observations.shape[1:]}, "
                    f"the env's are {observation_space.shape}"
                )
        obs_arrays = t.observations.values() if isinstance(t.observations, dict) else [t.observations]
        for arr in [*obs_arrays, t.actions]:
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise ValueError(f"demonstration {i} contains NaN or infinite values")
