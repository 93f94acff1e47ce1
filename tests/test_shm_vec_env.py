"""SharedMemoryVecEnv: the same steps as DummyVecEnv / SubprocVecEnv, frames through shared memory, nothing leaked."""

from __future__ import annotations

import os
import signal
import threading
from functools import partial
from multiprocessing import shared_memory

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecTransposeImage

from hindex_sb3.dapg import DAPG
from hindex_sb3.dapg.npg import get_flat_params
from hindex_sb3.dapg.rollout import EpisodeRunner
from hindex_sb3.runs.build import make_venv, vec_env_class
from hindex_sb3.runs.config import ConfigError, TrainConfig
from hindex_sb3.vec_env import SharedMemoryVecEnv
from hindex_sb3.vec_env.shm import threading_problem, tiling_problem

DOOR = {"image_size": 32, "max_episode_steps": 7}  # 7-step episodes: 30 steps cross four auto-resets


class FrameEnv(gym.Env):
    """Seeded random frames in a chosen space; ``fail_at`` raises in that step, ``bad_shape`` returns a wrong frame."""

    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, shape=(12, 10, 3), dtype=np.uint8, length=4, fail_at=None, bad_shape=False):
        self.observation_space = spaces.Box(0, 255, shape, dtype)
        self.length, self.fail_at, self.bad_shape = length, fail_at, bad_shape

    def _frame(self):
        shape = (1, *self.observation_space.shape[1:]) if self.bad_shape else self.observation_space.shape
        return self.np_random.integers(0, 256, shape).astype(self.observation_space.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._frame(), {"seed": seed, "options": options}

    def step(self, action):
        self._t += 1
        if self._t == self.fail_at:
            raise ValueError("this env fails on purpose")
        return self._frame(), float(self._t) + float(action[0]), False, self._t >= self.length, {"t": self._t}


def _venv(env_fns, **kwargs):
    """Synthetic envs in forked workers: no fresh interpreter importing torch per worker (seconds each here); the
    door tests below cover the default start method (forkserver)."""
    return SharedMemoryVecEnv(env_fns, start_method="fork", **kwargs)


def _door(cls, n_envs=2, seed=0):
    env_id = "HInDex/Door-v0" if cls is DummyVecEnv else "hindex_sb3:HInDex/Door-v0"
    return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=DOOR, vec_env_cls=cls)


def _trace(venv, n_steps=30):
    """Observations, rewards, dones and infos of ``n_steps`` seeded random steps (plus a seeded reset midway)."""
    rng = np.random.default_rng(1)
    trace = [("reset", venv.reset())]
    for t in range(n_steps):
        if t == 17:
            venv.seed(123)
            trace.append(("reset", venv.reset()))
        actions = rng.uniform(-1, 1, (venv.num_envs, *venv.action_space.shape)).astype(np.float32)
        trace.append(("step", venv.step(actions)))
    venv.close()
    return trace


def _assert_obs_equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_obs_equal(a[key], b[key])
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _assert_same_trace(got, ref, reward_dtype):
    assert [kind for kind, _ in got] == [kind for kind, _ in ref]
    n_done = 0
    for (kind, g), (_, r) in zip(got, ref, strict=True):
        if kind == "reset":
            _assert_obs_equal(g, r)
            continue
        _assert_obs_equal(g[0], r[0])
        np.testing.assert_array_equal(g[1], r[1].astype(reward_dtype))
        np.testing.assert_array_equal(g[2], r[2])
        for info_g, info_r in zip(g[3], r[3], strict=True):
            assert info_g.keys() == info_r.keys()
            if "terminal_observation" in info_r:
                n_done += 1
                _assert_obs_equal(info_g["terminal_observation"], info_r["terminal_observation"])
            assert {k: v for k, v in info_g.items() if k not in ("terminal_observation", "episode")} == {
                k: v for k, v in info_r.items() if k not in ("terminal_observation", "episode")
            }
    assert n_done >= 6  # the comparison crossed several auto-resets


def test_door_pixels_step_bit_identically_to_dummy_and_subproc():
    shm = _door(SharedMemoryVecEnv)
    assert shm.shared_memory_name is not None  # the frames did take the shared path
    got = _trace(shm)
    _assert_same_trace(got, _trace(_door(SubprocVecEnv)), np.float64)  # rewards as SubprocVecEnv hands them on
    ref = _trace(_door(DummyVecEnv))
    _assert_same_trace(
        [(k, (x[0], x[1].astype(np.float32), *x[2:]) if k == "step" else x) for k, x in got], ref, np.float32
    )


def test_a_box_frame_space_and_a_float_image_space_match_dummy_vec_env():
    """uint8 frames go through shared memory; a float32 image is no frame: it takes the pipe, with the same result."""
    for dtype, shared in ((np.uint8, True), (np.float32, False)):
        fns = [lambda d=dtype: FrameEnv(dtype=d)] * 2
        venv = _venv(fns)
        assert (venv.shared_memory_name is not None) == shared
        venv.seed(5)
        got = _trace(venv, n_steps=12)
        dummy = DummyVecEnv(fns)
        dummy.seed(5)
        ref = _trace(dummy, n_steps=12)
        for (kind, g), (_, r) in zip(got, ref, strict=True):
            _assert_obs_equal(g if kind == "reset" else g[0], r if kind == "reset" else r[0])
            if kind == "step":
                for info_g, info_r in zip(g[3], r[3], strict=True):
                    if "terminal_observation" in info_r:
                        _assert_obs_equal(info_g["terminal_observation"], info_r["terminal_observation"])


def test_returned_observations_are_copies_that_the_next_step_does_not_overwrite():
    venv = _venv([FrameEnv, FrameEnv])
    try:
        first = venv.reset()
        kept = first.copy()
        actions = np.zeros((2, 1), np.float32)
        for _ in range(4):  # the 4th step ends the episodes: terminal_observation, then the reset's first frame
            obs, _, dones, infos = venv.step(actions)
        np.testing.assert_array_equal(first, kept)
        assert dones.all() and not np.shares_memory(obs, infos[0]["terminal_observation"])
        terminal = infos[0]["terminal_observation"].copy()
        venv.step(actions)
        np.testing.assert_array_equal(infos[0]["terminal_observation"], terminal)
        assert not np.array_equal(obs[0], terminal)
    finally:
        venv.close()


def test_reset_envs_and_step_envs_are_gymnasium_steps_of_the_chosen_envs_without_auto_reset():
    venv = _venv([FrameEnv, FrameEnv, FrameEnv])
    ref = FrameEnv()
    try:
        first = venv.reset_envs({2: 9})
        assert list(first) == [2]
        np.testing.assert_array_equal(first[2][0], ref.reset(seed=9)[0])
        for _ in range(4):
            out = venv.step_envs({2: np.array([0.5], np.float32)})
            obs, reward, terminated, truncated, info = out[2]
            expected = ref.step(np.array([0.5], np.float32))
            np.testing.assert_array_equal(obs, expected[0])
            assert (reward, terminated, truncated, info) == expected[1:]
        assert truncated and "terminal_observation" not in info  # no auto-reset: the episode's last frame
        with pytest.raises(ValueError, match="env index"):
            venv.step_envs({3: np.zeros(1, np.float32)})
    finally:
        venv.close()


def test_the_episode_runner_drives_the_envs_through_step_envs_and_sees_transposed_frames():
    venv = VecTransposeImage(_venv([FrameEnv, FrameEnv]))
    try:
        venv.venv.env_method = None  # the pipe route must not be taken
        runner = EpisodeRunner(venv)
        obs = runner.reset({1: 4})[1]
        np.testing.assert_array_equal(obs, FrameEnv().reset(seed=4)[0].transpose(2, 0, 1))
        out = runner.step({1: np.zeros(1, np.float32)})
        assert out[1][0].shape == (3, 12, 10) and out[1][1] == 1.0
    finally:
        venv.close()


def test_attributes_methods_wrappers_and_reset_options_reach_the_worker_envs():
    venv = _venv([FrameEnv, lambda: gym.wrappers.TimeLimit(FrameEnv(), 3)])
    try:
        venv.set_attr("length", 7, indices=[0])
        assert venv.get_attr("length") == [7, 4] and venv.has_attr("length") and not venv.has_attr("nope")
        assert venv.env_is_wrapped(gym.wrappers.TimeLimit) == [False, True]
        first, info = venv.env_method("reset", seed=2, indices=1)[0]
        assert info == {"seed": 2, "options": None}
        np.testing.assert_array_equal(first, FrameEnv().reset(seed=2)[0])
        venv.seed(4)
        venv.set_options({"anything": 1})
        venv.reset()
        assert venv.reset_infos == [{"seed": 4, "options": {"anything": 1}}, {"seed": 5, "options": {"anything": 1}}]
        with pytest.warns(UserWarning, match="render mode is None"):
            assert venv.get_images() == [None, None]
    finally:
        venv.close()


def test_close_unlinks_the_shared_segment_and_stops_the_workers():
    venv = _venv([FrameEnv, FrameEnv])
    name = venv.shared_memory_name
    assert os.path.exists(f"/dev/shm/{name}")
    venv.reset()
    venv.close()
    venv.close()  # idempotent
    assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)
    assert not any(p.is_alive() for p in venv.processes)


def test_a_dead_worker_gives_a_clear_error_and_close_still_unlinks():
    venv = _venv([FrameEnv, FrameEnv])
    name = venv.shared_memory_name
    venv.reset()
    os.kill(venv.processes[1].pid, signal.SIGKILL)
    venv.processes[1].join(5)
    with pytest.raises(RuntimeError, match=r"worker process of env 1 .* died \(exit code -9\)"):
        venv.step(np.zeros((2, 1), np.float32))
    venv.close()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_an_env_error_is_raised_with_its_traceback_and_the_other_envs_stay_in_step():
    venv = _venv([FrameEnv, lambda: FrameEnv(fail_at=2)])
    try:
        venv.reset()
        venv.step(np.zeros((2, 1), np.float32))
        with pytest.raises(RuntimeError, match=r"env 1 raised in its worker process:(.|\n)*fails on purpose"):
            venv.step(np.zeros((2, 1), np.float32))
        assert venv.get_attr("length") == [4, 4]  # the pipes answer the next request, not a stale reply
    finally:
        venv.close()


def test_an_action_count_other_than_num_envs_is_refused_and_the_envs_stay_usable():
    venv = _venv([FrameEnv, FrameEnv])
    try:
        venv.reset()
        for n in (1, 3):  # one: a worker got an empty slice; three: the surplus went unnoticed
            with pytest.raises(ValueError, match=f"actions holds {n} actions for 2 envs"):
                venv.step(np.zeros((n, 1), np.float32))
        assert venv.step(np.zeros((2, 1), np.float32))[1].shape == (2,)
    finally:
        venv.close()


def test_bad_sizes_and_shapes_are_refused_by_name(monkeypatch):
    with pytest.raises(ValueError, match=r"needs 720 bytes of shared memory for 2 envs, more than max_shared_bytes"):
        _venv([FrameEnv, FrameEnv], max_shared_bytes=700)
    from hindex_sb3.vec_env import shm

    real = shm.shutil.disk_usage
    monkeypatch.setattr(shm.shutil, "disk_usage", lambda path: real(path)._replace(free=100))
    with pytest.raises(ValueError, match=r"more than the free space of /dev/shm \(100 bytes\)"):
        _venv([FrameEnv])  # there, the workers' first write would crash with SIGBUS
    monkeypatch.undo()
    with pytest.raises(TypeError, match="max_shared_bytes"):
        _venv([FrameEnv], max_shared_bytes=True)
    venv = _venv([lambda: FrameEnv(bad_shape=True)])
    try:
        with pytest.raises(RuntimeError, match=r"observation of shape \(1, 10, 3\); its space says \(12, 10, 3\)"):
            venv.reset()
    finally:
        venv.close()


def test_train_config_builds_it_and_auto_picks_it_where_it_picked_subprocesses(monkeypatch):
    base = {"task": "door", "n_envs": 2, "image_size": 32, "horizon": 7}
    venv = make_venv(TrainConfig(**base, vec_env="shm", envs_per_worker=2), "HInDex/Door-v0")
    try:
        assert isinstance(venv, SharedMemoryVecEnv) and venv.num_envs == 2 and venv.envs_per_worker == 2
        assert venv.reset()["pixels"].shape == (2, 3, 32, 32)
    finally:
        venv.close()
    with pytest.raises(ConfigError, match="vec_env"):
        TrainConfig(**base, vec_env="shared")
    with pytest.raises(ConfigError, match=r"envs_per_worker.*needs vec_env shm"):
        TrainConfig(**base, vec_env="subproc", envs_per_worker=2)
    with pytest.raises(ConfigError, match=r"envs_per_worker.*more than n_envs \(2\)"):
        TrainConfig(**base, envs_per_worker=3)
    assert vec_env_class(TrainConfig(**base, envs_per_worker=2, device="cpu")) == "shm"  # auto: only shm tiles
    # overlap asks for workers too: auto gives them on a CPU, where it would otherwise keep the envs in-process
    assert vec_env_class(TrainConfig(**base, overlap=True, device="cpu")) == "shm"
    with pytest.raises(ConfigError, match=r"overlap.*worker processes.*not 'dummy'"):
        TrainConfig(**base, vec_env="dummy", overlap=True)
    with pytest.raises(ConfigError, match=r"overlap.*n_envs >= 2.*got 1"):
        TrainConfig(**{**base, "n_envs": 1}, vec_env="shm", overlap=True)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert vec_env_class(TrainConfig(**base, device="cuda")) == "shm"
    assert vec_env_class(TrainConfig(**base, device="cpu")) == "dummy"
    assert vec_env_class(TrainConfig(**{**base, "n_envs": 1}, vec_env="shm")) == "dummy"


@pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")
def test_pixel_dapg_with_shared_memory_workers_is_bit_identical_to_one_process():
    from tiny_encoder import tiny_policy_kwargs

    def run(venv):
        try:
            model = DAPG(
                "MultiInputPolicy", venv, n_trajectories=3, policy_kwargs=tiny_policy_kwargs(), seed=3, device="cpu"
            )
            for k in range(2):
                model.learn(1, reset_num_timesteps=k == 0)
            assert model.num_timesteps == 2 * 3 * 6
            return get_flat_params(list(model.policy.parameters()))
        finally:
            venv.close()

    kwargs = {"image_size": 32, "max_episode_steps": 6}
    reference = run(make_vec_env("HInDex/Door-v0", n_envs=1, env_kwargs=kwargs))
    shm = make_vec_env("hindex_sb3:HInDex/Door-v0", n_envs=2, env_kwargs=kwargs, vec_env_cls=SharedMemoryVecEnv)
    assert th.equal(reference, run(shm))


# ---------------------------------------------------------------------------------------------- several envs a worker
def _grouped(n_envs=3, env_kwargs=DOOR, **kwargs):
    return make_vec_env(
        "hindex_sb3:HInDex/Door-v0", n_envs=n_envs, seed=0, env_kwargs=env_kwargs, vec_env_cls=SharedMemoryVecEnv,
        vec_env_kwargs=kwargs,
    )  # fmt: skip


def test_several_envs_per_worker_without_tiles_step_bit_identically_to_dummy():
    got = _trace(_grouped(3, envs_per_worker=2, tiled_render=False))  # workers of 2 and 1 envs
    ref = _trace(_door(DummyVecEnv, n_envs=3))
    _assert_same_trace(
        [(k, (x[0], x[1].astype(np.float32), *x[2:]) if k == "step" else x) for k, x in got], ref, np.float32
    )


def test_tiled_workers_step_bit_identically_to_dummy():
    venv = _grouped(4, envs_per_worker=2)  # auto: door envs in fast quality are tiled
    assert venv.envs_per_worker == 2 and [list(g) for g in venv.groups] == [[0, 1], [2, 3]]
    got = _trace(venv)
    _assert_same_trace(
        [(k, (x[0], x[1].astype(np.float32), *x[2:]) if k == "step" else x) for k, x in got],
        _trace(_door(DummyVecEnv, n_envs=4)),
        np.float32,
    )  # frames included (drawn at the atlas origin, then copied), terminal frames drawn before the resets
    assert got[-1][1][0]["pixels"].mean() > 20  # real frames, not the zeros of a buffer never drawn


def test_tiled_steps_of_chosen_envs_in_flight_together_come_back_to_the_right_envs():
    venv = _grouped(4, env_kwargs={"image_size": 32}, envs_per_worker=2)
    ref = DummyVecEnv([lambda: gym.make("HInDex/Door-v0", image_size=32)] * 4)
    try:
        seeds = {0: 5, 1: 6, 2: 7, 3: 8}
        first = venv.reset_envs(seeds)
        for j, s in seeds.items():
            _assert_obs_equal(first[j][0], ref.envs[j].reset(seed=s)[0])
        rng = np.random.default_rng(0)
        for _ in range(3):
            actions = {j: rng.uniform(-1, 1, 28).astype(np.float32) for j in range(4)}
            venv.step_envs_send({j: actions[j] for j in (1, 3)})  # one env of each worker: two batches in flight
            venv.step_envs_send({j: actions[j] for j in (0, 2)})
            got = venv.step_envs_recv([2, 0]) | venv.step_envs_recv([3, 1])  # received out of order: stashed
            for j in range(4):
                expected = ref.envs[j].step(actions[j])
                _assert_obs_equal(got[j][0], expected[0])
                assert got[j][1:4] == expected[1:4]
        with pytest.raises(RuntimeError, match="was not sent a step"):
            venv.step_envs_recv([1])
        venv.step_envs_send({0: actions[0]})
        with pytest.raises(RuntimeError, match="last step was not received"):
            venv.step_envs_send({0: actions[0]})
        assert venv.get_attr("camera_id", indices=[3, 0]) == [ref.envs[3].unwrapped.camera_id] * 2  # drains first
    finally:
        venv.close()
        ref.close()


def test_grouped_workers_refuse_bad_settings_and_name_the_env_that_failed():
    with pytest.raises(ValueError, match="envs_per_worker"):
        _venv([FrameEnv, FrameEnv], envs_per_worker=3)
    with pytest.raises(TypeError, match="envs_per_worker"):
        _venv([FrameEnv, FrameEnv], envs_per_worker=True)
    with pytest.raises(TypeError, match="tiled_render"):
        _venv([FrameEnv, FrameEnv], tiled_render="yes")
    with pytest.raises(RuntimeError, match=r"envs 0-1 raised(.|\n)*tiled_render=True, but its envs do not defer"):
        _venv([FrameEnv, FrameEnv], envs_per_worker=2, tiled_render=True)
    door = partial(gym.make, "HInDex/Door-v0", image_size=32)
    assert "paper quality" in tiling_problem([door(render_quality="paper"), door(render_quality="paper")])
    assert "differ in task" in tiling_problem([door(), door(image_size=40)])
    assert "observe no pixels" in tiling_problem([door(obs_mode="state")] * 2)
    assert tiling_problem([door(), door(camera="top")]) is None  # each tile takes its env's own camera
    venv = _venv([FrameEnv, lambda: FrameEnv(fail_at=2), FrameEnv], envs_per_worker=2)
    try:
        assert venv.reset().shape == (3, 12, 10, 3)  # FrameEnvs cannot be tiled: auto leaves them one by one
        venv.step(np.zeros((3, 1), np.float32))
        with pytest.raises(RuntimeError, match=r"env 1 raised in its worker process:(.|\n)*fails on purpose"):
            venv.step(np.zeros((3, 1), np.float32))
        assert venv.get_attr("length") == [4, 4, 4]
        os.kill(venv.processes[0].pid, signal.SIGKILL)
        venv.processes[0].join(5)
        with pytest.raises(RuntimeError, match=r"worker process of envs 0-1 .* died"):
            venv.step(np.zeros((3, 1), np.float32))
    finally:
        venv.close()


class _CopyPixels(gym.ObservationWrapper):
    def observation(self, obs):
        return {**obs, "pixels": obs["pixels"].copy()}


def test_a_wrapper_that_replaces_the_frame_is_refused_under_tiling():
    # the default start method: a forked worker that renders can hang on the GL state of a parent that rendered
    fn = lambda: _CopyPixels(gym.make("HInDex/Door-v0", image_size=32))  # noqa: E731
    venv = SharedMemoryVecEnv([fn, fn], envs_per_worker=2)
    try:
        with pytest.raises(RuntimeError, match="a wrapper changed the pixel observation"):
            venv.reset()
    finally:
        venv.close()
    venv = SharedMemoryVecEnv([fn, fn], envs_per_worker=2, tiled_render=False)
    try:
        assert venv.reset()["pixels"].mean() > 20
    finally:
        venv.close()


@pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")
def test_pixel_dapg_with_overlap_and_tiled_workers_is_bit_identical_to_one_env_per_worker():
    from tiny_encoder import tiny_policy_kwargs

    def run(**kwargs):
        venv = _grouped(4, env_kwargs={"image_size": 32, "max_episode_steps": 5}, **kwargs)
        try:
            model = DAPG("MultiInputPolicy", venv, n_trajectories=6, overlap=True, bc_epochs=0,
                         policy_kwargs=tiny_policy_kwargs(), seed=2, device="cpu")  # fmt: skip
            model.learn(1)
            return get_flat_params(list(model.policy.parameters()))
        finally:
            venv.close()

    reference = run()
    assert th.equal(reference, run(envs_per_worker=2))
    assert th.equal(reference, run(envs_per_worker=2, threads_per_worker=2))


# ---------------------------------------------------------------------------------------------- stepping in threads
class _StepThreads(gym.Wrapper):
    """Remembers the thread of every step (the frame passes through untouched, so tiling still applies)."""

    def __init__(self, env):
        super().__init__(env)
        self.main_thread = threading.get_ident()
        self.step_threads = []

    def step(self, action):
        self.step_threads.append(threading.get_ident())
        return self.env.step(action)


def test_threaded_tiled_workers_step_bit_identically_to_dummy_in_several_threads():
    fn = lambda: _StepThreads(gym.make("HInDex/Door-v0", **DOOR))  # noqa: E731
    venv = SharedMemoryVecEnv([fn] * 4, envs_per_worker=4, threads_per_worker=2)
    assert venv.threads_per_worker == 2
    venv.seed(0)
    try:
        rng = np.random.default_rng(1)
        got = [venv.reset()]
        for _ in range(12):
            got.append(venv.step(rng.uniform(-1, 1, (4, 28)).astype(np.float32)))
        threads = venv.get_attr("step_threads")
        main = venv.get_attr("main_thread")[0]
        bad = np.zeros((4, 28), np.float32)
        bad[2, 3] = np.nan  # env 2 fails in its thread while the others step and are drawn
        with pytest.raises(RuntimeError, match=r"env 2 raised in its worker process:(.|\n)*NaN"):
            venv.step_envs(dict(enumerate(bad)))
        assert venv.step_envs({1: bad[0]})[1][0]["pixels"].mean() > 20  # the worker still steps and draws
    finally:
        venv.close()
    # the envs step in the worker's two stepping threads, while its own thread draws their frames
    stepping = {t for env_threads in threads for t in env_threads}
    assert len(stepping) == 2 and main not in stepping
    ref = _door(DummyVecEnv, n_envs=4)
    rng = np.random.default_rng(1)
    expected = [ref.reset()] + [ref.step(rng.uniform(-1, 1, (4, 28)).astype(np.float32)) for _ in range(12)]
    ref.close()
    _assert_obs_equal(got[0], expected[0])
    for g, r in zip(got[1:], expected[1:], strict=True):
        _assert_obs_equal(g[0], r[0])
        np.testing.assert_array_equal(g[1].astype(np.float32), r[1])  # DummyVecEnv keeps float32 rewards
        np.testing.assert_array_equal(g[2], r[2])
        for info_g, info_r in zip(g[3], r[3], strict=True):
            if "terminal_observation" in info_r:
                _assert_obs_equal(info_g["terminal_observation"], info_r["terminal_observation"])
    assert sum("terminal_observation" in i for g in got[1:] for i in g[3]) == 4  # crossed the auto-resets


def test_threaded_state_workers_match_dummy_and_a_failing_env_is_named():
    state = {"obs_mode": "state", "max_episode_steps": 7}
    venv = _grouped(4, env_kwargs=state, envs_per_worker=4, threads_per_worker=3)  # shares of 1, 1 and 2 envs
    ref = DummyVecEnv([lambda: gym.make("HInDex/Door-v0", obs_mode="state")] * 4)
    try:
        seeds = {0: 5, 1: 6, 2: 7, 3: 8}
        first = venv.reset_envs(seeds)
        for j, s in seeds.items():
            np.testing.assert_array_equal(first[j][0], ref.envs[j].reset(seed=s)[0])
        rng = np.random.default_rng(0)
        for _ in range(3):
            actions = {j: rng.uniform(-1, 1, 28).astype(np.float32) for j in range(4)}
            got = venv.step_envs(actions)
            for j in range(4):
                expected = ref.envs[j].step(actions[j])
                np.testing.assert_array_equal(got[j][0], expected[0])
                assert got[j][1:4] == expected[1:4]
        bad = {j: np.zeros(28, np.float32) for j in range(4)}
        bad[3][5] = np.nan  # env 3 fails in its thread; env 1 steps fine in another
        with pytest.raises(RuntimeError, match=r"env 3 raised in its worker process:(.|\n)*NaN"):
            venv.step_envs(bad)
        assert len(venv.get_attr("camera_id")) == 4  # the worker still answers
    finally:
        venv.close()
        ref.close()


def test_threads_per_worker_is_refused_where_a_step_could_draw_in_a_thread():
    with pytest.raises(ValueError, match="threads_per_worker"):
        _venv([FrameEnv, FrameEnv], envs_per_worker=2, threads_per_worker=3)
    with pytest.raises(TypeError, match="threads_per_worker"):
        _venv([FrameEnv, FrameEnv], envs_per_worker=2, threads_per_worker=True)
    with pytest.raises(RuntimeError, match=r"threads_per_worker=2, but its envs are not hindex_sb3's"):
        _venv([FrameEnv, FrameEnv], envs_per_worker=2, threads_per_worker=2)
    door = partial(gym.make, "HInDex/Door-v0", image_size=32)
    assert "inside their step" in threading_problem([door(), door()], tiled=False)
    assert threading_problem([door(), door()], tiled=True) is None
    assert threading_problem([door(obs_mode="state")] * 2, tiled=False) is None
    base = {"task": "door", "encoder": "state", "n_envs": 4, "vec_env": "shm"}
    with pytest.raises(ConfigError, match=r"threads_per_worker.*more than envs_per_worker \(2\)"):
        TrainConfig(**base, envs_per_worker=2, threads_per_worker=3)
    venv = make_venv(TrainConfig(**base, envs_per_worker=2, threads_per_worker=2), "HInDex/Door-v0")
    try:
        assert venv.envs_per_worker == 2 and venv.threads_per_worker == 2
    finally:
        venv.close()


@pytest.mark.parametrize("obs_mode", ["state", "pixels"])
def test_a_step_that_exits_in_a_thread_is_raised_for_its_env_and_never_hangs_the_worker(obs_mode):
    from hindex_sb3.vec_env.shm import _Worker

    outcome = {}

    def step(i, env):
        if i == 3:
            raise SystemExit("an env that calls sys.exit() in its step")
        return env.step(np.zeros(28, np.float32))

    def worker_thread():  # a worker's whole life in one thread, as in its process (GL contexts stay in it)
        envs = [gym.make("HInDex/Door-v0", obs_mode=obs_mode, image_size=32) for _ in range(4)]
        worker = _Worker(envs, first=8, tiled=obs_mode == "pixels", threads=2)
        try:
            for i, env in enumerate(envs):
                env.reset(seed=i)
            worker._run(range(4), step)
        except BaseException as err:  # what the worker raises is the point
            outcome["raised"], outcome["current"] = err, worker.current
        finally:
            worker.close()

    caller = threading.Thread(target=worker_thread, daemon=True)
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), "the worker waited forever for a thread that had exited"
    assert isinstance(outcome["raised"], SystemExit) and outcome["current"] == 8 + 3
