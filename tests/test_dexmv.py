"""Behaviour of the DexMV environments: registration, spaces, the scene facts of dexmv.md, resets, rewards, goals,
cameras, backgrounds, seeding, state restoring and pickling."""

from __future__ import annotations

import pickle

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from hindex_sb3.envs import env_ids
from hindex_sb3.envs.adroit import ADROIT_TASKS
from hindex_sb3.envs.dexmv import (
    BACKGROUNDS,
    DEXMV_TASKS,
    DexMVRelocateEnv,
    PlaceInsideEnv,
    PourEnv,
    RelocateFoamBrickEnv,
    RelocateLargeClampEnv,
    RelocateMugEnv,
    RelocateMustardBottleEnv,
    RelocateSugarBoxEnv,
    RelocateTomatoSoupCanEnv,
)
from hindex_sb3.envs.dexmv.objects import YCB_SIZE
from hindex_sb3.envs.dexmv.scene import ARM_HAND_JOINTS, CAMERAS

DEXMV_IDS = [f"HInDex/{name}-v0" for name in DEXMV_TASKS]
RELOCATE = {name: cls for name, cls in DEXMV_TASKS.items() if issubclass(cls, DexMVRelocateEnv)}
DEFAULT_CAMERAS = {  # dexmv.md A0 / A4
    "Pour": "backview",
    "PlaceInside": "backview",
    "RelocateMug": "backview",
    "RelocateMustardBottle": "backview",
    "RelocatePottedMeatCan": "backview",
    "RelocateTomatoSoupCan": "backview",
    "RelocateSugarBox": "sideview",
    "RelocateLargeClamp": "frontview",
    "RelocateFoamBrick": "frontview",
}
# A2: rest height of the body origin on the table
REST_Z = {
    "mug": 0.0344,
    "mustard_bottle": 0.0708,
    "potted_meat_can": 0.0434,
    "tomato_soup_can": 0.0511,
    "sugar_box": 0.0776,
    "large_clamp": 0.0188,
    "foam_brick": 0.0172,
}
# A2: total simulated mass (collision hulls + visual mesh at density 1000) at DexMV's scales
MASSES = {
    "mug": 0.417,
    "mustard_bottle": 0.683,
    "potted_meat_can": 0.406,
    "tomato_soup_can": 0.370,
    "sugar_box": 0.706,
    "large_clamp": 0.242,
    "foam_brick": 0.207,
}


@pytest.fixture(scope="module")
def envs():
    """One state-only env per task, shared by the read-only checks (building a scene takes ~50 ms)."""
    made = {name: cls(obs_mode="state") for name, cls in DEXMV_TASKS.items()}
    yield made
    for env in made.values():
        env.close()


def test_ids_registered_after_adroit():
    ids = env_ids()
    assert ids[: len(ADROIT_TASKS)] == [f"HInDex/{name}-v0" for name in ADROIT_TASKS]
    assert ids[len(ADROIT_TASKS) :] == DEXMV_IDS
    assert len(DEXMV_IDS) == 9
    for env_id in DEXMV_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 100  # H-InDex's RL horizon for every DexMV task
    env = gym.make("HInDex/RelocateMug-v0", obs_mode="state", max_episode_steps=200)
    assert env.spec.max_episode_steps == 200
    env.close()


@pytest.mark.parametrize("env_id", DEXMV_IDS)
def test_check_env_pixels_and_state(env_id):
    env = gym.make(env_id, image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()
    env = gym.make(env_id, obs_mode="state")
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_check_env_all_mode():
    env = gym.make("HInDex/Pour-v0", obs_mode="all", image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("name", list(DEXMV_TASKS))
def test_spaces_proprio_and_state_layout(name, envs):
    env = envs[name]
    obs, _ = env.reset(seed=3)
    assert env.action_space.shape == (30,)
    assert obs.shape == ((39,) if name in RELOCATE else (43,))
    qpos = env.data.qpos
    np.testing.assert_array_equal(obs[:30], qpos[:30])
    np.testing.assert_array_equal(env._proprio(), qpos[:30])
    palm = env.data.site_xpos[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "S_grasp")]
    if name in RELOCATE:
        obj, target = env.object_pos, env.target_pos
        np.testing.assert_allclose(obs[30:], np.concatenate([palm - obj, palm - target, obj - target]))
    elif name == "Pour":
        mug, site = env.mug_pos, env.target_pos
        quat = env.data.xquat[env._mug_body]
        np.testing.assert_allclose(obs[30:], np.concatenate([palm - mug, palm - site, mug - site, quat]))
    else:
        banana, mug = env.banana_pos, env.mug_pos
        quat = env.data.xquat[env._banana_body]
        np.testing.assert_allclose(obs[30:], np.concatenate([palm - banana, palm - mug, banana - mug, quat]))


def test_pixel_observation_and_proprio():
    env = gym.make("HInDex/RelocateTomatoSoupCan-v0", obs_mode="all", image_size=(40, 56))
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (3, 40, 56) and obs["pixels"].dtype == np.uint8
    assert obs["proprio"].shape == (30,) and obs["proprio"].dtype == np.float32
    np.testing.assert_array_equal(obs["proprio"], obs["state"][:30].astype(np.float32))
    assert obs["pixels"].std() > 10
    env.close()


def test_arm_and_hand_match_dexmv(envs):
    """A1: 30 actuated joints in DexMV's order, its gains and ranges, 5 x 2 ms per action, S_grasp at qpos = 0."""
    env = envs["RelocateMug"]
    model = env.model
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, model.actuator_trnid[i, 0]) for i in range(30)]
    assert tuple(names) == ARM_HAND_JOINTS
    for i in range(30):
        assert model.jnt_qposadr[model.actuator_trnid[i, 0]] == i
    np.testing.assert_allclose(model.actuator_gainprm[:6, 0], 500.0)
    np.testing.assert_allclose(model.actuator_biasprm[:6, 1], -200.0)
    np.testing.assert_allclose(model.actuator_gainprm[6:8, 0], 10.0)
    np.testing.assert_allclose(model.actuator_gainprm[8:, 0], 1.0)
    np.testing.assert_allclose(model.actuator_biasprm[8:, 1], -1.0)
    np.testing.assert_allclose(model.actuator_ctrlrange[:3], [[-0.25, 0.25], [0.0, 0.2], [-0.3, 0.5]])
    np.testing.assert_allclose(model.dof_damping[:6], 20.0)
    np.testing.assert_allclose(model.dof_damping[6:8], [0.5, 0.05])  # WRJ1 as DAPG, WRJ0 with the hand default
    assert model.opt.timestep == 0.002 and env.dt == pytest.approx(0.01)
    assert model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC and model.opt.solver == mujoco.mjtSolver.mjSOL_PGS
    assert model.opt.noslip_iterations == 20
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(data.site_xpos[env._grasp_site], [-0.007, -0.20, 0.150], atol=1e-3)
    # a zero action drives ARTz to the middle of its control range, mid + 0 * half_range
    env.reset(seed=0)
    env.step(np.zeros(30))
    np.testing.assert_allclose(env.data.ctrl[:3], [0.0, 0.1, 0.1])


def test_collision_geometry_per_hand_file(envs):
    def geom(env, name):
        return mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, name)

    relocate, pour, place = envs["RelocateMug"], envs["Pour"], envs["PlaceInside"]
    assert geom(relocate, "C_palm1") < 0 and geom(pour, "C_palm1") >= 0 and geom(place, "C_palm1") < 0
    assert geom(relocate, "C_lfmetacarpal") < 0
    np.testing.assert_allclose(relocate.model.geom_size[geom(relocate, "C_forearm1")][:2], [0.06, 0.043])
    np.testing.assert_allclose(pour.model.geom_size[geom(pour, "C_forearm1")][:2], [0.08, 0.053])
    np.testing.assert_allclose(place.model.geom_size[geom(place, "C_forearm1")][:2], [0.05, 0.06])
    np.testing.assert_allclose(relocate.model.geom_size[geom(relocate, "C_palm0")], [0.052, 0.015, 0.06])
    # MuJoCo 4 adds margins: hand 0, so hand-object contacts keep the object's 0.003 (A5)
    for env in (relocate, pour, place):
        assert np.all(env.model.geom_margin[env._hand_geoms] == 0.0)
    assert np.all(relocate.model.geom_margin[relocate._object_geoms] == 0.003)
    # place-inside: DexMV's margin = gap = 0.03 becomes margin 0 + gap 0.03, priority 10 on the collision geoms
    palm0 = geom(place, "C_palm0")
    assert place.model.geom_gap[palm0] == pytest.approx(0.03) and place.model.geom_priority[palm0] == 10
    np.testing.assert_allclose(place.model.geom_solref[palm0], [0.02, 20.0])
    # the fixed mug does not push the hand away from 3 cm (the MuJoCo-4 force field A5 warns about)
    mug_geoms = place.model.geom_bodyid == place._mug_body
    assert np.all(place.model.geom_margin[mug_geoms] == 0.0)


@pytest.mark.parametrize("name", list(RELOCATE))
def test_relocate_object_mass_and_rest(name, envs):
    env = envs[name]
    assert env.model.body_mass[env._object_body] == pytest.approx(MASSES[env.object_name], abs=1e-3)
    env.reset(seed=1)
    away = np.zeros(30)
    away[1], away[2] = 1.0, -1.0  # arm up and back, away from the object
    for _ in range(30):
        env.step(away)
    # dropped from half its nominal height, it settles upright where it was placed, at DexMV's rest height
    quat = env.data.xquat[env._object_body]
    assert abs(np.dot(quat, env.model.body_quat[env._object_body])) > 0.999
    assert env.object_pos[0] == pytest.approx(-0.0625, abs=2e-3)
    assert env.object_pos[2] == pytest.approx(REST_Z[env.object_name], abs=3e-3)


def test_relocate_reset_distribution():
    env = RelocateFoamBrickEnv(obs_mode="state")
    objects, targets = [], []
    for seed in range(40):
        env.reset(seed=seed)
        objects.append(env.data.qpos[30:33].copy())
        targets.append(env.target_pos.copy())
    objects, targets = np.array(objects), np.array(targets)
    np.testing.assert_allclose(objects[:, 0], -0.0625)
    assert np.all(np.abs(objects[:, 1]) <= 0.0375) and np.ptp(objects[:, 1]) > 0.04
    np.testing.assert_allclose(objects[:, 2], YCB_SIZE["foam_brick"][2] / 2)  # unscaled half height, then it drops
    lo, hi = np.array([-0.30, -0.15, 0.15]), np.array([0.10, 0.15, 0.25])
    assert np.all((targets >= lo) & (targets <= hi))
    assert np.all(np.ptp(targets, axis=0) > 0.5 * (hi - lo))
    env.close()


def test_relocate_reward_and_goal():
    env = RelocateSugarBoxEnv(obs_mode="state")
    env.reset(seed=2)
    _, reward, _, _, info = env.step(np.zeros(30))
    palm, obj = env.palm_pos, env.object_pos
    assert not env.hand_touches_object()
    assert reward == pytest.approx(-0.1 * np.linalg.norm(palm - obj))
    assert info["goal_measurement"] == pytest.approx(np.linalg.norm(obj - env.target_pos))
    assert info["goal_achieved"] is False
    # move the target onto the object: d = 0 < 0.1
    mujoco.mj_forward(env.model, env.data)
    env.model.body_pos[env._target_body] = env.object_pos
    mujoco.mj_forward(env.model, env.data)
    reward, goal, terminated = env._reward()
    assert goal and not terminated and env._goal_measurement == pytest.approx(0.0, abs=1e-9)
    # no contact: the lift and distance terms are gated by touching the hand
    assert reward == pytest.approx(-0.1 * np.linalg.norm(env.palm_pos - env.object_pos))
    sparse = RelocateSugarBoxEnv(obs_mode="state", reward_type="sparse")
    sparse.reset(seed=2)
    assert sparse.step(np.zeros(30))[1] == 0.0
    env.close()
    sparse.close()


def test_relocate_contact_bonus_when_the_object_is_in_the_hand():
    env = RelocateTomatoSoupCanEnv(obs_mode="state")
    env.reset(seed=0)
    # raise the can from the grasp site towards the palm until it touches the hand; it is lifted (z > half height
    # + 0.015) and the target is put on it
    qpos = env.data.qpos
    mujoco.mj_forward(env.model, env.data)
    palm = env.palm_pos.copy()
    for dz in np.arange(0.0, 0.06, 0.002):
        qpos[30:33] = palm + np.array([0.0, 0.0, dz])
        env.model.body_pos[env._target_body] = qpos[30:33]
        mujoco.mj_forward(env.model, env.data)
        if env.hand_touches_object():
            break
    assert env.hand_touches_object()
    reward, goal, _ = env._reward()
    obj, target = env.object_pos, env.target_pos
    lift = min(obj[2], target[2]) - YCB_SIZE["tomato_soup_can"][2] / 2
    assert lift > 0.015 and goal
    expected = -0.1 * np.linalg.norm(palm - obj) + 0.1 + 50 * lift + 2.0 - 0.5 * np.linalg.norm(palm - target)
    expected += 1.0 / 0.01
    assert reward == pytest.approx(expected, rel=1e-6)
    env.close()


def test_pour_reset_particles_and_goal():
    env = PourEnv(obs_mode="state")
    mugs = []
    for seed in range(20):
        env.reset(seed=seed)
        mug = env.data.qpos[env._mug_qpos : env._mug_qpos + 3].copy()
        mugs.append(mug)
        offset = mug[:2] - np.array([0.14, -0.1])
        assert -0.06 <= offset[0] <= 0.04 and 0.0 <= offset[1] <= 0.1
        particles = env.particle_positions()
        assert particles.shape == (12, 3)
        # the 2 x 2 x 3 grid of MJCF's particle composite, shifted with the mug
        np.testing.assert_allclose(np.unique(np.round(particles[:, 0] - offset[0], 4)), [0.128, 0.140])
        np.testing.assert_allclose(np.unique(np.round(particles[:, 2], 4)), [0.0827, 0.0947, 0.1067], atol=2e-4)
        assert np.all(env.particles_in_mug())
    assert np.ptp(np.array(mugs)[:, 0]) > 0.05
    # tank 0.15 x 0.15 x tank_height at (-0.08, -0.1); the pouring site 0.12 above its rim
    np.testing.assert_allclose(env.target_pos, [-0.03, -0.1, 0.24])
    assert env.water_fraction() == 0.0
    # pour by hand: put 4 of the 12 particles in the tank
    qadr = env._particle_qpos
    for i in range(4):
        body = env._particles[i]
        env.data.qpos[qadr + 3 * i : qadr + 3 * i + 3] = np.array([-0.08, -0.1, 0.03]) - env.model.body_pos[body]
    mujoco.mj_forward(env.model, env.data)
    assert env.water_fraction() == pytest.approx(4 / 12)
    _, goal, _ = env._reward()
    assert goal and env._goal_measurement == pytest.approx(1 / 3)
    low = PourEnv(obs_mode="state", tank_height=0.08)
    low.reset(seed=0)
    np.testing.assert_allclose(low.target_pos, [-0.03, -0.1, 0.20])
    env.close()
    low.close()


def test_pour_penalises_spilled_water():
    env = PourEnv(obs_mode="state")
    env.reset(seed=0)
    base = env._reward()[0]
    qadr = env._particle_qpos
    env.data.qpos[qadr : qadr + 3] = np.array([0.3, 0.3, 0.01]) - env.model.body_pos[env._particles[0]]
    mujoco.mj_forward(env.model, env.data)
    assert not env.particles_in_mug()[0] and not env.particles_above_tank()[0]
    assert env._reward()[0] == pytest.approx(base - 0.1 / 12, abs=1e-6)
    env.close()


def test_place_inside_reset_and_goal():
    env = PlaceInsideEnv(obs_mode="state")
    for seed in range(20):
        env.reset(seed=seed)
        x, y = env.data.qpos[env._banana_qpos : env._banana_qpos + 2]
        assert -0.15 <= x <= 0.15 and 0.1 <= y <= 0.2
    np.testing.assert_allclose(env.mug_pos, [0.0, 0.0, 0.0813 / 2 * 1.7])
    _, _, _, _, info = env.step(np.zeros(30))
    assert info["goal_measurement"] == pytest.approx(np.linalg.norm(env.banana_pos[:2] - env.mug_pos[:2]))
    # banana dropped into the mug: dxy <= 0.1 (H-InDex's logged criterion)
    env.data.qpos[env._banana_qpos : env._banana_qpos + 3] = [0.01, 0.0, 0.05]
    mujoco.mj_forward(env.model, env.data)
    assert env._reward()[1]
    small = PlaceInsideEnv(obs_mode="state", mug_scale=1.5)
    small.reset(seed=0)
    assert small.mug_pos[2] == pytest.approx(0.0813 / 2 * 1.5)
    env.close()
    small.close()


def test_success_rule_ten_goal_steps_inclusive():
    for cls in (PourEnv, PlaceInsideEnv, RelocateMugEnv):
        assert not cls.episode_success(9) and cls.episode_success(10)


def test_cameras_follow_mujoco_21():
    """A4: frontview read as (0.65, 0.2705981, 0, 0); where each optical axis meets the table top."""
    env = RelocateMugEnv(obs_mode="state")
    env.reset(seed=0)
    model, data = env.model, env.data
    expected_hits = {"frontview": (0.0, -0.094), "backview": (0.0, 0.02), "sideview": (0.43, 0.37)}
    for name, (pos, _) in CAMERAS.items():
        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        axis = -data.cam_xmat[cam].reshape(3, 3)[:, 2]  # cameras look along their -z
        np.testing.assert_allclose(data.cam_xpos[cam], pos)
        hit = data.cam_xpos[cam] + axis * (-data.cam_xpos[cam][2] / axis[2])
        np.testing.assert_allclose(hit[:2], expected_hits[name], atol=0.01)
        assert model.cam_fovy[cam] == 45.0
    np.testing.assert_allclose(CAMERAS["frontview"][1], [0.923, 0.384, 0.0, 0.0], atol=1e-3)
    env.close()


@pytest.mark.parametrize("name", list(DEXMV_TASKS))
def test_default_camera(name):
    assert DEXMV_TASKS[name].default_camera == DEFAULT_CAMERAS[name]


def test_backgrounds_change_pixels_not_physics():
    frames, states = {}, {}
    for background in ("plain", "checker", "dark"):
        env = RelocateTomatoSoupCanEnv(obs_mode="all", image_size=48, background=background)
        obs, _ = env.reset(seed=4)
        for _ in range(3):
            obs, *_ = env.step(np.full(30, 0.3))
        frames[background], states[background] = obs["pixels"], obs["state"]
        assert env._init_kwargs["background"] == background
        env.close()
    np.testing.assert_array_equal(states["plain"], states["checker"])
    np.testing.assert_array_equal(states["plain"], states["dark"])
    assert np.abs(frames["plain"].astype(int) - frames["checker"].astype(int)).mean() > 5
    assert np.abs(frames["plain"].astype(int) - frames["dark"].astype(int)).mean() > 5
    assert {"plain", "ceramic", "checker", "dark"} <= set(BACKGROUNDS)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown background 'wood'"):
        RelocateMugEnv(background="wood")
    with pytest.raises(ValueError, match="tank_height"):
        PourEnv(tank_height=1.0)
    with pytest.raises(ValueError, match="mug_scale"):
        PlaceInsideEnv(mug_scale=0.1)
    with pytest.raises(ValueError, match=r"unknown camera 'top'.*backview"):
        RelocateMugEnv(camera="top")
    env = RelocateMugEnv(obs_mode="state")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(30,\)"):
        env.step(np.zeros(28))
    with pytest.raises(ValueError, match="lacks keys"):
        env.reset(options={"initial_state_dict": {"qpos": np.zeros(37)}})
    with pytest.raises(ValueError, match=r"target_pos.*shape"):
        env.reset(options={"initial_state_dict": {"qpos": np.zeros(37), "qvel": np.zeros(36), "target_pos": [1]}})
    env.close()


@pytest.mark.parametrize("env_id", ["HInDex/RelocateLargeClamp-v0", "HInDex/Pour-v0", "HInDex/PlaceInside-v0"])
def test_same_seed_same_episode(env_id):
    def run(seed):
        env = gym.make(env_id, image_size=24)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        frames, proprios, rewards = [obs["pixels"]], [obs["proprio"]], []
        for _ in range(8):
            obs, reward, *_ = env.step(env.action_space.sample())
            frames.append(obs["pixels"])
            proprios.append(obs["proprio"])
            rewards.append(reward)
        env.close()
        return np.stack(frames), np.stack(proprios), np.array(rewards)

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_initial_state_round_trip():
    env = RelocateLargeClampEnv(obs_mode="state")
    env.reset(seed=7)
    for _ in range(15):
        env.step(np.full(30, 0.2))
    saved = env.get_env_state()
    mujoco.mj_forward(env.model, env.data)  # make positions consistent with qpos, as a restored state is
    before = env._state().copy()
    env.reset(seed=8)
    assert not np.allclose(env._state(), before)
    obs, _ = env.reset(options={"initial_state_dict": {**saved, "ignored": 1}})
    np.testing.assert_allclose(obs, before, atol=1e-12)
    env.close()


def test_pickle_round_trip_keeps_task_arguments():
    env = PourEnv(image_size=24, tank_height=0.08, background="dark")
    env.reset(seed=3)
    for _ in range(4):
        env.step(np.full(30, 0.1))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.tank_height == 0.08 and clone.background == "dark"
    for action in np.random.default_rng(0).uniform(-1, 1, size=(4, 30)):
        o1, r1, *_ = env.step(action)
        o2, r2, *_ = clone.step(action)
        np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
        assert r1 == r2
    np.testing.assert_array_equal(env.reset()[0]["proprio"], clone.reset()[0]["proprio"])
    env.close()
    clone.close()


def test_info_and_episode_success_flags():
    env = gym.make("HInDex/RelocateMustardBottle-v0", obs_mode="state")
    env.reset(seed=0)
    done, steps, info = False, 0, {}
    while not done:
        _, _, terminated, truncated, info = env.step(np.zeros(30))
        steps += 1
        done = terminated or truncated
    assert steps == 100 and not terminated
    assert set(info) >= {"goal_achieved", "is_success", "goal_measurement"}
    assert info["is_success"] == (env.unwrapped.goal_steps >= 10)
    env.close()


def test_render_rgb_array_and_paper_quality():
    env = RelocateMustardBottleEnv(image_size=40, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs["pixels"].transpose(1, 2, 0))
    paper = RelocateMustardBottleEnv(image_size=40, render_quality="paper")
    obs_paper, _ = paper.reset(seed=0)
    assert np.abs(obs["pixels"].astype(int) - obs_paper["pixels"].astype(int)).mean() > 0.5
    env.close()
    paper.close()


# ---------------------------------------------------------------------- scripted demonstrators
def _demo_success(env_id: str, seeds, steps: int, **kwargs) -> list[bool]:
    from hindex_sb3.demonstrators import make_demonstrator

    env = gym.make(env_id, obs_mode="state", max_episode_steps=steps, **kwargs)
    demo = make_demonstrator(env)
    outcomes = []
    for seed in seeds:
        env.reset(seed=seed)
        demo.reset()
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(demo())
            done = terminated or truncated or info["is_success"]
        outcomes.append(bool(info["is_success"]))
    env.close()
    return outcomes


def test_demonstrators_registered_for_relocate_and_place_inside():
    from hindex_sb3.demonstrators import available_demonstrators, demonstrator_class
    from hindex_sb3.demonstrators.dexmv import DexMVRelocateDemonstrator, PlaceInsideDemonstrator

    ids = available_demonstrators()
    for name in DEXMV_TASKS:
        assert (f"HInDex/{name}-v0" in ids) == (name != "Pour")
    assert demonstrator_class(PlaceInsideEnv) is PlaceInsideDemonstrator
    for cls in RELOCATE.values():
        demo_cls = demonstrator_class(cls)
        assert issubclass(demo_cls, DexMVRelocateDemonstrator) and cls in demo_cls.task_classes


@pytest.mark.parametrize(("env_id", "seeds", "steps"), [
    ("HInDex/RelocateTomatoSoupCan-v0", [0, 1], 100),
    ("HInDex/RelocateSugarBox-v0", [0], 100),
    ("HInDex/PlaceInside-v0", [3], 200),  # banana beside the mug (x = -0.12): reachable around it
])  # fmt: skip
def test_demonstrators_succeed_fast_subset(env_id, seeds, steps):
    assert all(_demo_success(env_id, seeds, steps))


def test_place_inside_demonstrations_use_the_demonstrators_longer_horizon():
    """RL episodes have 100 steps, the controller needs up to 200: recorded demonstrations get the 200."""
    from hindex_sb3.demonstrators import demonstration_horizon, rollout_demonstrations

    assert gym.spec("HInDex/PlaceInside-v0").max_episode_steps == 100
    assert demonstration_horizon("HInDex/PlaceInside-v0") == 200
    assert demonstration_horizon(gym.make("HInDex/PlaceInside-v0", obs_mode="state", max_episode_steps=300)) == 300
    assert demonstration_horizon("HInDex/RelocateMug-v0") == 100
    (trajectory,) = rollout_demonstrations("HInDex/PlaceInside-v0", n_episodes=1, seed=3, only_successful=True)
    assert 100 < len(trajectory) <= 200 and trajectory.infos["is_success"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in DEXMV_TASKS if n != "Pour"])
def test_demonstrators_50_seeds(name):
    """Relocate within the default 100 steps; place-inside within H-InDex's 200-step demonstrations, where it
    succeeds when the banana lies beside the mug rather than right behind it (see docs/dexmv.md)."""
    steps, target = (200, 0.4) if name == "PlaceInside" else (100, 0.9)
    assert np.mean(_demo_success(f"HInDex/{name}-v0", range(50), steps)) >= target
