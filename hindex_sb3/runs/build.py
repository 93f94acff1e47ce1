"""From a :class:`~hindex_sb3.runs.config.TrainConfig` to objects: env keyword arguments, vectorised envs, the policy
keywords and the :class:`~hindex_sb3.dapg.DAPG` model. Shared by the runner and by the checkpoint loader, so a
resumed or reloaded model is built exactly as the run built it."""

from __future__ import annotations

import os
import warnings
from typing import Any

import gymnasium as gym
import torch

from hindex_sb3.dapg import DAPG
from hindex_sb3.runs.config import TrainConfig, TrainingError

__all__ = ["build_model", "dapg_kwargs", "make_env_kwargs", "make_venv", "policy_setup", "vec_env_class"]


def make_env_kwargs(cfg: TrainConfig, obs_mode: str | None = None) -> dict[str, Any]:
    """``gym.make`` keywords for the run's env (``obs_mode`` overrides: demonstrations render ``"all"``)."""
    kwargs: dict[str, Any] = {"obs_mode": obs_mode or ("state" if cfg.encoder == "state" else "pixels")}
    if kwargs["obs_mode"] != "state":
        kwargs["image_size"] = cfg.image_size
        if cfg.camera is not None:
            kwargs["camera"] = cfg.camera
    if cfg.horizon is not None:
        kwargs["max_episode_steps"] = cfg.horizon
    if cfg.reward_type not in (None, "dense"):
        kwargs["reward_type"] = cfg.reward_type
    return kwargs


def vec_env_class(cfg: TrainConfig) -> str:
    """``"dummy"``, ``"subproc"`` or ``"shm"`` for this run.

    ``"auto"`` chooses worker processes when several envs run with the encoder on a GPU and the machine has cores to
    spare (4 or more): there stepping and rendering are most of a rollout (see docs/benchmarks.md). The workers pass
    their frames through shared memory (``"shm"``), which measured never slower than pickling them through pipes
    (docs/benchmarks.md, "Frame transport"). On a CPU the encoder needs the cores, so the envs stay in this process.
    """
    if cfg.vec_env != "auto":
        return cfg.vec_env if cfg.n_envs > 1 else "dummy"
    if cfg.envs_per_worker > 1 or cfg.overlap:  # asked for workers (that tile frames, or step while it encodes)
        return "shm"
    on_gpu = cfg.encoder != "state" and (
        cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    )
    return "shm" if cfg.n_envs > 1 and on_gpu and (os.cpu_count() or 1) >= 4 else "dummy"


def make_venv(cfg: TrainConfig, env_id: str) -> Any:
    """The training envs. The encoder always runs batched over the envs of a step, in this process; the envs step
    and render here (DummyVecEnv) or in worker processes (SubprocVecEnv, or SharedMemoryVecEnv, which passes the
    frames through shared memory instead of pickling them), which pays off once the encoder is on a GPU."""
    from stable_baselines3.common.env_util import make_vec_env

    kind = vec_env_class(cfg)
    if kind in ("subproc", "shm"):
        if kind == "shm":
            from hindex_sb3.vec_env import SharedMemoryVecEnv as vec_env_cls
        else:
            from stable_baselines3.common.vec_env import SubprocVecEnv as vec_env_cls

        # the module-prefixed id makes fresh worker processes import (and so register) the package
        return make_vec_env(
            f"hindex_sb3:{env_id}",
            n_envs=cfg.n_envs,
            seed=cfg.seed,
            env_kwargs=make_env_kwargs(cfg),
            vec_env_cls=vec_env_cls,
            vec_env_kwargs=(
                {"envs_per_worker": cfg.envs_per_worker, "threads_per_worker": cfg.threads_per_worker}
                if kind == "shm"
                else None
            ),
        )
    return make_vec_env(env_id, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=make_env_kwargs(cfg))


def policy_setup(cfg: TrainConfig, *, load_weights: bool = True) -> tuple[str, dict[str, Any]]:
    """SB3 policy name and ``policy_kwargs`` for the chosen representation.

    :param load_weights: load the encoder's pretrained weights (and fail early, with the encoder's own message, if
        they are missing). ``False`` builds the same architecture randomly initialised, for a checkpoint that
        carries every tensor anyway.
    """
    common = {"optimizer_kwargs": {"weight_decay": cfg.vf_weight_decay}, "vf_arch": list(cfg.vf_hidden)}
    if cfg.encoder == "state":
        return "MlpPolicy", {"net_arch": list(cfg.hidden), **common}
    from hindex_sb3.encoders import create_encoder
    from hindex_sb3.extractor import BASELINES, baseline_extractor, encoder_extractor, hindex_extractor

    weights = None if (cfg.random_weights or not load_weights) else cfg.weights
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
        options = {
            "algo": "dapg",
            "cuda_graphs": cfg.cuda_graphs,
            "precision": cfg.precision,
            "hidden": tuple(cfg.hidden),
        }
        if cfg.encoder == "hindex":
            kwargs = hindex_extractor(weights, ema_scope=cfg.ema_scope, **options)
        elif cfg.encoder in BASELINES and not cfg.ema_momentum:
            kwargs = baseline_extractor(cfg.encoder, weights, **options)  # type: ignore[arg-type]
        else:  # any other registered encoder (plugins, timm:, torchvision:): EMA-BN layers where it has BatchNorm
            kwargs = encoder_extractor(cfg.encoder, weights, ema_scope="auto", **options)
    return "MultiInputPolicy", kwargs | common


def dapg_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The :class:`DAPG` hyperparameters of the run."""
    return {
        "n_trajectories": cfg.trajectories,
        "learning_rate": cfg.vf_lr,
        "step_size": cfg.step_size,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "lam0": cfg.lam0,
        "lam1": cfg.lam1,
        "demo_weight": cfg.demo_weight,
        "bc_epochs": cfg.bc_epochs,
        "bc_batch_size": cfg.bc_batch_size,
        "bc_lr": cfg.bc_lr,
        "cg_iters": cfg.cg_iters,
        "cg_damping": cfg.cg_damping,
        "hvp_sample_frac": cfg.hvp_sample_frac,
        "vf_epochs": cfg.vf_epochs,
        "vf_batch_size": cfg.vf_batch_size,
        "input_scale_floor": cfg.input_scale_floor,
        "feature_batch_size": cfg.feature_batch_size,
        "overlap": cfg.overlap,
    }


def build_model(
    cfg: TrainConfig,
    env: Any,
    demos: Any = None,
    *,
    load_weights: bool = True,
    policy_spec: tuple[str, dict[str, Any]] | None = None,
) -> DAPG:
    """A fresh DAPG for ``cfg`` on ``env`` (a VecEnv / env, or ``(observation_space, action_space)``).

    :param policy_spec: :func:`policy_setup`'s result when already computed (it loads the encoder weights once)
    """
    policy, policy_kwargs = policy_spec or policy_setup(cfg, load_weights=load_weights)
    common = dict(policy_kwargs=policy_kwargs, seed=cfg.seed, device=cfg.device, verbose=cfg.verbose)
    if isinstance(env, tuple):  # spaces only: a model to act with, no env to learn in
        model = DAPG(policy, None, **dapg_kwargs(cfg), **common, _init_setup_model=False)  # type: ignore[arg-type]
        model.observation_space, model.action_space = env
        model._setup_model()
        return model
    return DAPG(policy, env, demos=demos or None, **dapg_kwargs(cfg), **common)


def env_spaces(cfg: TrainConfig, env_id: str) -> tuple[gym.Space, gym.Space]:
    """Observation and action spaces of the run's env (built once and closed)."""
    env = gym.make(env_id, **make_env_kwargs(cfg))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
