"""Behaviour of the Adroit pixel environments: spaces, seeding, rewards, state restoring, errors, pickling."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from hindex_sb3.envs import env_ids
from hindex_sb3.envs.adroit import ADROIT_TASKS, DoorEnv, HammerEnv, PenEnv, RelocateEnv

ADROIT_IDS = [f"HInDex/{name}-v0" for name in ADROIT_TASKS]
STATE_DIMS = {"Door": 39, "Hammer": 46, "Pen": 45, "Relocate": 39}
ACT_DIMS = {"Door": 28, "Hammer": 26, "Pen": 24, "Relocate": 30}


def test_all_ids_registered():
    assert set(ADROIT_IDS) <= set(env_ids())
    for env_id in env_ids():
        assert env_id in gym.registry
    assert gym.spec("HInDex/Pen-v0").max_episode_steps == 100
    assert gym.spec("HInDex/Door-v0").max_episode_steps == 200


def test_module_prefixed_make():
    env = gym.make("hindex_sb3:HInDex/Door-v0", obs_mode="state")
    assert env.observation_space.shape == (39,)
    env.close()


@pytest.mark.parametrize("env_id", ADROIT_IDS)
def test_check_env_pixels(env_id):
    env = gym.make(env_id, image_size=48)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", ADROIT_IDS)
@pytest.mark.parametrize("obs_mode", ["state", "all"])
def test_check_env_other_modes(env_id, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


OBS_MODES = ("pixels", "rgb", "state", "all")
QUICK_IDS = ("HInDex/Door-v0", "HInDex/RelocateMug-v0")  # one Adroit and one DexMV task in the default run


def _sb3_check_params() -> list:
    params = []
    for env_id in env_ids():
        for mode in OBS_MODES:
            slow = mode != "state" and env_id not in QUICK_IDS  # ~0.7 s each for a renderer, 13 x 3 of them
            params.append(pytest.param(env_id, mode, marks=[pytest.mark.slow] if slow else [], id=f"{env_id}-{mode}"))
    return params


@pytest.mark.parametrize(("env_id", "obs_mode"), _sb3_check_params())
def test_sb3_check_env_every_id_every_obs_mode(env_id, obs_mode):
    """SB3's own checker (image spaces, channel order, dtypes), not only Gymnasium's; it must not even warn."""
    env = gym.make(env_id, obs_mode=obs_mode, image_size=36)  # 36: SB3 warns about smaller images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", QUICK_IDS)
def test_rgb_mode_is_the_pixels_of_the_dict_modes(env_id):
    rgb = gym.make(env_id, obs_mode="rgb", image_size=(24, 32))
    full = gym.make(env_id, obs_mode="all", image_size=(24, 32))
    assert rgb.observation_space == gym.spaces.Box(0, 255, (3, 24, 32), np.uint8)
    obs, _ = rgb.reset(seed=5)
    ref, _ = full.reset(seed=5)
    np.testing.assert_array_equal(obs, ref["pixels"])
    action = rgb.action_space.sample()
    obs, *_ = rgb.step(action)
    ref, *_ = full.step(action)
    np.testing.assert_array_equal(obs, ref["pixels"])
    assert obs.std() > 10  # a rendered scene, not a blank frame
    clone = pickle.loads(pickle.dumps(rgb.unwrapped))
    assert clone.observation_space == rgb.observation_space
    rgb.close()
    full.close()
    clone.close()


@pytest.mark.parametrize("name", list(ADROIT_TASKS))
def test_spaces_and_proprio(name):
    env = gym.make(f"HInDex/{name}-v0", obs_mode="all", image_size=(40, 56))
    obs, _ = env.reset(seed=3)
    space = env.observation_space
    assert space["pixels"].shape == (3, 40, 56) and space["pixels"].dtype == np.uint8
    assert space["proprio"].shape == (24,) and space["proprio"].dtype == np.float32
    assert obs["state"].shape == (STATE_DIMS[name],)
    assert env.action_space.shape == (ACT_DIMS[name],)
    qpos = env.unwrapped.data.qpos
    np.testing.assert_array_equal(obs["proprio"], qpos[env.unwrapped.proprio_slice].astype(np.float32))
    # the pixel image is not blank: the scene is lit and textured
    assert obs["pixels"].std() > 10
    env.close()


def test_proprio_slices_pick_the_24_hand_joints():
    """H-InDex's slices: door drops the arm (ARTz, ARRx-z) and door joints; hammer drops ARRx/y and 7 object dofs."""
    expected_first = {"Door": "WRJ1", "Hammer": "WRJ1", "Pen": "WRJ1", "Relocate": "WRJ1"}
    for name, cls in ADROIT_TASKS.items():
        env = cls(obs_mode="state")
        names = [mujoco.mj_id2name(env.model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in range(env.model.njnt)]
        qpos_names = []
        for j, jname in enumerate(names):
            width = {0: 7, 1: 4}.get(int(env.model.jnt_type[j]), 1)
            qpos_names += [jname] * width
        picked = qpos_names[cls.proprio_slice]
        assert len(picked) == 24, name
        assert picked[0] == expected_first[name] and picked[-1] == "THJ0", (name, picked)
        env.close()


@pytest.mark.parametrize("env_id", ADROIT_IDS)
def test_same_seed_same_observations(env_id):
    def run(seed):
        env = gym.make(env_id, image_size=32)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        frames, proprios = [obs["pixels"]], [obs["proprio"]]
        for _ in range(5):
            obs, *_ = env.step(env.action_space.sample())
            frames.append(obs["pixels"])
            proprios.append(obs["proprio"])
        env.close()
        return np.stack(frames), np.stack(proprios)

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"unknown camera 'nope'.*vil_camera"):
        DoorEnv(camera="nope")
    with pytest.raises(ValueError, match="out of range"):
        DoorEnv(image_size=4)
    with pytest.raises(ValueError, match="out of range"):
        DoorEnv(image_size=5000)
    with pytest.raises(TypeError, match="image_size"):
        DoorEnv(image_size="big")
    with pytest.raises(ValueError, match="obs_mode"):
        DoorEnv(obs_mode="rgbd")
    with pytest.raises(ValueError, match="reward_type"):
        DoorEnv(reward_type="shaped")
    with pytest.raises(ValueError, match="render_quality"):
        DoorEnv(render_quality="ultra")
    env = DoorEnv(obs_mode="state")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(28,\)"):
        env.step(np.zeros(27))
    bad = np.zeros(28)
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[3\]"):
        env.step(bad)
    with pytest.raises(ValueError, match="lacks keys"):
        env.reset(options={"initial_state_dict": {"qpos": np.zeros(30)}})
    with pytest.raises(ValueError, match=r"door_body_pos.*shape"):
        env.reset(options={"initial_state_dict": {"qpos": np.zeros(30), "qvel": np.zeros(30), "door_body_pos": [1]}})
    env.close()


def test_any_model_camera_can_be_named():
    env = PenEnv(camera="view_1", image_size=32)
    obs, _ = env.reset(seed=0)
    default = PenEnv(image_size=32)
    obs_default, _ = default.reset(seed=0)
    assert not np.array_equal(obs["pixels"], obs_default["pixels"])
    env.close()
    default.close()


def test_out_of_range_actions_are_clipped_not_rejected():
    env = DoorEnv(obs_mode="state")
    env.reset(seed=1)
    a = np.linspace(-3, 3, 28)
    obs_big, *_ = env.step(a)
    env.reset(seed=1)
    obs_clipped, *_ = env.step(np.clip(a, -1, 1))
    np.testing.assert_array_equal(obs_big, obs_clipped)
    env.close()


@pytest.mark.parametrize(
    ("cls", "steps"), [(DoorEnv, 10), (HammerEnv, 10), (PenEnv, 10), (DoorEnv, 0), (RelocateEnv, 0)]
)
def test_initial_state_dict_round_trip(cls, steps):
    """Start states restore exactly. (Relocate, like DAPG, stores the ball's world position as its body offset, so
    only start states -- the object joints at zero -- round-trip; that is what demonstrations need.)"""
    env = cls(obs_mode="state")
    env.reset(seed=11)
    for _ in range(steps):
        env.step(env.action_space.sample())
    saved = env.get_env_state()
    # after mj_step, site positions lag qpos by one substep; a restored state is consistent, so compare to that
    mujoco.mj_forward(env.model, env.data)
    state_before = env._state().copy()
    env.reset(seed=99)
    assert not np.allclose(env._state(), state_before)
    # DAPG dicts may carry extra keys: they are ignored
    obs, _ = env.reset(options={"initial_state_dict": {**saved, "extra_key": 1}})
    np.testing.assert_allclose(obs, state_before, atol=1e-12)
    env.close()


def test_door_rewards_match_the_dapg_formula():
    env = DoorEnv(obs_mode="state")
    sparse = DoorEnv(obs_mode="state", reward_type="sparse")
    for e in (env, sparse):
        e.reset(seed=5)
    core, data = env._core, env.data
    _, r, *_ = env.step(np.zeros(28))
    sparse.step(np.zeros(28))
    hinge = data.qpos[core.door_hinge_addrs]
    dist = np.linalg.norm(data.site_xpos[core.grasp_site_id] - data.site_xpos[core.handle_site_id])
    expected = -0.1 * dist - 0.1 * (hinge - 1.57) ** 2 - 1e-5 * np.sum(data.qvel**2)
    assert r == pytest.approx(expected, abs=1e-12)
    assert r < 0  # gymnasium-robotics 1.4.2 adds +0.1*dist here
    # the sparse variant drops the distance and velocity terms
    assert sparse._reward()[0] == pytest.approx(-0.1 * (hinge - 1.57) ** 2, abs=1e-12)
    # goal thresholds: DAPG 1.35 (inclusive) vs H-InDex 1.4 (strict)
    data.qpos[core.door_hinge_addrs] = 1.38
    sparse.data.qpos[sparse._core.door_hinge_addrs] = 1.38
    assert env._reward()[1] is True and sparse._reward()[1] is False
    assert env._reward()[0] == pytest.approx(
        -0.1 * dist - 0.1 * (1.38 - 1.57) ** 2 - 1e-5 * np.sum(data.qvel**2) + 20, abs=1e-9
    )
    env.close()
    sparse.close()


def test_pen_terminates_when_dropped_and_sparse_reward():
    env = PenEnv(obs_mode="state", reward_type="sparse")
    env.reset(seed=0)
    terminated = False
    tilt_wrist = np.eye(24)[0]  # tilting the wrist drops the pen after ~90 steps
    for _ in range(100):
        _, r, terminated, _, _ = env.step(tilt_wrist)
        assert r in (0.0, 50.0)
        if terminated:
            break
    assert terminated and env.data.xpos[env._core.obj_body_id][2] < 0.075
    env.close()


def test_success_rule_thresholds():
    assert not DoorEnv.episode_success(25) and DoorEnv.episode_success(26)
    assert not PenEnv.episode_success(20) and PenEnv.episode_success(21)


def test_is_success_reported_at_episode_end():
    env = gym.make("HInDex/Pen-v0", obs_mode="state")
    env.reset(seed=0)
    steps, done, info = 0, False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample() * 0)
        steps += 1
        done = terminated or truncated
    assert "is_success" in info and isinstance(info["is_success"], bool)
    assert info["is_success"] == (env.unwrapped.goal_steps > 20)
    assert steps <= 100
    env.close()


def test_render_rgb_array_returns_the_observed_frame():
    env = gym.make("HInDex/Relocate-v0", image_size=40, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (40, 40, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, obs["pixels"].transpose(1, 2, 0))
    env.close()
    state_env = gym.make("HInDex/Relocate-v0", obs_mode="state", image_size=40, render_mode="rgb_array")
    state_env.reset(seed=0)
    assert state_env.render().shape == (40, 40, 3)
    state_env.close()


def test_close_releases_renderer_and_is_idempotent():
    env = DoorEnv(image_size=32)
    env.reset(seed=0)
    renderer = env._renderer
    assert renderer is not None and not renderer.closed
    env.close()
    assert renderer.closed and env._renderer is None
    env.close()


def test_paper_quality_differs_from_fast():
    fast, paper = DoorEnv(image_size=64), DoorEnv(image_size=64, render_quality="paper")
    a, _ = fast.reset(seed=0)
    b, _ = paper.reset(seed=0)
    np.testing.assert_array_equal(a["proprio"], b["proprio"])
    diff = np.abs(a["pixels"].astype(int) - b["pixels"].astype(int))
    assert diff.mean() > 1.0  # shadows and anti-aliasing change the picture
    assert paper.model.vis.quality.offsamples == 8 and fast.model.vis.quality.offsamples == 0
    fast.close()
    paper.close()


def test_pickle_round_trip_mid_episode():
    env = gym.make("HInDex/Hammer-v0", image_size=32).unwrapped
    env.reset(seed=4)
    for _ in range(5):
        env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 26))
    for a in actions:
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = clone.step(a)
        np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
        assert r1 == r2
    # the RNG travels too: the next reset is identical
    np.testing.assert_array_equal(env.reset()[0]["proprio"], clone.reset()[0]["proprio"])
    np.testing.assert_array_equal(env.model.body_pos, clone.model.body_pos)
    env.close()
    clone.close()


@pytest.mark.parametrize("env_id", ["HInDex/Pen-v0", "HInDex/Door-v0", "HInDex/RelocateMug-v0"])
def test_a_copy_mid_episode_renders_steps_and_rewards_as_the_original(env_id):
    """Pen measures its pen's length at reset; a copy re-ran the constructor, which sets it to 1.0 (wrong rewards)."""
    env = gym.make(env_id, obs_mode="all", image_size=32, render_mode="rgb_array")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    clone = copy.deepcopy(env)
    np.testing.assert_array_equal(env.render(), clone.render())  # the last observed frame, in both
    for a in rng.uniform(-1, 1, (3, *env.action_space.shape)):
        (o1, r1, t1, *_), (o2, r2, t2, *_) = env.step(a), clone.step(a)
        np.testing.assert_array_equal(o1["state"], o2["state"])
        np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
        assert (r1, t1) == (r2, t2)
    env.close()
    clone.close()


def test_a_copy_keeps_the_seed_gymnasium_reports_and_reading_it_does_not_reseed():
    env = gym.make("HInDex/Door-v0", obs_mode="state")
    env.reset(seed=3)
    clone = copy.deepcopy(env)
    assert clone.np_random_seed == env.np_random_seed == 3  # None made gymnasium draw a fresh RNG here
    np.testing.assert_array_equal(env.reset()[0], clone.reset()[0])


def test_render_shows_a_state_set_directly_not_the_last_observed_frame():
    env = gym.make("HInDex/Door-v0", image_size=32, render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    base = env.unwrapped
    base.data.qpos[:] += 0.3
    mujoco.mj_forward(base.model, base.data)
    moved = env.render()
    assert not np.array_equal(before, moved)
    np.testing.assert_array_equal(moved, base._get_renderer().render(base.data, base.camera_id))
    env.close()


def _render_in_child(queue) -> None:
    try:
        env = gym.make("HInDex/Door-v0", image_size=16)
        env.reset(seed=0)
        queue.put("drew a frame")
    except RuntimeError as err:
        queue.put(str(err))


def test_a_process_forked_after_software_rendering_refuses_to_draw_instead_of_hanging():
    """llvmpipe's threads do not survive a fork: the child's first GL context used to wait for them forever."""
    import multiprocessing

    from hindex_sb3.envs import rendering

    env = gym.make("HInDex/Door-v0", image_size=16)
    env.reset(seed=0)  # a frame drawn here, in the parent
    if rendering._THREADED_SOFTWARE_GL_PID is None:
        pytest.skip("this machine does not draw with llvmpipe's threads (a GPU, or LP_NUM_THREADS=0)")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_render_in_child, args=(queue,))
    child.start()
    try:
        message = queue.get(timeout=60)
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
    assert "forked from one" in message and "forkserver" in message and "LP_NUM_THREADS=0" in message
    env.close()


def test_subproc_vec_env():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # Worker processes start fresh: the module prefix makes them import hindex_sb3 (and so register the ids).
    venv = make_vec_env(
        "hindex_sb3:HInDex/Door-v0", n_envs=2, seed=0, env_kwargs={"image_size": 32}, vec_env_cls=SubprocVecEnv
    )
    obs = venv.reset()
    assert obs["pixels"].shape == (2, 3, 32, 32) and obs["proprio"].shape == (2, 24)
    obs, rewards, _, infos = venv.step(np.zeros((2, 28), dtype=np.float32))
    assert rewards.shape == (2,) and "goal_achieved" in infos[0]
    venv.close()


def test_tiled_renderer_frames_are_the_single_renderers_bit_for_bit():
    from hindex_sb3.envs.rendering import TiledRenderer

    envs = [DoorEnv(image_size=40) for _ in range(5)]
    reference = []
    for i, env in enumerate(envs):
        env.reset(seed=i)
        for _ in range(3):
            env.step(np.random.default_rng(i).uniform(-1, 1, 28))
        reference.append(env._get_renderer().render_chw(env.data, env.camera_id))
    tiled = TiledRenderer(envs[0].model, 40, 40, tiles=4)  # 5 scenes: two rounds
    try:
        out = [np.zeros((3, 40, 40), np.uint8) for _ in envs]
        tiled.render_into([(e.model, e.data, e.camera_id) for e in envs], out)
        for got, ref in zip(out, reference, strict=True):
            np.testing.assert_array_equal(got, ref)  # each its own scene, upright, and no edge pixel moved
        assert not np.array_equal(out[0], out[1])  # the scenes differ, and so do their frames
        with pytest.raises(ValueError, match="2 scenes for 1 output frames"):
            tiled.render_into([(e.model, e.data, e.camera_id) for e in envs[:2]], out[:1])
    finally:
        tiled.close()
        for env in envs:
            env.close()
    with pytest.raises(ValueError, match="tiles"):
        TiledRenderer(envs[0].model, 40, 40, tiles=0)


def test_deferred_frames_alternate_buffers_and_are_refused_without_pixels():
    env = DoorEnv(image_size=32)
    env.defer_frames()
    first, _ = env.reset(seed=0)
    model, data, camera, buffer = env.pending_frame()
    assert (model, data, camera) == (env.model, env.data, env.camera_id)
    assert buffer is first["pixels"] and not buffer.any()  # not drawn yet
    env.frame_drawn(0.5)
    assert env.pending_frame() is None and env.reset_timings()["render"] == 0.5
    second, *_ = env.step(np.zeros(28))
    assert second["pixels"] is not first["pixels"]  # two buffers take turns
    third, *_ = env.step(np.zeros(28))
    assert third["pixels"] is first["pixels"]
    env.close()
    with pytest.raises(ValueError, match="obs_mode='state'"):
        DoorEnv(obs_mode="state").defer_frames()
