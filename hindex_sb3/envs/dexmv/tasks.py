"""The nine DexMV tasks of H-InDex as pixel environments: relocate (7 YCB objects), pour and place-inside.

Facts from DexMV's sources (github.com/yzqin/dexmv-sim, as vendored by github.com/YanjieZe/H-InDex; summarised in
docs/dexmv.md): scene, objects, resets, state vectors, rewards and goals, cameras, and the port to MuJoCo 4.
What the DexMV envs did and we keep:

* an action in [-1, 1]^30 is clipped and mapped to ``ctrl = mid + a * half_range``, held for 5 steps of 2 ms;
* observations and rewards read ``body_xpos``/``site_xpos`` straight after ``mj_step``, as mujoco-py did (no extra
  ``mj_forward``), so they lag ``qpos`` by one 2 ms substep exactly as the experts saw them;
* "the hand touches the object" is any contact in the contact list between a geom of the arm/hand subtree and a
  collision geom of the object.

H-InDex's episode rule (``mjrl/samplers/core.py``): a rollout succeeds when at least 10 of its steps meet the
logged criterion -- relocate object-target distance <= 0.1, pour water fraction >= 0.3, place-inside banana-mug
xy distance <= 0.1. That criterion is ``info["goal_achieved"]``; its measurement is ``info["goal_measurement"]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np

from hindex_sb3._validation import check_real, check_str
from hindex_sb3.envs.base import ManipulationEnv, check_state_dict
from hindex_sb3.envs.dexmv.backgrounds import get_background
from hindex_sb3.envs.dexmv.objects import (
    YCB_ORIENTATION,
    YCB_SIZE,
    ObjectModel,
    add_parts,
    banana,
    pour_mug,
    relocate_object,
    target_mug,
)
from hindex_sb3.envs.dexmv.scene import MUJOCO_DEFAULT_FRICTION, add_arena, build_hand, hand_geom_mask

FRAME_SKIP = 5  # control at 100 Hz on 2 ms physics steps
_FREE_JOINT = dict(armature=0.001, frictionloss=0.001)  # YCBObject's free joint (damping 0)


def _reset_scene_defaults(spec: mujoco.MjSpec) -> None:
    """Give elements we add MuJoCo's own defaults: the DAPG `main` class (margin 0.0005, friction (1, 0.5, 0.01),
    joint damping 0.05, ...) belongs to the hand, while DexMV's arena and objects were written without it."""
    default = spec.default
    default.geom.margin = 0.0
    default.geom.gap = 0.0
    default.geom.friction = list(MUJOCO_DEFAULT_FRICTION)
    default.joint.damping = [0.0, 0.0, 0.0]
    default.joint.armature = 0.0
    default.joint.frictionloss = 0.0
    default.joint.margin = 0.0
    default.joint.limited = mujoco.mjtLimited.mjLIMITED_AUTO


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


class DexMVEnv(ManipulationEnv):
    """A DexMV task; see :class:`~hindex_sb3.envs.base.ManipulationEnv` for the observation conventions.

    ``proprio`` is ``qpos[:30]`` (arm and hand, what H-InDex concatenates to the image features); ``state`` is the
    DexMV experts' observation. ``background`` picks a table/floor look (:data:`BACKGROUNDS`), ``"plain"`` by
    default.
    """

    hand_variant: ClassVar[str]
    success_threshold = 10
    success_inclusive = True
    default_horizon = 100  # H-InDex's RL and evaluation horizon for every DexMV task
    proprio_dim = 30

    def __init__(
        self,
        obs_mode: str = "pixels",
        image_size: int | tuple[int, int] = 224,
        camera: str | int | None = None,
        reward_type: str = "dense",
        render_quality: str = "fast",
        render_mode: str | None = None,
        background: str = "plain",
    ):
        get_background(check_str("background", background))  # fail before building anything
        self.background = background
        super().__init__(
            obs_mode=obs_mode,
            image_size=image_size,
            camera=camera,
            reward_type=reward_type,
            render_quality=render_quality,
            render_mode=render_mode,
        )
        self._init_kwargs.update(self._task_kwargs())
        self._goal_measurement = float("nan")

    def _task_kwargs(self) -> dict[str, Any]:
        """Constructor arguments beyond the base ones (recorded so pickling rebuilds the same env)."""
        return {"background": self.background}

    # ------------------------------------------------------------------ simulation
    @property
    def model(self) -> mujoco.MjModel:
        return self._model

    @property
    def data(self) -> mujoco.MjData:
        return self._data

    @property
    def dt(self) -> float:
        return self._model.opt.timestep * FRAME_SKIP

    def _build_simulation(self) -> None:
        spec = build_hand(self.hand_variant)
        _reset_scene_defaults(spec)
        add_arena(spec, get_background(self.background))
        object_geoms = self._add_task(spec)
        self._model = spec.compile()
        self._data = mujoco.MjData(self._model)
        model = self._model
        low, high = model.actuator_ctrlrange.T
        self._act_mid, self._act_rng = (low + high) / 2, (high - low) / 2
        self._grasp_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "S_grasp")
        self._hand_geoms = hand_geom_mask(model)
        self._object_geoms = np.zeros(model.ngeom, dtype=bool)
        for name in object_geoms:
            self._object_geoms[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)] = True
        self._setup_references()

    def _add_task(self, spec: mujoco.MjSpec) -> list[str]:
        """Add the task's objects to ``spec``; return the names of the geoms whose contact with the hand counts."""
        raise NotImplementedError

    def _setup_references(self) -> None:
        """Look up the ids the task needs in the compiled model."""

    def _apply_action(self, action: np.ndarray) -> None:
        self._data.ctrl[:] = self._act_mid + action * self._act_rng
        mujoco.mj_step(self._model, self._data, nstep=FRAME_SKIP)

    def _reset_simulation(self, options: dict[str, Any] | None) -> None:
        mujoco.mj_resetData(self._model, self._data)
        state = None
        if options and options.get("initial_state_dict") is not None:
            state = self._check_state_dict(options["initial_state_dict"])
        self._randomise(self.np_random)
        if state is not None:
            self._restore(state)
        mujoco.mj_forward(self._model, self._data)
        self._goal_measurement = float("nan")

    def _randomise(self, rng: np.random.Generator) -> None:
        """Place objects (and targets) as DexMV's ``_reset_internal`` does."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state restoring (demonstrations)
    def _state_keys(self) -> dict[str, tuple[int, ...]]:
        return {"qpos": (self._model.nq,), "qvel": (self._model.nv,)}

    def get_env_state(self) -> dict[str, np.ndarray]:
        """The current scene as a dict restorable through ``reset(options={"initial_state_dict": ...})``."""
        return {"qpos": self._data.qpos.copy(), "qvel": self._data.qvel.copy()}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._data.qpos[:] = state["qpos"]
        self._data.qvel[:] = state["qvel"]

    def _check_state_dict(self, state_dict: Any) -> dict[str, np.ndarray]:
        return check_state_dict(state_dict, self._state_keys(), type(self).__name__)

    # ------------------------------------------------------------------ observations, rewards
    def _proprio(self) -> np.ndarray:
        return self._data.qpos[:30]

    @property
    def palm_pos(self) -> np.ndarray:
        """World position of ``S_grasp``, DexMV's "palm"."""
        return self._data.site_xpos[self._grasp_site]

    def hand_touches_object(self) -> bool:
        """DexMV's ``check_contact(object collision geoms, robot geoms)`` over the current contact list."""
        ncon = self._data.ncon
        if ncon == 0:
            return False
        geoms = self._data.contact.geom[:ncon]
        g1, g2 = geoms[:, 0], geoms[:, 1]
        hand, obj = self._hand_geoms, self._object_geoms
        return bool(np.any((hand[g1] & obj[g2]) | (hand[g2] & obj[g1])))

    def _step_info(self) -> dict[str, Any]:
        return {"goal_measurement": self._goal_measurement}

    def _finish_reward(self, dense: float, goal: bool, measurement: float) -> tuple[float, bool, bool]:
        self._goal_measurement = float(measurement)
        reward = dense if self.reward_type == "dense" else float(goal)
        return float(reward), bool(goal), False


class DexMVRelocateEnv(DexMVEnv):
    """Relocate a YCB object to a random target in the air (``YCBRelocate`` with H-InDex's arguments: object scale
    0.8, friction (1, 0.5, 0.01), solref (-6000, -300), randomness 0.25)."""

    hand_variant = "relocate"
    object_name: ClassVar[str]
    default_camera = "backview"
    state_dim = 39
    randomness_scale: ClassVar[float] = 0.25
    goal_distance: ClassVar[float] = 0.1

    def _add_task(self, spec: mujoco.MjSpec) -> list[str]:
        obj: ObjectModel = relocate_object(self.object_name)
        quat = list(YCB_ORIENTATION[self.object_name])
        body = spec.worldbody.add_body(name="object", pos=[0.0, 0.0, YCB_SIZE[self.object_name][2] / 2], quat=quat)
        joint = body.add_freejoint(name="object_joint")
        for key, value in _FREE_JOINT.items():
            setattr(joint, key, value)
        names = add_parts(
            body,
            obj,
            "collision_object",
            friction=[1.0, 0.5, 0.01],
            solref=[-6000.0, -300.0],
            condim=4,
            margin=0.003,
        )
        alpha = 0.5 if self.object_name == "large_clamp" else 0.125  # H-InDex's ALPHA_DICT
        target = spec.worldbody.add_body(name="target", pos=[0.05, 0.05, 0.2], quat=quat)
        add_parts(target, obj, "target", rgba=(0.0, 1.0, 0.0, alpha), collide=False, group=0)
        return names

    def _setup_references(self) -> None:
        self._object_body = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, "object")
        self._target_body = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, "target")

    def _randomise(self, rng: np.random.Generator) -> None:
        qpos, s = self._data.qpos, self.randomness_scale
        qpos[30] = _uniform(rng, 0.15, 0.15) * s - 0.1  # x is fixed at -0.0625
        qpos[31] = _uniform(rng, -0.15, 0.15) * s
        target = self._model.body_pos[self._target_body]
        target[0] = _uniform(rng, -0.30, 0.10)
        target[1] = _uniform(rng, -0.15, 0.15)
        target[2] = _uniform(rng, 0.15, 0.25)

    def _state_keys(self) -> dict[str, tuple[int, ...]]:
        return {**super()._state_keys(), "target_pos": (3,)}

    def get_env_state(self) -> dict[str, np.ndarray]:
        return {**super().get_env_state(), "target_pos": self._model.body_pos[self._target_body].copy()}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        super()._restore(state)
        self._model.body_pos[self._target_body] = state["target_pos"]

    @property
    def object_pos(self) -> np.ndarray:
        return self._data.xpos[self._object_body]

    @property
    def target_pos(self) -> np.ndarray:
        return self._data.xpos[self._target_body]

    def _state(self) -> np.ndarray:
        palm, obj, target = self.palm_pos, self.object_pos, self.target_pos
        return np.concatenate([self._data.qpos[:30], palm - obj, palm - target, obj - target])

    def _reward(self) -> tuple[float, bool, bool]:
        palm, obj, target = self.palm_pos, self.object_pos, self.target_pos
        distance = float(np.linalg.norm(obj - target))
        reward = -0.1 * float(np.linalg.norm(palm - obj))
        if self.hand_touches_object():
            reward += 0.1
            lift = max(min(obj[2], target[2]) - YCB_SIZE[self.object_name][2] / 2.0, 0.0)
            reward += 50.0 * lift
            if lift > 0.015:
                reward += 2.0 - 0.5 * float(np.linalg.norm(palm - target)) - 1.5 * distance
                if distance < 0.1:
                    reward += 1.0 / (distance + 0.01)
        return self._finish_reward(reward, distance <= self.goal_distance, distance)


def _relocate_class(class_name: str, object_name: str, camera: str) -> type[DexMVRelocateEnv]:
    doc = f"DexMV relocate with the YCB {object_name.replace('_', ' ')}; default camera ``{camera}`` as in H-InDex."
    return type(class_name, (DexMVRelocateEnv,), {"object_name": object_name, "default_camera": camera, "__doc__": doc})


RelocateMugEnv = _relocate_class("RelocateMugEnv", "mug", "backview")
RelocateMustardBottleEnv = _relocate_class("RelocateMustardBottleEnv", "mustard_bottle", "backview")
RelocatePottedMeatCanEnv = _relocate_class("RelocatePottedMeatCanEnv", "potted_meat_can", "backview")
RelocateTomatoSoupCanEnv = _relocate_class("RelocateTomatoSoupCanEnv", "tomato_soup_can", "backview")
RelocateSugarBoxEnv = _relocate_class("RelocateSugarBoxEnv", "sugar_box", "sideview")
RelocateLargeClampEnv = _relocate_class("RelocateLargeClampEnv", "large_clamp", "frontview")
RelocateFoamBrickEnv = _relocate_class("RelocateFoamBrickEnv", "foam_brick", "frontview")
for _cls in (
    RelocateMugEnv,
    RelocateMustardBottleEnv,
    RelocatePottedMeatCanEnv,
    RelocateTomatoSoupCanEnv,
    RelocateSugarBoxEnv,
    RelocateLargeClampEnv,
    RelocateFoamBrickEnv,
):
    _cls.__module__ = __name__  # registered entry points and pickles find them here


# ---------------------------------------------------------------------- pour
TANK_POS = (-0.08, -0.1)
TANK_XY_SIZE = 0.15
MUG_INIT = (0.14, -0.1)  # mug_init_offset (0.22, 0) + tank position
PARTICLE_COUNT = (2, 2, 3)
PARTICLE_SPACING = 0.012
PARTICLE_RADIUS = 0.01
WATER_RGBA = (0.3216, 0.3569, 0.9804, 0.6)


class PourEnv(DexMVEnv):
    """Pour the 12 water particles from the mug into the tank (``WaterPouringEnv``).

    ``tank_height``: 0.12 m is what H-InDex's RL rollouts and evaluation build (and upstream DexMV trains with);
    its BC demonstrations used 0.08 (dexmv.md A0). The pouring target is 0.12 m above the tank's rim.
    """

    hand_variant = "pour"
    default_camera = "backview"
    state_dim = 43

    def __init__(self, *args, tank_height: float = 0.12, **kwargs):
        self.tank_height = check_real("tank_height", tank_height, minimum=0.02, maximum=0.3)  # metres
        super().__init__(*args, **kwargs)

    def _task_kwargs(self) -> dict[str, Any]:
        return {**super()._task_kwargs(), "tank_height": self.tank_height}

    def _add_task(self, spec: mujoco.MjSpec) -> list[str]:
        world = spec.worldbody
        mug_z = YCB_SIZE["mug"][2] / 2
        body = world.add_body(name="mug", pos=[*MUG_INIT, mug_z], quat=[0.707, 0.0, 0.0, 0.707])
        joint = body.add_freejoint(name="mug_joint")
        for key, value in _FREE_JOINT.items():
            setattr(joint, key, value)
        names = add_parts(body, pour_mug(), "collision_mug", condim=4, margin=0.003)

        tank_x, tank_y = TANK_POS
        world.add_site(
            name="pouring_site",
            pos=[tank_x + 0.05, tank_y, self.tank_height + 0.12],
            size=[0.01, 0, 0],
            rgba=[0, 1, 0, 0],
            group=1,
        )
        # create_water_tank with thickness 0.006: boards 3 mm thick in the middle, collision boards 12 mm half-thick
        tank = world.add_body(name="water_tank", pos=[tank_x, tank_y, 0.0])
        half, z, t = TANK_XY_SIZE / 2, self.tank_height / 2, 0.003
        boards = [
            ((0, 0, t), (half, half, 4 * t)),
            ((half - t, 0, z), (4 * t, half, z)),
            ((0, half - t, z), (half, 4 * t, z)),
            ((-half + t, 0, z), (4 * t, half, z)),
            ((0, -half + t, z), (half, 4 * t, z)),
        ]
        for i, (pos, size) in enumerate(boards):
            tank.add_geom(
                name=f"water_tank_{i}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=list(pos), size=list(size), group=2
            )

        # MJCF <composite type="particle" count="2 2 3" spacing="0.012"> at 6 cm above the mug (MuJoCo 4 rejects
        # <composite>): position = offset + spacing * (index - count / 2), three slide joints each.
        offset = np.array([*MUG_INIT, mug_z]) + np.array([0.0, 0.0, 0.06])
        for ix in range(PARTICLE_COUNT[0]):
            for iy in range(PARTICLE_COUNT[1]):
                for iz in range(PARTICLE_COUNT[2]):
                    index = np.array([ix, iy, iz]) - np.array(PARTICLE_COUNT) / 2
                    particle = world.add_body(name=f"water_{ix}_{iy}_{iz}", pos=list(offset + PARTICLE_SPACING * index))
                    for axis_name, axis in zip("xyz", np.eye(3), strict=True):
                        particle.add_joint(
                            name=f"water_{ix}_{iy}_{iz}_{axis_name}",
                            type=mujoco.mjtJoint.mjJNT_SLIDE,
                            axis=list(axis),
                            damping=[0.01, 0.0, 0.0],
                        )
                    particle.add_geom(
                        name=f"water_{ix}_{iy}_{iz}",
                        type=mujoco.mjtGeom.mjGEOM_SPHERE,
                        size=[PARTICLE_RADIUS, 0, 0],
                        rgba=list(WATER_RGBA),
                    )
        return names

    def _setup_references(self) -> None:
        model = self._model
        self._mug_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "mug")
        self._mug_qpos = int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "mug_joint")])
        self._pour_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "pouring_site")
        n = int(np.prod(PARTICLE_COUNT))
        first = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "water_0_0_0")
        self._particles = np.arange(first, first + n)
        self._particle_qpos = self._mug_qpos + 7  # 3 slide joints per particle follow the mug's free joint
        self._tank_lo = np.array(TANK_POS) - TANK_XY_SIZE / 2
        self._tank_hi = np.array(TANK_POS) + TANK_XY_SIZE / 2

    def _randomise(self, rng: np.random.Generator) -> None:
        offset = np.array([_uniform(rng, -0.06, 0.04), _uniform(rng, 0.0, 0.1)])
        qpos = self._data.qpos
        qpos[self._mug_qpos : self._mug_qpos + 2] = offset + np.array(MUG_INIT)
        particles = qpos[self._particle_qpos : self._particle_qpos + 3 * len(self._particles)].reshape(-1, 3)
        particles[:] = [offset[0], offset[1], 0.0]

    @property
    def mug_pos(self) -> np.ndarray:
        return self._data.xpos[self._mug_body]

    @property
    def target_pos(self) -> np.ndarray:
        return self._data.site_xpos[self._pour_site]

    def particle_positions(self) -> np.ndarray:
        return self._data.xpos[self._particles]

    def particles_poured(self) -> np.ndarray:
        """``check_success_particles``: inside the tank's footprint (no wall margin) and below half its height."""
        p = self.particle_positions()
        xy = np.all((p[:, :2] > self._tank_lo) & (p[:, :2] < self._tank_hi), axis=1)
        return xy & (p[:, 2] > 0.0) & (p[:, 2] < self.tank_height / 2)

    def particles_in_mug(self) -> np.ndarray:
        """``check_in_mug_particles``: inside the mug's YCB box in the mug frame, with 5 cm allowed above it."""
        p = self.particle_positions()
        local = (p - self.mug_pos) @ self._data.xmat[self._mug_body].reshape(3, 3)
        half = np.array(YCB_SIZE["mug"]) / 2
        return np.all((local > -half) & (local < half + np.array([0.0, 0.0, 0.05])), axis=1)

    def particles_above_tank(self, margin: float = 0.01) -> np.ndarray:
        p = self.particle_positions()
        xy = np.all((p[:, :2] > self._tank_lo - margin) & (p[:, :2] < self._tank_hi + margin), axis=1)
        return xy & (p[:, 2] > 0.0)

    def water_fraction(self) -> float:
        return float(np.mean(self.particles_poured()))

    def _state(self) -> np.ndarray:
        palm, mug, target = self.palm_pos, self.mug_pos, self.target_pos
        quat = self._data.xquat[self._mug_body]
        return np.concatenate([self._data.qpos[:30], palm - mug, palm - target, mug - target, quat])

    def _reward(self) -> tuple[float, bool, bool]:
        palm, mug, target = self.palm_pos, self.mug_pos, self.target_pos
        poured = self.particles_poured()
        dropped = ~self.particles_in_mug() & ~self.particles_above_tank()
        reward = -0.1 * float(np.linalg.norm(palm - mug))
        if self.hand_touches_object():
            reward += 0.1
            lift = max(min(mug[2], target[2]) - YCB_SIZE["mug"][2] / 2.0, 0.0)
            reward += 50.0 * lift
            if lift > 0.06:
                distance = float(np.linalg.norm(mug - target))
                reward += 2.0 - 0.5 * float(np.linalg.norm(palm - target)) - 1.5 * distance
                if distance < 0.05:
                    reward += 1.0 / max(distance, 0.03)
                    z_axis_z = self._data.xmat[self._mug_body][8]  # world z of the mug's z axis
                    reward += 100.0 * float(np.arccos(np.clip(z_axis_z, -1.0, 1.0)))
                    reward += 100.0 * float(np.mean(poured))
        reward -= 0.1 * float(np.mean(dropped))
        fraction = float(np.mean(poured))
        return self._finish_reward(reward, fraction >= 0.3, fraction)


# ---------------------------------------------------------------------- place inside
class PlaceInsideEnv(DexMVEnv):
    """Put the banana into the (fixed) mug (``MugPlaceObjectEnv``, banana at scale 0.8).

    ``mug_scale``: 1.7 is what H-InDex's RL rollouts and evaluation build (and upstream DexMV trains with); its BC
    demonstrations used 1.5 (dexmv.md A0).
    """

    hand_variant = "placement"
    default_camera = "backview"
    state_dim = 43
    object_scale: ClassVar[float] = 0.8
    goal_distance: ClassVar[float] = 0.1  # H-InDex's logged criterion (the env's own goal_achieved used 0.4)

    def __init__(self, *args, mug_scale: float = 1.7, **kwargs):
        self.mug_scale = check_real("mug_scale", mug_scale, minimum=1.0, maximum=2.5)
        super().__init__(*args, **kwargs)

    def _task_kwargs(self) -> dict[str, Any]:
        return {**super()._task_kwargs(), "mug_scale": self.mug_scale}

    def _add_task(self, spec: mujoco.MjSpec) -> list[str]:
        world = spec.worldbody
        body = world.add_body(
            name="banana",
            pos=[0.0, 0.1, YCB_SIZE["banana"][2] / 2 * self.object_scale],
            quat=list(YCB_ORIENTATION["banana"]),
        )
        joint = body.add_freejoint(name="banana_joint")
        for key, value in _FREE_JOINT.items():
            setattr(joint, key, value)
        names = add_parts(body, banana(), "collision_banana", condim=4)
        # DexMV's margin=gap=0.03 on the mug: no force field, contacts reported within 3 cm (see scene.py)
        mug = world.add_body(name="mug", pos=[0.0, 0.0, YCB_SIZE["mug"][2] / 2 * self.mug_scale])
        add_parts(mug, target_mug(self.mug_scale), "collision_mug", gap=0.03)
        return names

    def _setup_references(self) -> None:
        model = self._model
        self._banana_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "banana")
        self._mug_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "mug")
        self._banana_qpos = int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "banana_joint")])

    def _randomise(self, rng: np.random.Generator) -> None:
        qpos = self._data.qpos
        qpos[self._banana_qpos] = _uniform(rng, -0.15, 0.15)
        qpos[self._banana_qpos + 1] = _uniform(rng, 0.0, 0.1) + 0.1

    @property
    def banana_pos(self) -> np.ndarray:
        return self._data.xpos[self._banana_body]

    @property
    def mug_pos(self) -> np.ndarray:
        return self._data.xpos[self._mug_body]

    def _state(self) -> np.ndarray:
        palm, obj, mug = self.palm_pos, self.banana_pos, self.mug_pos
        quat = self._data.xquat[self._banana_body]
        return np.concatenate([self._data.qpos[:30], palm - obj, palm - mug, obj - mug, quat])

    def _reward(self) -> tuple[float, bool, bool]:
        palm, obj = self.palm_pos, self.banana_pos
        rot = self._data.xmat[self._banana_body].reshape(3, 3)
        mug_top = self.mug_pos + np.array([0.0, 0.0, YCB_SIZE["mug"][2] / 2 * self.mug_scale])
        max_lift = mug_top[2] + YCB_SIZE["banana"][1] * self.object_scale / 3
        touching = self.hand_touches_object()
        dxy = float(np.linalg.norm(obj[:2] - mug_top[:2]))
        vertical_angle = float(np.arccos(np.clip(rot[2, 1], -1.0, 1.0)))
        lift = max(min(obj[2], max_lift) - YCB_SIZE["banana"][2] / 2.0, 0.0)

        reward = -0.1 * float(np.linalg.norm(palm - obj))
        if touching:
            reward += 0.2 + 2.0 * lift
            if lift > mug_top[2]:
                reward += 0.2 - 0.5 * float(np.linalg.norm(palm[:2] - mug_top[:2])) - dxy
                if dxy < 0.05:
                    reward += 0.5 + 0.5 * (np.pi / 2 - vertical_angle)
                if dxy < 0.03:
                    reward += 0.3
        if dxy < 0.03 and vertical_angle < np.deg2rad(45):
            reward += 12.0 * (max_lift - lift)
            if lift < (mug_top[2] + max_lift) / 2:
                hand_joints = float(np.abs(self._data.qpos[6:30]).mean())
                reward += 0.5 + 2.0 * (np.pi / 2 - hand_joints)
            if not touching or lift <= mug_top[2]:
                reward += 1.5 - dxy + 0.5 * (np.pi / 2 - vertical_angle)
            if not touching:
                reward += 1.2 + 2.0 * lift
        return self._finish_reward(reward, dxy <= self.goal_distance, dxy)


DEXMV_TASKS: dict[str, type[DexMVEnv]] = {
    "Pour": PourEnv,
    "PlaceInside": PlaceInsideEnv,
    "RelocateMug": RelocateMugEnv,
    "RelocateMustardBottle": RelocateMustardBottleEnv,
    "RelocatePottedMeatCan": RelocatePottedMeatCanEnv,
    "RelocateTomatoSoupCan": RelocateTomatoSoupCanEnv,
    "RelocateSugarBox": RelocateSugarBoxEnv,
    "RelocateLargeClamp": RelocateLargeClampEnv,
    "RelocateFoamBrick": RelocateFoamBrickEnv,
}
"""Registered as ``HInDex/<name>-v0``."""
