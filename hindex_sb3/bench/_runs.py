"""The bench's only contact with the single-run code: ``hindex train`` / ``hindex adapt`` as library calls.

Everything a run does (settings, the paper's per-task values, resume, checkpoints, outputs) belongs to
:mod:`hindex_sb3.runs` and :mod:`hindex_sb3.adapt`; this module only maps a planned run onto them, so the bench never
re-implements a run.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import gymnasium as gym


def canonical_task(task: str) -> str:
    """The env id of a task name (any spelling every ``hindex`` command accepts)."""
    from hindex_sb3.bench.plan import BenchError
    from hindex_sb3.runs.config import TrainingError, resolve_task

    try:
        return resolve_task(task)
    except TrainingError as err:
        raise BenchError(str(err)) from err


def _config(env_id: str, settings: dict[str, Any], **extra: Any):
    """The run's :class:`TrainConfig` with the paper's per-task values filled in."""
    from hindex_sb3.bench.plan import BenchError
    from hindex_sb3.runs.config import TrainConfig, TrainingError
    from hindex_sb3.runs.paper import resolve_settings

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise BenchError(f"unknown hindex train setting(s): {', '.join(unknown)}")
    try:
        return resolve_settings(TrainConfig(task=env_id, **{**settings, **extra}), env_id)
    except TrainingError as err:
        raise BenchError(str(err)) from err


def resolved_settings(env_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run will use (the paper's per-task values filled in), for planning and cost estimates."""
    cfg = _config(env_id, {**settings, "weights": "random"})  # planning reads no weight file
    keys = ("iterations", "trajectories", "horizon", "eval_episodes", "eval_every")
    return {k: getattr(cfg, k) for k in keys}


def run_demos(env_id: str, settings: dict[str, Any]) -> str:
    """The demonstration source a run with ``settings`` would load (``hindex train``'s default where unset)."""
    return _config(env_id, {**settings, "weights": "random"}).demos


def paper_momentum(env_id: str) -> float:
    """The paper's EMA-BN momentum for the task (what ``hindex train`` gives the ``hindex`` encoder by default)."""
    return float(_config(env_id, {"encoder": "hindex", "weights": "random"}).ema_momentum)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most advanced checkpoint of the run in ``run_dir`` (None before its first one)."""
    from hindex_sb3.runs.checkpoint import find_latest

    folders = sorted(p.parent for p in Path(run_dir).glob("*/checkpoints"))  # made when the run starts
    return find_latest(folders[0]) if folders else None


def run_outputs(run_dir: Path) -> Path | None:
    """The run folder inside ``run_dir`` (``<task>_<encoder>_seed<N>``); None before the run wrote its curve."""
    found = sorted(p.parent for p in Path(run_dir).glob("*/curve.json"))
    return found[0] if found else None


def train_run(env_id: str, settings: dict[str, Any], run_dir: Path, weights: str | None) -> dict[str, Any]:
    """One ``hindex train`` run inside ``run_dir``: resumed from its last checkpoint, restarted if it had none."""
    from hindex_sb3.runs import train

    extra: dict[str, Any] = {"out_dir": str(run_dir), "progress_bar": False}
    if weights:
        extra["weights"] = weights
    if latest_checkpoint(run_dir) is not None:
        extra["resume"] = "latest"
    elif any(Path(run_dir).glob("*/config.json")):
        extra["overwrite"] = True  # it died before its first checkpoint: nothing to keep
    return train(_config(env_id, settings, **extra))


def adapt_run(task: str, settings: dict[str, Any], job_dir: Path) -> str:
    """One Stage-2 run into ``job_dir`` (resumed from its checkpoint); returns the adapted encoder's path."""
    from hindex_sb3.adapt import AdaptConfig, adapt

    done = job_dir / "adapted_encoder.pth"
    if done.is_file() and (job_dir / "summary.json").is_file():
        return str(done)
    resume = (job_dir / "checkpoints" / "latest.pt").is_file()
    cfg = AdaptConfig(task=task, out_dir=str(job_dir), progress_bar=False, resume=resume, **settings)
    return adapt(cfg)["encoder"]


def evaluate_backgrounds(
    run_dir: Path, env_id: str, settings: dict[str, Any], backgrounds: list[str] | tuple[str, ...], weights: str | None
) -> dict[str, dict[str, float]]:
    """Evaluate the run's final policy on each background; writes ``backgrounds.json`` beside its curve.

    The final model is read from its safetensors checkpoint (no code runs); the evaluation seeds are the run's own.
    """
    from hindex_sb3._io import write_json
    from hindex_sb3.evaluation import evaluate
    from hindex_sb3.runs.build import make_env_kwargs
    from hindex_sb3.runs.checkpoint import find_latest, load_checkpoint
    from hindex_sb3.runs.runner import apply_torch_threads

    outputs = run_outputs(run_dir)
    if outputs is None:
        raise FileNotFoundError(f"{run_dir}: the run has no outputs to evaluate")
    cfg = _config(env_id, settings, **({"weights": weights} if weights else {}))
    apply_torch_threads(cfg)  # the run's own threads also when only the evaluation is redone (after a dead driver)
    model = load_checkpoint(find_latest(outputs), device="cpu").model
    results = {}
    for name in backgrounds:
        env = gym.make(env_id, **make_env_kwargs(cfg), background=name)
        try:
            results[name] = evaluate(model, env, cfg.eval_episodes, seed=cfg.seed).as_dict()
        finally:
            env.close()
    write_json(outputs / "backgrounds.json", results)
    return results
