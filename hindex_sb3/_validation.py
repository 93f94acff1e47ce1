"""Argument checks shared by every public entry point (envs, encoders, extractors, DAPG, the commands).

Each check either returns the value in its canonical type or raises one exception whose message starts with the
argument's name, so that the caller never has to guess which of its inputs was wrong. ``bool`` is refused wherever
a number is expected: ``True`` is an ``int`` in Python, but ``n_envs=True`` is always a mistake.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_dapg_args",
    "check_device",
    "check_encoder_options",
    "check_extractor_options",
    "check_flag",
    "check_hidden",
    "check_inflation",
    "check_int",
    "check_output_dir",
    "check_precision",
    "check_real",
    "check_str",
    "check_weights_arg",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (numpy integers accepted; bools, floats, strings not)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """``value`` as a finite ``float`` within the bounds (ints accepted; bools, strings, NaN and inf not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (value == minimum and not min_inclusive)):
        raise ValueError(f"{name} must be {'>=' if min_inclusive else '>'} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (value == maximum and not max_inclusive)):
        raise ValueError(f"{name} must be {'<=' if max_inclusive else '<'} {maximum}, got {value}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """A real ``bool`` (numpy bools accepted): ``"False"`` or ``0`` as a flag hides a bug in the caller."""
    if isinstance(value, bool | np.bool_):  # (numpy 2 names its scalar type "bool", not "bool_")
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_str(name: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared without hashing, so a list argument gets this message too)."""
    choices = tuple(choices)
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


#: the encoders' compute precisions (:attr:`hindex_sb3.encoders.base.Encoder.precision`)
PRECISIONS = ("fp32", "bf16")


def check_precision(name: str, value: Any) -> str:
    """An encoder compute precision: ``"fp32"`` or ``"bf16"`` (strings only; ``torch.bfloat16`` is not accepted)."""
    return check_choice(name, value, PRECISIONS)


def check_weights_arg(name: str, value: Any) -> Any:
    """A ``weights`` argument: ``"default"``, a non-empty path (str or ``os.PathLike``), or ``None``."""
    import os

    if value is None or isinstance(value, os.PathLike):
        return value
    return check_str(name, value)


def check_encoder_options(
    *,
    weights: Any = None,
    ema_scope: Any = None,
    ema_momentum: Any = 0.0,
    channels_last: Any = None,
    cuda_graphs: Any = False,
    precision: Any = "fp32",
    scopes: Iterable[Any] = ("all", "stem", None),
    ema_update: Any = "frame",
) -> None:
    """The options shared by ``create_encoder``, ``VecEncode`` and the extractor factories, checked before any file
    is read (all of them, even those a setting makes unused: a typo must not pass because EMA-BN is off)."""
    check_weights_arg("weights", weights)
    check_choice("ema_scope", ema_scope, scopes)
    check_choice("ema_update", ema_update, ("frame", "batch"))
    check_real("ema_momentum", ema_momentum, minimum=0.0, maximum=1.0)
    if channels_last is not None:
        check_flag("channels_last", channels_last)
    check_flag("cuda_graphs", cuda_graphs)
    check_precision("precision", precision)


def check_hidden(name: str, hidden: Any) -> tuple[int, ...]:
    """MLP layer sizes: a non-empty sequence of positive ints (at most 65,536 units each, to bound allocation)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
        raise TypeError(f"{name} must be a sequence of layer sizes, got {hidden!r}")
    sizes = tuple(hidden)
    if not sizes:
        raise ValueError(f"{name} must have at least one layer")
    return tuple(check_int(f"{name}[{i}]", v, minimum=1, maximum=65_536) for i, v in enumerate(sizes))


def check_extractor_options(
    *,
    weights: Any,
    ema_scope: Any,
    hidden: Any,
    pixels_key: Any,
    proprio_key: Any,
    channels_last: Any,
    cuda_graphs: Any,
    ema_update: Any = "frame",
    precision: Any = "fp32",
) -> None:
    """What ``hindex_extractor`` / ``baseline_extractor`` pass to SB3, checked before SB3 builds a policy with it."""
    check_encoder_options(
        weights=weights,
        ema_scope=ema_scope,
        channels_last=channels_last,
        cuda_graphs=cuda_graphs,
        precision=precision,
        scopes=("all", "stem", "auto", None),
    )
    check_choice("ema_update", ema_update, ("frame", "batch"))
    check_hidden("hidden", hidden)
    check_str("pixels_key", pixels_key)
    check_str("proprio_key", proprio_key)


# DAPG's numeric constructor arguments: (check, bounds). Ranges are those under which the algorithm is defined.
_DAPG_INTS = {
    "n_trajectories": (1, 1_000_000),
    "bc_epochs": (0, None),
    "bc_batch_size": (1, None),
    "cg_iters": (1, 10_000),
    "vf_epochs": (0, None),
    "vf_batch_size": (1, None),
    "feature_batch_size": (1, None),
    "stats_window_size": (1, None),
    "verbose": (0, None),
}
_DAPG_REALS = {  # name: (minimum, maximum, minimum inclusive)
    "step_size": (0.0, None, False),
    "gamma": (0.0, 1.0, True),
    "gae_lambda": (0.0, 1.0, True),
    "lam0": (0.0, None, True),
    "lam1": (0.0, 1.0, True),
    "bc_lr": (0.0, None, False),
    "cg_damping": (0.0, None, True),
    "hvp_sample_frac": (0.0, 1.0, False),
    "input_scale_floor": (0.0, None, True),  # 0: no floor
}


def check_dapg_args(args: dict[str, Any]) -> None:
    """Check ``DAPG.__init__``'s numeric arguments (pass its ``locals()``) before SB3 builds anything."""
    for name, (lo, hi) in _DAPG_INTS.items():
        check_int(name, args[name], minimum=lo, maximum=hi)
    for name, (lo, hi, lo_inclusive) in _DAPG_REALS.items():
        check_real(name, args[name], minimum=lo, maximum=hi, min_inclusive=lo_inclusive)
    if not callable(args["learning_rate"]):
        check_real("learning_rate", args["learning_rate"], minimum=0.0, min_inclusive=False)
    check_choice("demo_weight", args["demo_weight"], ("mjrl", "paper"))
    check_flag("overlap", args["overlap"])
    if args["seed"] is not None:
        check_int("seed", args["seed"], minimum=0)


#: A zip member larger than INFLATION_FLOOR bytes may inflate at most MAX_INFLATION times its compressed size:
#: deflate gains ~1-10x on observations and weights; ~1000x means constant filler, i.e. a decompression bomb.
MAX_INFLATION = 200
INFLATION_FLOOR = 64 << 20


def check_inflation(where: str, declared: int, compressed: int) -> None:
    """Refuse, from a zip header alone, a member that would inflate like a decompression bomb."""
    ratio = declared / max(compressed, 1)
    if declared > INFLATION_FLOOR and ratio > MAX_INFLATION:
        raise ValueError(
            f"{where} would inflate {compressed:,} compressed bytes to {declared:,} ({ratio:,.0f}x): no genuine "
            "file compresses like that (a decompression bomb?); nothing was inflated"
        )


def check_device(name: str, value: Any) -> None:
    """``None``, ``"auto"``, a ``torch.device``, a CUDA index, or a string ``torch.device`` parses (``"cuda:0"``).

    A CUDA device must exist on this machine: otherwise the caller's first ``.to()`` fails with torch's own message,
    later and further from the argument that caused it.
    """
    import torch

    if value is None or value == "auto":
        return
    if _is_int(value):  # torch's shorthand for a CUDA index
        check_int(name, value, minimum=0)
        device = torch.device("cuda", int(value))
    elif isinstance(value, torch.device):
        device = value
    elif isinstance(value, str):
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{name} {value!r} is not a torch device ({err})") from None
    else:
        raise TypeError(f"{name} must be a device name, a CUDA index or a torch.device, got {value!r}")
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(f"{name} {value!r}: CUDA is not available on this machine")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name} {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_output_dir(name: str, value: Any) -> None:
    """An output folder that exists, or can be created: no file on the way, writable where creation starts."""
    import os
    from pathlib import Path

    out = Path(check_str(name, str(value) if isinstance(value, os.PathLike) else value)).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{name} {out} exists and is not a folder")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())  # where mkdir would start
    if not existing.is_dir():
        raise NotADirectoryError(f"{name} {out}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{name} {out}: {existing} is not writable")
