"""Demonstration files that are damaged, hostile or short of what was asked (ninth-session audit)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from hindex_sb3.cli import main
from hindex_sb3.demos import Trajectory, load_dapg_pickle, load_demonstrations, load_npz, save_npz

STATE = {"obs_mode": "state"}


def _demos(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {"observations": rng.normal(size=(4, 39)), "actions": rng.normal(size=(4, 28)), "rewards": np.zeros(4)}
        for _ in range(n)
    ]


def _truncated_pickle(tmp_path):
    data = pickle.dumps(_demos(2), protocol=4)
    path = tmp_path / "trunc.pickle"
    path.write_bytes(data[: len(data) // 2])
    return path


class _Reduce:
    def __reduce__(self):
        return (print, ("pwned",))


def _evil_pickle(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(_Reduce()))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# 6. A bad DAPG pickle is a ValueError naming the file and why


def test_a_truncated_pickle_is_a_value_error_naming_the_file(tmp_path):
    path = _truncated_pickle(tmp_path)
    with pytest.raises(ValueError, match=r"trunc\.pickle is not a readable demonstration pickle \(truncated"):
        load_dapg_pickle(path)


def test_a_pickle_asking_for_code_is_a_value_error_naming_the_global(tmp_path):
    path = _evil_pickle(tmp_path)
    with pytest.raises(ValueError, match=r"evil\.pickle: refused to load builtins\.print") as info:
        load_dapg_pickle(path)
    assert isinstance(info.value, pickle.UnpicklingError)  # still what older callers caught


def test_hindex_train_with_a_truncated_pickle_is_one_line(tmp_path, capsys):
    path = _truncated_pickle(tmp_path)
    code = main(["train", "door", "--encoder", "state", "--demos", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "trunc.pickle is not a readable demonstration pickle" in err and "Traceback" not in err


def test_hindex_adapt_with_a_hostile_policy_pickle_is_one_line_and_runs_nothing(tmp_path, capsys):
    path = _evil_pickle(tmp_path)
    random = ["--weights", "random", "--vgg-weights", "random", "--no-progress", "--no-figures"]
    code = main(["adapt", "door", *random, "--policy", f"expert:{path}", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "refused to load builtins.print" in captured.err and "Traceback" not in captured.err
    assert "pwned" not in captured.out


# ---------------------------------------------------------------------------------------------------------------------
# 7. num_demos: more than available warns naming both numbers; 0 is refused


def test_more_demos_asked_than_a_file_holds_warns_naming_both_numbers(tmp_path):
    path = save_npz(_demos(3), tmp_path / "rt.npz")
    with pytest.warns(UserWarning, match=r"num_demos=10 but '.*rt\.npz' holds only 3 demonstration\(s\)"):
        demos = load_demonstrations(str(path), None, num_demos=10, env_kwargs=STATE)
    assert len(demos) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exactly as many, or fewer: no warning
        assert len(load_demonstrations(str(path), None, num_demos=3, env_kwargs=STATE)) == 3
        assert len(load_demonstrations(str(path), None, num_demos=2, env_kwargs=STATE)) == 2
    with pytest.warns(UserWarning, match=r"num_demos=5 but the trajectories given hold"):
        load_demonstrations(_demos(1), None, num_demos=5, env_kwargs=STATE)


def test_zero_demos_is_refused(tmp_path):
    path = save_npz(_demos(3), tmp_path / "rt.npz")
    with pytest.raises(ValueError, match=r"num_demos must be >= 1, got 0"):
        load_demonstrations(str(path), None, num_demos=0, env_kwargs=STATE)


# ---------------------------------------------------------------------------------------------------------------------
# 8. Ambiguous npz entries


def test_an_npz_naming_one_demonstration_twice_is_refused(tmp_path):
    demo = _demos(1)[0]
    path = tmp_path / "ambiguous.npz"
    np.savez(path, n_demos=1, obs_0=demo["observations"], acts_0=demo["actions"], acts_00=-demo["actions"])
    with pytest.raises(ValueError, match=r"ambiguous\.npz: entries 'acts_0' and 'acts_00' both name demonstration 0"):
        load_npz(path)


def test_save_npz_keeps_plain_infos_through_a_round_trip(tmp_path):
    demo = _demos(1)[0]
    infos = {"is_success": True, "seed": 10_003, "goal_steps": np.arange(3), "states": {"qpos": np.zeros(2)}}
    t = Trajectory(demo["observations"], demo["actions"], demo["rewards"], None, infos)
    with pytest.warns(UserWarning, match=r"infos \['states'\] .* not saved"):
        path = save_npz([t], tmp_path / "rt.npz")
    (back,) = load_npz(path)
    assert back.infos["is_success"] is True and back.infos["seed"] == 10_003
    np.testing.assert_array_equal(back.infos["goal_steps"], np.arange(3))
    assert "states" not in back.infos


def test_a_bad_minari_episode_is_named_in_the_error():
    """A dataset holds thousands of episodes: the error says which one is malformed, not just what was wrong."""
    pytest.importorskip("minari")
    from types import SimpleNamespace

    from hindex_sb3.demos import load_minari

    def episode(i: int, n_obs: int) -> SimpleNamespace:
        return SimpleNamespace(
            id=i, observations=np.zeros((n_obs, 3)), actions=np.zeros((4, 2)), rewards=np.zeros(4), infos={}
        )

    dataset = SimpleNamespace(iterate_episodes=lambda: iter([episode(0, 5), episode(1, 5), episode(7, 9)]))
    with pytest.raises(ValueError, match="Minari episode 7: "):
        load_minari(dataset)
    with pytest.raises(ValueError, match=r"Minari episode 0: .*missing"):
        load_minari(dataset, state_keys=["missing"])
    assert len(load_minari(SimpleNamespace(iterate_episodes=lambda: iter([episode(0, 5)])))) == 1
