"""``hindex train``'s flags, generated from :class:`~hindex_sb3.runs.config.TrainConfig` (one source of defaults and
help), plus ``--set KEY=VALUE`` and ``--config FILE.json``.

Precedence, lowest first: the dataclass defaults (and the paper's per-task values for unset fields), ``--config``,
explicit flags, ``--set``. With ``--resume`` the base is the checkpoint's configuration instead of the defaults, so
only what is given on the command line can differ from it (and the runner refuses changes that would alter results).
"""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields
from typing import Any

from hindex_sb3._io import read_json
from hindex_sb3.runs.config import GROUPS, ConfigError, TrainConfig, _base_types, _type_hints

__all__ = ["add_train_arguments", "config_from_args", "flag_name"]


def flag_name(field_name: str) -> str:
    """The command-line flag of a config field (``out_dir`` -> ``--out``, ``eval_every`` -> ``--eval-every``)."""
    for f in fields(TrainConfig):
        if f.name == field_name and f.name != "task":
            return "--" + f.metadata.get("flag", f.name).replace("_", "-")
    return "--" + field_name if field_name in ("set", "config") else field_name


def _default_text(f: Any) -> str:
    if f.metadata.get("paper"):
        return "default: the paper's value for the task, else " + {
            "iterations": "100",
            "trajectories": "100",
            "num_demos": "25",
            "ema_momentum": "0",
        }.get(f.name, "the env's")
    value = f.default
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return f"default: {value}"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field (``dest`` = the field name, absent unless given) and ``--set`` / ``--config``."""
    hints = _type_hints()
    parser.add_argument(
        "task", nargs="?", default=argparse.SUPPRESS, help=TrainConfig.__dataclass_fields__["task"].metadata["help"]
    )
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(TrainConfig):
        if f.name == "task":
            continue
        group = groups[f.metadata["group"]]
        flag = flag_name(f.name)
        base, _ = _base_types(hints[f.name])
        text = f"{f.metadata['help']} ({_default_text(f)})"
        if base is bool:
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
            continue
        extra: dict[str, Any] = {}
        if "nargs" in f.metadata:
            extra = {"nargs": f.metadata["nargs"], "const": f.metadata["const"]}
        if f.metadata.get("choices"):
            extra["choices"] = list(f.metadata["choices"])
        metavar = None if "choices" in extra else _metavar(base)
        group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=text, metavar=metavar, **extra)
    parser.add_argument(
        "--config",
        metavar="FILE.json",
        default=None,
        help="settings from a JSON file (a run's config.json repeats that run)",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="set any setting by its field name, e.g. --set step_size=0.1 --set hidden=[64,64]",
    )


def _metavar(base: Any) -> str:
    if typing.get_origin(base) is tuple:
        return "N,N"
    return {int: "N", float: "X", str: "TEXT"}.get(base, "VALUE")


def parse_value(name: str, text: str) -> Any:
    """The typed value of a command-line string for field ``name`` (validation proper happens in TrainConfig)."""
    hints = _type_hints()
    if name not in hints:
        raise ConfigError("set", f"unknown setting {name!r} (known: {', '.join(sorted(hints))})")
    base, optional = _base_types(hints[name])
    if optional and text.lower() in ("none", "null"):
        return None
    if base is str:
        return text
    if typing.get_origin(base) is tuple:
        body = text.strip().removeprefix("[").removesuffix("]").removeprefix("(").removesuffix(")")
        try:
            return [int(part) for part in body.split(",") if part.strip()]
        except ValueError as err:
            raise ConfigError(name, f"expected integers separated by commas, got {text!r}") from err
    if base is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(name, f"expected true or false, got {text!r}")
    try:
        value = json.loads(text)  # "1" -> 1, "1e-3" -> 0.001, "nan" -> error (not JSON): refused below
    except json.JSONDecodeError:
        value = text.strip().lower()
        if value in ("nan", "inf", "-inf", "infinity", "-infinity"):
            raise ConfigError(name, f"must be finite, got {text!r}") from None
        raise ConfigError(name, f"expected {'a number' if base is float else 'an integer'}, got {text!r}") from None
    return value


def _set_overrides(items: list[str]) -> dict[str, Any]:
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError("set", f"expected KEY=VALUE, got {item!r}")
        values[key.strip()] = parse_value(key.strip(), text)
    return values


def explicit_values(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line: ``--config`` file, then flags, then ``--set`` (each over the last)."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            data = read_json(args.config)
        except (OSError, ValueError) as err:
            raise ConfigError("config", f"cannot read {args.config}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError("config", f"{args.config}: expected a JSON object of settings")
        unknown = sorted(set(data) - set(_type_hints()))
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting in {args.config}")
        values.update(data)
    names = {f.name for f in fields(TrainConfig)}
    for name in names:
        if name in vars(args):
            raw = getattr(args, name)
            values[name] = parse_value(name, raw) if isinstance(raw, str) and name != "task" else raw
    values.update(_set_overrides(args.overrides))
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of a ``hindex train`` command line (see the module docstring for precedence)."""
    values = explicit_values(args)
    resume = values.get("resume")
    if "task" not in values and resume not in (None, "latest"):  # `--resume RUN_DIR|FILE` alone names the run
        from pathlib import Path

        from hindex_sb3.runs.checkpoint import find_latest, read_checkpoint_config

        target = Path(resume)
        found = find_latest(target) if target.is_dir() else target
        if found is None:
            raise ConfigError("resume", f"no checkpoint in {target}")
        run_dir = found.parent.parent if found.parent.name == "checkpoints" else found.parent
        # the run continues in the folder the checkpoint is in (OUT/<run name>), unless --out says otherwise
        values = read_checkpoint_config(found).to_dict() | {"out_dir": str(run_dir.parent)} | values
    if "task" not in values:
        raise ConfigError("task", "missing: name a task (e.g. `hindex train door`) or pass --config FILE.json")
    cfg = TrainConfig(**values)
    if not cfg.resume:
        return cfg
    from hindex_sb3.runs.checkpoint import read_checkpoint_config
    from hindex_sb3.runs.runner import locate_checkpoint

    path = locate_checkpoint(cfg)
    stored = read_checkpoint_config(path).to_dict()
    return TrainConfig(**(stored | values | {"resume": str(path)}))
