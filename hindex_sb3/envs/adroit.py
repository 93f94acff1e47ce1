"""The Adroit tasks of H-InDex (door, hammer, pen, plus relocate) as pixel environments.

Physics, state vectors, resets and state restoring come from gymnasium-robotics' ``AdroitHand*-v1`` environments
(the MuJoCo ports of the DAPG ``mj_envs`` v0 tasks, no mujoco-py), which the DAPG expert policies were validated on.
We add what H-InDex changed or relied on:

* the ``top`` camera the authors added to the door and hammer scenes (at z = 1.5 / 1.1, euler (0, 0, 3.14));
* rewards computed here: ``"dense"`` is the original DAPG reward (gymnasium-robotics 1.4.2 adds the hand-to-object
  distance where DAPG subtracts it), ``"sparse"`` is the reward of H-InDex's vendored ``mj_envs``;
* the goal tests of each variant, the 24-joint proprioception slices of H-InDex and pen's termination on a drop.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, ClassVar

import mujoco
import numpy as np

from hindex_sb3.envs.base import ManipulationEnv, check_state_dict

with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
    # gymnasium-robotics prints a notice about its changed Adroit rewards at import; we compute rewards ourselves.
    warnings.simplefilter("ignore")
    from gymnasium_robotics.envs.adroit_hand.adroit_door import AdroitHandDoorEnv
    from gymnasium_robotics.envs.adroit_hand.adroit_hammer import AdroitHandHammerEnv
    from gymnasium_robotics.envs.adroit_hand.adroit_pen import AdroitHandPenEnv
    from gymnasium_robotics.envs.adroit_hand.adroit_relocate import AdroitHandRelocateEnv

# The authors' `top` camera: euler (0, 0, 3.14) rad about z, as a quaternion.
_TOP_QUAT = (float(np.cos(3.14 / 2)), 0.0, 0.0, float(np.sin(3.14 / 2)))


def _with_cameras(base: type, cameras: tuple[tuple[str, tuple[float, float, float]], ...]) -> type:
    """Subclass a gymnasium-robotics Adroit env so its model is compiled with extra cameras (via MjSpec)."""
    if not cameras:
        return base

    class _WithCameras(base):  # type: ignore[misc, valid-type]
        def _initialize_simulation(self):
            spec = mujoco.MjSpec.from_file(self.fullpath)
            for name, pos in cameras:
                spec.worldbody.add_camera(name=name, pos=list(pos), quat=list(_TOP_QUAT))
            model = spec.compile()
            return model, mujoco.MjData(model)

    _WithCameras.__name__ = f"{base.__name__}WithCameras"
    return _WithCameras


class AdroitEnv(ManipulationEnv):
    """An Adroit task; see :class:`~hindex_sb3.envs.base.ManipulationEnv` for the observation conventions."""

    core_class: ClassVar[type]
    extra_cameras: ClassVar[tuple[tuple[str, tuple[float, float, float]], ...]] = ()
    #: H-InDex's proprioception: the 24 hand joint positions, ``qpos[proprio_slice]``
    proprio_slice: ClassVar[slice]
    success_threshold = 25
    default_horizon = 200
    proprio_dim = 24

    def _build_simulation(self) -> None:
        self._core = _with_cameras(self.core_class, self.extra_cameras)(reward_type="dense")
        self._state_keys = tuple(self._core._state_space.spaces.keys())

    @property
    def model(self) -> mujoco.MjModel:
        return self._core.model

    @property
    def data(self) -> mujoco.MjData:
        return self._core.data

    @property
    def dt(self) -> float:
        return self._core.dt

    def _apply_action(self, action: np.ndarray) -> None:
        self._core.do_simulation(self._core.act_mean + action * self._core.act_rng, self._core.frame_skip)

    def _reset_simulation(self, options: dict[str, Any] | None) -> None:
        state_dict = None
        if options and options.get("initial_state_dict") is not None:
            state_dict = self._check_state_dict(options["initial_state_dict"])
        self._core._np_random = self.np_random  # one RNG for the whole env, seeded by reset(seed=...)
        self._core.reset()
        if state_dict is not None:
            self._core.set_env_state(state_dict)

    def _check_state_dict(self, state_dict: Any) -> dict[str, np.ndarray]:
        """Keep the keys the simulator restores (DAPG dicts carry extras) and check their shapes."""
        shapes = {key: self._core._state_space[key].shape for key in self._state_keys}
        return check_state_dict(state_dict, shapes, type(self).__name__)

    def get_env_state(self) -> dict[str, np.ndarray]:
        """The DAPG-style state dict of the current scene (restorable through ``reset(options=...)``)."""
        return self._core.get_env_state()

    def restore_state(self, state_dict: dict[str, Any]):
        """Put the scene in a recorded state mid-episode and return its observation (for re-rendering demos)."""
        self._core.set_env_state(self._check_state_dict(state_dict))
        return self._observe()

    def _state(self) -> np.ndarray:
        return self._core._get_obs()

    def _proprio(self) -> np.ndarray:
        return self.data.qpos[self.proprio_slice]

    def close(self) -> None:
        super().close()
        self._core.close()


class DoorEnv(AdroitEnv):
    """Adroit door: undo the latch and swing the door open. Camera ``top`` as in H-InDex."""

    core_class = AdroitHandDoorEnv
    extra_cameras = (("top", (0.0, 0.0, 1.5)),)
    default_camera = "top"
    proprio_slice = slice(4, -2)
    state_dim = 39

    def _reward(self) -> tuple[float, bool, bool]:
        core, data = self._core, self.data
        hinge = float(data.qpos[core.door_hinge_addrs])
        reward = -0.1 * (hinge - 1.57) ** 2
        if hinge > 0.2:
            reward += 2.0
        if hinge > 1.0:
            reward += 8.0
        if hinge > 1.35:
            reward += 10.0
        if self.reward_type == "sparse":  # H-InDex's mj_envs: no reaching or velocity terms, stricter goal
            return reward, hinge > 1.4, False
        palm = data.site_xpos[core.grasp_site_id]
        handle = data.site_xpos[core.handle_site_id]
        reward += -0.1 * float(np.linalg.norm(palm - handle)) - 1e-5 * float(np.sum(data.qvel**2))
        return reward, hinge >= 1.35, False


class HammerEnv(AdroitEnv):
    """Adroit hammer: pick up the hammer and drive the nail into the board. Camera ``top`` as in H-InDex."""

    core_class = AdroitHandHammerEnv
    extra_cameras = (("top", (0.0, 0.0, 1.1)),)
    default_camera = "top"
    proprio_slice = slice(2, -7)
    state_dim = 46

    def _reward(self) -> tuple[float, bool, bool]:
        core, data = self._core, self.data
        nail = data.site_xpos[core.target_obj_site_id]
        goal = data.site_xpos[core.goal_site_id]
        nail_dist = float(np.linalg.norm(nail - goal))
        reward = -10.0 * nail_dist
        if self.reward_type == "dense":
            hammer = data.xpos[core.obj_body_id]
            palm = data.site_xpos[core.S_grasp_site_id]
            head = data.site_xpos[core.tool_site_id]
            reward += -0.1 * float(np.linalg.norm(palm - hammer)) - float(np.linalg.norm(head - nail))
            reward += -1e-2 * float(np.linalg.norm(data.qvel))
            if hammer[2] > 0.04 and head[2] > 0.04:
                reward += 2.0
        if nail_dist < 0.020:
            reward += 25.0
        if nail_dist < 0.010:
            reward += 75.0
        return reward, nail_dist < 0.010, False


class PenEnv(AdroitEnv):
    """Adroit pen: reorient the pen to the target orientation. Ends early when the pen falls, as in DAPG."""

    core_class = AdroitHandPenEnv
    default_camera = "vil_camera"
    proprio_slice = slice(None, -6)
    state_dim = 45
    success_threshold = 20
    default_horizon = 100

    def _task_state(self) -> dict[str, Any]:
        # measured at each reset by gymnasium-robotics, and reset to 1.0 by the constructor a copy runs
        return {"pen_length": self._core.pen_length, "tar_length": self._core.tar_length}

    def _restore_task_state(self, state: dict[str, Any]) -> None:
        self._core.pen_length, self._core.tar_length = state["pen_length"], state["tar_length"]

    def _reward(self) -> tuple[float, bool, bool]:
        core, data = self._core, self.data
        pen = data.xpos[core.obj_body_id]
        desired = data.site_xpos[core.eps_ball_site_id]
        pen_axis = (data.site_xpos[core.obj_t_site_id] - data.site_xpos[core.obj_b_site_id]) / core.pen_length
        target_axis = (data.site_xpos[core.tar_t_site_id] - data.site_xpos[core.tar_b_site_id]) / core.tar_length
        dist = float(np.linalg.norm(pen - desired))
        similarity = float(np.dot(pen_axis, target_axis))
        dropped = bool(pen[2] < 0.075)
        if self.reward_type == "sparse":  # H-InDex's mj_envs: orientation alone decides the goal
            reward = 50.0 if (dist < 0.075 and similarity > 0.95) else 0.0
            return reward, similarity > 0.95, dropped
        reward = -dist + similarity
        if dist < 0.075 and similarity > 0.9:
            reward += 10.0
        if dist < 0.075 and similarity > 0.95:
            reward += 50.0
        if dropped:
            reward -= 5.0
        return reward, dist < 0.075 and similarity > 0.95, dropped


class RelocateEnv(AdroitEnv):
    """Adroit relocate: carry the ball to the target. H-InDex's variant keeps the dense reward for both types."""

    core_class = AdroitHandRelocateEnv
    default_camera = "vil_camera"
    proprio_slice = slice(6, -6)
    state_dim = 39

    def _reward(self) -> tuple[float, bool, bool]:
        core, data = self._core, self.data
        ball = data.xpos[core.obj_body_id]
        palm = data.site_xpos[core.S_grasp_site_id]
        target = data.site_xpos[core.target_obj_site_id]
        goal_dist = float(np.linalg.norm(ball - target))
        reward = -0.1 * float(np.linalg.norm(palm - ball))
        if ball[2] > 0.04:
            reward += 1.0 - 0.5 * float(np.linalg.norm(palm - target)) - 0.5 * goal_dist
        if goal_dist < 0.1:
            reward += 10.0
        if goal_dist < 0.05:
            reward += 20.0
        return reward, goal_dist < 0.1, False


ADROIT_TASKS: dict[str, type[AdroitEnv]] = {
    "Door": DoorEnv,
    "Hammer": HammerEnv,
    "Pen": PenEnv,
    "Relocate": RelocateEnv,
}
