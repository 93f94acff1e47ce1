"""Demonstrations: one in-memory format (:class:`Trajectory`) and converters from the formats in the wild."""

from hindex_sb3.demos.core import Trajectory, check_compatible, stack_transitions, to_trajectories

__all__ = ["Trajectory", "check_compatible", "stack_transitions", "to_trajectories"]
