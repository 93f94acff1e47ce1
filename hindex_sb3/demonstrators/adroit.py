"""Scripted demonstrators for the Adroit tasks: relocate and door (hammer and pen have none yet).

Each is a small state machine over the palm's grasp site ``S_grasp`` (which sits where a grasped object's centre
goes). Every step it picks a goal pose for that site from the privileged state (object, target, handle, door and
latch angles), moves a rate-limited waypoint towards it, solves arm IK for the waypoint and holds fixed finger
postures; :class:`~hindex_sb3.demonstrators.control.PositionServo` turns the joint targets into actions. The
constants (offsets, postures, speeds) were tuned on seeds 0-19 and checked on others; see
``benchmarks/demonstrators.py`` for the success rates they reach.
"""

from __future__ import annotations

from typing import ClassVar

import mujoco
import numpy as np

from hindex_sb3.demonstrators.base import Demonstrator, register_demonstrator
from hindex_sb3.demonstrators.control import PoseIK, PositionServo, Waypoint, slerp
from hindex_sb3.envs.adroit import DoorEnv, RelocateEnv

FINGER_JOINTS: tuple[str, ...] = (
    *("FFJ3", "FFJ2", "FFJ1", "FFJ0"),
    *("MFJ3", "MFJ2", "MFJ1", "MFJ0"),
    *("RFJ3", "RFJ2", "RFJ1", "RFJ0"),
    *("LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0"),
    *("THJ4", "THJ3", "THJ2", "THJ1", "THJ0"),
)


def hand_posture(**angles: float) -> np.ndarray:
    """Finger joint targets (radians) in :data:`FINGER_JOINTS` order; joints not named stay at 0 (straight)."""
    unknown = set(angles) - set(FINGER_JOINTS)
    if unknown:
        raise ValueError(f"unknown finger joints {sorted(unknown)}")
    return np.array([angles.get(name, 0.0) for name in FINGER_JOINTS])


OPEN_HAND = hand_posture()


class HandDemonstrator(Demonstrator):
    """Shared machinery for a five-fingered Adroit hand on an actuated arm (Adroit and DexMV scenes)."""

    #: arm joints solved by IK, in order, and how reluctant the IK is to move each
    arm_joints: ClassVar[tuple[str, ...]]
    arm_weights: ClassVar[tuple[float, ...]]
    #: heavy arm joints whose servos get stiffened by :attr:`arm_boost` (the slides/rotations carrying the forearm)
    boosted_joints: ClassVar[tuple[str, ...]]
    arm_boost: ClassVar[float] = 3.0
    rot_weight: ClassVar[float] = 0.3
    palm_site: ClassVar[str] = "S_grasp"

    def __init__(self, env, noise_std: float = 0.0, seed: int | None = None):
        super().__init__(env, noise_std=noise_std, seed=seed)
        model = self.model
        self.site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, self.palm_site)
        if self.site_id < 0:
            raise ValueError(f"the model has no palm site {self.palm_site!r}")
        self.servo = PositionServo(self.unwrapped)
        self.ik = PoseIK(model, self.site_id, self.arm_joints, weights=self.arm_weights, rot_weight=self.rot_weight)
        self._arm = self.servo.index(self.arm_joints)
        self._fingers = self.servo.index(FINGER_JOINTS)
        self._boost = np.ones(model.nu)
        self._boost[self.servo.index(self.boosted_joints)] = self.arm_boost
        self.waypoint = Waypoint(np.zeros(3))
        self.palm_rot0 = np.eye(3)
        self.phase_start = 0
        self.ik_error = 0.0

    # ------------------------------------------------------------------ state
    @property
    def palm(self) -> np.ndarray:
        return self.data.site_xpos[self.site_id].copy()

    @property
    def palm_rot(self) -> np.ndarray:
        return self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    @property
    def phase_steps(self) -> int:
        """Steps spent in the current phase."""
        return self.t - self.phase_start

    def set_phase(self, phase: str) -> None:
        self.phase, self.phase_start = phase, self.t

    def _reset(self) -> None:
        self.ik.reset(self.data.qpos)
        self.palm_rot0 = self.palm_rot  # palm down, fingers forward: the orientation every approach keeps
        self.waypoint = Waypoint(self.palm)
        self.ik_error = 0.0
        self.phase_start = 0
        self._reset_task()

    def _reset_task(self) -> None:
        """Task-specific episode start (read the scene, set the first phase)."""

    # ------------------------------------------------------------------ command
    def command(
        self,
        goal: np.ndarray,
        fingers: np.ndarray,
        rotation: np.ndarray | None = None,
        speed: float | None = 0.01,
        free_axis: np.ndarray | None = None,
        rot_weight: float | None = None,
    ) -> np.ndarray:
        """Action moving the palm site towards ``goal`` (at most ``speed`` m per step; ``None``: at once).

        :param rotation: palm-site orientation to hold (default: the episode's initial, palm-down orientation)
        """
        target = self.waypoint.jump(goal) if speed is None else self.waypoint.track(goal, speed)
        rotation = self.palm_rot0 if rotation is None else rotation
        q_arm, self.ik_error = self.ik.solve(self.data.qpos, target, rotation, free_axis, rot_weight)
        q_des = self.servo.positions()
        q_des[self._arm] = q_arm
        q_des[self._fingers] = fingers
        return self.servo.action(q_des, self._boost)


@register_demonstrator
class RelocateDemonstrator(HandDemonstrator):
    """Pick the ball from above with a power grasp and carry it to the target.

    Phases: ``approach`` (hover above the ball, hand open, palm level) -> ``descend`` -> ``grasp`` (close the fingers
    around it) -> ``carry`` (move so the ball, not the palm, lands on the target, using the offset measured after the
    grasp) -> back to ``approach`` if the ball is dropped. Subclasses for other scenes override
    :meth:`object_position`, :meth:`target_position` and the grasp constants.
    """

    task_classes = (RelocateEnv,)
    arm_joints = ("ARTx", "ARTy", "ARTz", "ARRx", "ARRy", "ARRz", "WRJ1", "WRJ0")
    # The three slides and the shoulder pitch do the work; shoulder yaw/roll are all but frozen because the coupled
    # yaw of shoulder and wrist otherwise oscillates against itself.
    arm_weights = (1.0, 1.0, 1.0, 2.0, 100.0, 100.0, 1.0, 1.0)
    boosted_joints = ("ARTx", "ARTy", "ARTz", "ARRx", "ARRy", "ARRz")

    #: grasp site relative to the object centre when grasping: 3 cm behind it, so the fingers wrap its front half
    grasp_offset: ClassVar[tuple[float, float, float]] = (0.0, -0.03, 0.0)
    hover_height: ClassVar[float] = 0.08
    speed: ClassVar[float] = 0.01
    close_steps: ClassVar[int] = 10
    settle_steps: ClassVar[int] = 3
    #: object further than this from the grasp site during ``carry`` counts as dropped
    drop_distance: ClassVar[float] = 0.1
    # Flexed past where the fingers meet a 3.5 cm ball, so the weak (1 N m/rad) finger servos squeeze it; the
    # thumb closes from behind-left and the little finger from behind-right.
    grasp_posture: ClassVar[np.ndarray] = hand_posture(
        FFJ3=0.22, FFJ2=1.0, FFJ1=1.0, FFJ0=1.2,
        MFJ3=-0.08, MFJ2=0.7, MFJ1=1.1, MFJ0=1.1,
        RFJ3=-0.19, RFJ2=0.65, RFJ1=1.2, RFJ0=1.3,
        LFJ4=0.24, LFJ3=-0.43, LFJ2=1.0, LFJ1=1.4, LFJ0=1.4,
        THJ4=0.27, THJ3=1.3, THJ2=0.03, THJ1=-0.15, THJ0=-0.8,
    )  # fmt: skip

    def object_position(self) -> np.ndarray:
        return self.data.xpos[self.unwrapped._core.obj_body_id].copy()

    def target_position(self) -> np.ndarray:
        return self.data.site_xpos[self.unwrapped._core.target_obj_site_id].copy()

    def _reset_task(self) -> None:
        self.carry_offset = np.asarray(self.grasp_offset, float)
        self.set_phase("approach")

    def _act(self) -> np.ndarray:
        palm, obj = self.palm, self.object_position()
        offset = np.asarray(self.grasp_offset, float)
        fingers = OPEN_HAND
        if self.phase == "approach":
            goal = obj + offset + np.array([0.0, 0.0, self.hover_height])
            if np.linalg.norm(palm - goal) < 0.02:
                self.set_phase("descend")
        elif self.phase == "descend":
            goal = obj + offset
            if np.linalg.norm(palm - goal) < 0.01 or self.phase_steps > 30:
                self.set_phase("grasp")
        elif self.phase == "grasp":
            goal = obj + offset
            fingers = min(1.0, self.phase_steps / self.close_steps) * self.grasp_posture
            if self.phase_steps > self.close_steps + self.settle_steps:
                self.carry_offset = palm - obj
                self.set_phase("carry")
        if self.phase == "carry":
            fingers = self.grasp_posture
            if np.linalg.norm(obj - palm) > self.drop_distance:
                self.set_phase("approach")
                return self._act()
            # follow the object's offset slowly: it shifts a little in the hand while lifting
            self.carry_offset = 0.9 * self.carry_offset + 0.1 * (palm - obj)
            goal = self.target_position() + self.carry_offset
        return self.command(goal, fingers, speed=self.speed)


@register_demonstrator
class DoorDemonstrator(HandDemonstrator):
    """Hook the lever, press it down to unlatch, swing the door out, then push it fully open from the inside.

    Phases:

    * ``reach`` (above the lever, hand open) -> ``descend`` -> ``grasp``: four fingers hook behind the lever, the
      palm rests on it and the thumb stays tucked, out of the lever's way;
    * ``turn``: rotate hand and lever together about the latch axis until the latch frees the door (~1.2 rad);
    * ``pull``: move the grasp along the door's arc, the hand free to rotate about the (now vertical) lever;
    * ``release``: the arm's yaw range ends before the door reaches the 1.35 rad goal, so the hand opens while still
      following the lever and slides off it sideways, letting the door swing on by itself;
    * ``out`` -> ``around`` -> ``push``: leave the door's sweep past its free edge, come round to its inner face and
      push it to ~1.5 rad, for the doors that did not swing far enough (and to hold the others open).

    ``turn``, ``pull`` and ``release`` get the grasp pose for *desired* latch and hinge angles from the door's own
    forward kinematics, so the hand moves the lever along the path the door allows.
    """

    task_classes = (DoorEnv,)
    arm_joints = ("ARTz", "ARRx", "ARRy", "ARRz", "WRJ1", "WRJ0")
    arm_weights = (1.0, 2.0, 2.0, 2.0, 1.0, 1.0)
    boosted_joints = ("ARTz", "ARRx", "ARRy", "ARRz")

    #: grasp site relative to the handle site: behind the lever and below its axis, so the palm rests on top of it
    #: and the straight fingers clear the door (the lever stands 10 cm off the door face)
    grasp_offset: ClassVar[tuple[float, float, float]] = (0.0, -0.035, -0.02)
    pre_grasp_height: ClassVar[float] = 0.07
    reach_speed: ClassVar[float] = 0.02
    descend_speed: ClassVar[float] = 0.01
    descend_tolerance: ClassVar[float] = 0.01
    close_steps: ClassVar[int] = 8
    latch_target: ClassVar[float] = 1.5  # rad; the latch frees the door above ~1.2
    latch_free: ClassVar[float] = 1.3
    latch_lead: ClassVar[float] = 0.6  # how far ahead of the current latch angle the hand aims while turning
    hinge_lead: ClassVar[float] = 0.3
    #: past ``slow_from`` the lead shrinks towards ``hinge_lead_slow``, so the door is not flung too hard
    slow_from: ClassVar[float] = 0.85
    hinge_lead_slow: ClassVar[float] = 0.12
    release_hinge: ClassVar[float] = 1.2
    release_ik_error: ClassVar[float] = 0.08  # the lever is leaving the arm's reach: let go now
    release_min_hinge: ClassVar[float] = 0.7
    follow_steps: ClassVar[int] = 6
    follow_lead: ClassVar[float] = 0.3
    slide_rate: ClassVar[float] = 0.015  # m per step off the lever, along the door away from the hinge
    around_speed: ClassVar[float] = 0.04
    around_clearance: ClassVar[float] = 0.1  # beyond the free edge
    around_angle: ClassVar[float] = 0.15  # rad behind the door's inner face
    push_radius: ClassVar[float] = 0.48
    push_lead: ClassVar[float] = 0.25
    push_max: ClassVar[float] = 1.5
    push_clearance: ClassVar[float] = 0.07
    # Four fingers hook the lever; the thumb stays out, where it would block the lever when the door is let go.
    hook_posture: ClassVar[np.ndarray] = hand_posture(
        FFJ2=1.2, FFJ1=1.2, FFJ0=1.2, MFJ2=1.2, MFJ1=1.2, MFJ0=1.2, RFJ2=1.2, RFJ1=1.2, RFJ0=1.2,
        LFJ2=1.2, LFJ1=1.2, LFJ0=1.2, THJ1=-0.5, THJ0=-1.5,
    )  # fmt: skip
    fist_posture: ClassVar[np.ndarray] = hand_posture(
        FFJ2=1.0, FFJ1=1.0, FFJ0=1.0, MFJ2=1.0, MFJ1=1.0, MFJ0=1.0, RFJ2=1.0, RFJ1=1.0, RFJ0=1.0,
        LFJ2=1.0, LFJ1=1.0, LFJ0=1.0, THJ1=-0.5, THJ0=-1.5,
    )  # fmt: skip

    def __init__(self, env, noise_std: float = 0.0, seed: int | None = None):
        super().__init__(env, noise_std=noise_std, seed=seed)
        model = self.model
        self.latch_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "latch")
        self.hinge_jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "door_hinge")
        self.hinge_qadr = model.jnt_qposadr[self.hinge_jid]
        self.latch_qadr = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "latch")]
        # how far the door's free edge reaches from the hinge axis (geom centres plus radii, in the door's frame)
        door = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "door")
        hinge_pos = model.jnt_pos[self.hinge_jid][:2]
        self.edge_radius = max(
            float(np.hypot(*(model.geom_pos[g][:2] - hinge_pos))) + float(model.geom_size[g][0])
            for g in np.flatnonzero(model.geom_bodyid == door)
        )
        self._door_kinematics = mujoco.MjData(model)

    def _reset_task(self) -> None:
        self.grasp_in_latch = (np.zeros(3), np.eye(3))
        self.release_pose = (np.zeros(3), np.eye(3))
        self.out_angle = 0.0
        self.around_target = 0.0
        self.set_phase("reach")

    def _latch_frame(self, latch: float, hinge: float) -> tuple[np.ndarray, np.ndarray]:
        """World pose of the latch body if the latch and hinge were at the given angles."""
        scratch = self._door_kinematics
        scratch.qpos[:] = self.data.qpos
        scratch.qpos[self.latch_qadr] = latch
        scratch.qpos[self.hinge_qadr] = hinge
        mujoco.mj_kinematics(self.model, scratch)
        return scratch.xpos[self.latch_body].copy(), scratch.xmat[self.latch_body].reshape(3, 3).copy()

    def _grasp_pose(self, latch: float, hinge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Palm-site position and orientation for the lever at these angles, and the latch frame's rotation."""
        pos, rot = self._latch_frame(latch, hinge)
        rel_pos, rel_rot = self.grasp_in_latch
        return pos + rot @ rel_pos, rot @ rel_rot, rot

    def _act(self) -> np.ndarray:
        palm = self.palm
        handle = self.data.site_xpos[self.unwrapped._core.handle_site_id].copy()
        latch, hinge = float(self.data.qpos[self.latch_qadr]), float(self.data.qpos[self.hinge_qadr])
        grasp = handle + np.asarray(self.grasp_offset, float)
        if self.phase == "reach":
            goal = grasp + np.array([0.0, 0.0, self.pre_grasp_height])
            if np.linalg.norm(palm - goal) < 0.02:
                self.set_phase("descend")
            return self.command(goal, OPEN_HAND, speed=self.reach_speed)
        if self.phase == "descend":
            if np.linalg.norm(palm - grasp) < self.descend_tolerance or self.phase_steps > 25:
                self.set_phase("grasp")
            return self.command(grasp, OPEN_HAND, speed=self.descend_speed)
        if self.phase == "grasp":
            if self.phase_steps <= self.close_steps + 2:
                fingers = min(1.0, self.phase_steps / self.close_steps) * self.hook_posture
                return self.command(grasp, fingers, speed=self.descend_speed)
            # from now on the hand moves with the lever: remember the grasp in the latch's frame
            pos, rot = self.data.xpos[self.latch_body], self.data.xmat[self.latch_body].reshape(3, 3)
            self.grasp_in_latch = (rot.T @ (grasp - pos), rot.T @ self.palm_rot0)
            self.set_phase("turn")
        if self.phase == "turn":
            if latch <= self.latch_free:
                goal, rot, _ = self._grasp_pose(min(self.latch_target, latch + self.latch_lead), hinge)
                return self.command(goal, self.hook_posture, rot, speed=None)
            self.set_phase("pull")
        if self.phase == "pull":
            let_go = hinge > self.release_hinge - 0.05 or (
                self.ik_error > self.release_ik_error and hinge > self.release_min_hinge
            )
            if not let_go:
                lead = np.interp(
                    hinge, [self.slow_from, self.release_hinge - 0.1], [self.hinge_lead, self.hinge_lead_slow]
                )
                goal, rot, lever = self._grasp_pose(
                    max(latch, self.latch_target), min(hinge + lead, self.release_hinge)
                )
                # the lever hangs vertically now: let the hand turn about it, the arm cannot keep its orientation
                return self.command(goal, self.hook_posture, rot, speed=None, free_axis=lever[:, 0])
            self.set_phase("release")
        if self.phase == "release":
            if self.phase_steps < self.follow_steps:
                # keep up with the lever while the fingers open (so it cannot catch them), sliding off it sideways
                goal, rot, lever = self._grasp_pose(max(latch, self.latch_target), hinge + self.follow_lead)
                goal = goal - self.slide_rate * (self.phase_steps + 1) * lever[:, 2]
                return self.command(goal, OPEN_HAND, rot, speed=None, free_axis=lever[:, 0])
            self.release_pose = (palm, self.palm_rot)
            self.waypoint.jump(palm)
            self.set_phase("out")
        return self._go_round_and_push(palm, hinge)

    def _go_round_and_push(self, palm: np.ndarray, hinge: float) -> np.ndarray:
        anchor = self.data.xanchor[self.hinge_jid]
        radius = self.edge_radius + self.around_clearance
        angle = float(np.arctan2(anchor[1] - palm[1], anchor[0] - palm[0]))  # the door's angle convention
        z = self.release_pose[0][2]
        up = np.array([0.0, 0.0, 1.0])

        def polar(r: float, a: float) -> np.ndarray:
            return np.array([anchor[0] - r * np.cos(a), anchor[1] - r * np.sin(a), z])

        if self.phase == "out":
            # straight away from the hinge, keeping the hand's orientation, until clear of the free edge
            if self.phase_steps == 0:
                self.out_angle = angle
            goal = polar(radius, self.out_angle)
            if np.linalg.norm(palm - goal) >= 0.05:
                return self.command(goal, OPEN_HAND, self.release_pose[1], speed=self.around_speed)
            self.around_target = min(hinge, self.out_angle) - self.around_angle
            self.set_phase("around")
        if self.phase == "around":
            goal = polar(radius, self.around_target)
            if np.linalg.norm(palm - goal) >= 0.05:
                # turn back to palm-down on the way, gradually so the fingers do not sweep through anything
                rot = slerp(self.release_pose[1], self.palm_rot0, self.phase_steps / 15.0)
                return self.command(goal, self.fist_posture, rot, speed=self.around_speed, free_axis=up)
            self.set_phase("push")
        target = min(hinge + self.push_lead, self.push_max) - self.push_clearance / self.push_radius
        return self.command(polar(self.push_radius, target), self.fist_posture, None, self.around_speed, up)


__all__ = ["FINGER_JOINTS", "OPEN_HAND", "DoorDemonstrator", "HandDemonstrator", "RelocateDemonstrator", "hand_posture"]
