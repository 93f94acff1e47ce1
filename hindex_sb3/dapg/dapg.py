"""DAPG (Rajeswaran et al., 2018) as an SB3 on-policy algorithm, faithful to mjrl's implementation.

One iteration = sample ``n_trajectories`` complete episodes with the stochastic policy; compute GAE advantages with
the value baseline of the previous iteration; take one natural-gradient step on the demo-augmented surrogate; then fit
the baseline. Before the first iteration, behaviour cloning warm-starts the policy on the demonstrations.

Differences from SB3's usual on-policy loop, all of them mjrl's:

* rollouts are whole episodes, not ``n_steps`` slices: GAE bootstraps a truncated episode with the value of its last
  observed state, and the baseline regresses Monte-Carlo returns with the in-episode time as an input feature;
* each iteration runs exactly ``n_trajectories`` episodes, episode ``i`` of iteration ``k`` from env seed
  ``seed + k * n_trajectories + i`` with its own action-noise stream (:mod:`hindex_sb3.dapg.rollout`), so a CPU run
  does not depend on ``n_envs`` or on worker processes. The envs are driven one by one, which is why ``VecEnvWrapper``
  s (``VecNormalize``, ``VecFrameStack``, ...) are refused rather than silently bypassed;
* with a frozen feature extractor (the H-InDex setting) rollouts keep the features, not the images (~8 KB instead of
  ~150 KB per 224x224 transition), and the update runs on those features;
* the Fisher matrix is estimated on the on-policy samples only; the demonstration term enters the gradient alone.

Unlike mjrl, input normalisation floors the demo feature std at ``input_scale_floor`` (a feature that is constant in
the demos would otherwise be divided by 1e-8); ``input_scale_floor=0`` restores the reference behaviour exactly.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from hindex_sb3._validation import check_dapg_args
from hindex_sb3.dapg.callbacks import IterationProgressBar, StepProgressBar, iteration_end, iteration_logged
from hindex_sb3.dapg.npg import (
    conjugate_gradient,
    discount_cumsum,
    flat_grad,
    gae_advantages,
    gaussian_kl,
    get_flat_params,
    npg_step_size,
    set_flat_params,
)
from hindex_sb3.dapg.policies import CnnDAPGPolicy, DAPGPolicy, MultiInputDAPGPolicy
from hindex_sb3.dapg.rollout import EpisodeRunner, EpisodeSeed, check_vec_env, episode_seeds, noise_generator
from hindex_sb3.demos.core import Trajectory, check_compatible, stack_transitions, to_trajectories
from hindex_sb3.demos.resolve import is_named_source, load_demonstrations
from hindex_sb3.ema_bn import all_modules

SelfDAPG = TypeVar("SelfDAPG", bound="DAPG")
_log = logging.getLogger(__name__)  # (self.logger is SB3's metrics logger)

MAX_PATH_LENGTH = 100_000
_NO_STEP_LIMIT = 2**62  # learn(n_iterations=...) without a step budget


def _learn_callbacks(callback: MaybeCallback, progress_bar: bool, n_iterations: int | None) -> list[BaseCallback]:
    """SB3's callback forms (one, a list, a ``(locals, globals) -> bool`` function), plus the progress bar asked for.

    DAPG's bars are its own: one counts iterations (with ``n_iterations``); the other counts the env steps actually
    taken, since a DAPG step may step fewer envs than ``num_envs`` (envs rest once the iteration's episodes are
    all handed out), where SB3's bar adds ``num_envs`` per step.
    """
    callbacks = [] if callback is None else list(callback) if isinstance(callback, list) else [callback]
    for c in callbacks:
        if not isinstance(c, BaseCallback) and not callable(c):
            raise TypeError(f"callback must be a BaseCallback, a function (locals, globals) or a list, got {c!r}")
    callbacks = [c if isinstance(c, BaseCallback) else ConvertCallback(c) for c in callbacks]
    if progress_bar:
        callbacks.append(IterationProgressBar(int(n_iterations)) if n_iterations is not None else StepProgressBar())
    return callbacks


@dataclass
class _Path:
    """One completed episode as DAPG needs it."""

    features: th.Tensor | None  # (T, F) when the extractor is frozen
    observations: list[Any] | None  # raw observations otherwise
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool


@dataclass
class _RunningEpisode:
    """An episode in progress on one env: its seeds, noise stream, current observation and what it recorded."""

    seed: EpisodeSeed
    noise: th.Generator
    obs: Any
    inputs: list[Any] = field(default_factory=list)  # per step: features (frozen extractor) or the observation
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def record(self, policy_input: Any, action: np.ndarray, reward: float) -> None:
        self.inputs.append(policy_input)
        self.actions.append(action)
        self.rewards.append(reward)
        if len(self.actions) > MAX_PATH_LENGTH:
            raise RuntimeError(
                f"an episode ran past {MAX_PATH_LENGTH} steps: DAPG samples whole episodes, so the env must end them "
                "(wrap it in gymnasium.wrappers.TimeLimit)"
            )

    def finish(self, terminated: bool, keep_features: bool) -> _Path:
        return _Path(
            features=th.stack(self.inputs) if keep_features else None,
            observations=None if keep_features else self.inputs,
            actions=np.asarray(self.actions, dtype=np.float32),
            rewards=np.asarray(self.rewards, dtype=np.float64),
            terminated=terminated,
        )


@dataclass
class _Batch:
    """The on-policy samples of one iteration, concatenated in episode order."""

    features: th.Tensor  # detached
    actions: th.Tensor
    timesteps: th.Tensor
    returns: np.ndarray
    advantages: np.ndarray  # whitened


class _UpdateInputs:
    """Policy features of the update's samples (on-policy, then demos), with gradients if the extractor trains.

    A frozen extractor's features are computed once (rollouts already stored them; demo features follow the current
    encoder statistics); a trainable one is re-run on the stored observations at each call, so that gradients reach it.
    """

    def __init__(self, algo: DAPG, paths: list[_Path], rl_features: th.Tensor, with_demos: bool) -> None:
        self.algo, self.paths, self.with_demos = algo, paths, with_demos
        self.n_rl = len(rl_features)
        self.frozen = algo.policy.extractor_is_frozen()
        self._rl = rl_features
        if self.frozen:
            self._all = th.cat([rl_features, algo._frozen_demo_features()]) if with_demos else rl_features

    def rl(self) -> th.Tensor:
        if self.frozen:
            return self._rl
        return th.cat([self.algo._path_features_grad(p) for p in self.paths])

    def all(self) -> th.Tensor:
        if self.frozen:
            return self._all
        if not self.with_demos:
            return self.rl()
        obs, _ = self.algo._demo_batch()
        return th.cat([self.rl(), self.algo.policy.features(self.algo._obs_to_tensor(obs))])


def _env_groups(n_envs: int, overlap: bool, envs_per_worker: int = 1) -> list[list[int]]:
    """The envs driven together: all of them, or (overlap) the lower and the upper half, each in env order.

    Where worker processes host several envs each, the halves split at a worker boundary when one is available, so
    that no worker serves both halves (it would step them one after the other, and draw each half's frames apart).
    """
    if not overlap or n_envs < 2:
        return [list(range(n_envs))]
    half = (n_envs + 1) // 2
    aligned = -(-half // envs_per_worker) * envs_per_worker
    if aligned < n_envs:
        half = aligned
    return [list(range(half)), list(range(half, n_envs))]


def _index_obs(obs: Any, idx: int | slice | np.ndarray) -> Any:
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def _stack_obs(observations: list[Any] | None) -> Any:
    if not observations:
        raise ValueError("a path without stored observations")
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


class DAPG(OnPolicyAlgorithm):
    """Demo Augmented Policy Gradient: behaviour cloning, then natural policy gradient with a demonstration term.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a :class:`DAPGPolicy` subclass
    :param env: the environment (episodes must end: use a ``TimeLimit``; all ``HInDex/*`` ids have one)
    :param demos: demonstrations in any format :func:`hindex_sb3.demos.to_trajectories` reads, or a source name
        (``"door-human.npz"``, ``"minari:ID"``, ``"expert:FILE.npz"``, ``"scripted"``: see
        :func:`hindex_sb3.demos.resolve.load_demonstrations`); ``None`` gives NPG
    :param n_trajectories: episodes sampled per iteration (mjrl ``rl_num_traj``)
    :param learning_rate: learning rate of the value baseline (mjrl ``vf_learn_rate``)
    :param step_size: normalised natural-gradient step ``delta`` (mjrl ``rl_step_size``)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda
    :param lam0: demo weight at iteration 0 (mjrl ``lam_0``)
    :param lam1: per-iteration decay of the demo weight (mjrl ``lam_1``)
    :param demo_weight: ``"mjrl"``: ``w_k = lam0 * lam1**k`` as the reference code; ``"paper"``: multiplied by the
        largest (normalised) on-policy advantage, as the paper writes it
    :param bc_epochs: behaviour-cloning epochs before RL (0 disables BC)
    :param bc_batch_size: BC minibatch size
    :param bc_lr: BC Adam learning rate
    :param cg_iters: conjugate-gradient iterations
    :param cg_damping: Fisher damping
    :param hvp_sample_frac: fraction of on-policy samples (drawn anew per Fisher-vector product) for the Fisher
    :param vf_epochs: baseline regression epochs per iteration
    :param vf_batch_size: baseline minibatch size
    :param input_scale_floor: lower bound for the demo feature std used in input normalisation
    :param feature_batch_size: batch size when encoding demonstrations and stored observations
    :param overlap: with envs in worker processes (``SubprocVecEnv``, ``SharedMemoryVecEnv``), keep two halves of the
        envs in flight, encoding one while the other steps and renders; the same episodes, frames and actions as
        lockstep sampling (see :meth:`_overlapped_steps`). No effect on a ``DummyVecEnv``.

    Callbacks: a DAPG step steps only the envs running an episode (an iteration's last episodes leave some envs
    idle), so a step's ``rewards``, ``dones``, ``infos`` and ``actions`` may be shorter than ``num_envs``, row ``r``
    belonging to env ``env_indices[r]``; ``new_obs`` is the next batch to encode (``None`` after an iteration's
    last step). Aggregates (``np.sum(dones)``, ``len(dones)`` steps) read as with SB3's algorithms.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": DAPGPolicy,
        "CnnPolicy": CnnDAPGPolicy,
        "MultiInputPolicy": MultiInputDAPGPolicy,
    }
    policy: DAPGPolicy

    def __init__(
        self,
        policy: str | type[DAPGPolicy],
        env: GymEnv | str,
        demos: Any = None,
        n_trajectories: int = 100,
        learning_rate: float | Schedule = 1e-3,
        step_size: float = 0.05,
        gamma: float = 0.995,
        gae_lambda: float = 0.97,
        lam0: float = 1e-2,
        lam1: float = 0.95,
        demo_weight: str = "mjrl",
        bc_epochs: int = 5,
        bc_batch_size: int = 32,
        bc_lr: float = 1e-3,
        cg_iters: int = 10,
        cg_damping: float = 1e-4,
        hvp_sample_frac: float = 1.0,
        vf_epochs: int = 2,
        vf_batch_size: int = 64,
        input_scale_floor: float = 1e-3,
        feature_batch_size: int = 256,
        overlap: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        # types, ranges, finiteness, choices: one message naming the argument (seed: episode i of iteration k uses
        # seed + k * n_trajectories + i, so it must be an integer >= 0)
        check_dapg_args(locals())
        seed = None if seed is None else int(seed)  # a numpy integer passes the check; Python's random.seed refuses it
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=1,  # unused: DAPG samples whole episodes
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,
            vf_coef=0.0,
            max_grad_norm=0.0,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box,),
        )
        if self.env is not None:
            check_vec_env(self.env)  # before any work: VecNormalize & co. would be bypassed by the episode sampler
        self.n_trajectories = int(n_trajectories)
        self.step_size = step_size
        self.lam0 = lam0
        self.lam1 = lam1
        self.demo_weight = demo_weight
        self.bc_epochs = bc_epochs
        self.bc_batch_size = bc_batch_size
        self.bc_lr = bc_lr
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.hvp_sample_frac = hvp_sample_frac
        self.vf_epochs = vf_epochs
        self.vf_batch_size = vf_batch_size
        self.input_scale_floor = input_scale_floor
        self.feature_batch_size = feature_batch_size
        self.overlap = overlap
        self.dapg_iterations = 0  # k in the demo-weight schedule
        self.bc_done = False
        self.bc_loss = float("nan")
        self.demos: list[Trajectory] = []
        self.demos_attached = 0
        self.last_timings: dict[str, float] = {}
        self._paths: list[_Path] = []
        self._demo_features: th.Tensor | None = None
        self._demo_features_version: tuple[int, ...] = ()
        self._pending_demos = demos
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.rollout_buffer = None  # type: ignore[assignment]
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        if not isinstance(self.policy, DAPGPolicy):
            raise TypeError(f"DAPG needs a DAPGPolicy, got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        pending = getattr(self, "_pending_demos", None)
        self._pending_demos = None
        self._paths = []
        self._demo_features = None
        if pending is not None:
            self.set_demonstrations(pending)

    def set_demonstrations(self, demos: Any) -> None:
        """Attach demonstrations (also after :meth:`load`, since they are not saved with the model).

        ``demos``: trajectories in any format :func:`~hindex_sb3.demos.to_trajectories` reads, or a source name as
        ``hindex train --demos`` takes it (a ``.npz`` / DAPG ``.pickle`` path, ``minari:ID``, ``expert:FILE.npz``,
        ``scripted``), resolved for this model's env by :func:`~hindex_sb3.demos.resolve.load_demonstrations`. State
        demonstrations given to a pixel env are re-rendered in it from their start states.
        """
        trajectories = self._resolve_demos(demos)
        check_compatible(trajectories, self.observation_space, self.action_space)
        self.demos = trajectories
        self.demos_attached = len(trajectories)  # saved with the model, unlike the demonstrations themselves
        self._demo_features = None

    def _resolve_demos(self, demos: Any) -> list[Trajectory]:
        """Named sources, and state demos for a pixel env, go through the resolver with this env's id and kwargs."""
        named = is_named_source(demos)
        trajectories = [] if named else to_trajectories(demos)
        if not named and not self._state_demos_for_pixels(trajectories):
            return trajectories
        env_id, env_kwargs = self._env_spec()
        keys = list(self.observation_space.spaces) if isinstance(self.observation_space, spaces.Dict) else None
        return load_demonstrations(
            demos if named else trajectories,
            env_id,
            seed=self.seed or 0,
            env_kwargs=env_kwargs,
            pixel_keys=keys,
        )

    def _state_demos_for_pixels(self, trajectories: list[Trajectory]) -> bool:
        """Flat observation vectors for an env that observes images (``Dict`` with pixels, or an image ``Box``)."""
        if not trajectories or isinstance(trajectories[0].observations, dict):
            return False
        space = self.observation_space
        image_box = isinstance(space, spaces.Box) and len(space.shape) == 3
        return (isinstance(space, spaces.Dict) or image_box) and trajectories[0].observations.ndim == 2

    def _env_spec(self) -> tuple[str | None, dict[str, Any]]:
        """The registered id and ``gym.make`` kwargs of the training env (what the demo resolver needs)."""
        spec = None
        if self.env is not None:
            try:
                spec = self.env.get_attr("spec", indices=[0])[0]
            except AttributeError:
                spec = None
        if spec is None:
            return None, {}
        kwargs = dict(spec.kwargs or {})
        if spec.max_episode_steps is not None:
            kwargs.setdefault("max_episode_steps", spec.max_episode_steps)
        return spec.id, kwargs

    def _excluded_save_params(self) -> list[str]:
        # last_timings: wall times of the last iteration, meaningless in another process
        return [
            *super()._excluded_save_params(),
            "demos",
            "_paths",
            "_demo_features",
            "_pending_demos",
            "last_timings",
        ]

    # ------------------------------------------------------------------ features
    def _obs_to_tensor(self, obs: Any) -> Any:
        return obs_as_tensor(obs, self.device)

    def _encode(self, obs: Any) -> th.Tensor:
        """Features of a batch of (numpy) observations, in chunks, without gradients or statistics updates.

        The policy goes to eval mode first: a BatchNorm in train mode would fold these observations into its
        running statistics (SB3 builds policies in train mode, and behaviour cloning runs before any rollout).
        """
        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        self.policy.set_training_mode(False)
        chunks = []
        with th.no_grad():
            for start in range(0, n, self.feature_batch_size):
                part = _index_obs(obs, slice(start, start + self.feature_batch_size))
                chunks.append(self.policy.features(self._obs_to_tensor(part)))
        return th.cat(chunks)

    def _demo_batch(self) -> tuple[Any, th.Tensor]:
        obs, actions = stack_transitions(self.demos)
        return obs, th.as_tensor(actions, dtype=th.float32, device=self.device)

    def _frozen_demo_features(self) -> th.Tensor:
        """Demo features under the encoder's *current* statistics (re-encoded whenever EMA-BN moved them)."""
        version = self._extractor_stats_version()
        if self._demo_features is None or version != self._demo_features_version:
            obs, _ = self._demo_batch()
            self._demo_features = self._encode(obs)
            if self._extractor_stats_version() != version:
                raise RuntimeError("encoding the demonstrations changed the feature extractor's statistics")
            self._demo_features_version = version
        return self._demo_features

    def _extractor_stats_version(self) -> tuple[int, ...]:
        """Changes whenever a normalisation statistic of the extractor does (EMA-BN update, load_state_dict...).

        Read from every layer with running statistics: ``num_batches_tracked`` and the in-place version counters
        of ``running_mean`` / ``running_var`` (the latter also catch a copy that leaves the count unchanged).
        """
        version: list[int] = []
        for module in all_modules(self.policy.features_extractor):
            count = getattr(module, "num_batches_tracked", None)
            if not isinstance(count, th.Tensor):
                continue
            version.append(int(count))
            for name in ("running_mean", "running_var"):
                stat = getattr(module, name, None)
                if isinstance(stat, th.Tensor):
                    version.append(stat._version)
        return tuple(version)

    # ------------------------------------------------------------------ behaviour cloning
    def pretrain_bc(self) -> float:
        """mjrl's BC: set input/output normalisation from the demos, MSE on the mean action, log-std from the demos.

        Returns the final epoch's mean loss.
        """
        if not self.demos:
            raise ValueError("behaviour cloning needs demonstrations (pass demos=... or call set_demonstrations)")
        policy = self.policy
        _, actions = self._demo_batch()
        features = self._frozen_demo_features() if policy.extractor_is_frozen() else None
        if features is not None:
            self._set_normalisation(features, actions)
        else:
            obs, _ = self._demo_batch()
            self._set_normalisation(self._encode(obs), actions)
        params = policy.actor_parameters()
        optimizer = th.optim.Adam(params, lr=self.bc_lr)
        n = len(actions)
        epoch_loss = float("nan")
        for epoch in range(self.bc_epochs):
            losses = []
            for _ in range(max(n // self.bc_batch_size, 1)):
                idx = th.as_tensor(np.random.randint(0, n, size=self.bc_batch_size), device=self.device)
                if features is not None:
                    mean = policy.mean_from_features(features[idx])
                else:
                    obs, _ = self._demo_batch()
                    batch_obs = self._obs_to_tensor(_index_obs(obs, idx.cpu().numpy()))
                    mean = policy.mean_from_features(policy.features(batch_obs))
                loss = th.mean((mean - actions[idx]) ** 2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            epoch_loss = float(np.mean(losses))
            _log.log(logging.INFO if self.verbose else logging.DEBUG, "BC epoch %d: loss %.5f", epoch, epoch_loss)
        with th.no_grad():
            policy.log_std.copy_(th.log(actions.std(dim=0, unbiased=False) + 1e-12))
        policy.clamp_log_std()
        self.bc_done = True
        self.bc_loss = epoch_loss
        if getattr(self, "_logger", None) is not None:
            self.logger.record("train/bc_loss", epoch_loss)
        return epoch_loss

    def _set_normalisation(self, features: th.Tensor, actions: th.Tensor) -> None:
        p = self.policy
        with th.no_grad():
            p.in_shift.copy_(features.mean(dim=0))
            p.in_scale.copy_(features.std(dim=0, unbiased=False).clamp(min=self.input_scale_floor))
            p.out_shift.copy_(actions.mean(dim=0))
            p.out_scale.copy_(actions.std(dim=0, unbiased=False))

    # ------------------------------------------------------------------ learning loop
    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if self.demos and self.bc_epochs > 0 and not self.bc_done:
            self.pretrain_bc()
        return total_timesteps, callback

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any, n_rollout_steps: int) -> bool:
        """Sample exactly ``n_trajectories`` complete, individually seeded episodes (see :mod:`.rollout`).

        Each env runs one episode at a time; when it finishes, the env starts the next unassigned episode, or rests
        if none is left. The paths are kept in episode order, so the update does not depend on which env ran what.
        With ``overlap`` (and envs in worker processes) the envs run as two groups in flight, see
        :meth:`_overlapped_steps`.
        """
        self.policy.set_training_mode(False)
        runner = EpisodeRunner(env)
        schedule = iter(self._episode_schedule())
        running: dict[int, _RunningEpisode] = {}
        paths: list[_Path | None] = [None] * self.n_trajectories
        n_used = min(runner.num_envs, self.n_trajectories)
        self._start_episodes(runner, running, schedule, range(n_used))
        groups = _env_groups(n_used, self.overlap and runner.can_overlap, runner.envs_per_worker)
        self._last_obs = self._batch_obs(running, groups[0])  # the first action's input (the EMA-BN callback arms it)
        callback.on_rollout_start()
        self.last_timings = {"rollout": 0.0, "policy_forward": 0.0}
        start = time.perf_counter()
        steps = (
            self._overlapped_steps(runner, running, schedule, paths, groups)
            if len(groups) > 1
            else self._lockstep_steps(runner, running, schedule, paths)
        )
        for step in steps:
            callback.update_locals(step)
            if not callback.on_step():
                return False
            self._update_info_buffer(step["infos"], step["dones"])
            if step["new_obs"] is not None:
                self._last_obs = step["new_obs"]
        self._paths = [p for p in paths if p is not None]
        self.last_timings["rollout"] = time.perf_counter() - start
        callback.on_rollout_end()
        return True

    def _lockstep_steps(
        self, runner: EpisodeRunner, running: dict[int, _RunningEpisode], schedule: Any, paths: list[_Path | None]
    ) -> Iterator[dict[str, Any]]:
        """Every running env steps, then all are encoded as one batch for the next step."""
        while running:
            active = sorted(running)
            obs_batch = self._last_obs
            actions, clipped, features = self._act(obs_batch, running, active)
            results = runner.step({j: clipped[r] for r, j in enumerate(active)})
            yield self._absorb(runner, running, schedule, paths, (active, obs_batch, actions, features), results)

    def _overlapped_steps(
        self,
        runner: EpisodeRunner,
        running: dict[int, _RunningEpisode],
        schedule: Any,
        paths: list[_Path | None],
        groups: list[list[int]],
    ) -> Iterator[dict[str, Any]]:
        """Two groups of envs in flight: while one group's workers step and render, this process encodes the other.

        The encodes keep the lockstep order (step t of the first group's envs, then of the second's, then step t + 1
        ...), episodes go to envs in the same order, and each episode keeps its seeds and noise stream, so the
        frames and actions are those of lockstep sampling (bit-identical on the CPU without EMA-BN updates; with
        them the statistics are carried between half batches in float32, a rounding-level difference). Each group's
        step is one callback step, whose ``new_obs`` is that group's next batch: the next thing encoded.
        """
        in_flight: dict[int, tuple] = {}
        armed = []
        for g, envs in enumerate(groups):
            obs_batch = self._batch_obs(running, envs)
            if g == 1:  # the EMA-BN callback armed group 0's first batch at rollout start; arm group 1's alike
                for extractor in armed:
                    extractor.arm_bn_update(obs_batch)
            else:
                armed = [m for m in self.policy.modules() if getattr(m, "is_armed", False)]
            in_flight[g] = self._act_and_send(runner, running, envs, obs_batch)
        while in_flight:
            for g, envs in enumerate(groups):
                if g not in in_flight:
                    continue
                sent = in_flight.pop(g)
                step = self._absorb(runner, running, schedule, paths, sent, runner.step_recv(sent[0]), envs)
                yield step
                if step["new_obs"] is not None:
                    in_flight[g] = self._act_and_send(runner, running, envs, step["new_obs"])

    def _act_and_send(
        self, runner: EpisodeRunner, running: dict[int, _RunningEpisode], envs: list[int], obs_batch: Any
    ) -> tuple:
        active = [j for j in envs if j in running]
        actions, clipped, features = self._act(obs_batch, running, active)
        runner.step_send({j: clipped[r] for r, j in enumerate(active)})
        return active, obs_batch, actions, features

    def _act(
        self, obs_batch: Any, running: dict[int, _RunningEpisode], active: list[int]
    ) -> tuple[np.ndarray, np.ndarray, th.Tensor]:
        """Sampled actions (and clipped to the action space) and features of the ``active`` envs' observations."""
        tic = time.perf_counter()
        actions, features = self._sample_actions(obs_batch, [running[j] for j in active])
        self.last_timings["policy_forward"] += time.perf_counter() - tic
        return actions, np.clip(actions, self.action_space.low, self.action_space.high), features

    def _absorb(
        self,
        runner: EpisodeRunner,
        running: dict[int, _RunningEpisode],
        schedule: Any,
        paths: list[_Path | None],
        sent: tuple,
        results: dict[int, tuple],
        next_envs: list[int] | None = None,
    ) -> dict[str, Any]:
        """Record a step of the ``sent`` envs; finished episodes become paths and free their env for the next one.

        Returns the step as SB3 callbacks read it, for the envs stepped (``env_indices``; see :class:`DAPG`);
        ``new_obs`` is the next batch to encode, of ``next_envs`` or of all running envs, ``None`` when none is left.
        """
        active, obs_batch, actions, features = sent
        keep_features = self.policy.extractor_is_frozen()
        self.num_timesteps += len(active)
        finished = []
        for r, j in enumerate(active):
            obs, reward, terminated, truncated, _ = results[j]
            episode = running[j]
            episode.record(features[r] if keep_features else _index_obs(obs_batch, r), actions[r], reward)
            if terminated or truncated:
                paths[episode.seed.index] = episode.finish(terminated, keep_features)
                del running[j]
                finished.append(j)
            else:
                episode.obs = obs
        self._start_episodes(runner, running, schedule, finished)
        left = [j for j in (next_envs if next_envs is not None else sorted(running)) if j in running]
        return {
            "env_indices": np.array(active),
            "actions": actions,
            "rewards": np.array([results[j][1] for j in active]),
            "dones": np.array([j in finished for j in active]),
            "infos": [results[j][4] for j in active],
            "new_obs": self._batch_obs(running, left) if left else None,
        }

    def _episode_schedule(self) -> list[EpisodeSeed]:
        """This iteration's episodes (mjrl: env seeds ``seed + k * N + i``; an unseeded run draws a fresh base)."""
        seed = self.seed if self.seed is not None else int(np.random.randint(0, 2**31 - 1))
        return episode_seeds(seed, self.dapg_iterations, self.n_trajectories)

    def _start_episodes(
        self, runner: EpisodeRunner, running: dict[int, _RunningEpisode], schedule: Any, envs: Any
    ) -> None:
        """Give each env in ``envs`` the next episode of the schedule (envs left over when it is exhausted rest)."""
        assigned = {}
        for j in envs:
            seed = next(schedule, None)
            if seed is None:
                break
            assigned[j] = seed
        if not assigned:
            return
        first = runner.reset({j: s.env_seed for j, s in assigned.items()})
        for j, seed in assigned.items():
            running[j] = _RunningEpisode(seed, noise_generator(seed.noise_seed), first[j])

    @staticmethod
    def _batch_obs(running: dict[int, _RunningEpisode], envs: list[int] | None = None) -> Any:
        """The current observations of ``envs`` (default: every running env), in env order."""
        return _stack_obs([running[j].obs for j in (sorted(running) if envs is None else envs) if j in running])

    def _sample_actions(self, obs_batch: Any, episodes: list[_RunningEpisode]) -> tuple[np.ndarray, th.Tensor]:
        """Stochastic actions for a batch of envs: mean + std * noise, each row's noise from its episode's stream.

        On the CPU the mean is computed row by row: a batched matmul there rounds differently with the batch size
        (measured: up to 2e-7 on a 256-256 MLP), and an episode must not depend on which other episodes happen to run
        beside it. (The batched encoder gave bit-identical features at batch sizes 1-5 in our CPU tests, ResNet-50
        included.) On a GPU, where neither is batch-invariant anyway, the head runs batched.
        """
        policy = self.policy
        with th.no_grad():
            features = policy.features(self._obs_to_tensor(obs_batch))
            if features.device.type == "cpu":
                means = th.cat([policy.mean_from_features(features[r : r + 1]) for r in range(len(episodes))])
            else:
                means = policy.mean_from_features(features)
            noise = th.stack([th.randn(means.shape[1], generator=e.noise) for e in episodes]).to(means.device)
            actions = means + th.exp(policy.log_std) * noise
        return actions.cpu().numpy(), features

    def _path_features(self, path: _Path) -> th.Tensor:
        if path.features is not None:
            return path.features
        return self._encode(_stack_obs(path.observations))

    def _path_features_grad(self, path: _Path) -> th.Tensor:
        return self.policy.features(self._obs_to_tensor(_stack_obs(path.observations)))

    # ------------------------------------------------------------------ the DAPG update
    def demo_weight_at(self, k: int, max_advantage: float = 1.0) -> float:
        """The demonstration weight at update ``k``: ``lam0 * lam1**k`` (times ``max A`` for ``"paper"``)."""
        w = self.lam0 * self.lam1**k
        return w * max_advantage if self.demo_weight == "paper" else w

    def train(self) -> None:
        start = time.perf_counter()
        self._train()
        self.last_timings["update"] = time.perf_counter() - start
        for key, value in self.last_timings.items():
            self.logger.record(f"time/{key}_s", value)

    def _train(self) -> None:
        """One DAPG iteration's update on the sampled paths: advantages, demo term, NPG step, then the baseline."""
        paths = self._paths
        if not paths:
            return
        batch = self._advantages(paths)
        weights, demo_actions = self._demo_term(batch.advantages)
        actions = batch.actions if demo_actions is None else th.cat([batch.actions, demo_actions])
        inputs = _UpdateInputs(self, paths, batch.features, with_demos=demo_actions is not None)
        stats = self._npg_step(inputs, actions, weights)
        self.dapg_iterations += 1
        vf_before, vf_after = self._fit_baseline(batch.features, batch.timesteps, batch.returns)
        for key, value in stats.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/dapg_iterations", self.dapg_iterations)
        self.logger.record("train/log_std_mean", self.policy.log_std.mean().item())
        self.logger.record("train/value_loss_before", vf_before)
        self.logger.record("train/value_loss", vf_after)
        self.logger.record("train/n_samples", len(batch.actions))
        self.logger.record("rollout/paths", len(paths))
        self.logger.record("rollout/path_return_mean", float(np.mean([p.rewards.sum() for p in paths])))
        self._paths = []

    def _advantages(self, paths: list[_Path]) -> _Batch:
        """GAE with the previous iteration's baseline, whitened as mjrl does; Monte-Carlo returns for the baseline."""
        policy = self.policy
        with th.no_grad():
            features = [self._path_features(p) for p in paths]
            timesteps = [th.arange(len(p.rewards), device=self.device) for p in paths]
            values = [policy.value_from_features(f, t).cpu().numpy() for f, t in zip(features, timesteps, strict=True)]
        advantages = np.concatenate(
            [
                gae_advantages(p.rewards, v, p.terminated, self.gamma, self.gae_lambda)
                for p, v in zip(paths, values, strict=True)
            ]
        )
        return _Batch(
            features=th.cat(features),
            actions=th.as_tensor(np.concatenate([p.actions for p in paths]), device=self.device),
            timesteps=th.cat(timesteps),
            returns=np.concatenate([discount_cumsum(p.rewards, self.gamma) for p in paths]),
            advantages=(advantages - advantages.mean()) / (advantages.std() + 1e-6),
        )

    def _demo_term(self, adv: np.ndarray) -> tuple[th.Tensor, th.Tensor | None]:
        """Per-sample weights of the surrogate, on-policy samples then demo pairs (mjrl: ``1e-2 * [A/std, w_k]``).

        Returns the weights and the demo actions (``None`` without demonstrations or with ``lam0 = 0``: plain NPG).
        """
        if not self.demos or self.lam0 <= 0:
            return th.as_tensor(adv, dtype=th.float32, device=self.device), None
        w = self.demo_weight_at(self.dapg_iterations, float(adv.max()))
        _, demo_actions = self._demo_batch()
        weights = 1e-2 * np.concatenate([adv / (adv.std() + 1e-8), np.full(len(demo_actions), w)])
        self.logger.record("train/demo_weight", w)
        return th.as_tensor(weights, dtype=th.float32, device=self.device), demo_actions

    def _npg_step(self, inputs: _UpdateInputs, actions: th.Tensor, weights: th.Tensor) -> dict[str, float]:
        """One natural-gradient step ``theta += alpha F^-1 g`` (mjrl's NPG: CG solve, normalised step, no search).

        ``g`` is the surrogate gradient over on-policy and demo samples scaled by ``N_all / N_rl``; the Fisher uses
        the on-policy samples only. Returns the step's diagnostics (``npg_alpha`` is the step length alpha, not the
        normalised step size delta, which is logged as ``step_size_delta``).
        """
        policy, params, n_rl = self.policy, self.policy.actor_parameters(), inputs.n_rl
        with th.no_grad():
            old_mean = policy.mean_from_features(inputs.all())
            old_log_std = policy.log_std.detach().clone()
            old_log_prob = policy.action_dist.proba_distribution(old_mean, old_log_std).log_prob(actions)
            old_mean_rl = old_mean[:n_rl]

        def surrogate() -> th.Tensor:
            ratio = th.exp(policy.distribution_from_features(inputs.all()).log_prob(actions) - old_log_prob)
            return th.mean(ratio * weights)

        def fisher_vector_product(v: th.Tensor) -> th.Tensor:
            idx = self._hvp_subset(n_rl)
            kl = gaussian_kl(old_mean_rl[idx], old_log_std, policy.mean_from_features(inputs.rl()[idx]), policy.log_std)
            grad_kl = flat_grad(kl.mean(), params, create_graph=True)
            return flat_grad(th.dot(grad_kl, v), params) + self.cg_damping * v

        surrogate_before = surrogate()
        grad = flat_grad(surrogate_before, params) * (len(actions) / n_rl)
        direction, residual = conjugate_gradient(fisher_vector_product, grad, iters=self.cg_iters)
        alpha = npg_step_size(grad, direction, self.step_size)
        set_flat_params(params, get_flat_params(params) + alpha * direction)
        policy.clamp_log_std()
        with th.no_grad():
            new_mean = policy.mean_from_features(inputs.rl())
            kl_after = gaussian_kl(old_mean_rl, old_log_std, new_mean, policy.log_std).mean().item()
            surrogate_after = surrogate().item()
        grad_norm = float(th.linalg.vector_norm(grad))
        return {
            "npg_alpha": alpha,
            "step_size_delta": self.step_size,
            "kl": kl_after,
            "cg_residual": residual / max(grad_norm, 1e-20),
            "grad_norm": grad_norm,
            "surrogate_improvement": surrogate_after - surrogate_before.item(),
        }

    def _hvp_subset(self, n_rl: int) -> th.Tensor | slice:
        """mjrl draws a fresh subset (with replacement) of on-policy samples for every Fisher-vector product."""
        if self.hvp_sample_frac >= 1.0:
            return slice(None)
        size = max(int(self.hvp_sample_frac * n_rl), 1)
        return th.as_tensor(np.random.choice(n_rl, size=size), device=self.device)

    def _fit_baseline(self, features: th.Tensor, timesteps: th.Tensor, returns: np.ndarray) -> tuple[float, float]:
        """mjrl's MLPBaseline.fit: Adam, minibatches of a permutation, ``int(N / batch) - 1`` per epoch."""
        policy = self.policy
        self._update_learning_rate(policy.optimizer)
        targets = th.as_tensor(returns, dtype=th.float32, device=self.device)
        with th.no_grad():
            loss_before = th.mean((policy.value_from_features(features, timesteps) - targets) ** 2).item()
        n = len(targets)
        for _ in range(self.vf_epochs):
            perm = th.as_tensor(np.random.permutation(n), device=self.device)
            for mb in range(max(n // self.vf_batch_size - 1, 1)):
                idx = perm[mb * self.vf_batch_size : (mb + 1) * self.vf_batch_size]
                loss = th.mean((policy.value_from_features(features[idx], timesteps[idx]) - targets[idx]) ** 2)
                policy.optimizer.zero_grad()
                loss.backward()
                policy.optimizer.step()
        with th.no_grad():
            loss_after = th.mean((policy.value_from_features(features, timesteps) - targets) ** 2).item()
        return loss_before, loss_after

    def learn(
        self: SelfDAPG,
        total_timesteps: int | None = None,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "DAPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
        n_iterations: int | None = None,
    ) -> SelfDAPG:
        """Run DAPG iterations (rollout of ``n_trajectories`` episodes, update) until a budget is spent.

        :param total_timesteps: stop once this many env steps were taken (SB3's budget; an iteration always
            finishes its episodes, so the last one may overshoot)
        :param n_iterations: stop after this many DAPG updates (the natural budget of DAPG); with both, whichever
            comes first. The progress bar then counts iterations.
        :param callback: SB3 callbacks; :class:`~hindex_sb3.dapg.callbacks.IterationCallback` ones are also called
            after each update (before and after the iteration's log row is written).
        :param log_interval: write a log row every this many iterations; each row holds the ``train/*`` values of
            the update just made (SB3 writes its row before ``train()``, so the last update's values were lost).
        """
        if total_timesteps is None and n_iterations is None:
            raise ValueError("learn() needs total_timesteps or n_iterations")
        for name, value in (("total_timesteps", total_timesteps), ("n_iterations", n_iterations)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.lam0 > 0 and not self.demos and self.demos_attached:
            warnings.warn(
                f"this model learned with {self.demos_attached} demonstrations, which a saved model does not hold: "
                "call set_demonstrations(...) to keep the demo term, or this learn() is plain NPG",
                UserWarning,
                stacklevel=2,
            )
        steps_given = total_timesteps is not None
        budget = int(total_timesteps) if steps_given else _NO_STEP_LIMIT
        callbacks = _learn_callbacks(callback, progress_bar, n_iterations)
        # SB3's name for the absolute step target, which callbacks read from these locals (the progress bar does)
        total_timesteps, cb = self._setup_learn(budget, callbacks or None, reset_num_timesteps, tb_log_name, False)
        cb.on_training_start(locals(), globals())
        assert self.env is not None
        done = 0
        while self.num_timesteps < total_timesteps and (n_iterations is None or done < n_iterations):
            if not self.collect_rollouts(self.env, cb, self.rollout_buffer, n_rollout_steps=self.n_steps):
                break
            done += 1
            if n_iterations is not None and not steps_given:
                self._current_progress_remaining = 1.0 - done / max(int(n_iterations), 1)
            else:
                self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train()
            keep_going = iteration_end(cb)
            if log_interval is not None and done % log_interval == 0:
                self.dump_logs(self.dapg_iterations)
            iteration_logged(cb)
            if not keep_going:
                break
        cb.on_training_end()
        return self

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, refusing at once the ``VecEnvWrapper``s that :meth:`learn` would refuse."""
        if isinstance(env, VecEnv):
            check_vec_env(env)
        super().set_env(env, force_reset=force_reset)

    # ------------------------------------------------------------------ saving
    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's zip format, for SB3 tools. Loading such a zip runs pickled code (see :meth:`load`); for
        checkpoints that load without executing anything use :func:`hindex_sb3.runs.checkpoint.save_checkpoint`."""
        super().save(path, exclude=exclude, include=include)

    @classmethod
    def load(cls, path: Any, env: GymEnv | None = None, device: th.device | str = "auto", **kwargs: Any) -> Any:
        """Load an SB3 zip. **The zip's data are unpickled: a crafted file runs code.** Load only files you trust;
        ``hindex train`` checkpoints (``.safetensors``) load safely with
        :func:`hindex_sb3.runs.checkpoint.load_checkpoint`."""
        if str(path).endswith(".safetensors"):
            raise ValueError(
                f"{path} is a hindex-sb3 checkpoint, not an SB3 zip: load it with "
                "hindex_sb3.runs.checkpoint.load_checkpoint (it executes no code)"
            )
        return super().load(path, env=env, device=device, **kwargs)
