"""Audit of the vectorised-env and evaluation layer: SB3 conformance and failure handling of SharedMemoryVecEnv,
recurrent policies in ``evaluate``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from hindex_sb3.evaluation import evaluate
from hindex_sb3.vec_env import SharedMemoryVecEnv


class Frames(gym.Env):
    """Seeded 8x8 frames; ``length`` steps an episode; ``sleep`` seconds a step; ``lambda_info`` puts a lambda in
    the info (which cannot be pickled)."""

    action_space = spaces.Box(-1, 1, (1,), np.float32)
    observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)

    def __init__(self, length: int = 4, sleep: float = 0.0, lambda_info: bool = False) -> None:
        self.length, self.sleep, self.lambda_info = length, sleep, lambda_info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.integers(0, 256, (8, 8, 3), dtype=np.uint8), {}

    def step(self, action):
        time.sleep(self.sleep)
        self._t += 1
        info = {"t": self._t, **({"fn": lambda: 0} if self.lambda_info else {})}
        frame = self.np_random.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        return frame, 1.0, False, self._t >= self.length, info


def _venv(env_fns):
    return SharedMemoryVecEnv(env_fns, start_method="fork")  # synthetic envs: no fresh interpreter per worker


def _three():
    return [lambda n=n: Frames(length=n) for n in (3, 4, 5)]


@pytest.mark.parametrize("indices", [-1, [-3], [-1, 0], np.array([2, -2]), range(-2, 0)])
def test_negative_and_numpy_indices_pick_the_envs_dummy_vec_env_picks(indices):
    dummy, venv = DummyVecEnv(_three()), _venv(_three())
    try:
        expected = dummy.get_attr("length", indices=indices)
        assert venv.get_attr("length", indices=indices) == expected
        assert venv.env_method("get_wrapper_attr", "length", indices=indices) == expected
        venv.set_attr("length", 9, indices=indices)
        dummy.set_attr("length", 9, indices=indices)
        assert venv.get_attr("length") == dummy.get_attr("length")
        with pytest.raises(IndexError, match="env index 3 out of range for 3 envs"):
            venv.get_attr("length", indices=[3])
    finally:
        venv.close()


class _Interrupt(BaseException):
    """Stands for the KeyboardInterrupt of Ctrl-C (in a notebook it reaches only the main process)."""


def _interrupt(signum, frame):
    raise _Interrupt


def test_an_interrupted_step_wait_leaves_no_stale_reply_for_the_next_command():
    venv = _venv([Frames, lambda: Frames(sleep=0.6)])
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        venv.reset()
        signal.setitimer(signal.ITIMER_REAL, 0.15)  # lands while env 1 still steps
        with pytest.raises(_Interrupt):
            venv.step(np.zeros((2, 1), np.float32))
        # before: get_attr read env 1's step reply -> [4, (None, 1.0, False, {...}, {})]; reset raised a TypeError
        assert venv.get_attr("length") == [4, 4]
        assert venv.reset().shape == (2, 8, 8, 3)
        _, rewards, _, infos = venv.step(np.zeros((2, 1), np.float32))
        assert rewards.tolist() == [1.0, 1.0] and [i["t"] for i in infos] == [1, 1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        venv.close()
    assert not any(p.is_alive() for p in venv.processes)


def test_step_wait_without_a_step_async_is_an_error_not_a_hang():
    venv = _venv([Frames, Frames])
    try:
        venv.reset()
        venv.step(np.zeros((2, 1), np.float32))
        with pytest.raises(RuntimeError, match="step_wait without a step_async"):  # before: blocked for ever
            venv.step_wait()
        assert venv.step(np.zeros((2, 1), np.float32))[1].tolist() == [1.0, 1.0]
    finally:
        venv.close()


def test_a_reply_that_cannot_be_pickled_is_an_error_naming_the_env_and_the_worker_lives_on():
    venv = _venv([Frames, lambda: Frames(lambda_info=True)])
    try:
        venv.reset()
        # before: the worker died on the pickling error ("died (exit code 1)"), the reason only on its stderr
        with pytest.raises(RuntimeError, match=r"env 1 raised(.|\n)*could not be sent(.|\n)*pickle"):
            venv.step(np.zeros((2, 1), np.float32))
        assert venv.get_attr("length") == [4, 4] and all(p.is_alive() for p in venv.processes)
    finally:
        venv.close()


def test_use_after_close_is_one_clear_error():
    venv = _venv([Frames, Frames])
    venv.close()
    venv.close()
    for use in (venv.reset, lambda: venv.step(np.zeros((2, 1), np.float32)), lambda: venv.get_attr("length")):
        with pytest.raises(RuntimeError, match="this VecEnv is closed"):  # before: OSError('handle is closed')
            use()


def test_close_ends_workers_stuck_in_a_step_within_one_timeout(monkeypatch):
    import hindex_sb3.vec_env.shm as shm

    monkeypatch.setattr(shm, "_JOIN_TIMEOUT_S", 0.5)
    venv = _venv([lambda: Frames(sleep=20)] * 3)  # stands for an env that never returns from its step
    name = venv.shared_memory_name
    venv.reset()
    venv.step_async(np.zeros((3, 1), np.float32))
    start = time.monotonic()
    venv.close()  # before: waited for every step's reply with no limit (here 20 s; forever for a hung env)
    assert time.monotonic() - start < 5
    assert not any(p.is_alive() for p in venv.processes) and not os.path.exists(f"/dev/shm/{name}")


_FORKED = """
    import numpy as np, gymnasium as gym
    from gymnasium import spaces
    from hindex_sb3.vec_env import SharedMemoryVecEnv

    class Frames(gym.Env):
        action_space = spaces.Box(-1, 1, (1,), np.float32)
        observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
        def reset(self, *, seed=None, options=None):
            return np.zeros((8, 8, 3), np.uint8), {}
        def step(self, action):
            return np.zeros((8, 8, 3), np.uint8), 0.0, False, False, {}

    if __name__ == "__main__":
        venv = SharedMemoryVecEnv([Frames, Frames], start_method="fork")
        venv.reset()
        venv.close()
"""


def test_forked_workers_leave_no_leaked_segment_warning(tmp_path):
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent(_FORKED))
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    # before: each forked worker started its own resource tracker, which warned at exit of a "leaked" segment it
    # then failed to unlink ("No such file or directory"), once per worker
    assert "resource_tracker" not in done.stderr, done.stderr


class _Recurrent:
    """A policy whose action is the step count it carries in its state, like an LSTM policy's ``predict``."""

    def __init__(self) -> None:
        self.starts: list[bool] = []

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        self.starts.append(bool(episode_start[0]))
        count = 0 if state is None or episode_start[0] else state
        return np.array([count / 10], np.float32), count + 1


class _EchoEnv(gym.Env):
    """Three-step episodes whose reward is the action: the return tells which actions the policy took."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._t += 1
        return np.zeros(1, np.float32), float(action[0]), False, self._t >= 3, {}


def test_evaluate_carries_a_recurrent_policys_state_through_each_episode():
    policy = _Recurrent()
    result = evaluate(policy, _EchoEnv(), seeds=[0, 1])
    # before: the state was dropped, so every step acted as the first one (returns 0.0)
    assert result.returns == pytest.approx([0.3, 0.3])  # actions 0.0, 0.1, 0.2 in each episode
    assert policy.starts == [True, False, False, True, False, False]


def test_evaluate_refuses_a_vec_env_by_name():
    venv = DummyVecEnv([_EchoEnv])
    # before: TypeError "DummyVecEnv.reset() got an unexpected keyword argument 'seed'" from inside the episode loop
    with pytest.raises(TypeError, match=r"env must be one gymnasium Env .* got a DummyVecEnv"):
        evaluate(lambda obs: np.zeros(1, np.float32), venv, n_episodes=1)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("interrupted mid-save")


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
def test_a_failed_save_encoder_leaves_the_previous_file_whole(tmp_path):
    from tiny_encoder import NAME as TINY

    from hindex_sb3.vec_encode import VecEncode

    class Pixels(gym.Env):
        observation_space = spaces.Box(0, 255, (3, 16, 16), np.uint8)
        action_space = spaces.Box(-1, 1, (1,), np.float32)

    venv = VecEncode(DummyVecEnv([Pixels]), TINY, weights=None, device="cpu")
    path = tmp_path / "encoder.pt"
    venv.save_encoder(path)
    saved = path.read_bytes()
    state_dict = venv.encoder.state_dict
    venv.encoder.state_dict = lambda: {**state_dict(), "zz": _Unpicklable()}
    with pytest.raises(RuntimeError, match="interrupted mid-save"):
        venv.save_encoder(path)
    assert path.read_bytes() == saved  # before: truncated to the part written before the failure
    assert list(tmp_path.iterdir()) == [path]
    venv.encoder.state_dict = state_dict
    venv.load_encoder(path)  # strict: the saved state is whole


class _Endless(_EchoEnv):
    """Never ends an episode, like an ``HInDex/*`` env class built without ``gym.make`` (its TimeLimit)."""

    default_horizon = 5

    def step(self, action):
        self._t += 1
        if self._t > 1000:  # the old evaluation would step for ever
            raise RuntimeError("evaluation never stopped the episode")
        return np.zeros(1, np.float32), 1.0, False, False, {}


def test_evaluate_stops_an_hindex_env_class_built_directly_at_its_registered_horizon():
    result = evaluate(lambda obs: np.zeros(1, np.float32), _Endless(), seeds=[0, 1])
    assert result.lengths == [5, 5] and result.returns == [5.0, 5.0]
    made = gym.wrappers.TimeLimit(_Endless(), 3)  # a TimeLimit, where there is one, decides
    assert evaluate(lambda obs: np.zeros(1, np.float32), made, seeds=[0]).lengths == [3]


def test_tiles_of_wide_frames_keep_the_atlas_within_its_side_and_the_frames_unchanged():
    import copy

    from hindex_sb3.envs.rendering import MAX_ATLAS_SIDE, OffscreenRenderer, TiledRenderer

    env = gym.make("HInDex/Door-v0", image_size=(16, 1024), obs_mode="state")
    try:
        base = env.unwrapped
        env.reset(seed=0)
        tiled = TiledRenderer(copy.deepcopy(base.model), 16, 1024, 20)
        single = OffscreenRenderer(copy.deepcopy(base.model), 16, 1024)
        try:
            # before: a square grid of 5 x 5 wide tiles, an atlas 5120 pixels wide (300 tiles: incomplete framebuffer)
            assert tiled.cols * 1024 <= MAX_ATLAS_SIDE and tiled.rows * 16 <= MAX_ATLAS_SIDE
            assert tiled.cols * tiled.rows > tiled.tiles
            out = [np.empty((3, 16, 1024), np.uint8) for _ in range(3)]
            tiled.render_into([(base.model, base.data, base.camera_id)] * 3, out)
            for frame in out:
                np.testing.assert_array_equal(frame, single.render_chw(base.data, base.camera_id))
        finally:
            tiled.close()
            single.close()
    finally:
        env.close()


def test_evaluate_still_takes_a_predict_without_state():
    class Plain:
        def predict(self, obs, deterministic=True):
            return np.array([0.5], np.float32), None

    assert evaluate(Plain(), _EchoEnv(), seeds=[0]).returns == [1.5]
