"""The demonstrator interface and the registry that maps environment classes to demonstrators.

A demonstrator is a callable policy: ``action = demo(obs)``. It ignores ``obs`` and reads the privileged simulator
state from ``env.unwrapped`` instead, so the same demonstrator records pixel, state or ``"all"`` observations alike
and its actions do not depend on how the env renders. The registry is keyed by environment *class* (not id), so
variants registered under other ids, wrappers and subclasses (e.g. DexMV scenes sharing one task class) all find it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from hindex_sb3._validation import check_int, check_real

_REGISTRY: dict[type, type[Demonstrator]] = {}


class Demonstrator(ABC):
    """A scripted controller for one task that outputs normalised actions in ``[-1, 1]``.

    Usage::

        demo = make_demonstrator(env)
        obs, _ = env.reset(seed=0)
        demo.reset()                  # after every env.reset
        action = demo(obs)            # obs is ignored; any obs_mode works

    Deterministic given the simulator state: with ``noise_std=0`` (the default) the same seed gives the same
    actions. ``noise_std > 0`` adds Gaussian noise from an RNG seeded by ``seed`` (or ``reset(seed=...)``), for more
    diverse demonstrations; the scripted feedback corrects for it on the next step.
    """

    #: environment classes this demonstrator drives (the registry's keys)
    task_classes: ClassVar[tuple[type, ...]] = ()
    #: episode length the demonstrator needs to succeed, when longer than the task's RL horizon (None: the task's).
    #: Demonstrations only feed behaviour cloning and DAPG's demo term, so they may be longer than RL episodes.
    horizon: ClassVar[int | None] = None

    def __init__(self, env: gym.Env, noise_std: float = 0.0, seed: int | None = None):
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, self.task_classes):
            names = ", ".join(c.__name__ for c in self.task_classes)
            raise TypeError(f"{type(self).__name__} drives {names}, not {type(unwrapped).__name__}")
        # NaN would silently mean no noise (nan > 0 is false), inf every action at a bound
        noise_std = check_real("noise_std", noise_std, minimum=0.0)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.env = env
        self.unwrapped = unwrapped
        self.model = unwrapped.model
        self.data = unwrapped.data
        self.action_space = unwrapped.action_space
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self.phase = "unset"
        self.t = -1

    @property
    def name(self) -> str:
        return type(self).__name__

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode from the env's current (just reset) state; ``seed`` re-seeds the action noise."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.t = 0
        self._reset()

    def __call__(self, obs: Any = None) -> np.ndarray:
        """The action for the current simulator state (``obs`` is accepted for the policy interface and ignored)."""
        if self.t < 0 or (self.t > 0 and getattr(self.unwrapped, "_elapsed", None) == 0):
            self.reset()  # the env was reset behind our back: start over rather than continue a stale plan
        action = np.asarray(self._act(), dtype=np.float64)
        if self.noise_std > 0:
            action = action + self.noise_std * self._rng.standard_normal(action.shape)
        self.t += 1
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # Gymnasium/SB3-style alias so the demonstrator can stand in where a model is expected.
    def predict(self, obs: Any = None, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        return self(obs), state

    @abstractmethod
    def _reset(self) -> None:
        """Read the new scene (object and target placement) and restart the phase machine."""

    @abstractmethod
    def _act(self) -> np.ndarray:
        """The noiseless action for the current step."""


def register_demonstrator(cls: type[Demonstrator]) -> type[Demonstrator]:
    """Class decorator: make ``cls`` the demonstrator of every class in its ``task_classes``."""
    if not cls.task_classes:
        raise ValueError(f"{cls.__name__} has no task_classes to register for")
    for task_class in cls.task_classes:
        _REGISTRY[task_class] = cls
    return cls


def demonstrator_class(env_or_class: gym.Env | type) -> type[Demonstrator] | None:
    """The demonstrator registered for an env (or env class), looking through wrappers and base classes."""
    cls = env_or_class if isinstance(env_or_class, type) else type(env_or_class.unwrapped)
    for klass in cls.__mro__:
        if klass in _REGISTRY:
            return _REGISTRY[klass]
    return None


def _env_class(env_id: str) -> type | None:
    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, type):
        return entry_point
    if isinstance(entry_point, str) and ":" in entry_point:
        module, name = entry_point.split(":", 1)
        try:
            return getattr(importlib.import_module(module), name, None)
        except ImportError:
            return None
    return None


def available_demonstrators(namespace: str = "HInDex") -> list[str]:
    """Registered environment ids (in ``namespace``) that have a scripted demonstrator."""
    ids = []
    for env_id in sorted(gym.registry):
        if namespace and not env_id.startswith(f"{namespace}/"):
            continue
        cls = _env_class(env_id)
        if cls is not None and demonstrator_class(cls) is not None:
            ids.append(env_id)
    return ids


def demonstration_horizon(env: gym.Env | str) -> int | None:
    """Episode length to record demonstrations of ``env`` (an env or a registered id) with: its time limit, or longer
    if its demonstrator needs it. ``None`` when there is no time limit and the demonstrator states no need.
    """
    if isinstance(env, str):
        limit = gym.spec(env).max_episode_steps
        env_cls = _env_class(env)
        cls = demonstrator_class(env_cls) if env_cls is not None else None
    else:
        limit = env.spec.max_episode_steps if env.spec is not None else None
        cls = demonstrator_class(env)
    need = cls.horizon if cls is not None else None
    if need is None:
        return limit
    return need if limit is None else max(limit, need)


def make_demonstrator(env: gym.Env, noise_std: float = 0.0, seed: int | None = None, **kwargs: Any) -> Demonstrator:
    """The scripted demonstrator for ``env`` (looked up by ``type(env.unwrapped)``).

    :raises ValueError: when no demonstrator drives this environment
    """
    if not isinstance(env, gym.Env):
        raise TypeError(f"make_demonstrator needs a gymnasium Env, got {type(env).__name__}")
    cls = demonstrator_class(env)
    if cls is None:
        raise ValueError(
            f"no scripted demonstrator for {type(env.unwrapped).__name__}; "
            f"available for: {', '.join(available_demonstrators()) or 'none'}"
        )
    return cls(env, noise_std=noise_std, seed=seed, **kwargs)
