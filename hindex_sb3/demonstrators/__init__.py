"""Scripted demonstrators: privileged-state controllers that solve tasks without any dataset or expert weights.

A pip user has neither the DAPG experts nor the human demonstrations, yet behaviour cloning and DAPG need
demonstrations; these controllers produce them offline. They read the simulator state (object, target, door angles)
from ``env.unwrapped`` and command the arm through inverse kinematics and fixed finger postures::

    import gymnasium as gym
    import hindex_sb3
    from hindex_sb3.demonstrators import make_demonstrator, rollout_demonstrations

    env = gym.make("HInDex/Door-v0", obs_mode="state")
    demo = make_demonstrator(env)
    obs, _ = env.reset(seed=0)
    demo.reset()
    action = demo(obs)

    trajectories = rollout_demonstrations("HInDex/Relocate-v0", n_episodes=25, seed=0)

Available for: door and relocate, and the DexMV relocate and place-inside tasks (see :func:`available_demonstrators`).
"""

# Importing the module registers the DexMV demonstrators (relocate x 7 objects, place-inside).
from hindex_sb3.demonstrators import dexmv  # noqa: F401
from hindex_sb3.demonstrators.adroit import (
    FINGER_JOINTS,
    DoorDemonstrator,
    HandDemonstrator,
    RelocateDemonstrator,
    hand_posture,
)
from hindex_sb3.demonstrators.base import (
    Demonstrator,
    available_demonstrators,
    demonstration_horizon,
    demonstrator_class,
    make_demonstrator,
    register_demonstrator,
)
from hindex_sb3.demonstrators.rollout import rollout_demonstrations

__all__ = [
    "FINGER_JOINTS",
    "Demonstrator",
    "DoorDemonstrator",
    "HandDemonstrator",
    "RelocateDemonstrator",
    "available_demonstrators",
    "demonstration_horizon",
    "demonstrator_class",
    "hand_posture",
    "make_demonstrator",
    "register_demonstrator",
    "rollout_demonstrations",
]
