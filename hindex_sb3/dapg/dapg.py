"""DAPG (Rajeswaran et al., 2018) as an SB3 on-policy algorithm, faithful to mjrl's implementation.

One iteration = sample ``n_trajectories`` complete episodes with the stochastic policy; compute GAE advantages with
the value baseline of the previous iteration; take one natural-gradient step on the demo-augmented surrogate; then fit
the baseline. Before the first iteration, behaviour cloning warm-starts the policy on the demonstrations.

Differences from SB3's usual on-policy loop, all of them mjrl's:

* rollouts are whole episodes, not ``n_steps`` slices: GAE bootstraps a truncated episode with the value of its last
  observed state, and the baseline regresses Monte-Carlo returns with the in-episode time as an input feature;
* with a frozen feature extractor (the H-InDex setting) rollouts keep the features, not the images (~8 KB instead of
  ~150 KB per 224x224 transition), and the update runs on those features;
* the Fisher matrix is estimated on the on-policy samples only; the demonstration term enters the gradient alone.

Unlike mjrl, input normalisation floors the demo feature std at ``input_scale_floor`` (a feature that is constant in
the demos would otherwise be divided by 1e-8); ``input_scale_floor=0`` restores the reference behaviour exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from hindex_sb3._validation import check_dapg_args
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
from hindex_sb3.demos.core import Trajectory, check_compatible, stack_transitions, to_trajectories

SelfDAPG = TypeVar("SelfDAPG", bound="DAPG")

MAX_PATH_LENGTH = 100_000


@dataclass
class _Path:
    """One completed episode as DAPG needs it."""

    features: th.Tensor | None  # (T, F) when the extractor is frozen
    observations: list[Any] | None  # raw observations otherwise
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    terminated: bool


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
    :param demos: demonstrations in any format :func:`hindex_sb3.demos.to_trajectories` reads; ``None`` gives NPG
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
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        check_dapg_args(locals())  # types, ranges, finiteness: one message naming the argument
        if demo_weight not in ("mjrl", "paper"):
            raise ValueError(f"demo_weight must be 'mjrl' or 'paper', got {demo_weight!r}")
        if n_trajectories < 1:
            raise ValueError("n_trajectories must be >= 1")
        if not 0.0 < hvp_sample_frac <= 1.0:
            raise ValueError("hvp_sample_frac must be in (0, 1]")
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
        self.n_trajectories = n_trajectories
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
        self.dapg_iterations = 0  # k in the demo-weight schedule
        self.bc_done = False
        self.bc_loss = float("nan")
        self.demos: list[Trajectory] = []
        self.last_timings: dict[str, float] = {}
        self._paths: list[_Path] = []
        self._demo_features: th.Tensor | None = None
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
        """Attach demonstrations (also after :meth:`load`, since they are not saved with the model)."""
        trajectories = to_trajectories(demos)
        check_compatible(trajectories, self.observation_space, self.action_space)
        self.demos = trajectories
        self._demo_features = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "demos", "_paths", "_demo_features", "_pending_demos"]

    # ------------------------------------------------------------------ features
    def _obs_to_tensor(self, obs: Any) -> Any:
        return obs_as_tensor(obs, self.device)

    def _encode(self, obs: Any) -> th.Tensor:
        """Features of a batch of (numpy) observations, in chunks, without gradients."""
        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
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
        if self._demo_features is None:
            obs, _ = self._demo_batch()
            self._demo_features = self._encode(obs)
        return self._demo_features

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
            if self.verbose:
                print(f"BC epoch {epoch}: loss {epoch_loss:.5f}")
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
        """Sample ``n_trajectories`` complete episodes with the stochastic policy."""
        self.policy.set_training_mode(False)
        keep_features = self.policy.extractor_is_frozen()
        n_envs = env.num_envs
        self._last_obs = env.reset()  # every iteration starts fresh episodes, as mjrl's sampler does
        self._last_episode_starts = np.ones((n_envs,), dtype=bool)
        buffers: list[dict[str, list]] = [self._empty_path_buffer() for _ in range(n_envs)]
        completed: list[_Path] = []
        callback.on_rollout_start()
        forward_time, start = 0.0, time.perf_counter()
        while len(completed) < self.n_trajectories:
            tic = time.perf_counter()
            with th.no_grad():
                obs_tensor = self._obs_to_tensor(self._last_obs)
                actions, features, log_probs = self.policy(obs_tensor)
            actions = actions.cpu().numpy()
            forward_time += time.perf_counter() - tic
            clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            log_probs_np = log_probs.cpu().numpy()
            for i in range(n_envs):
                buf = buffers[i]
                if keep_features:
                    buf["features"].append(features[i])
                else:
                    buf["obs"].append(_index_obs(self._last_obs, i))
                buf["actions"].append(actions[i])
                buf["log_probs"].append(log_probs_np[i])
                buf["rewards"].append(rewards[i])
                if len(buf["actions"]) > MAX_PATH_LENGTH:
                    raise RuntimeError(
                        f"an episode ran past {MAX_PATH_LENGTH} steps: DAPG samples whole episodes, so the env "
                        "must end them (wrap it in gymnasium.wrappers.TimeLimit)"
                    )
                if dones[i]:
                    truncated = bool(infos[i].get("TimeLimit.truncated", False))
                    completed.append(self._finish_path(buf, terminated=not truncated, keep_features=keep_features))
                    buffers[i] = self._empty_path_buffer()
            self._last_obs = new_obs
            self._last_episode_starts = dones
        self._paths = completed[: self.n_trajectories]
        self.last_timings = {"rollout": time.perf_counter() - start, "policy_forward": forward_time}
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    @staticmethod
    def _empty_path_buffer() -> dict[str, list]:
        return {"features": [], "obs": [], "actions": [], "log_probs": [], "rewards": []}

    @staticmethod
    def _finish_path(buf: dict[str, list], terminated: bool, keep_features: bool) -> _Path:
        return _Path(
            features=th.stack(buf["features"]) if keep_features else None,
            observations=None if keep_features else buf["obs"],
            actions=np.asarray(buf["actions"], dtype=np.float32),
            log_probs=np.asarray(buf["log_probs"], dtype=np.float64),
            rewards=np.asarray(buf["rewards"], dtype=np.float64),
            terminated=terminated,
        )

    def _path_features(self, path: _Path) -> th.Tensor:
        if path.features is not None:
            return path.features
        return self._encode(_stack_obs(path.observations))

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
        paths = self._paths
        if not paths:
            return
        policy = self.policy
        frozen = policy.extractor_is_frozen()
        with th.no_grad():
            path_features = [self._path_features(p) for p in paths]
            timesteps = [th.arange(len(p.rewards), device=self.device) for p in paths]
            values = [
                policy.value_from_features(f, t).cpu().numpy() for f, t in zip(path_features, timesteps, strict=True)
            ]
        advantages = np.concatenate(
            [
                gae_advantages(p.rewards, v, p.terminated, self.gamma, self.gae_lambda)
                for p, v in zip(paths, values, strict=True)
            ]
        )
        returns = np.concatenate([discount_cumsum(p.rewards, self.gamma) for p in paths])
        rl_features = th.cat(path_features)
        rl_actions = th.as_tensor(np.concatenate([p.actions for p in paths]), device=self.device)
        rl_times = th.cat(timesteps)
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-6)

        use_demos = bool(self.demos) and self.lam0 > 0
        if use_demos:
            w = self.demo_weight_at(self.dapg_iterations, float(adv.max()))
            demo_features = self._frozen_demo_features() if frozen else None
            _, demo_actions = self._demo_batch()
            n_demo = len(demo_actions)
            all_adv = 1e-2 * np.concatenate([adv / (adv.std() + 1e-8), np.full(n_demo, w)])
            self.logger.record("train/demo_weight", w)
        else:
            demo_features, demo_actions, n_demo = None, None, 0
            all_adv = adv
        all_adv_t = th.as_tensor(all_adv, dtype=th.float32, device=self.device)
        params = policy.actor_parameters()
        n_rl = len(rl_actions)

        def features_all() -> th.Tensor:
            if frozen:
                return rl_features if demo_features is None else th.cat([rl_features, demo_features])
            rl = th.cat([self._path_features_grad(p) for p in paths])
            if not use_demos:
                return rl
            obs, _ = self._demo_batch()
            return th.cat([rl, policy.features(self._obs_to_tensor(obs))])

        actions_all = rl_actions if not use_demos else th.cat([rl_actions, demo_actions])
        with th.no_grad():
            f_all = features_all()
            old_mean_all = policy.mean_from_features(f_all)
            old_log_std = policy.log_std.detach().clone()
            old_dist = policy.action_dist.proba_distribution(old_mean_all, old_log_std)
            old_log_prob = old_dist.log_prob(actions_all)
            old_mean_rl = old_mean_all[:n_rl]

        # Surrogate (CPI) gradient on on-policy + demo samples, scaled as mjrl: g = (N_all / N_rl) * grad mean(...)
        f_all = features_all()
        dist = policy.distribution_from_features(f_all)
        ratio = th.exp(dist.log_prob(actions_all) - old_log_prob)
        surrogate = th.mean(ratio * all_adv_t)
        grad = flat_grad(surrogate, params) * ((n_rl + n_demo) / n_rl)

        # Fisher-vector products on on-policy samples only
        def fisher_vector_product(v: th.Tensor) -> th.Tensor:
            if self.hvp_sample_frac < 1.0:
                idx = th.as_tensor(
                    np.random.choice(n_rl, size=max(int(self.hvp_sample_frac * n_rl), 1)), device=self.device
                )
            else:
                idx = slice(None)
            f_rl = rl_features[idx] if frozen else features_all()[:n_rl][idx]
            mean = policy.mean_from_features(f_rl)
            kl = gaussian_kl(old_mean_rl[idx], old_log_std, mean, policy.log_std).mean()
            grad_kl = flat_grad(kl, params, create_graph=True)
            return flat_grad(th.dot(grad_kl, v), params) + self.cg_damping * v

        direction, residual = conjugate_gradient(fisher_vector_product, grad, iters=self.cg_iters)
        alpha = npg_step_size(grad, direction, self.step_size)
        theta = get_flat_params(params)
        set_flat_params(params, theta + alpha * direction)
        policy.clamp_log_std()
        with th.no_grad():
            new_mean = policy.mean_from_features(rl_features if frozen else features_all()[:n_rl])
            kl_after = gaussian_kl(old_mean_rl, old_log_std, new_mean, policy.log_std).mean().item()
            surrogate_after = th.mean(
                th.exp(policy.distribution_from_features(features_all()).log_prob(actions_all) - old_log_prob)
                * all_adv_t
            ).item()
        self.dapg_iterations += 1

        vf_before, vf_after = self._fit_baseline(rl_features.detach(), rl_times, returns)

        grad_norm = float(th.linalg.vector_norm(grad))
        self.logger.record("train/dapg_iterations", self.dapg_iterations)
        self.logger.record("train/step_size", alpha)
        self.logger.record("train/kl", kl_after)
        self.logger.record("train/cg_residual", residual / max(grad_norm, 1e-20))
        self.logger.record("train/grad_norm", grad_norm)
        self.logger.record("train/surrogate_improvement", surrogate_after - surrogate.item())
        self.logger.record("train/log_std_mean", policy.log_std.mean().item())
        self.logger.record("train/value_loss_before", vf_before)
        self.logger.record("train/value_loss", vf_after)
        self.logger.record("train/n_samples", n_rl)
        self.logger.record("rollout/paths", len(paths))
        self.logger.record("rollout/path_return_mean", float(np.mean([p.rewards.sum() for p in paths])))
        self._paths = []

    def _path_features_grad(self, path: _Path) -> th.Tensor:
        return self.policy.features(self._obs_to_tensor(_stack_obs(path.observations)))

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
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "DAPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDAPG:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
