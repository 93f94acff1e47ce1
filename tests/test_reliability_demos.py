"""Hostile and malformed demonstration files (issue 11; docs/reliability.md).

Every crafted file here is tiny on disk and claims (or would expand to) gigabytes: the loaders must refuse it from
its own headers, fast, before materialising anything.
"""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hindex_sb3.demos import Trajectory, load_dapg_pickle, load_npz, rollout, save_npz, to_trajectories
from hindex_sb3.demos.sources import MAX_COMPRESSION_RATIO, NPZ_RATIO_FLOOR

FAST_S = 1.0  # "well under a second" on a loaded 2-core machine; measured values are in docs/reliability.md


def _demo(n: int = 5) -> dict[str, np.ndarray]:
    return {"obs_0": np.zeros((n, 39)), "acts_0": np.zeros((n, 28), np.float32)}


def _refused_fast(fn, exc, match):
    start = time.perf_counter()
    with pytest.raises(exc, match=match) as info:
        fn()
    assert time.perf_counter() - start < FAST_S
    return info.value


def _npy_bytes(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# .npz


def test_round_trip_still_works(tmp_path):
    t = Trajectory({"pixels": np.ones((3, 3, 8, 8), np.uint8), "proprio": np.ones((3, 24))}, np.ones((3, 28)))
    (back,) = load_npz(save_npz([t], tmp_path / "d.npz"))
    np.testing.assert_array_equal(back.observations["pixels"], t.observations["pixels"])


@pytest.mark.parametrize("n_demos", [np.array([1, 2]), np.array([[1]]), np.array(1.0), np.array(True), np.array("1")])
def test_n_demos_of_another_shape_or_type_is_refused_naming_it(tmp_path, n_demos):
    path = tmp_path / "d.npz"
    np.savez(path, n_demos=n_demos, **_demo())
    err = _refused_fast(lambda: load_npz(path), ValueError, "n_demos must be one integer")
    assert str(path) in str(err)


def test_empty_demonstration_set_is_an_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, n_demos=np.asarray(0))
    _refused_fast(lambda: load_npz(path), ValueError, r"holds no demonstrations \(n_demos = 0\)")


def test_zero_length_trajectory_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, n_demos=np.asarray(1), **_demo(0))
    err = _refused_fast(lambda: load_npz(path), ValueError, r"demonstration 0: .*at least one action")
    assert str(path) in str(err)


def test_a_tiny_npz_claiming_ten_billion_demos_is_refused_at_once(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, n_demos=np.asarray(10**10), obs_0=np.zeros((1, 1)), acts_0=np.zeros((1, 1)))
    assert path.stat().st_size < 1000
    _refused_fast(lambda: load_npz(path), ValueError, r"n_demos = 10,000,000,000 but the file has actions for only 1")


def test_an_npy_header_claiming_more_than_the_member_holds_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, n_demos=np.asarray(1), acts_0=np.zeros((5, 28), np.float32))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("obs_0.npy", _npy_bytes((10**10, 39), "<f8") + b"\0" * 64)
    _refused_fast(lambda: load_npz(path), ValueError, r"entry 'obs_0'.*declares shape \(10000000000, 39\)")


def _bomb_npz(path, small: dict[str, np.ndarray], big: str):
    """An .npz whose member ``big`` is just past the inflation floor of zeros (docs measure a 2 GB version)."""
    size = NPZ_RATIO_FLOOR + (1 << 20)
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, value in small.items():
            buf = io.BytesIO()
            np.save(buf, value)
            zf.writestr(f"{name}.npy", buf.getvalue())
        with zf.open(f"{big}.npy", "w", force_zip64=True) as w:
            w.write(_npy_bytes((size,)))
            for _ in range(size >> 20):
                w.write(zeros)
    info = zipfile.ZipFile(path).getinfo(f"{big}.npy")
    assert info.file_size / info.compress_size > MAX_COMPRESSION_RATIO
    return path


def test_a_compressed_member_that_inflates_like_a_bomb_is_refused_before_inflating(tmp_path):
    path = _bomb_npz(tmp_path / "bomb.npz", {"n_demos": np.asarray(1), "acts_0": np.zeros((1, 1))}, "obs_0")
    _refused_fast(lambda: load_npz(path), ValueError, r"entry 'obs_0' would inflate .*decompression bomb")


def test_expert_and_frame_files_are_bounded_the_same_way(tmp_path):
    from hindex_sb3.adapt import FrameDataset, FrameDatasetError
    from hindex_sb3.experts import NpzMLPPolicy

    expert = _bomb_npz(tmp_path / "expert.npz", {"fc1_b": np.zeros(4)}, "fc0_w")
    _refused_fast(lambda: NpzMLPPolicy.load(expert), ValueError, r"entry 'fc0_w' would inflate")
    frames = _bomb_npz(tmp_path / "frames.npz", {"format": np.asarray("hindex_sb3.frames/1")}, "frames")
    _refused_fast(lambda: FrameDataset.load(frames), FrameDatasetError, r"entry 'frames' would inflate")


def test_max_bytes_bounds_the_total(tmp_path):
    path = save_npz([{"observations": np.zeros((100, 39)), "actions": np.zeros((100, 28))}], tmp_path / "d.npz")
    assert len(load_npz(path)) == 1
    _refused_fast(lambda: load_npz(path, max_bytes=10_000), ValueError, "max_bytes=10,000")
    with pytest.raises(TypeError, match="max_bytes must be an integer"):
        load_npz(path, max_bytes=True)


def test_a_pickle_given_to_the_npz_loader_says_which_loader_to_use(tmp_path):
    path = tmp_path / "door_demos.pickle"
    path.write_bytes(pickle.dumps([{"observations": np.zeros((2, 3)), "actions": np.zeros((2, 1))}]))
    _refused_fast(lambda: load_npz(path), ValueError, "is a pickle.*load_dapg_pickle")


def test_garbage_and_truncated_npz_are_refused_cleanly(tmp_path):
    good = save_npz([{"observations": np.random.rand(50, 39), "actions": np.random.rand(50, 28)}], tmp_path / "g.npz")
    bad = tmp_path / "t.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _refused_fast(lambda: load_npz(bad), ValueError, str(bad))
    junk = tmp_path / "j.npz"
    junk.write_bytes(b"hello world" * 10)
    _refused_fast(lambda: load_npz(junk), ValueError, "not an .npz")


def test_object_arrays_in_an_npz_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, n_demos=np.asarray(1), acts_0=np.zeros((2, 1)), obs_0=np.array([None, 1], dtype=object))
    _refused_fast(lambda: load_npz(path), ValueError, r"entry 'obs_0'.*Python objects")


# ---------------------------------------------------------------------------------------------------------------------
# DAPG pickles


def test_a_tiny_pickle_of_nested_shared_lists_is_refused_before_expanding(tmp_path):
    x: list = [0.0] * 10
    for _ in range(9):  # 10**10 logical elements, a few hundred bytes on disk
        x = [x] * 10
    path = tmp_path / "bomb.pickle"
    path.write_bytes(pickle.dumps([{"observations": x, "actions": x}], protocol=2))
    assert path.stat().st_size < 1000
    err = _refused_fast(lambda: load_dapg_pickle(path), ValueError, "would expand to 10,000,000,000 array elements")
    assert str(path) in str(err)


def test_shared_references_across_demonstrations_count_against_one_budget(tmp_path):
    big = np.zeros((1000, 1000))  # 1e6 elements, ~8 MB on disk once
    demo = {"observations": big, "actions": big}
    path = tmp_path / "many.pickle"
    path.write_bytes(pickle.dumps([demo] * 1000, protocol=4))  # 2e9 elements once expanded
    _refused_fast(lambda: load_dapg_pickle(path), ValueError, "would expand")


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize(
    "payload",
    [
        _Reduce(np.zeros(1).__reduce__()[0], (np.ndarray, (10**10,), b"b")),
        _Reduce(bytearray, (10**10,)),
    ],
    ids=["numpy_reconstruct", "bytearray"],
)
def test_allowed_constructors_cannot_allocate_beyond_the_file(tmp_path, payload):
    path = tmp_path / "alloc.pickle"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    _refused_fast(lambda: load_dapg_pickle(path), pickle.UnpicklingError, "larger than this file can hold")


def test_code_is_still_refused(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(_Reduce(print, ("pwned",))))
    _refused_fast(lambda: load_dapg_pickle(path), pickle.UnpicklingError, r"refused to load builtins\.print")


def test_an_npz_given_to_the_pickle_loader_says_what_it_is(tmp_path):
    path = save_npz([{"observations": np.zeros((2, 3)), "actions": np.zeros((2, 1))}], tmp_path / "d.npz")
    err = _refused_fast(lambda: load_dapg_pickle(path), ValueError, r"zip archive \(an \.npz\?\).*load_npz")
    assert str(path) in str(err)


def test_a_legitimate_dapg_pickle_with_shared_lists_still_loads(tmp_path):
    row = [0.5] * 39
    path = tmp_path / "ok.pickle"
    path.write_bytes(pickle.dumps([{"observations": [row] * 20, "actions": [[0.0] * 28] * 20}], protocol=2))
    (t,) = load_dapg_pickle(path)
    assert t.observations.shape == (20, 39)


def test_a_self_referencing_list_is_refused(tmp_path):
    x: list = [1.0]
    x.append(x)
    path = tmp_path / "cycle.pickle"
    path.write_bytes(pickle.dumps([{"observations": x, "actions": [[0.0]]}]))
    _refused_fast(lambda: load_dapg_pickle(path), ValueError, "contains itself")
    d: dict = {"a": 1.0}
    d["b"] = d
    path.write_bytes(pickle.dumps([{"observations": [[0.0]], "actions": [[0.0]], "init_state_dict": d}]))
    _refused_fast(lambda: load_dapg_pickle(path), ValueError, "init_state contains itself|a container contains itself")


def test_deeply_nested_lists_are_refused(tmp_path):
    x: list = [0.0]
    for _ in range(40):
        x = [x]
    path = tmp_path / "deep.pickle"
    path.write_bytes(pickle.dumps([{"observations": x, "actions": [[0.0]]}]))
    _refused_fast(lambda: load_dapg_pickle(path), ValueError, "nested deeper than 32 levels")


# ---------------------------------------------------------------------------------------------------------------------
# In-memory containers


@pytest.mark.parametrize(
    ("demo", "match"),
    [
        ({"observations": np.zeros((0, 3)), "actions": np.zeros((0, 1))}, "at least one action"),
        ({"observations": np.zeros((1, 3)), "actions": np.zeros((0, 1))}, "at least one action"),
        ({"observations": [[1, 2], [3]], "actions": np.zeros((2, 1))}, "observations: not a numeric array"),
        ({"observations": np.array(["a", "b"]), "actions": np.zeros((2, 1))}, "observations: expected numbers"),
        ({"observations": 3.0, "actions": np.zeros((1, 1))}, "observations: expected one entry per step"),
        ({"observations": np.zeros((2, 3)), "actions": np.zeros((2, 1, 1))}, r"actions must be shaped \(T"),
        ({"observations": np.zeros((2, 3)), "actions": "ab"}, "actions: not a numeric array"),
        ({"observations": {}, "actions": np.zeros((2, 1))}, "observations is an empty dict"),
    ],
)
def test_malformed_in_memory_demonstrations_name_the_field(demo, match):
    with pytest.raises(ValueError, match=r"demonstration 0: .*" + match):
        to_trajectories([demo])


def test_init_state_must_be_a_dict():
    with pytest.raises(TypeError, match="init_state_dict must be a dict"):
        to_trajectories({"observations": np.zeros((2, 3)), "actions": np.zeros((2, 1)), "init_state_dict": [1]})


def test_a_string_is_not_a_demonstration_collection():
    with pytest.raises(TypeError, match="cannot read demonstrations from str"):
        to_trajectories("door_demos.pickle")


# ---------------------------------------------------------------------------------------------------------------------
# Expert rollouts


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_episodes": 0}, ValueError, "n_episodes must be >= 1"),
        ({"n_episodes": True}, TypeError, "n_episodes must be an integer"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"max_steps": 2.5}, TypeError, "max_steps must be an integer"),
        ({"max_attempts": 1, "n_episodes": 3}, ValueError, "max_attempts must be >= 3"),
        ({"only_successful": "yes"}, TypeError, "only_successful must be True or False"),
        ({"env_kwargs": [("obs_mode", "state")]}, TypeError, "env_kwargs must be a dict"),
    ],
)
def test_rollout_checks_its_arguments_before_building_the_env(kwargs, exc, match):
    kwargs = {"n_episodes": 1, **kwargs}
    with pytest.raises(exc, match=match):
        rollout("HInDex/Door-v0", lambda obs: np.zeros(28), **kwargs)


def test_save_npz_is_atomic_and_refuses_an_empty_set(tmp_path, monkeypatch):
    path = save_npz([{"observations": np.zeros((2, 3)), "actions": np.zeros((2, 1))}], tmp_path / "d.npz")
    before = path.read_bytes()

    def crash(file, **arrays):  # a write interrupted half way (Ctrl-C, full disk)
        if isinstance(file, (str, os.PathLike)):
            Path(file).write_bytes(b"partial")
        else:
            file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        save_npz([{"observations": np.ones((4, 3)), "actions": np.ones((4, 1))}], path)
    assert path.read_bytes() == before  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # and no temporary file is left behind
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no demonstrations"):
        save_npz(None, tmp_path / "e.npz")


# ---------------------------------------------------------------------------------------------- generating them
def _state_door(steps: int = 3):
    import gymnasium as gym

    return gym.make("HInDex/Door-v0", obs_mode="state", max_episode_steps=steps)


def _zeros(obs):
    return np.zeros(28, np.float32)


def test_rollout_takes_a_numpy_integer_seed_as_the_same_int():
    # the check accepted numpy integers, then the value it had checked was thrown away and gymnasium's reset
    # refused the numpy one (an env that is not ours does not convert it)
    import gymnasium as gym

    pendulum = gym.make("Pendulum-v1", max_episode_steps=3)
    a = rollout(pendulum, lambda obs: np.zeros(1, np.float32), 1, seed=np.int64(2))
    b = rollout(pendulum, lambda obs: np.zeros(1, np.float32), 1, seed=2)
    assert np.array_equal(a[0].observations, b[0].observations) and type(a[0].infos["seed"]) is int


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"record_keys": "pixels"}, TypeError, "record_keys must be a list"),  # was iterated letter by letter
        ({"record_keys": ["pixels", "bogus"]}, ValueError, r"record_keys \['bogus'\] are not observation keys"),
        ({"policy_obs_key": "nope"}, ValueError, "policy_obs_key 'nope' is not an observation key"),
        ({"policy_obs_key": 0}, TypeError, "policy_obs_key must be a string"),
    ],
)
def test_rollout_refuses_observation_keys_the_env_lacks_before_any_episode(kwargs, exc, match):
    import gymnasium as gym

    env = gym.make("HInDex/Door-v0", obs_mode="all", image_size=16, max_episode_steps=2)
    with pytest.raises(exc, match=match):
        rollout(env, _zeros, 1, **kwargs)


def test_a_key_given_to_a_state_env_is_refused_naming_it():
    with pytest.raises(ValueError, match="policy_obs_key 'state' is not an observation key"):
        rollout(_state_door(), _zeros, 1, policy_obs_key="state")  # it used to index the state vector with a str


def test_replay_and_load_demonstrations_refuse_a_string_for_a_list_of_keys():
    import gymnasium as gym

    from hindex_sb3.demos import load_demonstrations, replay

    demos = rollout(_state_door(), _zeros, 1)
    env = gym.make("HInDex/Door-v0", obs_mode="all", image_size=16, max_episode_steps=3)
    with pytest.raises(TypeError, match="keys must be a list of observation keys"):
        replay(demos, env, keys="pixels")
    with pytest.raises(ValueError, match=r"keys \['bogus'\] are not observation keys"):
        replay(demos, env, keys=["bogus"])
    with pytest.raises(TypeError, match="pixel_keys must be a list"):
        load_demonstrations(demos, "HInDex/Door-v0", pixel_keys="pixels")
    # numpy integers are integers; a bool or a float is not a count
    state = {"obs_mode": "state"}
    assert len(load_demonstrations(demos, None, num_demos=np.int64(1), seed=np.int64(1), env_kwargs=state)) == 1
    with pytest.raises(TypeError, match="num_demos must be an integer"):
        load_demonstrations(demos, None, num_demos=True, env_kwargs=state)
    with pytest.raises(TypeError, match="env_kwargs must be a dict"):
        load_demonstrations(demos, "HInDex/Door-v0", env_kwargs=[("obs_mode", "state")])


@pytest.mark.parametrize(
    ("noise_std", "exc", "match"),
    [
        (float("nan"), ValueError, "noise_std must be finite"),  # nan > 0 is false: it meant no noise
        (float("inf"), ValueError, "noise_std must be finite"),  # every action at a bound
        (True, TypeError, "noise_std must be a real number"),
        ("0.1", TypeError, "noise_std must be a real number"),
    ],
)
def test_demonstrator_noise_must_be_a_finite_number(noise_std, exc, match):
    from hindex_sb3.demonstrators import make_demonstrator, rollout_demonstrations

    with pytest.raises(exc, match=match):
        make_demonstrator(_state_door(), noise_std=noise_std)
    with pytest.raises(exc, match=match):
        rollout_demonstrations("HInDex/Door-v0", 1, noise_std=noise_std)
    with pytest.raises(TypeError, match="n_episodes must be an integer"):
        rollout_demonstrations("HInDex/Door-v0", "2")


# ---------------------------------------------------------------------------------------------- experts, frame files
def _mlp(**override):
    rng = np.random.default_rng(0)
    params = {
        "fc0_w": rng.normal(size=(4, 3)),
        "fc0_b": np.zeros(4),
        "fc1_w": rng.normal(size=(4, 4)),
        "fc1_b": np.zeros(4),
        "fc2_w": rng.normal(size=(2, 4)),
        "fc2_b": np.zeros(2),
        "log_std": np.zeros(2),
        "nonlinearity": np.asarray("tanh"),
    }  # fmt: skip  (the DAPG files carry this string: not read)
    return {**params, **override}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"fc1_w": np.full((4, 4), np.nan)}, "fc1_w holds non-finite values"),  # it acted NaN
        ({"log_std": np.full(2, np.inf)}, "log_std holds non-finite values"),
        ({"in_shift": np.array([0.0, np.nan, 0.0])}, "in_shift holds non-finite values"),
        ({"fc0_b": np.ones(4, bool)}, "fc0_b holds bool values"),  # cast silently to 0/1
        ({"fc2_b": np.ones(2, complex)}, "fc2_b holds complex128 values"),  # the imaginary part was dropped
        ({"log_std": np.zeros(7)}, "log_std has 7 values for 2 actions"),  # a bare reshape error before
    ],
)
def test_an_expert_with_unusable_weights_is_refused_naming_the_array(override, match):
    from hindex_sb3.experts import NpzMLPPolicy

    with pytest.raises(ValueError, match=match):
        NpzMLPPolicy(_mlp(**override))


def test_an_expert_call_checks_its_flag_and_observation():
    from hindex_sb3.experts import NpzMLPPolicy

    expert = NpzMLPPolicy(_mlp())
    obs = np.ones(3, np.float32)
    sampled = expert(obs, False, np.random.default_rng(0))
    assert not np.array_equal(sampled, expert.mean(obs))
    with pytest.raises(TypeError, match="deterministic must be"):
        expert(obs, "no")  # it returned the mean action: "no" is truthy
    with pytest.raises(ValueError, match="takes observations of size 3"):
        expert(np.float32(1.0))  # an IndexError before


def test_a_frame_file_with_a_non_object_meta_or_fractional_starts_is_refused(tmp_path):
    from hindex_sb3.adapt import FrameDataset, FrameDatasetError

    frames = np.zeros((6, 3, 8, 8), np.uint8)
    with pytest.raises(FrameDatasetError, match="episode_starts must be integers"):
        FrameDataset(frames, np.array([0, 2.9]))  # it became [0, 2]
    with pytest.raises(FrameDatasetError, match="episode_starts must be integers"):
        FrameDataset(frames, np.array(["0", "3"]))  # it was parsed
    with pytest.raises(FrameDatasetError, match="meta must be a JSON object"):
        FrameDataset(frames, np.array([0, 3]), [1, 2])
    path = tmp_path / "f.npz"
    np.savez(path, format=np.asarray("hindex_sb3.frames/1"), frames=frames, episode_starts=np.array([0, 3]),
             meta=np.asarray("[1, 2]"))  # fmt: skip
    with pytest.raises(FrameDatasetError, match="meta must be a JSON object"):
        FrameDataset.load(path)  # `hindex adapt --dataset` printed an AttributeError traceback
    np.savez(path, format=np.asarray("hindex_sb3.frames/1"), frames=frames, episode_starts=np.array([0, 3]),
             meta=np.asarray('{"x": NaN}'))  # fmt: skip
    with pytest.raises(FrameDatasetError, match="NaN is not valid JSON"):
        FrameDataset.load(path)
    with pytest.raises(ValueError, match="JSON cannot hold"):
        FrameDataset(frames, np.array([0, 3]), {"x": float("nan")}).save(tmp_path / "g.npz")
    good = FrameDataset(frames, np.array([0, 3], np.uint8), {"seed": 4})
    assert FrameDataset.load(good.save(tmp_path / "h.npz")).meta == {"seed": 4}


def test_frame_pairs_and_the_size_check_take_integers_only():
    from hindex_sb3.adapt import FrameDataset, FrameDatasetError

    ds = FrameDataset(np.zeros((8, 3, 8, 8), np.uint8), np.array([0, 4]))
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="window must be an integer"):
        ds.sample_pairs(4, rng, window=2.9)  # drew pairs among 2.9 frames
    with pytest.raises(FrameDatasetError, match="window must be >= 2"):
        ds.sample_pairs(4, rng, window=1)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        ds.sample_pairs(4.0, rng)
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        ds.sample_pairs(4, 0)
    with pytest.raises(TypeError, match="image_size must be an integer"):
        ds.check_image_size(float("nan"))  # NaN compared false: any frames passed
    src, tgt = ds.sample_pairs(np.int64(16), rng, window=np.int64(3))
    assert len(src) == 16 and np.all(src // 4 == tgt // 4) and np.all(src % 4 < 3)


def test_a_path_that_is_not_one_is_refused_naming_it(tmp_path):
    demos = rollout(_state_door(), _zeros, 1)
    for call in (lambda: save_npz(demos, 5), lambda: load_npz(None), lambda: load_dapg_pickle(5)):
        with pytest.raises(TypeError, match=r"path must be a file path \(str or os.PathLike\), got"):
            call()  # "expected str, bytes or os.PathLike object, not int" before, naming no argument
