"""DAPG against reference computations: CG, the natural-gradient step, the demo schedule, BC, GAE, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from hindex_sb3.dapg import DAPG
from hindex_sb3.dapg.dapg import _Path
from hindex_sb3.dapg.npg import conjugate_gradient, discount_cumsum, gae_advantages, gaussian_kl


class LinearEnv(gym.Env):
    """A tiny continuous task: the reward prefers actions close to a fixed linear function of the state."""

    def __init__(self, obs_dim: int = 3, act_dim: int = 2, horizon: int = 20):
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1, 1, (act_dim,), np.float32)
        self.horizon = horizon
        self._target = np.linspace(-0.5, 0.5, obs_dim * act_dim).reshape(act_dim, obs_dim)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._obs = self.np_random.normal(size=self.observation_space.shape).astype(np.float32)
        return self._obs, {}

    def step(self, action):
        reward = -float(np.sum((action - self._target @ self._obs) ** 2))
        self._t += 1
        self._obs = self.np_random.normal(size=self.observation_space.shape).astype(np.float32)
        return self._obs, reward, False, self._t >= self.horizon, {"is_success": reward > -0.1}


def make_model(demos=None, **kwargs) -> DAPG:
    kwargs.setdefault("policy_kwargs", {"net_arch": [8, 8]})
    return DAPG("MlpPolicy", LinearEnv(), demos=demos, seed=0, device="cpu", **kwargs)


def linear_demos(n: int = 4, length: int = 30, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    env = LinearEnv()
    out = []
    for _ in range(n):
        obs = rng.normal(size=(length, 3)).astype(np.float32)
        out.append({"observations": obs, "actions": (obs @ env._target.T).astype(np.float32)})
    return out


def test_conjugate_gradient_matches_dense_solve():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(8, 8))
    a = th.tensor(m @ m.T + 0.5 * np.eye(8))
    b = th.tensor(rng.normal(size=8))
    x, residual = conjugate_gradient(lambda v: a @ v, b, iters=8)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a.numpy(), b.numpy()), rtol=1e-6, atol=1e-8)
    assert residual < 1e-6
    # fewer iterations than the dimension: not converged, and the residual says so
    _, partial = conjugate_gradient(lambda v: a @ v, b, iters=2)
    assert partial > 1e-3


def test_gaussian_kl_matches_closed_form():
    rng = np.random.default_rng(1)
    mo, mn = th.tensor(rng.normal(size=(5, 3))), th.tensor(rng.normal(size=(5, 3)))
    so, sn = th.tensor(rng.normal(size=3) * 0.3), th.tensor(rng.normal(size=3) * 0.3)
    ours = gaussian_kl(mo, so, mn, sn).numpy()
    var_o, var_n = np.exp(2 * so.numpy()), np.exp(2 * sn.numpy())
    exact = np.sum(
        np.log(np.sqrt(var_n) / np.sqrt(var_o)) + (var_o + (mo.numpy() - mn.numpy()) ** 2) / (2 * var_n) - 0.5, axis=1
    )
    np.testing.assert_allclose(ours, exact, rtol=1e-6)


def test_gae_and_returns_against_hand_computation():
    rewards = np.array([1.0, 0.0, 2.0])
    values = np.array([0.5, 0.2, 1.0])
    g, lam = 0.9, 0.8
    # truncated: bootstraps with the value of the last state
    d = [1.0 + g * 0.2 - 0.5, 0.0 + g * 1.0 - 0.2, 2.0 + g * 1.0 - 1.0]
    expected = [d[0] + g * lam * d[1] + (g * lam) ** 2 * d[2], d[1] + g * lam * d[2], d[2]]
    np.testing.assert_allclose(gae_advantages(rewards, values, False, g, lam), expected)
    d[2] = 2.0 - 1.0  # terminated: nothing after the last state
    expected = [d[0] + g * lam * d[1] + (g * lam) ** 2 * d[2], d[1] + g * lam * d[2], d[2]]
    np.testing.assert_allclose(gae_advantages(rewards, values, True, g, lam), expected)
    np.testing.assert_allclose(discount_cumsum(rewards, g), [1 + 0 + 0.81 * 2, 0 + 0.9 * 2, 2])


def test_demo_weight_schedule():
    model = make_model(demos=linear_demos(), lam0=1e-2, lam1=0.95, n_trajectories=4)
    assert [model.demo_weight_at(k) for k in range(3)] == pytest.approx([1e-2, 9.5e-3, 9.025e-3])
    paper = make_model(demos=linear_demos(), demo_weight="paper")
    assert paper.demo_weight_at(2, max_advantage=3.0) == pytest.approx(3.0 * 1e-2 * 0.95**2)
    # the schedule advances once per update, and the update logs it
    from hindex_sb3.dapg import IterationCallback

    logged = []

    class Spy(IterationCallback):  # the row is written after the update: read it before the dump
        def _on_iteration_end(self) -> bool:
            logged.append(self.logger.name_to_value["train/demo_weight"])
            return True

    model.learn(total_timesteps=1, progress_bar=False)
    model.learn(total_timesteps=1, reset_num_timesteps=False, callback=Spy())
    assert model.dapg_iterations == 2
    assert logged == pytest.approx([1e-2 * 0.95])


def test_bc_sets_normalisation_and_log_std_from_demos():
    demos = linear_demos()
    model = make_model(demos=demos, bc_epochs=200, input_scale_floor=0.0)
    obs = np.concatenate([d["observations"] for d in demos])
    acts = np.concatenate([d["actions"] for d in demos])
    before = th.mean((model.policy.mean_from_features(th.tensor(obs)) - th.tensor(acts)) ** 2).item()
    loss = model.pretrain_bc()
    p = model.policy
    np.testing.assert_allclose(p.in_shift.numpy(), obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(p.in_scale.numpy(), obs.std(0), rtol=1e-5)
    np.testing.assert_allclose(p.out_shift.numpy(), acts.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.out_scale.numpy(), acts.std(0), rtol=1e-5)
    np.testing.assert_allclose(p.log_std.detach().numpy(), np.maximum(np.log(acts.std(0) + 1e-12), -3), rtol=1e-5)
    assert model.bc_done and loss < before / 5


def test_bc_floors_constant_features_and_clamps_log_std():
    demos = linear_demos()
    for d in demos:
        d["observations"][:, 1] = 0.25  # constant in the demos
        d["actions"][:, 0] = 0.1  # no spread: log(0 + 1e-12) is clamped at -3
    model = make_model(demos=demos, bc_epochs=1, input_scale_floor=1e-3)
    model.pretrain_bc()
    assert model.policy.in_scale[1].item() == pytest.approx(1e-3)
    assert model.policy.log_std[0].item() == pytest.approx(-3.0)


def test_npg_step_equals_exact_natural_gradient_on_linear_gaussian_policy():
    """One DAPG update of a linear-Gaussian policy vs alpha * (F + damping)^-1 g with the analytic Fisher."""
    rng = np.random.default_rng(3)
    model = DAPG(
        "MlpPolicy",
        LinearEnv(),
        demos=linear_demos(n=2, length=10),
        policy_kwargs={"net_arch": []},  # mean = W x + b: a linear-Gaussian policy
        cg_iters=50,
        bc_epochs=0,
        seed=0,
        device="cpu",
    )
    p = model.policy
    with th.no_grad():  # a non-trivial starting point; zero baseline so advantages are known exactly
        p.mean_net[0].weight.copy_(th.tensor(rng.normal(size=(2, 3)) * 0.3))
        p.log_std.copy_(th.tensor([-0.2, 0.3]))
        for m in p.value_net:
            if isinstance(m, th.nn.Linear):
                m.weight.zero_()
                m.bias.zero_()
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))
    paths = []
    for terminated in (False, True):
        obs = rng.normal(size=(6, 3)).astype(np.float32)
        paths.append(
            _Path(
                th.tensor(obs),
                None,
                rng.normal(size=(6, 2)).astype(np.float32),
                rng.normal(size=6),
                terminated,
            )
        )
    model._paths = paths
    params = p.actor_parameters()
    theta0 = th.cat([q.detach().reshape(-1) for q in params]).double()
    # --- independent reference ---
    adv = np.concatenate([discount_cumsum(q.rewards, model.gamma * model.gae_lambda) for q in paths])
    adv = (adv - adv.mean()) / (adv.std() + 1e-6)
    demo_obs = np.concatenate([d["observations"] for d in linear_demos(n=2, length=10)])
    demo_act = np.concatenate([d["actions"] for d in linear_demos(n=2, length=10)])
    all_obs = th.tensor(np.concatenate([np.concatenate([q.features.numpy() for q in paths]), demo_obs]))
    all_act = th.tensor(np.concatenate([np.concatenate([q.actions for q in paths]), demo_act]))
    weights = 1e-2 * np.concatenate([adv / (adv.std() + 1e-8), np.full(len(demo_obs), 1e-2)])
    n_rl = 12
    log_prob = p.distribution_from_features(all_obs).log_prob(all_act)
    grads = th.autograd.grad((log_prob * th.tensor(weights, dtype=th.float32)).sum() / n_rl, params)
    g = th.cat([x.reshape(-1) for x in grads]).double()
    # analytic Fisher of mjrl's mean KL over the on-policy samples: mean block sum_n J^T diag(1/var) J / N, log-std 2I
    x_rl = all_obs[:n_rl].double().numpy()
    var = np.exp(2 * p.log_std.detach().double().numpy())
    n_w = 6
    fisher = np.zeros((10, 10))
    for x in x_rl:
        jac = np.zeros((2, 8))  # d mean / d (W row-major, b)
        for i in range(2):
            jac[i, i * 3 : i * 3 + 3] = x
            jac[i, n_w + i] = 1.0
        fisher[:8, :8] += jac.T @ np.diag(1 / (var + 0.5e-8)) @ jac / len(x_rl)
    fisher[8:, 8:] = 2 * np.eye(2)
    fisher += model.cg_damping * np.eye(10)
    direction = np.linalg.solve(fisher, g.numpy())
    alpha = np.sqrt(model.step_size / (g.numpy() @ direction))
    expected = theta0.numpy() + alpha * direction
    # --- the algorithm ---
    model.train()
    theta1 = th.cat([q.detach().reshape(-1) for q in params]).double().numpy()
    np.testing.assert_allclose(theta1, expected, rtol=2e-3, atol=2e-5)
    # to second order a normalised step gives KL = delta / 2 (a wrong step-size formula is off by 2x or more)
    assert model.logger.name_to_value["train/kl"] == pytest.approx(model.step_size / 2, rel=0.25)


def test_training_improves_and_logs_what_npg_debugging_needs():
    from hindex_sb3.dapg import IterationCallback

    rows = []

    class Spy(IterationCallback):  # each iteration's values, as its log row will hold them
        def _on_iteration_end(self) -> bool:
            rows.append(dict(self.logger.name_to_value))
            return True

    model = make_model(demos=linear_demos(), n_trajectories=8, bc_epochs=0)
    model.learn(n_iterations=6, callback=Spy())
    returns = [row["rollout/path_return_mean"] for row in rows]
    for key in ("train/cg_residual", "train/kl", "train/npg_alpha", "train/demo_weight", "train/value_loss"):
        assert key in rows[-1], key
    # alpha (the step length) and delta (the normalised step size) are different numbers with different names
    logged = rows[-1]
    assert "train/step_size" not in logged and logged["train/step_size_delta"] == model.step_size
    assert logged["train/npg_alpha"] != pytest.approx(model.step_size)
    assert returns[-1] > returns[0]


def test_demos_with_wrong_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"actions of shape \(3,\)"):
        make_model(demos=[{"observations": np.zeros((5, 3)), "actions": np.zeros((5, 3))}])
    with pytest.raises(ValueError, match=r"observations of shape \(4,\)"):
        make_model(demos=[{"observations": np.zeros((5, 4)), "actions": np.zeros((5, 2))}])
    with pytest.raises(ValueError, match="NaN"):
        make_model(demos=[{"observations": np.full((5, 3), np.nan), "actions": np.zeros((5, 2))}])
    with pytest.raises(ValueError, match="one observation per action"):
        make_model(demos=[{"observations": np.zeros((7, 3)), "actions": np.zeros((5, 2))}])
    with pytest.raises(ValueError, match="demonstrations"):
        make_model().pretrain_bc()


def test_save_load_round_trip(tmp_path):
    model = make_model(demos=linear_demos(), n_trajectories=4)
    model.learn(total_timesteps=1)
    path = tmp_path / "dapg.zip"
    model.save(path)
    loaded = DAPG.load(path, env=LinearEnv(), device="cpu")
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.dapg_iterations == 1 and loaded.bc_done
    for name in ("in_shift", "in_scale", "out_shift", "out_scale", "log_std"):
        assert th.equal(getattr(model.policy, name), getattr(loaded.policy, name))
    assert loaded.demos == []  # demonstrations are not stored in the zip; attach them again to resume DAPG
    loaded.set_demonstrations(linear_demos())
    loaded.learn(total_timesteps=1, reset_num_timesteps=False)
    assert loaded.dapg_iterations == 2


def test_pixel_observations_with_trainable_extractor():
    """MultiInputPolicy with SB3's CombinedExtractor (trainable CNN): observations are kept and re-encoded."""
    env = gym.make("HInDex/Door-v0", image_size=36, max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    demo_obs = {k: np.stack([v] * 5) for k, v in obs.items()}
    demos = [{"observations": demo_obs, "actions": np.zeros((5, 28), np.float32)}]
    model = DAPG("MultiInputPolicy", env, demos=demos, n_trajectories=2, bc_epochs=1, seed=0, device="cpu")
    assert not model.policy.extractor_is_frozen()
    model.learn(total_timesteps=1)
    assert model.dapg_iterations == 1 and np.isfinite(model.logger.name_to_value["train/kl"])
    env.close()


class FrozenBatchNorm(BaseFeaturesExtractor):
    """A frozen extractor with running statistics (stands in for an EMA-BN encoder): features = BN(obs)."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=int(observation_space.shape[0]))
        self.bn = th.nn.BatchNorm1d(self.features_dim)
        self.bn.requires_grad_(False)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.bn(observations)


def _bn_eval(bn: th.nn.BatchNorm1d, x: np.ndarray) -> np.ndarray:
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    return (x - mean) / np.sqrt(var + bn.eps) * bn.weight.detach().numpy() + bn.bias.detach().numpy()


def test_demo_features_follow_the_extractor_statistics_and_never_move_them():
    demos = linear_demos()
    model = make_model(
        demos=demos, n_trajectories=2, policy_kwargs={"net_arch": [8], "features_extractor_class": FrozenBatchNorm}
    )
    bn = model.policy.features_extractor.bn
    assert model.policy.extractor_is_frozen()
    demo_obs = np.concatenate([d["observations"] for d in demos])
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    model.pretrain_bc()  # SB3 builds the policy in train mode: encoding the demos must still not touch the stats
    assert all(th.equal(before[k], v) for k, v in bn.state_dict().items())
    np.testing.assert_allclose(model.policy.in_shift.numpy(), _bn_eval(bn, demo_obs).mean(0), rtol=1e-5, atol=1e-6)
    used = []
    npg_step = model._npg_step

    def spy(inputs, actions, weights):
        used.append(inputs.all()[inputs.n_rl :].clone())
        return npg_step(inputs, actions, weights)

    model._npg_step = spy
    with th.no_grad():  # what EMA-BN does during a rollout (hammer: m = 0.1)
        bn.running_mean.add_(0.5)
        bn.running_var.mul_(2.0)
        bn.num_batches_tracked.add_(1)
    model.learn(1)
    np.testing.assert_allclose(used[0].numpy(), _bn_eval(bn, demo_obs), rtol=1e-5, atol=1e-6)
    with th.no_grad():  # a load_state_dict-like copy that leaves the count as it was
        bn.running_mean.copy_(th.zeros(3))
    model.learn(1, reset_num_timesteps=False)
    np.testing.assert_allclose(used[1].numpy(), _bn_eval(bn, demo_obs), rtol=1e-5, atol=1e-6)
    assert len(used) == 2


@pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")
def test_ema_bn_run_re_encodes_the_demos_with_the_moved_statistics():
    """Hammer-like Stage 3 (m = 0.1): the demo term of each update sees features under that moment's statistics."""
    from stable_baselines3.common.logger import KVWriter, Logger
    from stable_baselines3.common.vec_env import DummyVecEnv
    from tiny_encoder import PixelEnv, tiny_policy_kwargs

    from hindex_sb3.callbacks import EMABatchNormCallback

    env = PixelEnv()
    frames = [env.reset(seed=100 + i)[0] for i in range(5)]
    demo_obs = {k: np.stack([f[k] for f in frames]) for k in frames[0]}
    demos = [{"observations": demo_obs, "actions": np.zeros((5, 2), np.float32)}]
    venv = DummyVecEnv([PixelEnv, PixelEnv])
    model = DAPG("MultiInputPolicy", venv, demos=demos, n_trajectories=3, policy_kwargs=tiny_policy_kwargs(), seed=0)
    ema = model.policy.features_extractor.encoder.ema_layers[0]
    used = []
    npg_step = model._npg_step

    def spy(inputs, actions, weights):
        used.append(inputs.all()[inputs.n_rl :].clone())
        return npg_step(inputs, actions, weights)

    model._npg_step = spy
    dumped = []

    class Capture(KVWriter):
        def write(self, key_values, key_excluded, step=0):
            dumped.append(dict(key_values))

    model.set_logger(Logger(None, [Capture()]))
    callback = EMABatchNormCallback(momentum=0.1)  # verbose=0: the update count is logged all the same
    for k in range(2):
        stats_before = ema.running_mean.clone()
        model.learn(1, callback=callback, reset_num_timesteps=k == 0)
        assert not th.equal(stats_before, ema.running_mean)  # the rollout moved the statistics
        # 3 episodes of 6 steps on 2 envs: 12 batched forwards (18 frames); one update per batch or per frame
        assert dumped[-1]["ema_bn/updates"] in (12, 18)
        stats = {k: v.clone() for k, v in ema.state_dict().items()}
        current = model._encode(demo_obs)  # no update when encoding demos...
        assert all(th.equal(stats[k], v) for k, v in ema.state_dict().items())
        th.testing.assert_close(used[k], current, rtol=0, atol=0)  # ... and the update used exactly these


@pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")
def test_ema_bn_updates_are_logged_at_every_verbosity():
    from stable_baselines3.common.logger import KVWriter, Logger
    from tiny_encoder import PixelEnv, tiny_policy_kwargs

    from hindex_sb3.callbacks import EMABatchNormCallback

    dumped = []

    class Capture(KVWriter):
        def write(self, key_values, key_excluded, step=0):
            dumped.append(dict(key_values))

    model = DAPG("MultiInputPolicy", PixelEnv(), n_trajectories=2, policy_kwargs=tiny_policy_kwargs(), seed=0)
    model.set_logger(Logger(None, [Capture()]))
    model.learn(1, callback=EMABatchNormCallback(momentum=0.01, verbose=0))
    assert dumped[-1]["ema_bn/updates"] == 12  # two 6-step episodes on one env: one frame per forward
