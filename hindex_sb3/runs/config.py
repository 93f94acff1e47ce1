"""The one description of a training run: :class:`TrainConfig`.

Every setting of ``hindex train`` lives here once, with its default, its range and its help text; the command-line
flags are generated from these fields (:mod:`hindex_sb3.runs.cli_args`), ``config.json`` is this dataclass as JSON,
and ``--config FILE.json`` reads it back. A field whose default is ``None`` and that is marked ``paper`` takes the
paper's per-task value (:mod:`hindex_sb3.runs.paper`) unless it is given.

Validation happens on construction (``__post_init__``): types (a ``bool`` is not an ``int``), ranges and finiteness,
with one :class:`ConfigError` naming the field, so that a bad value stops a run before any work.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["GROUPS", "RESUMABLE_FIELDS", "ConfigError", "TrainConfig", "TrainingError", "resolve_task"]


#: whether TrainConfig checks that named files exist (off while reading a checkpoint's config to act with it)
_CHECK_FILES: contextvars.ContextVar[bool] = contextvars.ContextVar("hindex_check_files", default=True)


class TrainingError(RuntimeError):
    """A problem the user can fix (missing weights, bad demos, an existing run); printed without a traceback."""


class ConfigError(TrainingError, ValueError):
    """A setting out of its type or range. ``field`` names it (the CLI turns it into the flag's name)."""

    def __init__(self, field_name: str, problem: str) -> None:
        self.field = field_name
        self.problem = problem
        super().__init__(f"{field_name}: {problem}")


def resolve_task(task: str) -> str:
    """``door`` / ``Door`` / ``HInDex/Door-v0`` / ``relocate-mug`` / ``place_inside`` -> ``HInDex/...-v0`` ids.

    :func:`hindex_sb3.envs.resolve_env_id` (every command's resolver), with its error as a :class:`TrainingError`.
    """
    from hindex_sb3.envs import UnknownTaskError, resolve_env_id

    try:
        return resolve_env_id(task)
    except (UnknownTaskError, TypeError) as err:
        raise TrainingError(str(err)) from err


#: argument groups of ``hindex train --help``, in order
GROUPS = {
    "run": "run",
    "representation": "representation (encoder, EMA-BN)",
    "env": "environment",
    "bc": "behaviour cloning (before RL)",
    "dapg": "DAPG (natural policy gradient with demonstrations)",
    "baseline": "value baseline",
    "output": "outputs and resuming",
}


def _opt(default: Any, group: str, help: str, **meta: Any) -> Any:
    """A config field: ``lo``/``hi`` bounds (``lo_open``: exclusive), ``choices``, ``flag`` (CLI name), ``paper``
    (the paper's per-task value when left at ``None``), ``resumable`` (may differ from the checkpoint's on resume)."""
    return field(default=default, metadata={"group": group, "help": help, **meta})


@dataclass
class TrainConfig:
    """Settings of one BC + DAPG run (H-InDex Stage 3). Defaults are mjrl's / the authors' (hindex paper, §4)."""

    task: str = field(metadata={"group": "run", "help": "task: door, hammer, pen, relocate-mug, ... (`hindex envs`)"})
    # -- run
    iterations: int | None = _opt(None, "run", "DAPG iterations (total, also when resuming)", lo=0, paper=True,
                                  resumable=True)  # fmt: skip
    trajectories: int | None = _opt(None, "run", "episodes sampled per DAPG iteration", lo=1, paper=True)
    demos: str = _opt("scripted", "run", "scripted | expert:PATH.npz | FILE.npz | FILE.pickle | minari:ID | none")
    num_demos: int | None = _opt(None, "run", "demonstrations used (the first N)", lo=1, paper=True)
    seed: int = _opt(0, "run", "random seed (numpy, torch, envs)", lo=0, hi=2**32 - 1)
    device: str = _opt("auto", "run", "torch device: auto, cpu, cuda, cuda:1", resumable=True)
    n_envs: int = _opt(1, "run", "environments stepped in lockstep (batched encoder)", lo=1, hi=4096)
    vec_env: str = _opt("auto", "run", "envs in this process (dummy), one worker process each with frames pickled "
                        "through pipes (subproc) or passed in shared memory (shm), or auto (shm on GPU machines)",
                        choices=("auto", "dummy", "subproc", "shm"), resumable=True)  # fmt: skip
    envs_per_worker: int = _opt(1, "run", "with shm: envs per worker process; above 1 a worker draws all its envs' "
                                "frames in one tiled pass (pays on a GPU, see docs/training.md)", lo=1, hi=4096,
                                resumable=True)  # fmt: skip
    threads_per_worker: int = _opt(1, "run", "with envs_per_worker > 1: threads in which a worker steps the physics "
                                   "of its envs (at most envs_per_worker; same steps)", lo=1, hi=4096,
                                   resumable=True)  # fmt: skip
    overlap: bool = _opt(False, "run", "with worker-process envs (subproc, shm; auto picks shm), keep two halves of "
                         "the envs in flight: encode one while the other steps (same episodes and actions)",
                         resumable=True)  # fmt: skip
    # Not resumable: on the CPU the thread count changes how torch sums, so the numbers of the run.
    torch_threads: int = _opt(0, "run", "torch CPU threads (0: torch's default, the machine's cores); on the CPU the "
                              "run's numbers depend on it, so it is recorded", lo=0, hi=4096)  # fmt: skip
    eval_episodes: int = _opt(25, "run", "evaluation episodes (mean actions, fixed seeds)", lo=1)
    eval_every: int = _opt(1, "run", "evaluate every N iterations (and after the last)", lo=1)
    # -- representation
    encoder: str = _opt("hindex", "representation", "a registered encoder (hindex, vc1, mvp, r3m, rrl, or your own) "
                        "or 'state' (no pixels)")  # fmt: skip
    weights: str | None = _opt("default", "representation", "encoder weights: 'default' (downloaded once), a "
                               "checkpoint path, or 'random' (every output labelled)")  # fmt: skip
    ema_momentum: float | None = _opt(None, "representation", "EMA-BN momentum (0 = frozen statistics)", lo=0.0,
                                      hi=1.0, paper=True)  # fmt: skip
    ema_scope: str = _opt("all", "representation", "BatchNorm layers EMA-BN adapts", choices=("all", "stem"))
    cuda_graphs: bool = _opt(True, "representation", "replay the encoder as CUDA graphs on a GPU", resumable=True)
    # Not resumable: unlike cuda_graphs (same numbers, replayed), bf16 changes the features the policy was trained on.
    precision: str = _opt("fp32", "representation", "encoder compute precision: fp32 (the paper's) or bf16 "
                          "(autocast; features within 2e-2 norm-relative of fp32; faster on GPUs and bf16 CPUs)",
                          choices=("fp32", "bf16"))  # fmt: skip
    # -- env
    image_size: int = _opt(224, "env", "rendered image side (pixels)", lo=16, hi=1024)
    horizon: int | None = _opt(None, "env", "episode length", lo=1, hi=100_000, paper=True)
    camera: str | None = _opt(None, "env", "camera name", paper=True)
    reward_type: str | None = _opt(None, "env", "env reward: dense (DAPG's) or sparse (H-InDex's Adroit mj_envs)",
                                   choices=("dense", "sparse"), paper=True)  # fmt: skip
    # -- behaviour cloning
    bc_epochs: int = _opt(5, "bc", "BC epochs (0: no BC)", lo=0, hi=100_000)
    bc_batch_size: int = _opt(32, "bc", "BC minibatch size", lo=1, hi=1_000_000)
    bc_lr: float = _opt(1e-3, "bc", "BC Adam learning rate", lo=0.0, lo_open=True)
    # -- DAPG
    step_size: float = _opt(0.05, "dapg", "normalised natural-gradient step delta (mjrl rl_step_size)", lo=0.0,
                            lo_open=True)  # fmt: skip
    gamma: float = _opt(0.995, "dapg", "discount factor", lo=0.0, hi=1.0)
    gae_lambda: float = _opt(0.97, "dapg", "GAE lambda", lo=0.0, hi=1.0)
    lam0: float = _opt(1e-2, "dapg", "demo weight at iteration 0 (mjrl lam_0)", lo=0.0)
    lam1: float = _opt(0.95, "dapg", "per-iteration decay of the demo weight (mjrl lam_1)", lo=0.0, hi=1.0)
    demo_weight: str = _opt("mjrl", "dapg", "demo weight: mjrl (lam0*lam1^k) or paper (times max advantage)",
                            choices=("mjrl", "paper"))  # fmt: skip
    cg_iters: int = _opt(10, "dapg", "conjugate-gradient iterations", lo=1, hi=1000)
    cg_damping: float = _opt(1e-4, "dapg", "Fisher damping", lo=0.0)
    hvp_sample_frac: float = _opt(1.0, "dapg", "fraction of samples per Fisher-vector product", lo=0.0, hi=1.0,
                                  lo_open=True)  # fmt: skip
    hidden: tuple[int, ...] = _opt((256, 256), "dapg", "policy mean MLP sizes (tanh), e.g. 256,256", lo=1, hi=65536)
    input_scale_floor: float = _opt(1e-3, "dapg", "lower bound of the demo feature std in input normalisation",
                                    lo=0.0)  # fmt: skip
    feature_batch_size: int = _opt(256, "dapg", "batch size when encoding stored observations", lo=1, hi=1_000_000)
    # -- value baseline
    vf_lr: float = _opt(1e-3, "baseline", "baseline Adam learning rate", lo=0.0, lo_open=True)
    vf_epochs: int = _opt(2, "baseline", "baseline epochs per iteration", lo=1, hi=10_000)
    vf_batch_size: int = _opt(64, "baseline", "baseline minibatch size", lo=1, hi=1_000_000)
    vf_weight_decay: float = _opt(1e-3, "baseline", "baseline Adam weight decay (mjrl reg_coef)", lo=0.0)
    vf_hidden: tuple[int, ...] = _opt((128, 128), "baseline", "baseline MLP sizes (ReLU), e.g. 128,128", lo=1,
                                      hi=65536)  # fmt: skip
    # -- outputs
    out_dir: str = _opt("runs", "output", "output root folder (the run folder is OUT/<task>_<encoder>_seed<N>)",
                        flag="out", resumable=True)  # fmt: skip
    checkpoint_every: int = _opt(25, "output", "checkpoint every N iterations (0: only the final model)", lo=0,
                                 resumable=True)  # fmt: skip
    resume: str | None = _opt(None, "output", "continue the run: its latest checkpoint, or this checkpoint file / "
                              "run folder (name the task first: hindex train door --resume)", nargs="?",
                              const="latest", resumable=True)  # fmt: skip
    overwrite: bool = _opt(False, "output", "replace an existing run folder (deletes its outputs)", resumable=True)
    video: bool = _opt(True, "output", "record eval.gif at the end", resumable=True)
    progress_bar: bool = _opt(True, "output", "show a progress bar", flag="progress", resumable=True)
    verbose: int = _opt(0, "output", "1: also log to stdout", lo=0, hi=2, resumable=True)

    def __post_init__(self) -> None:
        hints = _type_hints()
        for f in fields(self):
            value = _check_type(f.name, getattr(self, f.name), hints[f.name])
            if value is not None:
                _check_range(f, value)
            setattr(self, f.name, value)
        self._check_choices()

    # ------------------------------------------------------------------ validation beyond one field
    def _check_choices(self) -> None:
        try:
            resolve_task(self.task)
        except TrainingError as err:
            raise ConfigError("task", str(err)) from err
        if self.encoder != "state":
            from hindex_sb3.encoders import list_encoders

            if self.encoder not in list_encoders():
                raise ConfigError("encoder", f"unknown encoder {self.encoder!r}; choose 'state' or one of "
                                  f"{list_encoders()}")  # fmt: skip
        if self.envs_per_worker > 1 and self.vec_env in ("dummy", "subproc"):
            raise ConfigError("envs_per_worker", f"needs vec_env shm (or auto), not {self.vec_env!r}")
        if self.overlap and self.vec_env == "dummy":
            raise ConfigError("overlap", "needs envs in worker processes (vec_env subproc, shm or auto), not 'dummy': "
                              "the halves are encoded while the other half's workers step")  # fmt: skip
        if self.overlap and self.n_envs < 2:
            raise ConfigError("overlap", f"needs n_envs >= 2 (two halves of the envs), got {self.n_envs}")
        if self.envs_per_worker > self.n_envs:
            raise ConfigError("envs_per_worker", f"{self.envs_per_worker} is more than n_envs ({self.n_envs})")
        if self.threads_per_worker > self.envs_per_worker:
            raise ConfigError("threads_per_worker", f"{self.threads_per_worker} is more than envs_per_worker "
                              f"({self.envs_per_worker}): a thread steps at least one env")  # fmt: skip
        if self.encoder == "state" and self.precision != "fp32":
            raise ConfigError("precision", "applies to the pixel encoder; encoder 'state' has none (use fp32)")
        if self.encoder == "state" and self.weights not in (None, "default", "random"):  # a file would go unread
            raise ConfigError("weights", f"{self.weights!r}: encoder 'state' has no weights (leave --weights out)")
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError) as err:
                raise ConfigError("device", f"not a torch device: {self.device!r}") from err
        if not _CHECK_FILES.get():
            return
        _check_demo_source(self.demos)
        named_file = self.weights not in (None, "default", "random")
        if named_file and not Path(str(self.weights)).is_file():
            raise ConfigError("weights", f"no such file: {self.weights!r} (or use default, random)")
        if self.resume is not None and self.overwrite:
            raise ConfigError("overwrite", "cannot be combined with resume")

    # ------------------------------------------------------------------ conveniences
    @property
    def random_weights(self) -> bool:
        return self.encoder != "state" and self.weights in (None, "random")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config", check_files: bool = True) -> TrainConfig:
        """Build from plain values (``config.json``); an unknown key is an error, not silently dropped.

        :param check_files: require the demonstration and weight files to exist (``False`` for a checkpoint's
            config loaded to act: the model's tensors are in the checkpoint, the files may be elsewhere)
        """
        if not isinstance(data, dict):
            raise ConfigError(where, f"expected a JSON object of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting in {where} (known: {sorted(known)})")
        if "task" not in data:
            raise ConfigError("task", f"missing in {where}")
        token = _CHECK_FILES.set(check_files)
        try:
            return cls(**data)
        finally:
            _CHECK_FILES.reset(token)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: fields that may differ from the checkpoint's when resuming (they do not change what is computed)
RESUMABLE_FIELDS = frozenset(f.name for f in fields(TrainConfig) if f.metadata.get("resumable"))


def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _check_demo_source(source: str) -> None:
    if source in ("scripted", "none") or source.startswith("minari:"):
        return
    path = source.split(":", 1)[1] if source.startswith("expert:") else source
    if not Path(path).is_file():
        raise ConfigError("demos", f"{source!r}: no such file (or use scripted, expert:PATH, minari:ID, none)")


def _base_types(hint: Any) -> tuple[Any, bool]:
    """``(T, optional)`` for ``T`` or ``T | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _check_type(name: str, value: Any, hint: Any) -> Any:
    base, optional = _base_types(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must be given (not null)")
    if typing.get_origin(base) is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(name, f"expected a non-empty list of integers, got {value!r}")
        return tuple(_check_type(name, v, int) for v in value)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(name, f"expected a string, got {value!r}")
        return os.fspath(value)
    raise TypeError(f"unsupported config type {hint!r} for {name}")  # a bug in TrainConfig, not user input


def _check_range(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (v <= lo if meta.get("lo_open") else v < lo):
            raise ConfigError(f.name, f"must be {'>' if meta.get('lo_open') else '>='} {lo}, got {value!r}")
        if hi is not None and v > hi:
            raise ConfigError(f.name, f"must be <= {hi}, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f.name, f"must be one of {list(choices)}, got {value!r}")
