"""Where demonstrations come from: files, datasets, and rollouts of experts.

* :func:`load_dapg_pickle` reads the original DAPG ``*_demos.pickle`` files with an unpickler that can only build
  numpy arrays and plain containers. A pickle asking for any other class (the way malicious pickles run code) is
  refused before anything executes.
* :func:`save_npz` / :func:`load_npz`: our own pickle-free format (``n_demos``, ``obs_{i}`` or ``obs.{key}_{i}``,
  ``acts_{i}``, ``rews_{i}``, ``init_{key}_{i}``, ``info.{key}_{i}`` for plain ``infos``), which also reads the
  DAPG human door demonstrations converted to this layout.
* :func:`load_minari`: Minari datasets (e.g. ``D4RL/door/human-v2``) without making minari a hard dependency.
* :func:`rollout`: episodes of any policy: an SB3 model, an ``.npz`` expert, a scripted demonstrator, a callable.
"""

from __future__ import annotations

import inspect
import io
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from hindex_sb3._npz import MAX_NPZ_BYTES, open_npz
from hindex_sb3._validation import INFLATION_FLOOR, MAX_INFLATION, check_flag, check_int, check_str
from hindex_sb3.demos.core import ElementBudget, Trajectory, to_trajectories
from hindex_sb3.episodes import Step, run_episode

# Everything a DAPG demo pickle needs: numpy arrays/scalars/dtypes and builtin containers.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
}


# A pickle cannot hold more than this many array elements per byte of file (plus a floor for tiny files) without
# referencing shared objects many times, which is how a few hundred bytes describe gigabytes (see ElementBudget).
PICKLE_ELEMENTS_PER_BYTE = 8
PICKLE_ELEMENTS_FLOOR = 1 << 20


class DemoPickleError(ValueError, pickle.UnpicklingError):
    """A demonstration pickle that is refused: truncated or damaged, or asking for a global the safe unpickler
    does not build. A ``ValueError`` so that every caller validating its inputs reports it as a bad input in one
    message (not a traceback); still a ``pickle.UnpicklingError`` for code that caught that before."""


def _guarded_reconstruct(limit: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """numpy's ``_reconstruct(cls, shape, dtype)`` allocates ``shape`` before any data arrives: bound it."""

    def reconstruct(cls: Any, shape: Any, dtype: Any) -> Any:
        dims = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(d, int) and d >= 0 for d in dims) or math.prod(dims) > limit:
            raise DemoPickleError(f"array of shape {shape!r} is larger than this file can hold")
        return real(cls, shape, dtype)

    return reconstruct


def _guarded_bytearray(limit: int) -> Callable[..., bytearray]:
    """``bytearray(n)`` allocates n bytes from one small integer: bound it by the file size."""

    def make(*args: Any) -> bytearray:
        if args and isinstance(args[0], int) and not 0 <= args[0] <= limit:
            raise DemoPickleError(f"bytearray({args[0]}) is larger than this file can hold")
        return bytearray(*args)

    return make


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, *, limit: int, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._limit = limit

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise DemoPickleError(
                f"refused to load {module}.{name}: demonstration pickles may only contain numpy arrays and plain "
                "containers (a pickle that asks for other classes can execute code)"
            )
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return _guarded_reconstruct(self._limit, found)
        if (module, name) == ("builtins", "bytearray"):
            return _guarded_bytearray(self._limit)
        return found


_MAGIC = {
    b"PK\x03\x04": "a zip archive (an .npz?); read .npz demonstrations with load_npz (--demos FILE.npz)",
    b"PK\x05\x06": "an empty zip archive, not a demonstration pickle",
    b"\x93NUMPY": "a single .npy array, not a demonstration pickle",
}


def _check_path(path: Any) -> None:
    if not isinstance(path, str | os.PathLike):  # Python's own message names no argument
        raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")


def load_dapg_pickle(path: str | Path) -> list[Trajectory]:
    """Read a DAPG demonstration pickle (a list of dicts with observations, actions, rewards, init_state_dict).

    Nothing in the file can run code (only numpy arrays and plain containers are built), and the arrays built are
    bounded by the file's size (:data:`PICKLE_ELEMENTS_PER_BYTE`), so a crafted file is refused, not expanded.
    """
    _check_path(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no demonstration file at {path}")
    data = path.read_bytes()
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            raise ValueError(f"{path} is {what}")
    limit = max(PICKLE_ELEMENTS_FLOOR, PICKLE_ELEMENTS_PER_BYTE * len(data))
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), limit=limit, encoding="latin1").load()
    except DemoPickleError as err:  # the unpickler's own refusals say why
        raise DemoPickleError(f"{path}: {err}") from None
    except pickle.UnpicklingError as err:  # one ValueError for callers (the CLI turns those into one line)
        raise DemoPickleError(f"{path} is not a readable demonstration pickle (truncated or damaged): {err}") from None
    except Exception as err:
        raise ValueError(f"{path} is not a readable demonstration pickle: {type(err).__name__}: {err}") from None
    try:
        return to_trajectories(obj, budget=ElementBudget(limit, ""))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def save_npz(trajectories: Any, path: str | Path) -> Path:
    """Write demonstrations in our pickle-free ``.npz`` format (readable with ``allow_pickle=False``)."""
    _check_path(path)
    trajectories = to_trajectories(trajectories)
    if not trajectories:
        raise ValueError("no demonstrations to save (load_npz refuses an empty set)")
    arrays: dict[str, np.ndarray] = {"n_demos": np.asarray(len(trajectories))}
    dropped: set[str] = set()
    for i, t in enumerate(trajectories):
        if isinstance(t.observations, dict):
            for key, value in t.observations.items():
                arrays[f"obs.{key}_{i}"] = value
        else:
            arrays[f"obs_{i}"] = t.observations
        arrays[f"acts_{i}"] = t.actions
        if t.rewards is not None:
            arrays[f"rews_{i}"] = t.rewards
        for key, value in (t.init_state or {}).items():
            arrays[f"init_{key}_{i}"] = np.asarray(value)
        for key, value in (t.infos or {}).items():  # is_success, seed, goal_steps...: plain values and arrays only
            info = _plain_array(value)
            if info is None:  # the format holds no pickles
                dropped.add(str(key))
            else:
                arrays[f"info.{key}_{i}"] = info
    if dropped:
        warnings.warn(
            f"save_npz: infos {sorted(dropped)} are not plain numbers, strings or arrays (the .npz format holds no "
            "pickles); not saved",
            stacklevel=2,
        )
    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)  # an interrupted save never leaves a file that looks complete
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _plain_array(value: Any) -> np.ndarray | None:
    """``value`` as an array ``np.load(allow_pickle=False)`` reads back, or None (objects, ragged lists)."""
    if not isinstance(value, np.ndarray | np.generic | int | float | bool | str | list | tuple):
        return None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return None
    return array if array.dtype.kind in "biufcU" else None


_NPZ_KEYS = (
    (re.compile(r"^(obs|acts|rews)_(\d+)$"), lambda m: (m.group(1), "", int(m.group(2)))),
    (re.compile(r"^obs\.(.+)_(\d+)$"), lambda m: ("obs", m.group(1), int(m.group(2)))),
    (re.compile(r"^init_(.+)_(\d+)$"), lambda m: ("init", m.group(1), int(m.group(2)))),
    (re.compile(r"^info\.(.+)_(\d+)$"), lambda m: ("info", m.group(1), int(m.group(2)))),
)


def _parse_npz_key(name: str) -> tuple[str, str, int] | None:
    for pattern, parse in _NPZ_KEYS:
        m = pattern.match(name)
        if m is not None:
            return parse(m)
    return None


#: see :func:`hindex_sb3._validation.check_inflation`
MAX_COMPRESSION_RATIO = MAX_INFLATION
NPZ_RATIO_FLOOR = INFLATION_FLOOR


def _n_demos(path: Path, f: Any, n_action_entries: int) -> int:
    if "n_demos" not in f.files:
        raise ValueError(f"{path} has no 'n_demos' entry: not a demonstration file (keys: {f.files[:8]})")
    raw = f["n_demos"]
    if raw.shape not in ((), (1,)) or raw.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: n_demos must be one integer, got an array of shape {raw.shape} and dtype {raw.dtype}"
        )
    n = int(raw.reshape(()))
    if n < 1:
        raise ValueError(f"{path} holds no demonstrations (n_demos = {n}); an empty demonstration set is an error")
    if n > n_action_entries:
        raise ValueError(f"{path}: n_demos = {n:,} but the file has actions for only {n_action_entries} demonstrations")
    return n


def load_npz(path: str | Path, *, max_bytes: int = MAX_NPZ_BYTES) -> list[Trajectory]:
    """Read demonstrations written by :func:`save_npz` (or any file in the same layout).

    Counts and sizes come from the file's own headers and are checked before anything is inflated: ``n_demos``
    must be one integer backed by that many action entries, each member's .npy header must agree with the zip's
    declared size, no member may inflate like a decompression bomb, and the total stays within ``max_bytes``.
    """
    _check_path(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no demonstration file at {path}")
    f = open_npz(path, lambda name: name == "n_demos" or _parse_npz_key(name) is not None, max_bytes=max_bytes)
    with f:
        entries = [(name, parsed) for name in f.files if (parsed := _parse_npz_key(name)) is not None]
        seen: dict[tuple[str, str, int], str] = {}
        for name, parsed in entries:  # acts_0 and acts_00 both parse as demonstration 0: which one is meant?
            if parsed in seen:
                raise ValueError(f"{path}: entries {seen[parsed]!r} and {name!r} both name demonstration {parsed[2]}")
            seen[parsed] = name
        try:
            n = _n_demos(path, f, len({idx for _, (kind, _, idx) in entries if kind == "acts"}))
            parts: list[dict[str, Any]] = [{"obs": {}, "init": {}, "info": {}} for _ in range(n)]
            for name, (kind, key, idx) in entries:
                if idx >= n:
                    raise ValueError(f"{path}: entry {name} is beyond n_demos={n}")
                if kind == "info":  # scalars come back as the plain values they were (is_success: bool)
                    value = f[name]
                    parts[idx][kind][key] = value.item() if value.shape == () else value
                elif kind in ("obs", "init"):
                    parts[idx][kind][key] = f[name]
                else:
                    parts[idx][kind] = f[name]
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # truncated or corrupt member data
            raise ValueError(f"{path} is damaged: {err}") from None
    trajectories = []
    for i, p in enumerate(parts):
        if "acts" not in p or not p["obs"]:
            raise ValueError(f"{path}: demonstration {i} lacks observations or actions")
        obs = p["obs"][""] if set(p["obs"]) == {""} else p["obs"]
        try:
            trajectories.append(Trajectory(obs, p["acts"], p.get("rews"), p["init"] or None, p["info"]))
        except ValueError as err:
            raise ValueError(f"{path}: demonstration {i}: {err}") from None
    return trajectories


def load_minari(dataset: Any, state_keys: Sequence[str] | None = None) -> list[Trajectory]:
    """Episodes of a Minari dataset (an id such as ``"D4RL/door/human-v2"`` or a loaded ``MinariDataset``).

    When the episodes' ``infos`` carry simulator states (``infos["state"][key]`` or ``infos[key]`` for each of
    ``state_keys``), the first becomes the trajectory's start state and all are kept in ``infos["states"]``, so the
    demonstrations can be re-rendered exactly with :func:`hindex_sb3.demos.render_states`.
    """
    try:
        import minari
    except ImportError as err:
        raise ImportError("reading Minari datasets needs minari: pip install 'hindex-sb3[minari]'") from err
    if isinstance(dataset, (str, Path)):
        try:
            dataset = minari.load_dataset(str(dataset))
        except Exception as err:
            raise FileNotFoundError(
                f"could not load Minari dataset {dataset!r} ({err}). Offline, it must lie under "
                "$MINARI_DATASETS_PATH/<namespace>/<name>-vN/data/ (download it elsewhere with `minari download`)."
            ) from err
    trajectories = []
    for index, episode in enumerate(dataset.iterate_episodes()):
        try:
            trajectories.append(_minari_trajectory(episode, state_keys))
        except (ValueError, KeyError, TypeError) as err:  # name the episode: a dataset holds thousands
            detail = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ValueError(f"Minari episode {getattr(episode, 'id', index)}: {detail}") from err
    if not trajectories:
        raise ValueError("the Minari dataset has no episodes")
    return trajectories


def _minari_trajectory(episode: Any, state_keys: Sequence[str] | None) -> Trajectory:
    infos = episode.infos or {}
    states = _states_from_infos(infos, state_keys)
    init = {k: v[0] for k, v in states.items()} if states else None
    t = Trajectory(episode.observations, episode.actions, episode.rewards, init)
    if states:
        t.infos["states"] = {k: v[: len(t)] for k, v in states.items()}
    return t


def _states_from_infos(infos: dict[str, Any], state_keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Per-step simulator states: ``infos["state"]`` (all its arrays), or the named ``state_keys``."""
    source = infos.get("state")
    if state_keys is not None:
        source = source if isinstance(source, dict) else infos
        missing = [k for k in state_keys if k not in source]
        if missing:
            raise KeyError(f"the episode infos lack state keys {missing}")
        return {k: np.asarray(source[k]) for k in state_keys}
    if not isinstance(source, dict):
        return {}
    return {k: np.asarray(v) for k, v in source.items() if np.ndim(v) >= 1}


PolicyLike = Any


def _as_action_fn(policy: PolicyLike, deterministic: bool, rng: np.random.Generator) -> Callable[[Any], np.ndarray]:
    from hindex_sb3.experts import NpzMLPPolicy

    if isinstance(policy, (str, Path)):
        policy = NpzMLPPolicy.load(policy)
    if isinstance(policy, NpzMLPPolicy):
        return lambda obs: policy(obs, deterministic=deterministic, rng=rng)
    if hasattr(policy, "predict"):
        return lambda obs: policy.predict(obs, deterministic=deterministic)[0]
    if callable(policy):
        return policy
    raise TypeError(f"cannot act with {type(policy).__name__}: give an SB3 model, an .npz expert or a callable")


def episode_limit(env: gym.Env, max_steps: int | None) -> int:
    """Steps per episode: ``max_steps``, else the env's registered time limit, else its ``default_horizon``."""
    if max_steps is not None:
        return check_int("max_steps", max_steps, minimum=1)
    spec_limit = env.spec.max_episode_steps if env.spec is not None else None
    return int(spec_limit or getattr(env.unwrapped, "default_horizon", 1000))


def _reset_policy(policy: PolicyLike, seed: int) -> None:
    """Call ``policy.reset`` at an episode start, with a per-episode seed when it takes one."""
    reset = getattr(policy, "reset", None)
    if not callable(reset):
        return
    if "seed" in inspect.signature(reset).parameters:
        reset(seed=seed)
    else:
        reset()


def _record_episode(
    env: gym.Env,
    act: Callable[[Any], Any],
    policy: PolicyLike,
    episode_seed: int,
    policy_seed: int,
    limit: int,
    policy_obs_key: str | None,
    record_keys: Sequence[str] | None,
) -> tuple[Any, list[Any], list[np.ndarray], list[Any], list[bool], bool]:
    """One episode of :func:`rollout`: its start state, per-step observations/actions/rewards/goals, and success."""
    starts: list[Any] = []
    observations: list[Any] = []
    actions: list[np.ndarray] = []
    rewards: list[Any] = []
    goals: list[bool] = []

    def on_reset(obs: Any) -> None:
        _reset_policy(policy, policy_seed)
        base = env.unwrapped
        starts.append(base.get_env_state() if hasattr(base, "get_env_state") else None)

    def on_step(step: Step) -> None:
        obs = step.obs
        keep = isinstance(obs, dict) and record_keys is not None
        observations.append({k: obs[k] for k in record_keys} if keep else obs)  # type: ignore[union-attr]
        actions.append(step.action)
        rewards.append(step.reward)
        goals.append(bool(step.info.get("goal_achieved", False)))

    def act_on(obs: Any) -> np.ndarray:
        return np.asarray(act(obs[policy_obs_key] if policy_obs_key is not None else obs), dtype=np.float32)

    episode = run_episode(env, act_on, seed=episode_seed, max_steps=limit, on_reset=on_reset, on_step=on_step)
    return starts[0], observations, actions, rewards, goals, episode.success


def check_key_list(name: str, keys: Any, space: gym.Space | None = None) -> None:
    """A list of observation keys (or ``None``), each one a key of ``space`` where that is a dict space; checked
    before any episode runs: a string would be iterated letter by letter, a missing key be a bare ``KeyError`` at the
    first step. Keys select nothing where the observations are not a dict, so there only their type is checked."""
    if keys is None:
        return
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise TypeError(f"{name} must be a list of observation keys, got {keys!r}")
    for key in keys:
        check_str(f"{name}[]", key)
    if isinstance(space, gym.spaces.Dict):
        missing = [k for k in keys if k not in space.spaces]
        if missing:
            raise ValueError(f"{name} {missing} are not observation keys of this env ({list(space.spaces)})")


def check_observation_keys(
    space: gym.Space, *, policy_obs_key: str | None = None, record_keys: Sequence[str] | None = None
) -> None:
    """:func:`check_key_list` for ``record_keys``; ``policy_obs_key`` indexes the observation, so it needs dict
    observations that have it."""
    if policy_obs_key is not None:
        check_str("policy_obs_key", policy_obs_key)
        keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else None
        if keys is None or policy_obs_key not in keys:
            raise ValueError(f"policy_obs_key {policy_obs_key!r} is not an observation key ({keys or 'no dict'})")
    check_key_list("record_keys", record_keys, space)


def _checked_rollout_args(
    env: Any,
    n_episodes: Any,
    seed: Any,
    deterministic: Any,
    only_successful: Any,
    max_attempts: Any,
    max_steps: Any,
    env_kwargs: Any,
) -> tuple[int, int, int | None, int | None]:
    """:func:`rollout`'s arguments checked before an env is built; the checked values are the ones to use (Python
    ints: gymnasium's reset refuses a numpy integer seed)."""
    n_episodes = check_int("n_episodes", n_episodes, minimum=1)  # an empty demonstration set is an error, not []
    seed = check_int("seed", seed, minimum=0)
    check_flag("deterministic", deterministic)
    check_flag("only_successful", only_successful)
    if max_attempts is not None:
        max_attempts = check_int("max_attempts", max_attempts, minimum=n_episodes)
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, minimum=1)
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise TypeError(f"env_kwargs must be a dict, got {type(env_kwargs).__name__}")
    if not isinstance(env, str | gym.Env):
        raise TypeError(f"env must be a gymnasium env or an env id, got {type(env).__name__}")
    return n_episodes, seed, max_attempts, max_steps


def _stacked_trajectory(init: Any, observations: list, actions: list, rewards: list) -> Trajectory:
    """One recorded episode's per-step lists as arrays (a dict observation stacked key by key)."""
    if isinstance(observations[0], dict):
        stacked: Any = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    else:
        stacked = np.stack(observations)
    return Trajectory(stacked, np.stack(actions), np.asarray(rewards), init)


def rollout(
    env: gym.Env | str,
    policy: PolicyLike,
    n_episodes: int,
    seed: int = 0,
    deterministic: bool = True,
    policy_obs_key: str | None = None,
    record_keys: Sequence[str] | None = None,
    only_successful: bool = False,
    max_attempts: int | None = None,
    max_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> list[Trajectory]:
    """Record ``n_episodes`` episodes of ``policy`` in ``env`` (an env or an id), from seeds ``seed, seed+1, ...``.

    Episode ``i`` starts from ``env.reset(seed=seed + i)`` (``i`` counts attempts when ``only_successful`` skips
    failures). A policy with a ``reset()`` method (the scripted demonstrators) is reset at every episode start, with
    a seed derived from ``(seed, i)`` if it accepts one, so every episode can be reproduced on its own.

    :param policy_obs_key: feed the policy ``obs[key]`` (e.g. ``"state"`` for a state expert in an ``obs_mode="all"``
        env) while recording the full observation
    :param record_keys: keep only these observation keys (e.g. ``("pixels", "proprio")``)
    :param deterministic: mean actions for experts; for SB3 models, ``predict(deterministic=...)``
    :param only_successful: keep only episodes whose final ``info["is_success"]`` is true, trying further seeds (at
        most ``max_attempts``, default ``10 * n_episodes``)
    :param max_steps: episode length cap, needed when the env has no time limit (default: its registered limit)
    :returns: trajectories whose ``init_state`` is ``env.unwrapped.get_env_state()`` right after the reset and whose
        ``infos`` hold ``is_success``, ``seed``, ``goal_achieved`` (per step) and ``goal_steps``.
    """
    n_episodes, seed, max_attempts, max_steps = _checked_rollout_args(
        env, n_episodes, seed, deterministic, only_successful, max_attempts, max_steps, env_kwargs
    )
    own_env = isinstance(env, str)
    if isinstance(env, str):
        env = gym.make(env, **(env_kwargs or {}))
    try:
        check_observation_keys(env.observation_space, policy_obs_key=policy_obs_key, record_keys=record_keys)
    except (TypeError, ValueError):
        if own_env:
            env.close()
        raise
    act = _as_action_fn(policy, deterministic, np.random.default_rng(seed))
    if max_attempts is None:
        max_attempts = 10 * n_episodes if only_successful else n_episodes
    trajectories: list[Trajectory] = []
    attempts = 0
    try:
        limit = episode_limit(env, max_steps)
        while len(trajectories) < n_episodes and attempts < max_attempts:
            episode_seed = seed + attempts
            policy_seed = int(np.random.SeedSequence([seed, attempts]).generate_state(1)[0])
            attempts += 1
            init, observations, actions, rewards, goals, success = _record_episode(
                env, act, policy, episode_seed, policy_seed, limit, policy_obs_key, record_keys
            )
            if only_successful and not success:
                continue
            t = _stacked_trajectory(init, observations, actions, rewards)
            t.infos.update(
                is_success=success, seed=episode_seed, goal_achieved=np.asarray(goals), goal_steps=int(np.sum(goals))
            )
            trajectories.append(t)
    finally:
        if own_env:
            env.close()
    if len(trajectories) < n_episodes:
        raise RuntimeError(
            f"only {len(trajectories)} of {n_episodes} episodes succeeded in {attempts} attempts; "
            "relax only_successful or raise max_attempts"
        )
    return trajectories
