"""Vectorised envs beyond SB3's own: :class:`SharedMemoryVecEnv` passes camera frames through shared memory."""

from hindex_sb3.vec_env.shm import SharedMemoryVecEnv

__all__ = ["SharedMemoryVecEnv"]
