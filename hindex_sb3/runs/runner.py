"""The run behind ``hindex train``: BC + DAPG on one task, with evaluation, curve, checkpoints and outputs.

Read :func:`train` top to bottom; each step is one function here:

1. :func:`plan_run` - the configuration in force (paper settings filled in; on resume, the checkpoint's), the run
   folder, and the refusal to overwrite or resume inconsistently - all before any work;
2. demonstrations (:func:`hindex_sb3.runs.demos.load_demos`, the single call site), envs and the model (fresh, or
   rebuilt from a checkpoint without executing code);
3. BC, then ``DAPG.learn(n_iterations=...)`` once, with :class:`RunHook` evaluating, extending the curve and
   checkpointing after every update;
4. :func:`write_outputs` - final model, plot, video, summary.

Outputs in the run folder ``OUT/<task>_<encoder>[_RANDOM-WEIGHTS]_seed<N>``: ``config.json`` (the settings in
force; ``hindex train --config`` repeats the run), ``logs/`` (``progress.csv``, tensorboard), ``curve.json``,
``checkpoints/iter_XXXX.safetensors``, ``final_model.safetensors`` (loads without executing code),
``final_model.zip`` (SB3's format, for SB3 tools: loading it unpickles, so it is code), ``learning_curve.png``,
``eval.gif`` and ``summary.json``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym

from hindex_sb3._io import write_json
from hindex_sb3._validation import check_device, check_output_dir
from hindex_sb3.dapg import DAPG, IterationCallback
from hindex_sb3.encoders import get_encoder_spec
from hindex_sb3.evaluation import evaluate
from hindex_sb3.runs import checkpoint as ckpt
from hindex_sb3.runs.build import build_model, make_env_kwargs, make_venv, policy_setup, vec_env_class
from hindex_sb3.runs.config import RESUMABLE_FIELDS, ConfigError, TrainConfig, TrainingError, resolve_task
from hindex_sb3.runs.demos import load_demos
from hindex_sb3.runs.logs import make_run_logger
from hindex_sb3.runs.outputs import plot_curve, record_video, weights_label
from hindex_sb3.runs.paper import resolve_settings
from hindex_sb3.runs.rng import capture_rng, restore_rng

__all__ = ["RunHook", "RunPlan", "locate_checkpoint", "plan_run", "run_folder", "train"]


# ---------------------------------------------------------------------------------------------- 1. configuration
@dataclass
class RunPlan:
    cfg: TrainConfig  # the settings in force (concrete values)
    env_id: str
    out: Path
    checkpoint: Path | None  # resume from here


def run_folder(cfg: TrainConfig) -> Path:
    task_name = resolve_task(cfg.task).split("/")[1].removesuffix("-v0")
    weights_tag = "_RANDOM-WEIGHTS" if cfg.random_weights else ""
    return Path(cfg.out_dir) / f"{task_name.lower()}_{cfg.encoder}{weights_tag}_seed{cfg.seed}"


def locate_checkpoint(cfg: TrainConfig) -> Path:
    """``cfg.resume`` as a file: ``latest`` (the run folder's most advanced), a run folder, or a checkpoint file."""
    target = run_folder(cfg) if cfg.resume == "latest" else Path(str(cfg.resume))
    found = ckpt.find_latest(target) if target.is_dir() else (target if target.is_file() else None)
    if found is None:
        raise TrainingError(f"resume: no checkpoint in {target} (checkpoints/iter_*.safetensors, final_model)")
    return found


def _same_setting(name: str, a: Any, b: Any) -> bool:
    """Equal settings; tasks by the env they name (``door``, ``Door`` and ``HInDex/Door-v0`` are one task)."""
    return resolve_task(a) == resolve_task(b) if name == "task" else a == b


def _refuse_changes(requested: TrainConfig, stored: TrainConfig, path: Path) -> None:
    pairs = [(f.name, getattr(stored, f.name), getattr(requested, f.name)) for f in fields(TrainConfig)]
    changed = [
        f"{name} (checkpoint: {old!r}, now: {new!r})"
        for name, old, new in pairs
        if name not in RESUMABLE_FIELDS and not _same_setting(name, new, old)
    ]
    if changed:
        allowed = ", ".join(sorted(RESUMABLE_FIELDS))
        raise TrainingError(
            f"cannot resume {path} with other settings: {'; '.join(changed)}. A resumed run keeps its settings; "
            f"only these may change: {allowed}"
        )


def _holds_results(out: Path) -> bool:
    """Whether ``out`` has outputs of a run that got going (a folder with only ``config.json``: a start that failed)."""
    markers = ("logs", "curve.json", "summary.json", f"final_model{ckpt.SUFFIX}", "final_model.zip")
    return any((out / m).exists() for m in markers) or any((out / "checkpoints").glob("*"))


def _check_folder(out: Path, cfg: TrainConfig) -> None:
    """A fresh run never lands on an existing one silently (checked before any work, deleting nothing)."""
    try:
        check_output_dir("out_dir", out)
    except OSError as err:
        raise ConfigError("out_dir", str(err).removeprefix("out_dir ")) from None
    if not (out.exists() and _holds_results(out)):
        return
    if not cfg.overwrite:
        resumable = ckpt.find_latest(out) is not None
        hint = "pass --resume to continue it, " if resumable else "it has no checkpoint to resume from: pass "
        raise TrainingError(f"{out} already holds a run: {hint}--overwrite to replace it, or choose another --out")
    if not (out / "config.json").is_file():
        raise TrainingError(f"--overwrite: {out} is not a hindex run folder (no config.json); not deleting it")


def _prepare_folder(out: Path, cfg: TrainConfig) -> None:
    """Replace an old run (``--overwrite``) only once the new one has what it needs: a refused start damages nothing."""
    try:
        if cfg.overwrite and out.exists() and _holds_results(out):
            shutil.rmtree(out)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. an immutable folder, which the writability test cannot see as root
        raise ConfigError("out_dir", f"{out}: {err.strerror or err}") from None


def plan_run(cfg: TrainConfig) -> RunPlan:
    """Decide everything that can be decided without work, and refuse what cannot be done."""
    env_id = resolve_task(cfg.task)
    requested = resolve_settings(cfg, env_id)
    if requested.encoder != "hindex":  # the paper's momentum belongs to the H-InDex encoder
        if cfg.ema_momentum and (requested.encoder == "state" or not get_encoder_spec(requested.encoder).has_batchnorm):
            raise ConfigError("ema_momentum", f"EMA-BN needs BatchNorm layers; {requested.encoder!r} has none")
        requested = requested.replace(ema_momentum=cfg.ema_momentum or 0.0)
    try:
        check_device("device", requested.device)  # a config may come from a machine with more GPUs than this one
    except ValueError as err:
        raise ConfigError("device", str(err).removeprefix("device ")) from None
    out = run_folder(requested)
    if not requested.resume:
        _check_folder(out, requested)
        return RunPlan(requested, env_id, out, None)
    path = locate_checkpoint(requested)
    stored = ckpt.read_checkpoint_config(path)
    _refuse_changes(requested, stored, path)
    in_force = stored.replace(**{name: getattr(requested, name) for name in RESUMABLE_FIELDS})
    done = ckpt.read_checkpoint_info(path)["algorithm"]["dapg_iterations"]
    if in_force.iterations is not None and in_force.iterations < done:
        raise TrainingError(f"iterations: the checkpoint {path} has already done {done}; ask for {done} or more")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return RunPlan(in_force, env_id, out, path)


# ---------------------------------------------------------------------------------------------- 3. the iteration hook
class RunHook(IterationCallback):
    """After each DAPG update: timings, evaluation when due, the curve; after the log row: the checkpoint."""

    def __init__(self, plan: RunPlan, eval_env: gym.Env, curve: list[dict[str, Any]], rng: Any = None) -> None:
        super().__init__()
        self.plan = plan
        self.cfg = plan.cfg
        self.eval_env = eval_env
        self.curve = curve
        self.last_eval: tuple[int, Any] | None = None  # reused by the final summary when the policy is unchanged
        self._rng_to_restore = rng
        self._tick = time.perf_counter()

    def _on_training_start(self) -> None:
        self._tick = time.perf_counter()
        if self._rng_to_restore is not None:  # after learn()'s own env reset, before the first rollout
            state, tensors = self._rng_to_restore
            restore_rng(state, tensors, self.training_env)
            self._rng_to_restore = None

    def _on_rollout_start(self) -> None:
        self.training_env.env_method("reset_timings")

    def _on_iteration_end(self) -> bool:
        model, cfg = self.model, self.cfg
        it = model.dapg_iterations
        entry: dict[str, Any] = {"iteration": it, "env_steps": model.num_timesteps, "time_s": self._timings()}
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            ev = evaluate(model, self.eval_env, cfg.eval_episodes, seed=cfg.seed)
            self.last_eval = (it, ev)
            entry.update(eval_success=ev.success_rate, eval_return=ev.mean_return)
            self.logger.record("eval/success_rate", ev.success_rate)
            self.logger.record("eval/mean_return", ev.mean_return)
        for phase, seconds in entry["time_s"].items():
            self.logger.record(f"time/{phase}_s", seconds)
        now = time.perf_counter()  # the iteration's wall time, evaluation included (what a benchmark pays)
        entry["wall_s"] = round(now - self._tick, 3)
        self._tick = now
        self.curve.append(entry)
        write_json(self.plan.out / "curve.json", self.curve)
        return True

    def _on_iteration_logged(self) -> None:
        it = self.model.dapg_iterations
        if self.cfg.checkpoint_every and it % self.cfg.checkpoint_every == 0:
            self.save(self.plan.out / "checkpoints" / f"iter_{it:04d}{ckpt.SUFFIX}")

    def save(self, path: Path) -> Path:
        return ckpt.save_checkpoint(
            self.model,
            path,
            self.cfg,
            run_state={"curve": self.curve},
            rng=capture_rng(self.training_env),
        )

    def _timings(self) -> dict[str, float]:
        env_t = {"simulate": 0.0, "render": 0.0}
        for timing in self.training_env.env_method("reset_timings"):
            for k in env_t:
                env_t[k] += timing.get(k, 0.0)
        timings = self.model.last_timings
        return {
            "simulate": round(env_t["simulate"], 3),
            "render": round(env_t["render"], 3),
            "encode_and_act": round(timings.get("policy_forward", 0.0), 3),
            "update": round(timings.get("update", 0.0), 3),
            "rollout_total": round(timings.get("rollout", 0.0), 3),
        }


# ---------------------------------------------------------------------------------------------- 2. envs and model
def _model(plan: RunPlan, venv: Any, demos: list, policy: Any) -> tuple[DAPG, list[dict[str, Any]], Any]:
    """``(model, curve so far, RNG state to restore)``: a fresh model, or the checkpoint's."""
    if plan.checkpoint is None:
        return build_model(plan.cfg, venv, demos, policy_spec=policy), [], None
    loaded = ckpt.load_checkpoint(plan.checkpoint, venv, config=plan.cfg)
    if demos:
        loaded.model.set_demonstrations(demos)
    curve = list(loaded.run_state.get("curve", []))
    rng = (loaded.rng_state, loaded.rng_tensors) if loaded.rng_state is not None else None
    return loaded.model, curve, rng


def _callbacks(plan: RunPlan, hook: RunHook) -> list:
    callbacks: list = [hook]
    if plan.cfg.encoder != "state" and plan.cfg.ema_momentum:
        from hindex_sb3.callbacks import EMABatchNormCallback

        callbacks.append(EMABatchNormCallback(plan.cfg.ema_momentum))
    return callbacks


def _behaviour_cloning(model: DAPG, plan: RunPlan, eval_env: gym.Env, curve: list[dict[str, Any]]) -> None:
    if model.demos and plan.cfg.bc_epochs > 0 and not model.bc_done:
        model.pretrain_bc()
        ev = evaluate(model, eval_env, plan.cfg.eval_episodes, seed=plan.cfg.seed)
        curve.append({"iteration": 0, "phase": "bc", "eval_success": ev.success_rate, "eval_return": ev.mean_return})


# ---------------------------------------------------------------------------------------------- the run
def apply_torch_threads(cfg: TrainConfig) -> None:
    """Set torch's CPU threads to the run's ``torch_threads`` (0: leave torch's default): the run's numbers depend on
    them, so everything that computes for a run (training, a later evaluation of it) uses the same count."""
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run BC + DAPG on one task and write the outputs; returns the summary."""
    plan = plan_run(cfg)
    cfg = plan.cfg
    apply_torch_threads(cfg)
    # a fresh run checks the encoder weights before the (possibly long) demonstrations; a resumed one needs none
    policy = policy_setup(cfg) if plan.checkpoint is None else None
    t0 = time.perf_counter()
    demos = load_demos(cfg, plan.env_id)
    demo_time = time.perf_counter() - t0
    if plan.checkpoint is None:
        _prepare_folder(plan.out, cfg)
    write_json(plan.out / "config.json", cfg.to_dict() | {"resume": None, "overwrite": False})
    venv = make_venv(cfg, plan.env_id)
    eval_env = gym.make(plan.env_id, **make_env_kwargs(cfg))
    model = None
    try:
        model, curve, rng = _model(plan, venv, demos, policy)
        start = model.dapg_iterations
        model.set_logger(
            make_run_logger(
                plan.out / "logs",
                resume_iteration=start if plan.checkpoint else None,
                resume_step=model.num_timesteps if plan.checkpoint else None,
                stdout=bool(cfg.verbose),
            )
        )
        hook = RunHook(plan, eval_env, curve, rng)
        _behaviour_cloning(model, plan, eval_env, curve)
        model.learn(
            n_iterations=cfg.iterations - start,
            callback=_callbacks(plan, hook),
            reset_num_timesteps=plan.checkpoint is None,
            progress_bar=cfg.progress_bar,
        )
        return write_outputs(plan, model, hook, eval_env, len(demos), demo_time, t0)
    finally:
        eval_env.close()
        venv.close()
        if model is not None and getattr(model, "_logger", None) is not None:
            model.logger.close()


# ---------------------------------------------------------------------------------------------- 4. outputs
def write_outputs(
    plan: RunPlan, model: DAPG, hook: RunHook, eval_env: gym.Env, n_demos: int, demo_time: float, t0: float
) -> dict[str, Any]:
    cfg, out = plan.cfg, plan.out
    hook.save(out / f"final_model{ckpt.SUFFIX}")
    model.save(out / "final_model.zip")  # SB3's format for SB3 tools (pickled: loading it runs code)
    if hook.last_eval is not None and hook.last_eval[0] == model.dapg_iterations:
        final = hook.last_eval[1]
    else:
        final = evaluate(model, eval_env, cfg.eval_episodes, seed=cfg.seed)
    task_name = plan.env_id.split("/")[1].removesuffix("-v0")
    label = "random-weights" if cfg.random_weights else (cfg.weights if cfg.encoder != "state" else "state")
    title = f"{task_name} / {cfg.encoder} ({label}) seed {cfg.seed}"
    if cfg.random_weights:
        title = "RANDOM ENCODER WEIGHTS - " + title
    evaluated = [c for c in hook.curve if "eval_success" in c]
    if evaluated:
        plot_curve(evaluated, out / "learning_curve.png", title)
    video = None
    if cfg.video:
        name = "eval_RANDOM-WEIGHTS.gif" if cfg.random_weights else "eval.gif"
        video = str(record_video(model, plan.env_id, cfg, out / name))
    bc_loss = model.bc_loss
    summary = {
        "task": plan.env_id,
        "encoder": cfg.encoder,
        "weights": weights_label(cfg),
        "ema_momentum": cfg.ema_momentum if cfg.encoder != "state" else None,
        "demos": {"source": cfg.demos, "count": n_demos, "seconds": round(demo_time, 1)},
        "iterations": model.dapg_iterations,
        "env_steps": model.num_timesteps,
        "final_eval": final.as_dict() | {"episodes": cfg.eval_episodes},
        "bc_loss": bc_loss if bc_loss == bc_loss else None,  # NaN (no BC) is not JSON
        # with "subproc", curve.json's simulate/render seconds are summed over the worker processes (they overlap)
        "vec_env": vec_env_class(cfg),
        "wall_s": round(time.perf_counter() - t0, 1),
        "out_dir": str(out),
        "model": str(out / f"final_model{ckpt.SUFFIX}"),
        "sb3_zip": str(out / "final_model.zip"),
        "resumed_from": None if plan.checkpoint is None else str(plan.checkpoint),
        "video": video,
    }
    write_json(out / "summary.json", summary)
    return summary
