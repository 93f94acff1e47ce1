"""The bench's only contact with the single-run code: ``hindex train`` / ``hindex adapt`` as library calls.

Everything a run does (settings, resume, checkpoints, outputs) belongs to :mod:`hindex_sb3.train` and
:mod:`hindex_sb3.adapt`; this module only maps a planned run onto them, so the bench never re-implements a run.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import gymnasium as gym


def canonical_task(task: str) -> str:
    """The env id of a task name (any spelling every ``hindex`` command accepts)."""
    from hindex_sb3.bench.plan import BenchError
    from hindex_sb3.train import TrainingError, resolve_task

    try:
        return resolve_task(task)
    except TrainingError as err:
        raise BenchError(str(err)) from err


def _config(env_id: str, settings: dict[str, Any], out_dir: str = "runs"):
    from hindex_sb3.bench.plan import BenchError
    from hindex_sb3.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise BenchError(f"unknown hindex train setting(s): {', '.join(unknown)}")
    return TrainConfig(task=env_id, out_dir=out_dir, **settings)


def resolved_settings(env_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run will use (defaults filled in), for planning and cost estimates."""
    cfg = _config(env_id, settings)
    horizon = cfg.horizon or gym.spec(env_id).max_episode_steps
    return {
        "iterations": cfg.iterations,
        "trajectories": cfg.trajectories,
        "horizon": horizon,
        "eval_episodes": cfg.eval_episodes,
        "eval_every": cfg.eval_every,
    }


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(Path(run_dir).glob("*/checkpoints/iter_*.zip"))
    return found[-1] if found else None


def train_run(env_id: str, settings: dict[str, Any], run_dir: Path, weights: str | None) -> dict[str, Any]:
    """One ``hindex train`` run into ``run_dir``, continuing from its last checkpoint if it has one."""
    from hindex_sb3.train import train

    extra = {"weights": weights} if weights else {}
    cfg = _config(env_id, {**settings, **extra, "progress_bar": False}, out_dir=str(run_dir))
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        cfg.resume = str(ckpt)
    return train(cfg)


def adapt_run(task: str, settings: dict[str, Any], job_dir: Path) -> str:
    """One Stage-2 run into ``job_dir`` (resumed from its checkpoint); returns the adapted encoder's path."""
    from hindex_sb3.adapt import AdaptConfig, adapt

    done = job_dir / "adapted_encoder.pth"
    if done.is_file() and (job_dir / "summary.json").is_file():
        return str(done)
    kwargs = {k: v for k, v in settings.items() if k != "trainable"}
    cfg = AdaptConfig(task=task, out_dir=str(job_dir), progress_bar=False, **kwargs)
    cfg.resume = (job_dir / "checkpoints" / "latest.pt").is_file()
    return adapt(cfg)["encoder"]


def run_outputs(run_dir: Path) -> Path | None:
    """The folder holding the run's ``curve.json`` / ``summary.json`` (None before the run wrote anything)."""
    found = sorted(p.parent for p in Path(run_dir).glob("*/curve.json"))
    return found[0] if found else None


def evaluate_backgrounds(
    run_dir: Path, env_id: str, settings: dict[str, Any], backgrounds: list[str] | tuple[str, ...], weights: str | None
) -> dict[str, dict[str, float]]:
    """Evaluate the run's final policy on each background; writes ``backgrounds.json`` beside its curve."""
    from hindex_sb3.bench.store import write_json_atomic
    from hindex_sb3.dapg import DAPG
    from hindex_sb3.evaluation import evaluate
    from hindex_sb3.train import make_env_kwargs

    outputs = run_outputs(run_dir)
    if outputs is None:
        raise FileNotFoundError(f"{run_dir}: the run has no outputs to evaluate")
    cfg = _config(env_id, {**settings, **({"weights": weights} if weights else {})})
    model = DAPG.load(outputs / "final_model.zip", device="cpu")
    results = {}
    for name in backgrounds:
        env = gym.make(env_id, background=name, **make_env_kwargs(cfg))
        try:
            ev = evaluate(model, env, cfg.eval_episodes, seed=cfg.seed)
        finally:
            env.close()
        results[name] = ev.as_dict()
    write_json_atomic(outputs / "backgrounds.json", results)
    return results
