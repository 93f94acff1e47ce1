"""Whole-episode sampling for DAPG: exactly the episodes mjrl samples, whatever the number of envs.

SB3's ``VecEnv`` steps every env in lockstep and resets an env as soon as its episode ends, so a loop over
``env.step`` either starts episodes it will not use or drops finished ones. DAPG needs ``N`` complete episodes per
iteration, episode ``i`` started from its own seed and sampled with its own action noise, so that a run does not
depend on how many envs (or processes) produce the episodes. :class:`EpisodeRunner` therefore drives the individual
envs of a ``DummyVecEnv`` / ``SubprocVecEnv`` (or any ``VecEnv`` through ``env_method``; a VecEnv with
``reset_envs``/``step_envs``, such as :class:`~hindex_sb3.vec_env.SharedMemoryVecEnv`, through those, so that its
frames keep to shared memory): it resets env ``j`` with a given seed and steps a chosen subset, never auto-resetting
and never stepping an env that has no episode left to run.

Seeding follows mjrl's sampler: in iteration ``k`` the episodes use env seeds ``base + i`` with
``base = seed + k * n_trajectories`` (the agent's seed advances by ``N`` per iteration), and episode ``i`` draws its
Gaussian action noise from a generator seeded from ``(seed, k, i)``. Both derive from the run seed, the iteration
count and ``n_trajectories`` only, so a checkpoint needs no extra state to continue the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv, VecEnvWrapper, VecNormalize, VecTransposeImage

#: ``VecEnvWrapper`` classes DAPG can see through: pure per-observation transforms without state.
TRANSPARENT_WRAPPERS = (VecTransposeImage,)

_NOISE_DOMAIN = 0xDA96  # keeps the noise streams apart from other uses of SeedSequence((seed, k, i))


@dataclass(frozen=True)
class EpisodeSeed:
    """Where episode ``index`` of an iteration comes from: the env's reset seed and the action-noise seed."""

    index: int
    env_seed: int
    noise_seed: int


def episode_seeds(seed: int, iteration: int, n_trajectories: int) -> list[EpisodeSeed]:
    """The seeds of the ``n_trajectories`` episodes of iteration ``iteration`` of a run seeded ``seed`` (mjrl)."""
    if seed < 0 or iteration < 0:
        raise ValueError(f"seed and iteration must be >= 0, got {seed} and {iteration}")
    base = seed + iteration * n_trajectories
    out = []
    for i in range(n_trajectories):
        state = np.random.SeedSequence([_NOISE_DOMAIN, seed, iteration, i]).generate_state(2, dtype=np.uint32)
        noise_seed = int(state[0]) << 31 | int(state[1]) >> 1  # 62 bits: fits torch's int64 manual_seed
        out.append(EpisodeSeed(i, base + i, noise_seed))
    return out


def noise_generator(noise_seed: int) -> th.Generator:
    """The CPU generator an episode draws its standard-normal action noise from (one draw of ``act_dim`` per step)."""
    return th.Generator(device="cpu").manual_seed(noise_seed)


def unsupported_wrapper_message(wrapper: VecEnvWrapper) -> str:
    name = type(wrapper).__name__
    if isinstance(wrapper, VecNormalize):
        return (
            "DAPG does not run under VecNormalize: behaviour cloning and the demonstration term would see the raw "
            "demonstration observations while rollouts see normalised ones. DAPG already normalises its inputs with "
            "the demonstrations' mean and std (mjrl's in_shift/in_scale, set by behaviour cloning), so VecNormalize "
            "is redundant: pass the VecEnv without it (for rewards, DAPG whitens advantages per iteration)."
        )
    return (
        f"DAPG cannot run under {name}: it samples whole seeded episodes by driving the individual envs of the "
        "VecEnv (no lockstep stepping, no auto-reset), which would bypass the wrapper silently. Apply the "
        "equivalent gymnasium wrapper to each env instead (e.g. gymnasium.wrappers.FrameStackObservation, "
        "stable_baselines3.common.monitor.Monitor, which make_vec_env adds by default) and pass the plain "
        "DummyVecEnv / SubprocVecEnv."
    )


def check_vec_env(venv: VecEnv) -> None:
    """Raise ``ValueError`` if ``venv`` has a ``VecEnvWrapper`` that DAPG's episode sampling would bypass."""
    env: Any = venv
    while isinstance(env, VecEnvWrapper):
        if not isinstance(env, TRANSPARENT_WRAPPERS):
            raise ValueError(unsupported_wrapper_message(env))
        env = env.venv


class EpisodeRunner:
    """Resets and steps chosen envs of a ``VecEnv`` individually, in gymnasium's API (no auto-reset).

    Observations come back as the policy sees them: cast to the observation space's dtype and passed through the
    transparent wrappers (``VecTransposeImage``, which SB3 adds for channel-last images).
    """

    def __init__(self, venv: VecEnv) -> None:
        check_vec_env(venv)
        self.wrappers: list[VecEnvWrapper] = []
        base: Any = venv
        while isinstance(base, VecEnvWrapper):
            self.wrappers.append(base)
            base = base.venv
        self.base: VecEnv = base
        self.num_envs = venv.num_envs
        self.observation_space = venv.observation_space
        self._remotes = list(base.remotes) if isinstance(base, SubprocVecEnv) else None
        # a VecEnv with its own per-env calls (SharedMemoryVecEnv) passes frames its own way, not through env_method
        direct = callable(getattr(base, "reset_envs", None)) and callable(getattr(base, "step_envs", None))
        self._direct: Any = base if direct else None
        #: envs hosted by one worker process (SharedMemoryVecEnv's envs_per_worker; 1 otherwise)
        self.envs_per_worker = int(getattr(self._direct, "envs_per_worker", 1))
        #: whether the envs step in worker processes, so that this process can work while some of them step
        self.can_overlap = self._remotes is not None or (
            self._direct is not None and callable(getattr(self._direct, "step_envs_send", None))
        )

    def _prepare(self, obs: Any) -> Any:
        for wrapper in reversed(self.wrappers):  # innermost first, as the VecEnv would apply them
            obs = wrapper.transpose_observations(obs)  # type: ignore[attr-defined]
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return {k: np.asarray(obs[k], dtype=space[k].dtype) for k in space.spaces}
        return np.asarray(obs, dtype=space.dtype)

    def _call(self, calls: list[tuple[int, str, tuple, dict]]) -> list[Any]:
        """Run ``env_j.method(*args, **kwargs)`` for each call; concurrently when the envs live in worker processes."""
        if self._remotes is None:
            return [self.base.env_method(m, *a, indices=[j], **kw)[0] for j, m, a, kw in calls]
        for j, method, args, kwargs in calls:
            self._remotes[j].send(("env_method", (method, args, kwargs)))
        return [self._remotes[j].recv() for j, *_ in calls]

    def reset(self, seeds: dict[int, int]) -> dict[int, Any]:
        """Reset env ``j`` with ``seeds[j]`` for each key; returns the first observations."""
        if self._direct is not None:
            return {j: self._prepare(obs) for j, (obs, _) in self._direct.reset_envs(seeds).items()}
        results = self._call([(j, "reset", (), {"seed": s}) for j, s in seeds.items()])
        return {j: self._prepare(obs) for j, (obs, _) in zip(seeds, results, strict=True)}

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, tuple[Any, float, bool, bool, dict]]:
        """Step env ``j`` with ``actions[j]`` for each key (and no other env)."""
        if self.can_overlap:
            self.step_send(actions)
            return self.step_recv(list(actions))
        return self._gym_steps(list(actions), self._call([(j, "step", (a,), {}) for j, a in actions.items()]))

    def step_send(self, actions: dict[int, np.ndarray]) -> None:
        """Start stepping env ``j`` with ``actions[j]`` for each key; :meth:`step_recv` collects the results."""
        if not self.can_overlap:
            raise RuntimeError("step_send needs envs in worker processes (SubprocVecEnv or SharedMemoryVecEnv)")
        if self._direct is not None:
            self._direct.step_envs_send(actions)
            return
        for j, action in actions.items():
            self._remotes[j].send(("env_method", ("step", (action,), {})))  # type: ignore[index]

    def step_recv(self, indices: list[int]) -> dict[int, tuple[Any, float, bool, bool, dict]]:
        """The results of the steps :meth:`step_send` started for ``indices``."""
        if self._direct is not None:
            stepped = self._direct.step_envs_recv(indices)
            return self._gym_steps(indices, [stepped[j] for j in indices])
        return self._gym_steps(indices, [self._remotes[j].recv() for j in indices])  # type: ignore[index]

    def _gym_steps(self, indices: list[int], results: list[Any]) -> dict[int, tuple[Any, float, bool, bool, dict]]:
        return {
            j: (self._prepare(obs), float(r), bool(term), bool(trunc), info)
            for j, (obs, r, term, trunc, info) in zip(indices, results, strict=True)
        }
