"""The ``hindex train`` pipeline end to end, on tiny settings."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from hindex_sb3.cli import main
from hindex_sb3.demos import rollout, save_npz
from hindex_sb3.train import TrainConfig, TrainingError, resolve_task, train


@pytest.fixture(scope="module")
def door_demo_file(tmp_path_factory):
    """State demonstrations with start states (so they can be replayed in a pixel env)."""
    demos = rollout(
        "HInDex/Door-v0", lambda obs: np.zeros(28), 2, env_kwargs={"obs_mode": "state", "max_episode_steps": 6}
    )
    return save_npz(demos, tmp_path_factory.mktemp("demos") / "door.npz")


def test_resolve_task():
    assert resolve_task("door") == "HInDex/Door-v0"
    assert resolve_task("HInDex/Pen-v0") == "HInDex/Pen-v0"
    assert resolve_task("Relocate") == "HInDex/Relocate-v0"
    with pytest.raises(TrainingError, match="unknown task"):
        resolve_task("laundry")


def test_state_run_writes_outputs_and_resumes(tmp_path, door_demo_file):
    cfg = TrainConfig(
        task="door",
        encoder="state",
        demos=str(door_demo_file),
        iterations=1,
        trajectories=2,
        horizon=6,
        eval_episodes=2,
        checkpoint_every=1,
        out_dir=str(tmp_path),
        progress_bar=False,
    )
    summary = train(cfg)
    out = tmp_path / "door_state_seed0"
    for name in ("summary.json", "curve.json", "config.json", "learning_curve.png", "eval.gif", "final_model.zip",
                 "final_model.safetensors"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "iter_0001.safetensors").is_file()
    assert any((out / "logs").glob("events.out.tfevents*")) and (out / "logs" / "progress.csv").is_file()
    assert summary["iterations"] == 1 and summary["env_steps"] == 12 and summary["demos"]["count"] == 2
    assert 0.0 <= summary["final_eval"]["success_rate"] <= 1.0
    curve = json.loads((out / "curve.json").read_text())
    assert curve[0]["phase"] == "bc" and curve[1]["iteration"] == 1
    assert set(curve[1]["time_s"]) == {"simulate", "render", "encode_and_act", "update", "rollout_total"}
    resumed = train(
        TrainConfig(**{**cfg.__dict__, "iterations": 2, "resume": str(out / "checkpoints" / "iter_0001.safetensors")})
    )
    assert resumed["iterations"] == 2
    with open(out / "logs" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["time/iterations"] for r in rows] == ["1", "2"]  # resume appends; nothing lost, nothing twice
    assert all(r["train/kl"] and r["eval/success_rate"] for r in rows)  # each iteration's train/* and eval/* row


def test_pixel_run_with_random_weights_is_labelled(tmp_path, door_demo_file):
    summary = train(
        TrainConfig(
            task="door",
            encoder="hindex",
            weights="random",
            demos=str(door_demo_file),
            iterations=1,
            trajectories=1,
            horizon=4,
            image_size=32,
            eval_episodes=1,
            out_dir=str(tmp_path),
            progress_bar=False,
        )
    )
    assert summary["weights"] == "random (NOT pretrained)"
    out = tmp_path / "door_hindex_RANDOM-WEIGHTS_seed0"
    assert (out / "eval_RANDOM-WEIGHTS.gif").is_file() and (out / "learning_curve.png").is_file()
    assert summary["ema_momentum"] == 0.0  # the paper's door momentum


def test_pixel_run_in_worker_processes_matches_one_process(tmp_path, door_demo_file):
    """SubprocVecEnv workers (fresh processes that must register the envs themselves) give the same run."""
    base = {
        "task": "door", "encoder": "hindex", "weights": "random", "demos": str(door_demo_file), "iterations": 1,
        "trajectories": 2, "n_envs": 2, "horizon": 4, "image_size": 32, "eval_episodes": 1, "progress_bar": False,
        "video": False,
    }  # fmt: skip
    one = train(TrainConfig(**base, vec_env="dummy", out_dir=str(tmp_path / "one")))
    workers = train(TrainConfig(**base, vec_env="subproc", out_dir=str(tmp_path / "workers")))
    assert one["vec_env"] == "dummy" and workers["vec_env"] == "subproc"
    assert workers["env_steps"] == one["env_steps"] == 8
    # not bit-identical: SB3's DummyVecEnv hands rewards on as float32, SubprocVecEnv as float64
    assert workers["final_eval"]["mean_return"] == pytest.approx(one["final_eval"]["mean_return"], rel=1e-5)
    with pytest.raises(TrainingError, match="vec_env"):
        train(TrainConfig(**base, vec_env="threads", out_dir=str(tmp_path / "bad")))


def test_missing_weights_stop_with_a_clear_message(tmp_path, monkeypatch, capsys, door_demo_file):
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "cache"))
    for _ in range(2):  # a start that failed is not a run: the same command may be repeated
        code = main(["train", "door", "--encoder", "r3m", "--demos", str(door_demo_file), "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2
        assert "https://" in err and "--weights random" in err and str(tmp_path / "cache") in err


def test_unknown_demo_source(tmp_path):
    with pytest.raises(TrainingError, match="no such file"):
        train(TrainConfig(task="door", encoder="state", demos="nowhere.npz", out_dir=str(tmp_path)))


def _strict(text):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a JSON output"))


def test_outputs_are_strict_json_without_bc(tmp_path, capsys):
    """--demos none: no BC, so no BC loss - written as null, not as a bare NaN no JSON parser accepts."""
    code = main(
        [
            "train",
            "door",
            "--encoder",
            "state",
            "--demos",
            "none",
            "--iterations",
            "1",
            "--trajectories",
            "1",
            "--horizon",
            "4",
            "--eval-episodes",
            "1",
            "--no-video",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = tmp_path / "door_state_seed0"
    summary = _strict((out / "summary.json").read_text())
    assert summary["bc_loss"] is None and summary["demos"]["count"] == 0
    for name in ("curve.json", "config.json"):
        _strict((out / name).read_text())
    printed = capsys.readouterr().out
    assert not math.isnan(_strict(printed)["final_eval"]["mean_return"])


def test_an_empty_demonstration_set_is_an_error(tmp_path, monkeypatch, door_demo_file):
    import hindex_sb3.runs.demos as demos_mod

    monkeypatch.setattr(demos_mod, "_load", lambda cfg, env_id: [])  # e.g. a file with n_demos = 0
    with pytest.raises(TrainingError, match="no demonstrations"):
        train(TrainConfig(task="door", encoder="state", demos=str(door_demo_file), out_dir=str(tmp_path)))
