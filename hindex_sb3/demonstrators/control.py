"""Low-level control shared by the scripted demonstrators: joint targets -> normalised actions, and pose IK.

The Adroit/DexMV arms and fingers are driven by affine position servos (``force = gain * ctrl + b0 + b1 * q``), so a
demonstrator thinks in *desired joint positions*. Two things make a naive "ctrl = desired q" mapping fail here, and
:class:`PositionServo` handles both:

* the arm servos are stiff enough to hold a pose but not to hold it against gravity (the forearm and hand weigh 5 kg
  on a 200 N/m slide), so we add a gravity feed-forward computed at zero velocity;
* the heavy translational joints are under-damped (damping ratio ~0.3), so the hand rings around its target and knocks
  objects over. We add velocity feedback through the position target, capped so the discrete 10 ms control loop stays
  stable on the light, strongly coupled wrist joints.

:class:`PoseIK` solves for arm joint targets that put a site (the palm's grasp site) at a position and, optionally,
orientation, with damped least squares on a scratch ``MjData`` so the live simulation is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np


def _joint_id(model: mujoco.MjModel, name: str) -> int:
    jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if jid < 0:
        raise ValueError(f"the model has no joint named {name!r}")
    return jid


def _full_inertia(model: mujoco.MjModel, data: mujoco.MjData, out: np.ndarray) -> None:
    """Dense joint-space inertia; ``mj_fullM`` changed signature between MuJoCo releases."""
    try:
        mujoco.mj_fullM(model, data, out)
    except TypeError:
        mujoco.mj_fullM(model, out, data.qM)


def control_affine(unwrapped: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, half_range)`` such that the env sets ``ctrl = mean + action * half_range``.

    Adroit keeps them on its gymnasium-robotics core (``act_mean``/``act_rng``), DexMV on the env (``_act_mid``/
    ``_act_rng``); both equal the actuator control ranges' midpoints and half-widths, which is the fallback.
    """
    candidates = [
        (unwrapped, "act_mean", "act_rng"),
        (getattr(unwrapped, "_core", None), "act_mean", "act_rng"),
        (unwrapped, "_act_mid", "_act_rng"),
    ]
    for owner, mean_name, rng_name in candidates:
        if owner is not None and hasattr(owner, mean_name) and hasattr(owner, rng_name):
            return np.asarray(getattr(owner, mean_name), float), np.asarray(getattr(owner, rng_name), float)
    low, high = unwrapped.model.actuator_ctrlrange.T
    return (low + high) / 2.0, (high - low) / 2.0


class PositionServo:
    """Turn desired joint positions (one per actuator) into the env's normalised actions.

    :param max_damping: cap on the added velocity feedback, as a fraction of ``M_ii / dt``. Critical damping of the
        wrist would need more than the 10 ms zero-order-hold loop can deliver without oscillating (the shoulder yaw
        and wrist yaw then swing against each other), so we only go part of the way there.
    """

    def __init__(self, unwrapped: Any, max_damping: float = 0.1):
        model = unwrapped.model
        self.model, self.data = model, unwrapped.data
        if np.any(model.actuator_trntype != mujoco.mjtTrn.mjTRN_JOINT):
            raise ValueError("PositionServo needs every actuator to drive a joint")
        self.joint_ids = model.actuator_trnid[:, 0].copy()
        self.qadr = model.jnt_qposadr[self.joint_ids]
        self.dadr = model.jnt_dofadr[self.joint_ids]
        self.names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in self.joint_ids]
        self.mean, self.half_range = control_affine(unwrapped)
        self.gain = model.actuator_gainprm[:, 0].copy()
        self.bias0 = model.actuator_biasprm[:, 0].copy()
        self.stiffness = -model.actuator_biasprm[:, 1].copy()
        if np.any(self.gain <= 0) or np.any(self.stiffness <= 0):
            raise ValueError("PositionServo needs affine position servos (gain > 0, bias1 < 0) on every actuator")
        dt = getattr(unwrapped, "dt", None)
        self.dt = float(dt) if dt else 5 * float(model.opt.timestep)
        self.max_damping = max_damping
        self._scratch = mujoco.MjData(model)
        self._mass = np.zeros((model.nv, model.nv))
        self._gravity = np.zeros(model.nv)

    def index(self, names: Sequence[str]) -> np.ndarray:
        """Actuator indices of the joints ``names`` (in that order)."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"no actuated joints named {missing}")
        return np.array([self.names.index(n) for n in names], dtype=int)

    def positions(self) -> np.ndarray:
        """Current positions of the actuated joints."""
        return self.data.qpos[self.qadr].copy()

    def _gravity_torques(self) -> np.ndarray:
        scratch = self._scratch
        scratch.qpos[:] = self.data.qpos
        scratch.qvel[:] = 0.0
        mujoco.mj_kinematics(self.model, scratch)
        mujoco.mj_comPos(self.model, scratch)
        mujoco.mj_rne(self.model, scratch, 0, self._gravity)
        return self._gravity[self.dadr]

    def action(self, q_des: np.ndarray, boost: np.ndarray | float = 1.0) -> np.ndarray:
        """Normalised action (float32, in [-1, 1]) that drives the joints towards ``q_des``.

        :param boost: per-actuator multiplier of the servo stiffness (the target is pushed past ``q_des`` by
            ``(boost - 1) * error``), used on the slow, heavy arm joints so reaching takes tens of steps, not a hundred
        """
        q = self.positions()
        boost = np.broadcast_to(np.asarray(boost, float), q.shape)
        _full_inertia(self.model, self.data, self._mass)
        inertia = np.diag(self._mass)[self.dadr]
        damping = np.maximum(2.0 * np.sqrt(boost * self.stiffness * inertia) - self.model.dof_damping[self.dadr], 0.0)
        damping = np.minimum(damping, self.max_damping * inertia / self.dt)
        target = q + boost * (q_des - q) - damping / self.stiffness * self.data.qvel[self.dadr]
        ctrl = (self.stiffness * target - self.bias0 + self._gravity_torques()) / self.gain
        return np.clip((ctrl - self.mean) / self.half_range, -1.0, 1.0).astype(np.float32)


def rotation_error(rot: np.ndarray, rot_des: np.ndarray) -> np.ndarray:
    """Small-angle rotation (world frame) taking ``rot`` towards ``rot_des``: ``0.5 * sum_i rot[:, i] x rot_des[:, i]``.

    Written as the axial vector of ``rot_des @ rot.T - rot @ rot_des.T``, which is the same sum without per-column
    cross products (those dominated the IK's run time).
    """
    skew = rot_des @ rot.T - rot @ rot_des.T
    return 0.5 * np.array([skew[2, 1], skew[0, 2], skew[1, 0]])


def slerp(rot_a: np.ndarray, rot_b: np.ndarray, fraction: float) -> np.ndarray:
    """Rotation matrix a ``fraction`` of the way from ``rot_a`` to ``rot_b`` (so re-orienting never jerks)."""
    qa, qb = np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(qa, np.ascontiguousarray(rot_a).reshape(-1))
    mujoco.mju_mat2Quat(qb, np.ascontiguousarray(rot_b).reshape(-1))
    if np.dot(qa, qb) < 0:
        qb = -qb
    angle = float(np.arccos(np.clip(np.dot(qa, qb), -1.0, 1.0)))
    fraction = float(np.clip(fraction, 0.0, 1.0))
    q = qb if angle < 1e-6 else (np.sin((1 - fraction) * angle) * qa + np.sin(fraction * angle) * qb) / np.sin(angle)
    out = np.zeros(9)
    mujoco.mju_quat2Mat(out, q / np.linalg.norm(q))
    return out.reshape(3, 3)


class PoseIK:
    """Damped-least-squares IK of one site over a subset of joints, respecting joint limits.

    The solution is warm-started from the previous one rather than from the measured joints: the arm's own dynamics
    (it lags and sways) then cannot feed back into the IK, and redundant joints do not drift from call to call.

    :param weights: per-joint cost of moving (a high weight all but freezes a joint; used to keep redundant arm
        rotations still)
    :param rot_weight: metres of position error one radian of orientation error is worth
    :param posture_gain: pull, in the null space, towards ``nominal`` (all zeros by default)
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site_id: int,
        joint_names: Sequence[str],
        weights: Sequence[float] | None = None,
        rot_weight: float = 0.3,
        posture_gain: float = 0.05,
        nominal: Sequence[float] | None = None,
        iterations: int = 15,
        damping: float = 1e-2,
    ):
        self.model, self.site_id = model, site_id
        self.joint_ids = np.array([_joint_id(model, n) for n in joint_names])
        self.qadr = model.jnt_qposadr[self.joint_ids]
        self.dadr = model.jnt_dofadr[self.joint_ids]
        self.low, self.high = model.jnt_range[self.joint_ids].T.copy()
        n = len(joint_names)
        self.inv_weights = 1.0 / np.asarray(weights if weights is not None else np.ones(n), float)
        self.rot_weight = rot_weight
        self.posture_gain = posture_gain
        self.nominal = np.zeros(n) if nominal is None else np.asarray(nominal, float)
        self.iterations, self.damping = iterations, damping
        self._data = mujoco.MjData(model)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._q: np.ndarray | None = None

    def reset(self, qpos: np.ndarray) -> None:
        """Restart the warm start from the given configuration (call at every episode start)."""
        self._q = np.clip(np.asarray(qpos)[self.qadr], self.low, self.high)

    def solve(
        self,
        qpos: np.ndarray,
        position: np.ndarray,
        rotation: np.ndarray | None = None,
        free_axis: np.ndarray | None = None,
        rot_weight: float | None = None,
    ) -> tuple[np.ndarray, float]:
        """Joint targets putting the site at ``position`` (and ``rotation``), and the remaining position error.

        :param qpos: the current configuration (the joints not being solved for are held there)
        :param free_axis: a world axis about which the orientation is left free (e.g. the axis of a grasped bar)
        """
        model, data = self.model, self._data
        if self._q is None:
            self.reset(qpos)
        q = self._q.copy()
        data.qpos[:] = qpos
        weight = self.rot_weight if rot_weight is None else rot_weight
        project = np.eye(3) if free_axis is None else np.eye(3) - np.outer(free_axis, free_axis)
        n = len(q)
        err = np.zeros(3)
        for _ in range(self.iterations):
            data.qpos[self.qadr] = q
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            err = position - data.site_xpos[self.site_id]
            mujoco.mj_jacSite(model, data, self._jacp, self._jacr, self.site_id)
            jac = self._jacp[:, self.dadr]
            task = err
            if rotation is not None and weight > 0:
                rot = data.site_xmat[self.site_id].reshape(3, 3)
                task = np.concatenate([err, weight * project @ rotation_error(rot, rotation)])
                jac = np.vstack([jac, weight * project @ self._jacr[:, self.dadr]])
            free = np.ones(n, dtype=bool)
            reg = self.damping**2 * np.eye(len(task))
            for _ in range(4):  # drop joints pushing into their limits, then re-solve with the others
                inv_w = np.where(free, self.inv_weights, 0.0)
                jw = jac * inv_w
                pinv = jw.T @ np.linalg.inv(jw @ jac.T + reg)
                posture = np.where(free, self.posture_gain * (self.nominal - q), 0.0)
                dq = pinv @ task + posture - pinv @ (jac @ posture)
                blocked = ((q + dq < self.low + 1e-6) & (dq < 0)) | ((q + dq > self.high - 1e-6) & (dq > 0))
                if not np.any(blocked & free):
                    break
                free &= ~blocked
            q = np.clip(q + dq, self.low, self.high)
        self._q = q
        return q.copy(), float(np.linalg.norm(err))


class Waypoint:
    """A point that chases a goal at a bounded speed, so IK targets never jump across the workspace."""

    def __init__(self, start: np.ndarray):
        self.position = np.array(start, dtype=float)

    def track(self, goal: np.ndarray, max_step: float) -> np.ndarray:
        step = np.asarray(goal, float) - self.position
        dist = float(np.linalg.norm(step))
        self.position = self.position + (step if dist <= max_step else step * (max_step / dist))
        return self.position.copy()

    def jump(self, goal: np.ndarray) -> np.ndarray:
        self.position = np.array(goal, dtype=float)
        return self.position.copy()
