"""RL Zoo (``rl_zoo3``) hyperparameters for the ``HInDex/*`` tasks, shipped as YAML files with the package.

Point RL Zoo at them by module name (no file path needed)::

    python -m rl_zoo3.train --gym-packages hindex_sb3 --env HInDex/Door-v0 --algo ppo \\
        --conf-file hindex_sb3.hyperparams.ppo

RL Zoo imports a ``--conf-file`` that is not a ``.yml``/``.py`` path as a module and reads its ``hyperparams``
mapping; each module here exposes one YAML file that way (``path(name)`` gives the file for ``--conf-file path``).
Each file has a single ``default`` entry, which RL Zoo uses for every env id without an entry of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["NAMES", "ZooHyperparams", "load", "path"]

#: the shipped files: ``<name>.yml``
NAMES: tuple[str, ...] = ("ppo", "ppo_pixels", "sac")


def path(name: str) -> Path:
    """The YAML file ``name`` (one of :data:`NAMES`), e.g. for ``--conf-file``."""
    if name not in NAMES:
        raise ValueError(f"unknown hyperparameter file {name!r}; choose from {NAMES}")
    return Path(str(resources.files(__name__).joinpath(f"{name}.yml")))


def load(name: str) -> dict[str, dict[str, Any]]:
    """The parsed file ``name``: ``{env id or "default": {hyperparameter: value}}`` (``yaml.safe_load``)."""
    with open(path(name), encoding="utf-8") as f:
        return yaml.safe_load(f)


class ZooHyperparams(Mapping):
    """A read-only view of one file that hands out deep copies: RL Zoo deletes keys from the entry it reads, so a
    second run in the same process (tests, notebooks) must not see the first one's leftovers."""

    def __init__(self, name: str) -> None:
        self._data = load(name)

    def __getitem__(self, key: str) -> dict[str, Any]:
        return copy.deepcopy(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)
