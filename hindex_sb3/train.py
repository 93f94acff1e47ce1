"""The whole H-InDex Stage-3 pipeline behind ``hindex train``: env, representation, demonstrations, DAPG, outputs.

Kept separate from the command line so that scripts and notebooks can call :func:`train` with the same defaults.
Outputs in ``out_dir``: ``config.json``, tensorboard logs, ``checkpoints/iter_XXXX.zip``, ``final_model.zip``,
``curve.json`` + ``learning_curve.png``, ``eval.gif`` and ``summary.json``. Runs with a randomly initialised encoder
are labelled as such in every output (directory name, plot title, video name, JSON).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from hindex_sb3.dapg import DAPG
from hindex_sb3.demos import Trajectory, load_dapg_pickle, load_minari, load_npz, replay, rollout
from hindex_sb3.envs import env_ids
from hindex_sb3.evaluation import evaluate

ENCODERS = ("hindex", "vc1", "mvp", "r3m", "rrl", "state")
#: H-InDex's per-task EMA-BN momentum (hindex.md §3); tasks not listed use 0 (frozen statistics)
PAPER_MOMENTUM = {
    "Hammer": 0.1,
    "PlaceInside": 0.001,
    "RelocateFoamBrick": 0.01,
    "RelocateLargeClamp": 0.01,
    "RelocateTomatoSoupCan": 0.01,
    "RelocateMustardBottle": 0.001,
    "RelocateSugarBox": 0.001,
    "Relocate": 0.01,
}


class TrainingError(RuntimeError):
    """A problem the user can fix (missing weights, bad demos); the CLI prints it without a traceback."""


def resolve_task(task: str) -> str:
    """``door`` / ``Door`` / ``HInDex/Door-v0`` / ``relocate-mug`` -> ``HInDex/Door-v0`` style ids."""
    ids = env_ids()
    if task in ids:
        return task
    key = task.lower().replace("hindex/", "").replace("-v0", "").replace("-", "").replace("_", "")
    for env_id in ids:
        if env_id.split("/")[1].removesuffix("-v0").lower() == key:
            return env_id
    raise TrainingError(f"unknown task {task!r}; known tasks: {[i.split('/')[1].removesuffix('-v0') for i in ids]}")


@dataclass
class TrainConfig:
    task: str
    encoder: str = "hindex"
    weights: str | None = "default"  # "default", a path, or "random"
    demos: str = "scripted"
    num_demos: int = 25
    iterations: int = 100
    trajectories: int = 100
    seed: int = 0
    device: str = "auto"
    image_size: int = 224
    n_envs: int = 1
    horizon: int | None = None
    eval_episodes: int = 25
    eval_every: int = 1
    checkpoint_every: int = 25
    ema_momentum: float | None = None  # None: the paper's per-task value
    cuda_graphs: bool = True  # replay the encoder as CUDA graphs when training on a GPU (no effect on CPU)
    vec_env: str = "auto"  # "dummy" (one process), "subproc" (one process per env), "auto" (subproc on GPU machines)
    out_dir: str = "runs"
    resume: str | None = None
    video: bool = True
    progress_bar: bool = True
    verbose: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return self.encoder != "state" and self.weights in (None, "random")


# ---------------------------------------------------------------------------------------------- building blocks
def make_env_kwargs(cfg: TrainConfig, obs_mode: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"obs_mode": obs_mode or ("state" if cfg.encoder == "state" else "pixels")}
    if kwargs["obs_mode"] != "state":
        kwargs["image_size"] = cfg.image_size
    if cfg.horizon is not None:
        kwargs["max_episode_steps"] = cfg.horizon
    return kwargs


def policy_setup(cfg: TrainConfig) -> tuple[str, dict[str, Any]]:
    """SB3 policy name and ``policy_kwargs`` for the chosen representation; fails early if weights are missing."""
    if cfg.encoder == "state":
        return "MlpPolicy", {"net_arch": [256, 256]}
    if cfg.encoder not in ENCODERS:
        raise TrainingError(f"unknown encoder {cfg.encoder!r}; choose from {ENCODERS}")
    from hindex_sb3.encoders import create_encoder
    from hindex_sb3.extractor import baseline_extractor, hindex_extractor

    weights = None if cfg.random_weights else cfg.weights
    if weights is not None:
        try:  # fail now, with the encoder's own message (URL, where to put the file), not deep inside SB3
            create_encoder(cfg.encoder, weights)
        except (FileNotFoundError, OSError, ValueError, RuntimeError) as err:
            raise TrainingError(
                f"{err}\n\nNo usable {cfg.encoder} weights. Pass --weights PATH, or --weights random to run with a "
                "randomly initialised encoder (every output will be labelled as such)."
            ) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: we label the outputs instead
        if cfg.encoder == "hindex":
            kwargs = hindex_extractor(weights, algo="dapg", cuda_graphs=cfg.cuda_graphs)
        else:
            kwargs = baseline_extractor(
                cfg.encoder,  # type: ignore[arg-type]
                weights,
                algo="dapg",
                cuda_graphs=cfg.cuda_graphs,
            )
    return "MultiInputPolicy", kwargs


def load_demos(cfg: TrainConfig, env_id: str) -> list[Trajectory]:
    """Demonstrations in the training env's observation format (pixels are rendered here when needed).

    ``cfg.demos``: ``scripted`` (the task's scripted demonstrator), ``expert:PATH.npz`` (a state expert rolled out
    with mean actions), a ``.npz`` / ``.pickle`` demonstration file, ``minari:DATASET_ID``, or ``none``.
    """
    source = cfg.demos
    if source == "none":
        return []
    pixel = cfg.encoder != "state"
    record = ("pixels", "proprio") if pixel else None
    env_kwargs = make_env_kwargs(cfg, obs_mode="all" if pixel else "state")
    if source == "scripted":
        try:
            from hindex_sb3.demonstrators import demonstration_horizon, make_demonstrator
        except ImportError as err:
            raise TrainingError("scripted demonstrators are not available in this installation") from err
        # the task's own horizon, or longer if its demonstrator needs it (place-inside: 200), whatever --horizon
        # says: demonstrations only feed BC and DAPG's demo term, so they need not match RL episodes
        env_kwargs["max_episode_steps"] = demonstration_horizon(env_id)
    env = gym.make(env_id, **env_kwargs)
    try:
        if source == "scripted":
            try:
                demonstrator = make_demonstrator(env)
            except (KeyError, ValueError, TypeError) as err:
                raise TrainingError(f"no scripted demonstrator for {env_id}: {err}; pass --demos FILE") from err
            return rollout(
                env, demonstrator, cfg.num_demos, seed=10_000 + cfg.seed, record_keys=record, only_successful=True
            )
        if source.startswith("expert:"):
            return rollout(
                env,
                source.split(":", 1)[1],
                cfg.num_demos,
                seed=10_000 + cfg.seed,
                policy_obs_key="state" if pixel else None,
                record_keys=record,
            )
        if source.startswith("minari:"):
            demos = load_minari(source.split(":", 1)[1])
        else:
            path = Path(source)
            if not path.is_file():
                raise TrainingError(f"--demos {source!r}: no such file (or use scripted, expert:PATH, minari:ID)")
            demos = load_dapg_pickle(path) if path.suffix in (".pickle", ".pkl") else load_npz(path)
        demos = demos[: cfg.num_demos]
        if pixel and not isinstance(demos[0].observations, dict):
            demos = replay(demos, env, keys=record)  # state demos -> pixel demos from their start states
        return demos
    finally:
        env.close()


def vec_env_class(cfg: TrainConfig) -> str:
    """``"dummy"`` or ``"subproc"`` for this run.

    ``"auto"`` chooses worker processes when several envs run with the encoder on a GPU and the machine has cores to
    spare (4 or more): there stepping and rendering are most of a rollout (see docs/benchmarks.md). On a CPU the
    encoder needs the cores, so the envs stay in this process.
    """
    if cfg.vec_env not in ("auto", "dummy", "subproc"):
        raise TrainingError(f"vec_env must be 'auto', 'dummy' or 'subproc', got {cfg.vec_env!r}")
    if cfg.vec_env != "auto":
        return cfg.vec_env if cfg.n_envs > 1 else "dummy"
    on_gpu = cfg.encoder != "state" and (
        cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    )
    return "subproc" if cfg.n_envs > 1 and on_gpu and (os.cpu_count() or 1) >= 4 else "dummy"


def _env_timings(venv) -> dict[str, float]:
    totals = {"simulate": 0.0, "render": 0.0}
    for timing in venv.env_method("reset_timings"):
        for k in totals:
            totals[k] += timing.get(k, 0.0)
    return totals


def _plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [c["iteration"] for c in curve]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(its, [c["eval_success"] for c in curve], "o-", color="tab:blue", label="eval success")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("success rate", color="tab:blue")
    ax1.set_ylim(-0.05, 1.05)
    ax2 = ax1.twinx()
    ax2.plot(its, [c["eval_return"] for c in curve], "s--", color="tab:orange", label="eval return")
    ax2.set_ylabel("return", color="tab:orange")
    ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _record_video(model: DAPG, env_id: str, cfg: TrainConfig, path: Path) -> Path:
    kwargs = make_env_kwargs(cfg)
    kwargs.setdefault("image_size", cfg.image_size)
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    frames = []
    obs, _ = env.reset(seed=20_000 + cfg.seed)
    frames.append(env.render())
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(model.predict(obs, deterministic=True)[0])
        frames.append(env.render())
        done = terminated or truncated
    env.close()
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    return path


def _weights_label(cfg: TrainConfig) -> str | None:
    if cfg.encoder == "state":
        return None
    return "random (NOT pretrained)" if cfg.random_weights else cfg.weights


# ---------------------------------------------------------------------------------------------- the run
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run BC + DAPG on one task and write the outputs; returns the summary."""
    from stable_baselines3.common.env_util import make_vec_env

    env_id = resolve_task(cfg.task)
    vec_kind = vec_env_class(cfg)  # validates cfg.vec_env before any work
    task_name = env_id.split("/")[1].removesuffix("-v0")
    label = "random-weights" if cfg.random_weights else (cfg.weights if cfg.encoder != "state" else "state")
    tag = f"{task_name.lower()}_{cfg.encoder}{'_RANDOM-WEIGHTS' if cfg.random_weights else ''}_seed{cfg.seed}"
    out = Path(cfg.out_dir) / tag
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    policy, policy_kwargs = policy_setup(cfg)
    momentum = cfg.ema_momentum if cfg.ema_momentum is not None else PAPER_MOMENTUM.get(task_name, 0.0)
    t0 = time.perf_counter()
    demos = load_demos(cfg, env_id)
    demo_time = time.perf_counter() - t0

    # The encoder always runs batched over the envs of a step, in this process; the envs themselves step and render
    # here (DummyVecEnv) or in worker processes (SubprocVecEnv), which pays off once the encoder is on a GPU.
    if vec_kind == "subproc":
        from stable_baselines3.common.vec_env import SubprocVecEnv

        # the module-prefixed id makes fresh worker processes import (and so register) the package
        venv = make_vec_env(
            f"hindex_sb3:{env_id}",
            n_envs=cfg.n_envs,
            seed=cfg.seed,
            env_kwargs=make_env_kwargs(cfg),
            vec_env_cls=SubprocVecEnv,
        )
    else:
        venv = make_vec_env(env_id, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=make_env_kwargs(cfg))
    eval_env = gym.make(env_id, **make_env_kwargs(cfg))

    if cfg.resume:
        if not Path(cfg.resume).is_file():
            raise TrainingError(f"--resume {cfg.resume}: no such checkpoint")
        model = DAPG.load(cfg.resume, env=venv, device=cfg.device)
        if demos:
            model.set_demonstrations(demos)
    else:
        model = DAPG(
            policy,
            venv,
            demos=demos or None,
            n_trajectories=cfg.trajectories,
            policy_kwargs=policy_kwargs,
            seed=cfg.seed,
            device=cfg.device,
            verbose=cfg.verbose,
            **cfg.extra,
        )
    from stable_baselines3.common.logger import configure

    # One logger for the whole run (learn() would otherwise start a new one per iteration and drop train/* values).
    model.set_logger(configure(str(out / "logs"), ["csv", "tensorboard"] + (["stdout"] if cfg.verbose else [])))
    callbacks = []
    if cfg.encoder != "state" and momentum > 0:
        from hindex_sb3.callbacks import EMABatchNormCallback

        callbacks.append(EMABatchNormCallback(momentum))

    curve: list[dict[str, Any]] = []
    if demos and not model.bc_done:
        model.pretrain_bc()
        ev = evaluate(model, eval_env, cfg.eval_episodes, seed=cfg.seed)
        curve.append({"iteration": 0, "phase": "bc", "eval_success": ev.success_rate, "eval_return": ev.mean_return})

    from tqdm.auto import tqdm

    last_eval = None  # (iteration, result): the final evaluation reuses the last iteration's (same seeds, same policy)
    start_iteration = model.dapg_iterations
    bar = tqdm(
        range(start_iteration, cfg.iterations), disable=not cfg.progress_bar, desc=f"DAPG {task_name}", unit="it"
    )
    for it in bar:
        venv.env_method("reset_timings")
        model.learn(total_timesteps=1, callback=callbacks or None, reset_num_timesteps=it == 0 and not cfg.resume)
        entry: dict[str, Any] = {"iteration": it + 1, "env_steps": model.num_timesteps}
        env_t = _env_timings(venv)
        timings = dict(model.last_timings)
        entry["time_s"] = {
            "simulate": round(env_t["simulate"], 3),
            "render": round(env_t["render"], 3),
            "encode_and_act": round(timings.get("policy_forward", 0.0), 3),
            "update": round(timings.get("update", 0.0), 3),
            "rollout_total": round(timings.get("rollout", 0.0), 3),
        }
        if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.iterations:
            ev = evaluate(model, eval_env, cfg.eval_episodes, seed=cfg.seed)
            last_eval = (model.dapg_iterations, ev)
            entry.update(eval_success=ev.success_rate, eval_return=ev.mean_return)
            model.logger.record("eval/success_rate", ev.success_rate)
            model.logger.record("eval/mean_return", ev.mean_return)
            bar.set_postfix(success=f"{ev.success_rate:.2f}", ret=f"{ev.mean_return:.0f}")
        for phase, seconds in entry["time_s"].items():
            model.logger.record(f"time/{phase}_s", seconds)
        model.logger.dump(model.num_timesteps)
        curve.append(entry)
        (out / "curve.json").write_text(json.dumps(curve, indent=2))
        if cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0:
            model.save(out / "checkpoints" / f"iter_{it + 1:04d}.zip")
    model.save(out / "final_model.zip")

    if last_eval is not None and last_eval[0] == model.dapg_iterations:
        final = last_eval[1]
    else:
        final = evaluate(model, eval_env, cfg.eval_episodes, seed=cfg.seed)
    eval_env.close()
    title = f"{task_name} / {cfg.encoder} ({label}) seed {cfg.seed}"
    if cfg.random_weights:
        title = "RANDOM ENCODER WEIGHTS - " + title
    evaluated = [c for c in curve if "eval_success" in c]
    if evaluated:
        _plot_curve(evaluated, out / "learning_curve.png", title)
    video = None
    if cfg.video:
        name = "eval_RANDOM-WEIGHTS.gif" if cfg.random_weights else "eval.gif"
        video = str(_record_video(model, env_id, cfg, out / name))
    venv.close()
    summary = {
        "task": env_id,
        "encoder": cfg.encoder,
        "weights": _weights_label(cfg),
        "ema_momentum": momentum if cfg.encoder != "state" else None,
        "demos": {"source": cfg.demos, "count": len(demos), "seconds": round(demo_time, 1)},
        "iterations": model.dapg_iterations,
        "env_steps": model.num_timesteps,
        "final_eval": final.as_dict() | {"episodes": cfg.eval_episodes},
        "bc_loss": model.bc_loss,
        # with "subproc", curve.json's simulate/render seconds are summed over the worker processes (they overlap)
        "vec_env": vec_kind,
        "wall_s": round(time.perf_counter() - t0, 1),
        "out_dir": str(out),
        "video": video,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
