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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

Obs = np.ndarray | dict[str, np.ndarray]


def _numeric(value: Any, name: str, dtype: Any = None) -> np.ndarray:
    """``value`` as a numeric array with a time axis; one message naming the field for anything else."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:  # ragged lists, strings, ...
        raise ValueError(f"{name}: not a numeric array ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name}: expected one entry per step, got a scalar")
    return arr


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
            self.observations = {str(k): _numeric(v, f"observations[{k!r}]") for k, v in self.observations.items()}
            if not self.observations:
                raise ValueError("observations is an empty dict")
        else:
            self.observations = _numeric(self.observations, "observations")
        self.actions = _numeric(self.actions, "actions", np.float32)
        if self.actions.ndim == 1:
            self.actions = self.actions[:, None]
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be shaped (T, action_dim), got {self.actions.shape}")
        n_obs, n_act = _obs_len(self.observations), len(self.actions)
        if n_obs == n_act + 1:  # imitation / Minari convention: the final observation has no action
            self.observations = _obs_slice(self.observations, slice(0, n_act))
        elif n_obs != n_act:
            raise ValueError(f"a trajectory needs one observation per action: {n_obs} observations, {n_act} actions")
        if n_act == 0:  # training would only fail later, inside a torch.cat far from the file
            raise ValueError("a trajectory needs at least one action (this one has none)")
        if self.rewards is not None:
            self.rewards = _numeric(self.rewards, "rewards", np.float64).reshape(-1)
            if len(self.rewards) != n_act:
                raise ValueError(f"{len(self.rewards)} rewards for {n_act} actions")

    def __len__(self) -> int:
        return len(self.actions)


class ElementBudget:
    """How many array elements demonstrations read from one file may still expand to.

    A pickle can reference one list from many places (its memo), so a few hundred bytes can describe nested lists
    whose arrays would take gigabytes. Counting the elements each field *would* have, without building anything,
    and refusing past the budget keeps memory proportional to the file.
    """

    def __init__(self, limit: int, source: str) -> None:
        self.remaining, self.limit, self.source = int(limit), int(limit), source

    def take(self, value: Any, name: str) -> None:
        n = count_elements(value, name)
        if n > self.remaining:
            raise ValueError(
                f"{self.source + ': ' if self.source else ''}{name} would expand to {n:,} array elements, "
                f"beyond the {self.limit:,} this file can plausibly hold (nested references to shared lists: a "
                "decompression bomb?); nothing was built"
            )
        self.remaining -= n


def count_elements(value: Any, name: str = "value", max_depth: int = 32) -> int:
    """Elements ``np.asarray(value)`` would hold, counted without building it (shared sublists count each time)."""
    memo: dict[int, int | None] = {}

    def size(x: Any, depth: int) -> int:
        if isinstance(x, np.ndarray):
            return int(x.size)
        if not isinstance(x, (list, tuple, Mapping)):
            return 1
        key = id(x)
        if key in memo:
            if memo[key] is None:
                raise ValueError(f"{name}: a container contains itself")
            return memo[key]  # type: ignore[return-value]
        if depth > max_depth:
            raise ValueError(f"{name}: containers nested deeper than {max_depth} levels are not an array")
        memo[key] = None
        children = x.values() if isinstance(x, Mapping) else x
        memo[key] = total = sum(size(c, depth + 1) for c in children)
        return total

    return size(value, 0)


def _fields(obj: Any) -> tuple[Any, Any, Any, Any]:
    """``(observations, actions, rewards, init_state)`` of one demonstration object, nothing converted yet."""
    if isinstance(obj, Mapping):
        get = obj.get
        obs, acts = get("observations", get("obs")), get("actions", get("acts"))
        rewards, init = get("rewards", get("rews")), get("init_state_dict", get("init_state"))
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
    if init is not None and not isinstance(init, Mapping):
        raise TypeError(f"init_state_dict must be a dict, got {type(init).__name__}")
    return obs, acts, rewards, init


def _from_object(obj: Any) -> Trajectory:
    if isinstance(obj, Trajectory):
        return obj
    obs, acts, rewards, init = _fields(obj)
    if hasattr(obs, "__getitem__") and not isinstance(obs, (np.ndarray, Mapping, list, tuple)):
        obs = dict(obs) if hasattr(obs, "keys") else np.asarray(obs)  # e.g. imitation's DictObs
    return Trajectory(obs, acts, rewards, dict(init) if init is not None else None)


def _take_budget(items: list[Any], budget: ElementBudget) -> None:
    """Charge every demonstration's fields to ``budget`` before any array is built."""
    for i, obj in enumerate(items):
        if isinstance(obj, Trajectory):
            continue
        for name, value in zip(("observations", "actions", "rewards", "init_state"), _fields(obj), strict=True):
            budget.take(value, f"demonstration {i} {name}")


def _is_single(obj: Any) -> bool:
    return isinstance(obj, (Trajectory, Mapping)) or hasattr(obj, "actions") or hasattr(obj, "acts")


def to_trajectories(demos: Any, *, budget: ElementBudget | None = None) -> list[Trajectory]:
    """Convert any supported demonstration container to a list of :class:`Trajectory` (see module docstring).

    :param budget: bound on the array elements built (file readers pass one derived from the file's size).
    """
    if demos is None:
        return []
    if _is_single(demos):
        if budget is not None:
            _take_budget([demos], budget)
        return [_from_object(demos)]
    if isinstance(demos, (str, bytes)) or not isinstance(demos, Iterable):
        raise TypeError(f"cannot read demonstrations from {type(demos).__name__}")
    items = list(demos)
    if not items:
        raise ValueError("no demonstrations given (an empty collection)")
    if budget is not None:
        _take_budget(items, budget)
    out = []
    for i, d in enumerate(items):
        try:
            out.append(_from_object(d))
        except ValueError as err:
            raise ValueError(f"demonstration {i}: {err}") from None
        except TypeError as err:
            raise TypeError(f"demonstration {i}: {err}") from None
    return out


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
