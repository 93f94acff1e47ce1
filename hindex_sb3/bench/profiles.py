"""Profiles: the budget of every run of a suite.

``paper`` adds nothing to ``hindex train``'s own defaults, which for the 12 tasks *are* the paper's per-task settings
(iterations, trajectories, demonstrations, momentum, horizon, camera), so the bench cannot drift from the single
runner. ``smoke`` shrinks everything so that a 2 x 2 x 2 suite runs end to end on a 2-core CPU in minutes; it uses
randomly initialised encoders, and every output says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    """``train``: overrides of ``hindex train`` settings; ``adapt``: of ``hindex adapt`` (Stage 2) settings."""

    name: str
    train: dict[str, Any] = field(default_factory=dict)
    adapt: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = False
    description: str = ""


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper",
        adapt={"episodes": 50, "iterations": 100_000, "batch_size": 8, "image_size": 224},
        description="the paper's budget per task (hindex train's per-task defaults; Stage 2: 100k iterations)",
    ),
    "smoke": Profile(
        "smoke",
        train={
            "iterations": 2,
            "trajectories": 2,
            "horizon": 20,
            "image_size": 64,
            "num_demos": 1,
            "demos": "scripted",
            "eval_episodes": 2,
            "eval_every": 1,
            "checkpoint_every": 1,
            "weights": "random",
            "n_envs": 1,
            "video": False,
        },
        adapt={
            "episodes": 1,
            "iterations": 4,
            "batch_size": 2,
            "image_size": 64,
            "max_steps": 20,
            "policy": "random",
            "weights": "random",
            "vgg_weights": "random",
            "calibrate_batches": 0,
            "checkpoint_every": 2,
            "figures": False,
        },
        random_weights=True,
        description="tiny budget, random weights (labelled): tests the whole path, measures nothing",
    ),
}


def get_profile(name: str) -> Profile:
    if not isinstance(name, str):  # (a list raised "unhashable type")
        raise TypeError(f"profile must be a profile name, got {name!r}")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
