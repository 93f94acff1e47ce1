"""Demonstrations: one in-memory format (:class:`Trajectory`), readers for the formats in the wild, expert rollouts
and conversion of state demonstrations into pixel demonstrations."""

from hindex_sb3.demos.core import Trajectory, check_compatible, stack_transitions, to_trajectories
from hindex_sb3.demos.render import render_states, replay
from hindex_sb3.demos.resolve import load_demonstrations
from hindex_sb3.demos.sources import DemoPickleError, load_dapg_pickle, load_minari, load_npz, rollout, save_npz

__all__ = [
    "DemoPickleError",
    "Trajectory",
    "check_compatible",
    "load_dapg_pickle",
    "load_demonstrations",
    "load_minari",
    "load_npz",
    "render_states",
    "replay",
    "rollout",
    "save_npz",
    "stack_transitions",
    "to_trajectories",
]
