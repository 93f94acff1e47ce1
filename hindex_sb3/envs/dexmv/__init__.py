"""The DexMV tasks of H-InDex (relocate x 7 YCB objects, pour, place-inside) rebuilt natively in MuJoCo.

DexMV's simulator needs mujoco-py, MuJoCo 2.1 and YCB meshes we cannot ship; these environments rebuild its scenes
with MjSpec from the Adroit assets of gymnasium-robotics and MuJoCo primitives. See ``docs/dexmv.md``.
"""

from hindex_sb3.envs.dexmv.backgrounds import BACKGROUNDS
from hindex_sb3.envs.dexmv.tasks import (
    DEXMV_TASKS,
    DexMVEnv,
    DexMVRelocateEnv,
    PlaceInsideEnv,
    PourEnv,
    RelocateFoamBrickEnv,
    RelocateLargeClampEnv,
    RelocateMugEnv,
    RelocateMustardBottleEnv,
    RelocatePottedMeatCanEnv,
    RelocateSugarBoxEnv,
    RelocateTomatoSoupCanEnv,
)

__all__ = [
    "BACKGROUNDS",
    "DEXMV_TASKS",
    "DexMVEnv",
    "DexMVRelocateEnv",
    "PlaceInsideEnv",
    "PourEnv",
    "RelocateFoamBrickEnv",
    "RelocateLargeClampEnv",
    "RelocateMugEnv",
    "RelocateMustardBottleEnv",
    "RelocatePottedMeatCanEnv",
    "RelocateSugarBoxEnv",
    "RelocateTomatoSoupCanEnv",
]
