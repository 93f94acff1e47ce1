"""One way to name demonstrations, for the command line and the Python API alike.

A *source* is one of

* a path to a demonstration file: our ``.npz`` (:func:`~hindex_sb3.demos.save_npz`, also D4RL-style ``door-human``
  exports) or an original DAPG ``*_demos.pickle`` / ``.pkl`` (read without executing code);
* ``"minari:DATASET_ID"``: a Minari dataset (e.g. ``minari:D4RL/door/human-v2``);
* ``"expert:FILE.npz"``: a state-based expert policy, rolled out with mean actions;
* ``"scripted"``: the task's scripted demonstrator (successful episodes only);
* ``"none"``: no demonstrations (DAPG then runs plain NPG);
* trajectories already in memory (anything :func:`~hindex_sb3.demos.to_trajectories` reads).

:func:`load_demonstrations` returns them in the observation format of the environment they will train: state
demonstrations meant for a pixel environment are replayed from their start states in that environment
(:func:`~hindex_sb3.demos.replay`) and recorded as pixels, experts and scripted demonstrators act on the simulator
state while pixels are recorded. Generated episodes start from seeds ``DEMO_SEED_OFFSET + seed + i``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from hindex_sb3._validation import check_int, check_str
from hindex_sb3.demos.core import Trajectory, to_trajectories
from hindex_sb3.demos.render import replay
from hindex_sb3.demos.sources import check_key_list, load_dapg_pickle, load_minari, load_npz, rollout

__all__ = ["DEMO_SEED_OFFSET", "PAPER_NUM_DEMOS", "is_named_source", "load_demonstrations"]

#: first env seed of generated demonstrations (``scripted`` / ``expert:``), apart from training and evaluation seeds
DEMO_SEED_OFFSET = 10_000
#: demonstrations per task when a generated source is asked for without a count (the paper's most common number)
PAPER_NUM_DEMOS = 25
_GENERATED = ("scripted", "expert:")
_PIXEL_KEYS = {"pixels": ("pixels", "proprio"), "all": ("pixels", "proprio", "state"), "rgb": ("pixels",)}


def is_named_source(source: Any) -> bool:
    """Whether ``source`` names demonstrations (a string or path) rather than holding them."""
    return isinstance(source, str | os.PathLike)


def load_demonstrations(
    source: Any,
    env_id: str | None,
    *,
    num_demos: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    pixel_keys: Sequence[str] | None = None,
) -> list[Trajectory]:
    """Demonstrations from ``source`` (see the module doc) in the observation format of ``env_id(**env_kwargs)``.

    :param env_id: the training env's id; needed to generate demonstrations and to re-render state demonstrations
        for a pixel env (``None`` is enough for files and trajectories used as they are)
    :param num_demos: keep the first ``num_demos`` (files, datasets, trajectories) or generate that many (``scripted``,
        ``expert:``; default :data:`PAPER_NUM_DEMOS`); ``None`` keeps every stored demonstration. At least 1 (no
        demonstrations: ``source="none"``); a source holding fewer gives all it holds, with a ``UserWarning`` naming
        both numbers.
    :param seed: generated demonstrations start from env seeds ``DEMO_SEED_OFFSET + seed + i``
    :param env_kwargs: the training env's ``gym.make`` kwargs; ``obs_mode`` (default ``"pixels"`` for ``HInDex/*``
        ids) says which format to produce. The time limit of generated demonstrations is the task's demonstration
        horizon (scripted) or ``max_episode_steps`` (expert), not necessarily the training horizon.
    :param pixel_keys: observation keys to record for a pixel env (default: those of its ``obs_mode``)
    :raises ValueError: an unknown source, a bad count, or a conversion that is not possible (e.g. a pixel env
        and state demonstrations without start states)
    :raises FileNotFoundError: a path that is not a file
    """
    if num_demos is not None:  # 0 would train on nothing while saying it used demonstrations: None or "none" say so
        num_demos = check_int("num_demos", num_demos, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
        raise TypeError(f"env_kwargs must be a dict, got {type(env_kwargs).__name__}")
    if env_id is not None:
        check_str("env_id", env_id)
    check_key_list("pixel_keys", pixel_keys)  # (checked against the env where the keys are recorded)
    kwargs = {k: v for k, v in (env_kwargs or {}).items() if k != "render_mode"}
    obs_mode = kwargs.get("obs_mode", "pixels")
    keys = tuple(pixel_keys) if pixel_keys is not None else _PIXEL_KEYS.get(obs_mode, ("pixels", "proprio"))
    pixel = obs_mode != "state"
    if source is None or (isinstance(source, str) and source == "none"):
        return []
    if isinstance(source, str) and source.startswith(_GENERATED):
        count = PAPER_NUM_DEMOS if num_demos is None else num_demos
        return _generate(source, _need(env_id, source), count, DEMO_SEED_OFFSET + seed, kwargs, keys if pixel else None)
    demos = _read(source)
    if num_demos is not None and len(demos) < num_demos:
        # a warning, not an error: "the first N" of a file that holds fewer is a usable run (the paper's 25 and a
        # 24-demo file), but it must not pass unsaid while the run's config records N
        where = repr(os.fspath(source)) if is_named_source(source) else "the trajectories given"
        warnings.warn(
            f"num_demos={num_demos} but {where} holds only {len(demos)} demonstration(s): using those {len(demos)}",
            UserWarning,
            stacklevel=2,
        )
    if num_demos is not None:
        demos = demos[:num_demos]
    if pixel and demos and not isinstance(demos[0].observations, dict):
        demos = _rerender(demos, _need(env_id, "state demonstrations for a pixel env"), kwargs, keys)
    if obs_mode == "rgb":
        demos = [_image_only(t) for t in demos]
    return demos


def _need(env_id: str | None, what: str) -> str:
    if env_id is None:
        raise ValueError(f"{what!r} needs the environment id (pass env_id)")
    return env_id


def _read(source: Any) -> list[Trajectory]:
    if not is_named_source(source):
        return to_trajectories(source)
    text = os.fspath(source)
    if text.startswith("minari:"):
        return load_minari(text.split(":", 1)[1])
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"demonstrations {text!r}: no such file (sources: a .npz or DAPG .pickle path, minari:ID, "
            "expert:FILE.npz, scripted, none)"
        )
    if path.suffix in (".pickle", ".pkl"):
        return load_dapg_pickle(path)
    if path.suffix == ".npz":
        return load_npz(path)
    raise ValueError(f"demonstrations {text!r}: unknown file type {path.suffix!r} (expected .npz, .pickle or .pkl)")


def _generate(
    source: str, env_id: str, count: int, first_seed: int, kwargs: dict[str, Any], keys: tuple[str, ...] | None
) -> list[Trajectory]:
    """Scripted or expert episodes; in a pixel env the policy acts on ``obs["state"]`` while pixels are recorded."""
    make_kwargs = {**kwargs, "obs_mode": "all" if keys is not None else "state"}
    if source == "scripted":
        from hindex_sb3.demonstrators import demonstration_horizon, make_demonstrator

        # the task's demonstration horizon (place-inside: 200): demos feed BC and the demo term, not RL episodes
        make_kwargs["max_episode_steps"] = demonstration_horizon(env_id)
    elif not source.startswith("expert:") or not source.split(":", 1)[1]:
        raise ValueError(f"unknown demonstration source {source!r}")
    env = gym.make(env_id, **make_kwargs)
    try:
        if source == "scripted":
            try:
                policy: Any = make_demonstrator(env)
            except (KeyError, ValueError, TypeError) as err:
                raise ValueError(f"no scripted demonstrator for {env_id}: {err}; pass a demonstration file") from err
            return rollout(env, policy, count, seed=first_seed, record_keys=keys, only_successful=True)
        return rollout(
            env,
            source.split(":", 1)[1],
            count,
            seed=first_seed,
            policy_obs_key="state" if keys is not None else None,
            record_keys=keys,
        )
    finally:
        env.close()


def _rerender(demos: list[Trajectory], env_id: str, kwargs: dict[str, Any], keys: tuple[str, ...]) -> list[Trajectory]:
    """State demonstrations -> pixel demonstrations, replayed open-loop from their start states."""
    if any(not t.init_state for t in demos):
        raise ValueError(
            "state demonstrations for a pixel env must carry start states (init_state) to be re-rendered with "
            "hindex_sb3.demos.replay; these do not. Record pixel demonstrations instead (e.g. demos='scripted')."
        )
    env = gym.make(env_id, **{**kwargs, "obs_mode": "all"})
    try:
        return replay(demos, env, keys=keys)
    finally:
        env.close()


def _image_only(t: Trajectory) -> Trajectory:
    """``obs_mode="rgb"`` observations are the image alone."""
    if not isinstance(t.observations, dict):
        return t
    return Trajectory(t.observations["pixels"], t.actions, t.rewards, t.init_state, t.infos)
