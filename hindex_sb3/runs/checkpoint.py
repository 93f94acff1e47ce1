"""DAPG checkpoints that load without executing anything: one ``.safetensors`` file.

SB3's zip format unpickles Python objects on load, so a crafted ``model.zip`` runs code in ``DAPG.load``. Our
checkpoints are a safetensors file (a JSON header, then raw tensor bytes; the format has no code path) holding:

* tensors: the policy ``state_dict`` (mean network, ``log_std``, normalisation, value baseline, the encoder and its
  EMA-BN statistics), the value baseline's Adam state, torch's RNG states;
* in the header's metadata, one strict-JSON document: the run's :class:`~hindex_sb3.runs.config.TrainConfig`, the
  algorithm's counters (``dapg_iterations``, ``num_timesteps``, ``bc_done``, ``bc_loss``, episode statistics),
  the optimizer's structure, python/numpy/env RNG states and the runner's state (curve so far).

Loading parses that JSON, validates it like user input, rebuilds the DAPG from the config (the policy class comes
from the config, never from the file) and copies the tensors in. Files are written atomically.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hindex_sb3._io import atomic_write_bytes, read_json, to_json_text
from hindex_sb3.dapg import DAPG
from hindex_sb3.encoders import RandomWeightsWarning
from hindex_sb3.runs.config import TrainConfig, TrainingError, resolve_task

__all__ = [
    "FORMAT",
    "CheckpointError",
    "LoadedCheckpoint",
    "find_latest",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
]

FORMAT = "hindex_sb3.dapg_checkpoint/1"
SUFFIX = ".safetensors"
_META_KEY = "hindex_sb3"
_MAX_META_CHARS = 16 * 2**20


class CheckpointError(TrainingError, ValueError):
    """A file that is not a usable hindex-sb3 DAPG checkpoint (the message says what it is instead)."""


@dataclass
class LoadedCheckpoint:
    model: DAPG
    config: TrainConfig
    run_state: dict[str, Any] = field(default_factory=dict)
    rng_state: dict[str, Any] | None = None
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- saving
def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    sd = optimizer.state_dict()
    tensors, state = {}, {}
    for idx, entries in sd["state"].items():
        state[str(idx)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{idx}/{name}"] = value
                state[str(idx)][name] = {"tensor": f"optimizer/{idx}/{name}"}
            else:
                state[str(idx)][name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}, tensors


#: scalar attributes that belong to this process (timers, logger wiring) or come from the configuration (rebuilt
#: from it, never from the file), not to the run's state
_NOT_STATE = frozenset(
    {
        "verbose", "start_time", "_num_timesteps_at_start", "_total_timesteps", "_custom_logger", "seed",
        "learning_rate", "n_steps", "use_sde", "sde_sample_freq", "ent_coef", "vf_coef", "max_grad_norm",
        "_stats_window_size", "n_trajectories", "step_size", "gamma", "gae_lambda", "lam0", "lam1", "demo_weight",
        "bc_epochs", "bc_batch_size", "bc_lr", "cg_iters", "cg_damping", "hvp_sample_frac", "vf_epochs",
        "vf_batch_size", "input_scale_floor", "feature_batch_size",
    }
)  # fmt: skip


def _scalar_attributes(model: DAPG) -> dict[str, Any]:
    """Every plain-number/str/bool attribute of the model (counters such as an episode-seed base included), so that
    state an algorithm keeps in scalars survives a resume without each one being listed here."""
    out = {}
    for name, value in vars(model).items():
        if name in _NOT_STATE:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
            out[name] = value
    return out


def _algorithm_state(model: DAPG) -> dict[str, Any]:
    bc_loss = model.bc_loss
    return {
        "attributes": _scalar_attributes(model),
        "dapg_iterations": int(model.dapg_iterations),
        "num_timesteps": int(model.num_timesteps),
        "bc_done": bool(model.bc_done),
        "bc_loss": float(bc_loss) if bc_loss is not None and math.isfinite(bc_loss) else None,
        "episode_num": int(model._episode_num),
        "ep_info_buffer": [
            {k: float(v) for k, v in info.items() if k in ("r", "l", "t")} for info in (model.ep_info_buffer or [])
        ],
        "ep_success_buffer": [bool(s) for s in (model.ep_success_buffer or [])],
    }


def save_checkpoint(
    model: DAPG,
    path: str | os.PathLike,
    config: TrainConfig,
    *,
    run_state: dict[str, Any] | None = None,
    rng: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``model`` (built from ``config``) to ``path`` atomically; returns the path.

    :param run_state: the runner's JSON state (curve so far, ...), given back by :func:`load_checkpoint`
    :param rng: :func:`hindex_sb3.runs.rng.capture_rng`'s result, for an exact resume
    """
    if run_state is not None and not isinstance(run_state, dict):  # `run_state or {}` saved a 5 that no load reads
        raise TypeError(f"run_state must be a dict or None, got {type(run_state).__name__}")
    if os.path.isdir(path):  # the atomic write would name its temporary file instead
        raise IsADirectoryError(f"checkpoint path {os.fspath(path)!r} is a directory; give a file name")
    from safetensors.torch import save

    tensors = {f"policy/{k}": v.detach().cpu().clone().contiguous() for k, v in model.policy.state_dict().items()}
    optim_meta, optim_tensors = _optimizer_parts(model.policy.optimizer)
    tensors.update({k: v.detach().cpu().clone().contiguous() for k, v in optim_tensors.items()})
    rng_state = None
    if rng is not None:
        rng_state, rng_tensors = rng
        tensors.update({k: v.detach().cpu().clone().contiguous() for k, v in rng_tensors.items()})
    meta = {
        "format": FORMAT,
        "config": config.to_dict() | {"resume": None, "overwrite": False},
        "algorithm": _algorithm_state(model),
        "optimizer": optim_meta,
        "rng": rng_state,
        "run": run_state or {},
    }
    data = save(tensors, metadata={_META_KEY: to_json_text(meta, indent=None)})
    return atomic_write_bytes(path, data)


# ---------------------------------------------------------------------------------------------- reading
def _describe_foreign(path: Path) -> str | None:
    """What a file that is not a safetensors checkpoint looks like, for the error message."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then the JSON header
        return None
    if head.startswith(b"PK\x03\x04"):
        return (
            "a zip archive (an SB3 model zip or a torch.save file): such files unpickle Python objects on load, "
            "which can run code. hindex-sb3 checkpoints are .safetensors files; load an SB3 zip only if you trust "
            "it, with DAPG.load"
        )
    if head[:1] == b"\x80":
        return "a Python pickle (loading it could run code); hindex-sb3 checkpoints are .safetensors files"
    return None


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's JSON document (config, counters, run state), read from the header only (no tensors)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    foreign = _describe_foreign(path)
    if foreign is not None:
        raise CheckpointError(f"{path} is {foreign}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for every malformed header
        raise CheckpointError(f"{path} is not a safetensors checkpoint ({type(err).__name__}: {err})") from err
    text = metadata.get(_META_KEY)
    if not isinstance(text, str) or len(text) > _MAX_META_CHARS:
        raise CheckpointError(f"{path} is a safetensors file but not a hindex-sb3 DAPG checkpoint")
    try:
        meta = read_json(text, text=True)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: its JSON header is not strict JSON ({err})") from err
    _check_meta(path, meta)
    return meta


def _check_meta(path: Path, meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected {FORMAT})")
    for key, kind in (("config", dict), ("algorithm", dict), ("optimizer", dict), ("run", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: '{key}' is missing or not a JSON object")
    algo = meta["algorithm"]
    for key in ("dapg_iterations", "num_timesteps", "episode_num"):
        value = algo.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{path}: algorithm.{key} must be a non-negative integer, got {value!r}")
    if not isinstance(algo.get("bc_done"), bool):
        raise CheckpointError(f"{path}: algorithm.bc_done must be true or false")
    if algo.get("bc_loss") is not None and not isinstance(algo["bc_loss"], int | float):
        raise CheckpointError(f"{path}: algorithm.bc_loss must be a number or null")


def read_checkpoint_config(path: str | os.PathLike, *, check_files: bool = True) -> TrainConfig:
    """The run configuration stored in a checkpoint (validated like any other; ``check_files=False``: the demo and
    weight files it names need not exist here)."""
    meta = read_checkpoint_info(path)
    try:
        return TrainConfig.from_dict(meta["config"], where=str(path), check_files=check_files)
    except TrainingError as err:
        raise CheckpointError(f"{path}: stored configuration is invalid: {err}") from err


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable tensors ({type(err).__name__}: {err})") from err
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
    return tensors


# ---------------------------------------------------------------------------------------------- loading
def _restore_optimizer(path: Path, optimizer: torch.optim.Optimizer, meta: dict, tensors: dict) -> None:
    state = {}
    for idx, entries in meta.get("state", {}).items():
        if not isinstance(entries, dict):
            raise CheckpointError(f"{path}: optimizer state {idx!r} is not an object")
        restored = {}
        for name, value in entries.items():
            if isinstance(value, dict):
                key = value.get("tensor")
                if key not in tensors:
                    raise CheckpointError(f"{path}: optimizer tensor {key!r} is missing")
                restored[name] = tensors[key]
            elif isinstance(value, int | float) and not isinstance(value, bool):
                restored[name] = value
            else:
                raise CheckpointError(f"{path}: optimizer value {idx}.{name} is {type(value).__name__}")
        state[int(idx)] = restored
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise CheckpointError(f"{path}: optimizer param_groups must be a list of objects")
    groups = [{k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in g.items()} for g in groups]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit the model ({err})") from err


def _restore_algorithm(model: DAPG, algo: dict[str, Any]) -> None:
    attributes = algo.get("attributes", {})
    current = _scalar_attributes(model)
    for name, value in attributes.items() if isinstance(attributes, dict) else ():
        # only attributes the fresh model has, with the same type: a file cannot add or retype anything
        if name in current and type(current[name]) is type(value):
            setattr(model, name, value)
    model.dapg_iterations = algo["dapg_iterations"]
    model.num_timesteps = algo["num_timesteps"]
    model.bc_done = algo["bc_done"]
    model.bc_loss = float("nan") if algo.get("bc_loss") is None else float(algo["bc_loss"])
    model._episode_num = algo["episode_num"]
    window = model._stats_window_size
    infos = [dict(i) for i in algo.get("ep_info_buffer", []) if isinstance(i, dict)]
    model.ep_info_buffer = deque(infos[-window:], maxlen=window)
    model.ep_success_buffer = deque([bool(s) for s in algo.get("ep_success_buffer", [])][-window:], maxlen=window)


def load_checkpoint(
    path: str | os.PathLike,
    env: Any = None,
    *,
    config: TrainConfig | None = None,
    device: str | None = None,
) -> LoadedCheckpoint:
    """Rebuild the DAPG saved by :func:`save_checkpoint`; nothing in the file is executed.

    :param env: the env to continue training in (a VecEnv or env); ``None`` builds a model that can act
        (``predict``) from the spaces of the config's task
    :param config: the configuration to build with (default: the stored one); it must describe the same model
    :param device: overrides the config's device
    """
    from hindex_sb3.runs.build import build_model, env_spaces
    from hindex_sb3.runs.config import ConfigError

    path = Path(path)
    meta = read_checkpoint_info(path)
    cfg = config if config is not None else read_checkpoint_config(path, check_files=False)
    if device is not None:
        cfg = cfg.replace(device=device)
    tensors = _read_tensors(path)
    if env is None:
        try:
            env = env_spaces(cfg, resolve_task(cfg.task))
        except ConfigError as err:
            raise CheckpointError(f"{path}: {err}") from err
    with warnings.catch_warnings():  # the encoder starts random, but every tensor is overwritten just below
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = build_model(cfg, env, load_weights=False)
    policy_tensors = {k.removeprefix("policy/"): v for k, v in tensors.items() if k.startswith("policy/")}
    try:
        model.policy.load_state_dict(policy_tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the stored policy does not match its configuration ({err})") from err
    _restore_optimizer(path, model.policy.optimizer, meta["optimizer"], tensors)
    _restore_algorithm(model, meta["algorithm"])
    rng_tensors = {k: v for k, v in tensors.items() if k.startswith("rng/")}
    return LoadedCheckpoint(model, cfg, dict(meta["run"]), meta.get("rng"), rng_tensors)


def find_latest(folder: str | os.PathLike) -> Path | None:
    """The checkpoint with the most DAPG iterations in a run folder (``checkpoints/`` and the final model)."""
    folder = Path(folder)
    candidates = [*sorted((folder / "checkpoints").glob(f"iter_*{SUFFIX}")), folder / f"final_model{SUFFIX}"]
    best, best_it = None, -1
    for candidate in candidates:
        if not candidate.is_file():
            continue
        iterations = read_checkpoint_info(candidate)["algorithm"]["dapg_iterations"]
        if iterations >= best_it:
            best, best_it = candidate, iterations
    return best
