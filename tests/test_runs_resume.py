"""Resume without loss: a run killed after a checkpoint and resumed ends exactly as the same run uninterrupted."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hindex_sb3.cli import main
from hindex_sb3.demos import rollout, save_npz
from hindex_sb3.runs import checkpoint as ckpt
from hindex_sb3.runs.config import TrainConfig, TrainingError
from hindex_sb3.runs.runner import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    demos = rollout(
        "HInDex/Door-v0", lambda obs: np.zeros(28), 2, env_kwargs={"obs_mode": "state", "max_episode_steps": 30}
    )
    return save_npz(demos, tmp_path_factory.mktemp("demos") / "door.npz")


def _command(demo_file, out, *extra):
    return [
        sys.executable, "-m", "hindex_sb3.cli", "train", "door", "--encoder", "state", "--demos", str(demo_file),
        "--iterations", "6", "--trajectories", "4", "--horizon", "30", "--checkpoint-every", "2",
        "--eval-episodes", "2", "--eval-every", "1", "--no-video", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _progress(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def _without_times(row: dict) -> dict:
    keep = ("time/iterations", "time/total_timesteps")
    return {k: v for k, v in row.items() if k in keep or not (k.startswith("time/") or k in ("time_s", "wall_s"))}


def _tensorboard_steps(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "logs"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_file):
    out = tmp_path_factory.mktemp("full")
    full = subprocess.run(_command(demo_file, out), env=_env(), capture_output=True, timeout=600)
    assert full.returncode == 0, full.stderr.decode()[-2000:]
    return out / "door_state_seed0"


def _rows_written(run: Path) -> int:
    try:
        return len(_progress(run))
    except (OSError, csv.Error):
        return 0


@pytest.mark.parametrize("when", ["at_checkpoint", "rows_after_checkpoint"])
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, demo_file, uninterrupted, when):
    """Killed as soon as iteration 2's checkpoint exists (resume: the latest checkpoint), or once iteration 3 was
    logged (resume from iteration 2's checkpoint: the rows and events after it must be replaced, not repeated)."""
    proc = subprocess.Popen(_command(demo_file, tmp_path / "killed"), env=_env(), stderr=subprocess.PIPE)
    run = tmp_path / "killed" / "door_state_seed0"
    checkpoint = run / "checkpoints" / "iter_0002.safetensors"
    deadline = time.monotonic() + 600
    while not (checkpoint.exists() and (when == "at_checkpoint" or _rows_written(run) >= 3)):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()  # killed mid-run, not after it

    resume = ["--resume"] if when == "at_checkpoint" else ["--resume", str(checkpoint)]
    resumed = subprocess.run(_command(demo_file, tmp_path / "killed", *resume), env=_env(), capture_output=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["iterations"] == 6

    ref = uninterrupted
    a, b = load_file(str(ref / "final_model.safetensors")), load_file(str(run / "final_model.safetensors"))
    policy_keys = [k for k in a if k.startswith(("policy/", "optimizer/"))]
    assert policy_keys and all(torch.equal(a[k], b[k]) for k in policy_keys)

    curve_a = json.loads((ref / "curve.json").read_text())
    curve_b = json.loads((run / "curve.json").read_text())
    assert [_without_times(c) for c in curve_a] == [_without_times(c) for c in curve_b]
    assert [c["iteration"] for c in curve_b] == [0, 1, 2, 3, 4, 5, 6]

    rows_a, rows_b = _progress(ref), _progress(run)
    assert [r["time/iterations"] for r in rows_b] == ["1", "2", "3", "4", "5", "6"]  # none missing, none twice
    assert [_without_times(r) for r in rows_a] == [_without_times(r) for r in rows_b]

    kl_a, kl_b = _tensorboard_steps(ref, "train/kl"), _tensorboard_steps(run, "train/kl")
    assert [s for s, _ in kl_b] == sorted({s for s, _ in kl_b})  # the killed run's extra events are purged
    assert kl_a == kl_b

    config = json.loads((run / "config.json").read_text())
    assert config["resume"] is None and config["iterations"] == 6


def test_config_json_repeats_the_run(tmp_path, demo_file):
    first = train(
        TrainConfig(
            task="door",
            encoder="state",
            demos=str(demo_file),
            iterations=2,
            trajectories=2,
            horizon=10,
            eval_episodes=1,
            video=False,
            progress_bar=False,
            out_dir=str(tmp_path / "a"),
        )
    )
    run = Path(first["out_dir"])
    code = main(["train", "--config", str(run / "config.json"), "--out", str(tmp_path / "b"), "--no-progress"])
    assert code == 0
    a = load_file(str(run / "final_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "door_state_seed0" / "final_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("policy/"))


def test_resume_keeps_settings_and_refuses_changes(tmp_path, demo_file, capsys):
    base = ["train", "door", "--encoder", "state", "--demos", str(demo_file), "--trajectories", "2", "--horizon",
            "10", "--eval-episodes", "1", "--no-video", "--no-progress", "--checkpoint-every", "1", "--out",
            str(tmp_path)]  # fmt: skip
    assert main([*base, "--iterations", "1", "--gamma", "0.99"]) == 0
    capsys.readouterr()
    # a flag that would change the results is refused, naming it and both values
    assert main(["train", "door", "--encoder", "state", "--out", str(tmp_path), "--resume", "--gamma", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "gamma (checkpoint: 0.99, now: 0.9)" in err and "Traceback" not in err
    # only the repeated identity flags and an allowed change: the checkpoint's settings stay in force
    assert main(["train", "door", "--encoder", "state", "--out", str(tmp_path), "--resume", "--iterations", "2",
                 "--no-progress"]) == 0  # fmt: skip
    config = json.loads((tmp_path / "door_state_seed0" / "config.json").read_text())
    assert config["gamma"] == 0.99 and config["iterations"] == 2 and config["trajectories"] == 2
    # the run folder alone names the run
    assert main(["train", "--resume", str(tmp_path / "door_state_seed0"), "--iterations", "3", "--no-progress"]) == 0
    assert json.loads((tmp_path / "door_state_seed0" / "summary.json").read_text())["iterations"] == 3
    assert main(["train", "door", "--encoder", "state", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_an_existing_run_is_never_overwritten_silently(tmp_path, demo_file):
    cfg = TrainConfig(
        task="door",
        encoder="state",
        demos=str(demo_file),
        iterations=2,
        trajectories=2,
        horizon=10,
        eval_episodes=1,
        checkpoint_every=1,
        video=False,
        progress_bar=False,
        out_dir=str(tmp_path),
    )
    train(cfg)
    run = tmp_path / "door_state_seed0"
    with pytest.raises(TrainingError, match=r"--resume .* --overwrite"):
        train(cfg)
    assert (run / "checkpoints" / "iter_0002.safetensors").is_file()  # untouched
    train(cfg.replace(overwrite=True, iterations=1))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_0001.safetensors"]  # no stale ones


def _tiny_cfg(demo_file, out, **kwargs) -> TrainConfig:
    base = {"task": "door", "encoder": "state", "demos": str(demo_file), "iterations": 1, "trajectories": 2,
            "horizon": 10, "eval_episodes": 1, "checkpoint_every": 1, "video": False,
            "progress_bar": False}  # fmt: skip
    return TrainConfig(**{**base, "out_dir": str(out), **kwargs})


def test_an_overwrite_that_fails_to_start_leaves_the_old_run_whole(tmp_path, demo_file):
    cfg = _tiny_cfg(demo_file, tmp_path)
    train(cfg)
    run = tmp_path / "door_state_seed0"
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(TrainingError, match=r"bad\.npz"):
        train(cfg.replace(overwrite=True, demos=str(bad)))
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing deleted before the demos


def test_resume_takes_any_spelling_of_the_task_and_a_run_without_checkpoint_says_so(tmp_path, demo_file, capsys):
    cfg = _tiny_cfg(demo_file, tmp_path)
    train(cfg)
    train(cfg.replace(task="HInDex/Door-v0", resume="latest", iterations=2))  # was refused: 'door' != 'HInDex/...'
    assert json.loads((tmp_path / "door_state_seed0" / "summary.json").read_text())["iterations"] == 2
    shutil.rmtree(tmp_path / "door_state_seed0" / "checkpoints")
    (tmp_path / "door_state_seed0" / f"final_model{ckpt.SUFFIX}").unlink()
    with pytest.raises(TrainingError, match="it has no checkpoint to resume from: pass --overwrite"):
        train(cfg)


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_an_out_that_cannot_be_a_folder_is_one_message_naming_it(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("precious")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "x"
    assert main(["train", "door", "--encoder", "state", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hindex train: --out") and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "precious"


def test_torch_threads_is_a_recorded_setting_the_run_applies(tmp_path, demo_file, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    train(_tiny_cfg(demo_file, tmp_path, torch_threads=1))
    assert calls == [1]
    assert json.loads((tmp_path / "door_state_seed0" / "config.json").read_text())["torch_threads"] == 1


@pytest.mark.slow
def test_pixel_run_with_ema_bn_resumes_exactly(tmp_path):
    """Hammer (EMA-BN momentum 0.1): the moving BatchNorm statistics travel in the checkpoint, so a run stopped after
    iteration 1 and resumed equals the run made in one go (~1 min on a CPU: a ResNet-50 at 32 px)."""
    base = {
        "task": "hammer", "encoder": "hindex", "weights": "random", "demos": "none", "trajectories": 2, "horizon": 4,
        "image_size": 32, "eval_episodes": 1, "video": False, "progress_bar": False, "checkpoint_every": 1,
    }  # fmt: skip
    train(TrainConfig(**base, iterations=2, out_dir=str(tmp_path / "a")))
    train(TrainConfig(**base, iterations=1, out_dir=str(tmp_path / "b")))
    summary = train(TrainConfig(**base, iterations=2, out_dir=str(tmp_path / "b"), resume="latest"))
    assert summary["ema_momentum"] == 0.1
    run = "hammer_hindex_RANDOM-WEIGHTS_seed0"
    a = load_file(str(tmp_path / "a" / run / "final_model.safetensors"))
    b = load_file(str(tmp_path / "b" / run / "final_model.safetensors"))
    first = load_file(str(tmp_path / "a" / run / "checkpoints" / "iter_0001.safetensors"))
    stats = [k for k in a if k.endswith("running_mean")]
    assert stats and all(not torch.equal(first[k], a[k]) for k in stats)  # EMA-BN moved in iteration 2
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("policy/"))


@pytest.mark.slow
def test_resume_in_worker_processes_is_exact(tmp_path, demo_file):
    """Two envs in SubprocVecEnv workers: their RNG states travel through the pipes and back (~35 s)."""
    base = {
        "task": "door", "encoder": "state", "demos": str(demo_file), "trajectories": 4, "horizon": 10, "n_envs": 2,
        "vec_env": "subproc", "eval_episodes": 1, "video": False, "progress_bar": False, "checkpoint_every": 1,
    }  # fmt: skip
    train(TrainConfig(**base, iterations=3, out_dir=str(tmp_path / "a")))
    train(TrainConfig(**base, iterations=1, out_dir=str(tmp_path / "b")))
    train(TrainConfig(**base, iterations=3, out_dir=str(tmp_path / "b"), resume="latest"))
    a = load_file(str(tmp_path / "a" / "door_state_seed0" / "final_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "door_state_seed0" / "final_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("policy/"))
