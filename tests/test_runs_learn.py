"""DAPG.learn: iteration budgets, per-iteration hooks, one log row per iteration holding that update's train/*."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from hindex_sb3.dapg import DAPG, IterationCallback, IterationProgressBar
from hindex_sb3.demos import rollout


@pytest.fixture
def model(tmp_path):
    venv = make_vec_env("HInDex/Door-v0", n_envs=1, seed=0, env_kwargs={"obs_mode": "state", "max_episode_steps": 5})
    demos = rollout(
        "HInDex/Door-v0", lambda obs: np.zeros(28), 2, env_kwargs={"obs_mode": "state", "max_episode_steps": 5}
    )
    m = DAPG("MlpPolicy", venv, demos=demos, n_trajectories=2, seed=0)
    m.set_logger(configure(str(tmp_path / "logs"), ["csv"]))
    return m


def _rows(tmp_path):
    with open(tmp_path / "logs" / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_one_iteration_writes_its_train_metrics(model, tmp_path):
    model.learn(total_timesteps=1)  # SB3's loop dumped before train(): this update's train/* were never written
    model.logger.close()
    rows = _rows(tmp_path)
    assert len(rows) == 1
    assert rows[0]["train/kl"] != "" and rows[0]["train/dapg_iterations"] == "1"
    assert rows[0]["time/iterations"] == "1"


class _Recorder(IterationCallback):
    def __init__(self, stop_after=None):
        super().__init__()
        self.seen: list[int] = []
        self.logged: list[int] = []
        self.stop_after = stop_after

    def _on_iteration_end(self) -> bool:
        self.seen.append(self.model.dapg_iterations)
        self.logger.record("eval/marker", self.model.dapg_iterations)  # lands in this iteration's row
        return self.stop_after is None or self.model.dapg_iterations < self.stop_after

    def _on_iteration_logged(self) -> None:
        self.logged.append(self.model.dapg_iterations)


def test_n_iterations_and_hooks(model, tmp_path):
    hook = _Recorder()
    model.learn(n_iterations=3, callback=hook)
    assert hook.seen == hook.logged == [1, 2, 3] and model.dapg_iterations == 3
    assert model.num_timesteps == 3 * 2 * 5
    model.logger.close()
    rows = _rows(tmp_path)
    assert [r["eval/marker"] for r in rows] == ["1", "2", "3"]  # one row per iteration, hooks' values in it
    assert all(r["train/kl"] for r in rows)


def test_a_hook_can_stop_training(model):
    hook = _Recorder(stop_after=2)
    model.learn(n_iterations=5, callback=[hook])
    assert hook.seen == [1, 2] and model.dapg_iterations == 2


def test_progress_bar_counts_iterations(model, monkeypatch):
    totals = []
    original = IterationProgressBar._on_training_start

    def spy(self):
        original(self)
        totals.append(self.bar.total)

    monkeypatch.setattr(IterationProgressBar, "_on_training_start", spy)
    model.learn(n_iterations=2, progress_bar=True)
    assert totals == [2]


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_bad_budgets_are_refused(model, bad):
    with pytest.raises(ValueError, match="n_iterations"):
        model.learn(n_iterations=bad)
