"""DexMV's scene, assembled with MjSpec: table arena, cameras and the Adroit arm + hand (``dexmv.md`` A1, A4, A5).

The hand comes from the Adroit assets that gymnasium-robotics ships (its DAPG relocate scene: the forearm mounted on
the world through the six arm joints ARTx..ARRz with DexMV's ranges, damping 20 and gains 500/-200, then the 24
hand joints). We strip that scene down to the arm and hand and apply what DexMV's ``adroit_{relocate,pour,
placement}.xml`` change relative to DAPG:

* the forearm's quaternion as DexMV writes it (the same orientation as DAPG's euler, to 6 digits);
* collision geometry: a larger palm box ``C_palm0``, no ``C_palm1`` (except pour) and no ``C_lfmetacarpal``, and the
  per-task forearm/wrist capsules;
* ``WRJ0`` with the hand's default damping 0.05 and armature 0.001 (DAPG: 0.5 / 0.005);
* solver options ``cone=elliptic``, ``solver=PGS``, 20 iterations, 20 noslip iterations, 2 ms Euler steps.

Contact margins need care (A5). MuJoCo <= 2.1 used the larger of two geoms' margins and gaps and created a force
inside ``margin - gap``; MuJoCo 4 *adds* both geoms' margins for the force and detects contacts within the sum of
margins plus gaps. We therefore give hand geoms margin 0 (DexMV: 0.0005, so hand-object contacts keep the object's
0.003) and express place-inside's ``margin=gap=0.03`` as margin 0 with gap 0.03: no force field, but contacts within
3 cm are still reported, which DexMV's reward reads as "touching".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mujoco
import numpy as np

from hindex_sb3.envs.dexmv.backgrounds import Background, add_surface_material

HandVariant = Literal["relocate", "pour", "placement"]
HAND_VARIANTS: tuple[str, ...] = ("relocate", "pour", "placement")

#: The 30 actuated joints in qpos order; ``qpos[:30]`` is DexMV's arm + hand state and our ``proprio``.
ARM_HAND_JOINTS: tuple[str, ...] = (
    "ARTx", "ARTy", "ARTz", "ARRx", "ARRy", "ARRz", "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1", "FFJ0", "MFJ3", "MFJ2", "MFJ1", "MFJ0", "RFJ3", "RFJ2", "RFJ1", "RFJ0",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0", "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip

FOREARM_POS = (0.0, -0.7, 0.2)
FOREARM_QUAT = (0.000563312, -0.000562864, 0.706825, 0.707388)

# (C_forearm1 capsule, C_wrist capsule) radius / half-length per DexMV hand file
_ARM_CAPSULES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "relocate": ((0.06, 0.043), (0.015, 0.01)),
    "pour": ((0.08, 0.053), (0.025, 0.02)),
    "placement": ((0.05, 0.06), (0.015, 0.01)),
}
_PALM0_SIZE, _PALM0_POS = (0.052, 0.015, 0.06), (-0.008, 0.0, 0.038)
# adroit_placement.xml's DC_Hand class
_PLACEMENT_HAND_CONTACT = dict(priority=10, solref=[0.02, 20.0], solimp=[0.9, 0.95, 0.001, 0.1, 2.0], gap=0.03)
MUJOCO_DEFAULT_FRICTION = (1.0, 0.005, 0.0001)

# Table arena (robosuite TableArena with DexMV's arguments): the top is at z = 0.
TABLE_HALF_SIZE = (0.6, 0.6, 0.025)
TABLE_FRICTION = (1.0, 0.5, 0.01)

# Fixed cameras of DexMV's table_arena.xml; fovy is MuJoCo's default 45 degrees.
# frontview's attribute "0.65 0.2705981, 0.2705981, 0.6532815" was read by MuJoCo 2.1 as (0.65, 0.2705981, 0, 0).
_FRONT = np.array([0.65, 0.2705981, 0.0, 0.0])
CAMERAS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float, float]]] = {
    "frontview": ((0.0, -1.0, 0.9), tuple(float(v) for v in _FRONT / np.linalg.norm(_FRONT))),
    "backview": ((0.0, 0.6, 0.9), (0.0, 0.0, 0.2815, 0.9595)),
    "sideview": ((-1.3, -0.5, 0.5), (0.6781121, 0.5164697, -0.3290275, -0.4064037)),
}


def adroit_asset_dir() -> Path:
    """The Adroit hand assets of the installed gymnasium-robotics (found at run time, as a pip user has them)."""
    import gymnasium_robotics

    path = Path(gymnasium_robotics.__file__).resolve().parent / "envs" / "assets" / "adroit_hand"
    if not (path / "adroit_relocate.xml").is_file():
        raise FileNotFoundError(f"gymnasium-robotics' Adroit assets not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _adroit_xml() -> str:
    """DAPG's relocate scene with absolute asset paths, so MjSpec can parse it from a string (cached: parsing the
    file and its includes is most of the cost of building a scene)."""
    spec = mujoco.MjSpec.from_file(str(adroit_asset_dir() / "adroit_relocate.xml"))
    return spec.to_xml()


def _new_hand_spec() -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_string(_adroit_xml())
    spec.meshdir = str(adroit_asset_dir() / "resources" / "meshes")
    spec.texturedir = str(adroit_asset_dir() / "resources" / "textures")
    return spec


def _in_hand(spec: mujoco.MjSpec) -> set[str]:
    names, stack = set(), [spec.body("forearm")]
    while stack:
        body = stack.pop()
        names.update(g.name for g in body.geoms)
        stack.extend(body.bodies)
    return names


def build_hand(variant: HandVariant) -> mujoco.MjSpec:
    """A spec holding only DexMV's arm + hand (``variant`` selects the task's hand file), with DexMV's options."""
    if variant not in HAND_VARIANTS:
        raise ValueError(f"hand variant must be one of {HAND_VARIANTS}, got {variant!r}")
    spec = _new_hand_spec()
    world = spec.worldbody
    for body in [b for b in world.bodies if b.name != "forearm"]:
        spec.delete(body)
    for element in [*world.geoms, *world.sites, *world.cameras, *world.lights]:
        spec.delete(element)

    option = spec.option
    option.timestep = 0.002
    option.iterations = 20
    option.noslip_iterations = 20
    option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    option.solver = mujoco.mjtSolver.mjSOL_PGS
    option.integrator = mujoco.mjtIntegrator.mjINT_EULER
    # DAPG's <size> limits are sized for a ball; the pour scene has many more contacts.
    spec.nstack, spec.njmax, spec.nconmax = -1, -1, -1
    spec.memory = 64 * 2**20

    forearm = spec.body("forearm")
    forearm.pos = list(FOREARM_POS)
    forearm.alt.type = mujoco.mjtOrientation.mjORIENTATION_QUAT
    forearm.quat = list(FOREARM_QUAT)

    wrj0 = spec.joint("WRJ0")
    wrj0.damping = [0.05, 0.0, 0.0]
    wrj0.armature = 0.001

    (forearm_r, forearm_h), (wrist_r, wrist_h) = _ARM_CAPSULES[variant]
    spec.geom("C_forearm1").size = [forearm_r, forearm_h, 0.0]
    spec.geom("C_wrist").size = [wrist_r, wrist_h, 0.0]
    palm = spec.geom("C_palm0")
    palm.size = list(_PALM0_SIZE)
    palm.pos = list(_PALM0_POS)
    spec.delete(spec.geom("C_lfmetacarpal"))
    if variant != "pour":
        spec.delete(spec.geom("C_palm1"))

    for name in _in_hand(spec):
        geom = spec.geom(name)
        geom.margin = 0.0
        geom.gap = 0.0
        if geom.classname.name == "DC_Hand":
            if variant == "placement":
                for key, value in _PLACEMENT_HAND_CONTACT.items():
                    setattr(geom, key, value)
        elif geom.contype or geom.conaffinity:
            # V_thbase / V_thhub have no class in DexMV, so MuJoCo's default friction (DAPG sets it via `main`)
            geom.friction = list(MUJOCO_DEFAULT_FRICTION)
    return spec


@dataclass(frozen=True)
class SceneNames:
    table_geom: str = "table_collision"
    floor_geom: str = "floor"


def add_arena(spec: mujoco.MjSpec, background: Background) -> SceneNames:
    """DexMV's table arena: a 1.2 x 1.2 m table with its top at z = 0, legs, a floor at z = -1, two lights, the
    gradient skybox and the fixed cameras."""
    names = SceneNames()
    spec.add_texture(
        name="skybox",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        rgb1=[0.9, 0.9, 1.0],
        rgb2=[0.2, 0.3, 0.4],
        width=256,
        height=256,
    )
    table_material = add_surface_material(spec, "dexmv_table", background.table)
    floor_material = add_surface_material(spec, "dexmv_floor", background.floor)
    world = spec.worldbody
    world.add_geom(
        name=names.floor_geom,
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[1.5, 1.5, 0.125],
        pos=[0, 0, -1],
        material=floor_material,
        condim=3,
    )
    table = world.add_body(name="table", pos=[0, 0, -TABLE_HALF_SIZE[2]])
    table.add_geom(
        name=names.table_geom,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=list(TABLE_HALF_SIZE),
        friction=list(TABLE_FRICTION),
        material=table_material,
        group=2,
    )
    leg_half = (1.0 - TABLE_HALF_SIZE[2]) / 2  # robosuite: (table_offset_z - half_z) / 2
    for i, (x, y) in enumerate([(0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)]):
        table.add_geom(
            name=f"table_leg{i + 1}_visual",
            type=mujoco.mjtGeom.mjGEOM_CYLINDER,
            size=[0.025, leg_half, 0],
            pos=[x, y, -leg_half],
            contype=0,
            conaffinity=0,
            group=1,
            rgba=list(background.legs),
        )
    for name, pos in (("light1", (1.0, 1.0, 4.0)), ("light2", (-3.0, -3.0, 4.0))):
        light = world.add_light(name=name, pos=list(pos), dir=[0, -0.15, -1], castshadow=False)
        light.diffuse = [0.8, 0.8, 0.8]
        light.specular = [0.3, 0.3, 0.3]
    for name, (pos, quat) in CAMERAS.items():
        world.add_camera(name=name, pos=list(pos), quat=list(quat))
    return names


def hand_geom_mask(model: mujoco.MjModel) -> np.ndarray:
    """Boolean mask over geoms: everything attached to the forearm subtree (DexMV's ``robot_geom_names``)."""
    forearm = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "forearm")
    return model.body_rootid[model.geom_bodyid] == forearm
