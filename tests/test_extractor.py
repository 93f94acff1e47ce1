"""SB3 integration: the extractor, the policy_kwargs factories and the EMA-BN callback with PPO, A2C and SAC."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_checkpoints import frankmocap_checkpoint, random_resnet50_state, save

from hindex_sb3.callbacks import EMABatchNormCallback
from hindex_sb3.ema_bn import set_ema_momentum
from hindex_sb3.encoders import RandomWeightsWarning, WeightsUnavailableError, create_encoder
from hindex_sb3.extractor import HIndexExtractor, baseline_extractor, hindex_extractor, paper_policy_kwargs

ALGOS = {"ppo": PPO, "a2c": A2C, "sac": SAC}


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")


@pytest.fixture(scope="module")
def hand_ckpt(tmp_path_factory) -> Path:
    """A synthetic FrankMocap checkpoint in the official layout (stands in for pose_shape_best.pth)."""
    return save(frankmocap_checkpoint(random_resnet50_state(seed=7)), tmp_path_factory.mktemp("w") / "hand.pth")


class TinyPixelEnv(gym.Env):
    """Random 3x32x32 frames + 5-d proprio, episodes truncated after 6 steps (exercises terminal observations)."""

    def __init__(self, image_size: int = 32, channel_last: bool = False, proprio: bool = True) -> None:
        shape = (image_size, image_size, 3) if channel_last else (3, image_size, image_size)
        pixels = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = (
            gym.spaces.Dict({"pixels": pixels, "proprio": gym.spaces.Box(-1, 1, (5,), np.float32)})
            if proprio
            else pixels
        )
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self._t = 0

    def _obs(self):
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # reproducible frames across identically seeded copies (auto-resets pass no seed)
            self.observation_space.seed(seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), float(np.sum(action)), False, self._t >= 6, {}


def _encoder_params(extractor: HIndexExtractor) -> dict[str, torch.Tensor]:
    """On the CPU, whatever device SB3 chose ("auto" is CUDA where there is one), to compare with references."""
    return {k: v.detach().cpu().clone() for k, v in extractor.encoder.named_parameters()}


def _bn_buffers(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.cpu().clone() for k, v in encoder.named_buffers() if "running" in k or "num_batches" in k}


# ---------------------------------------------------------------------------------------------------------------------
# Factories


def test_factories_return_fresh_policy_kwargs_for_each_algorithm_family(hand_ckpt):
    a, b = hindex_extractor(hand_ckpt), hindex_extractor(hand_ckpt)
    assert a == b and a is not b and a["features_extractor_kwargs"] is not b["features_extractor_kwargs"]
    a["features_extractor_kwargs"]["weights"] = "changed"
    assert hindex_extractor(hand_ckpt)["features_extractor_kwargs"]["weights"] == str(hand_ckpt)
    assert a["features_extractor_class"] is HIndexExtractor and "ortho_init" not in a  # one dict for every algorithm
    assert a["net_arch"] == [256, 256] and a["activation_fn"] is torch.nn.Tanh
    for off in ("sac", SAC):
        kw = hindex_extractor(algo=off)
        assert "ortho_init" not in kw and kw["net_arch"] == [256, 256] and kw["share_features_extractor"]
    for on in ("ppo", PPO, "dapg"):
        assert hindex_extractor(algo=on)["ortho_init"] is False  # mjrl's head initialisation, on request
    assert baseline_extractor("vc1")["features_extractor_kwargs"]["encoder"] == "vc1"
    assert hindex_extractor(share_features_extractor=False)["share_features_extractor"] is False
    assert paper_policy_kwargs("trpo")["ortho_init"] is False
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_extractor("hindex")
    with pytest.raises(ValueError, match="unknown algorithm"):
        hindex_extractor(algo="ppo2")
    # paper_policy_kwargs is public on its own (VecEncode users call it): it checks what the factories check
    with pytest.raises(TypeError, match="hidden must be a sequence of layer sizes"):
        paper_policy_kwargs("ppo", hidden="ab")  # net_arch ['a', 'b'] before
    with pytest.raises(ValueError, match=r"hidden\[0\] must be >= 1"):
        paper_policy_kwargs("ppo", hidden=(0, -1))
    with pytest.raises(ValueError, match="at least one layer"):
        paper_policy_kwargs("ppo", hidden=())
    with pytest.raises(TypeError, match="algo must be an algorithm name or an SB3 algorithm class"):
        paper_policy_kwargs(5)  # AttributeError: 'int' object has no attribute 'lower'
    assert paper_policy_kwargs(None, hidden=(np.int64(64),))["net_arch"] == [64]


# ---------------------------------------------------------------------------------------------------------------------
# Extractor


def test_extractor_features_are_encoder_features_then_proprio(hand_ckpt):
    env = TinyPixelEnv()
    ext = HIndexExtractor(env.observation_space, weights=str(hand_ckpt))
    assert ext.features_dim == 2048 + 5
    obs = {k: torch.as_tensor(np.stack([env.observation_space.sample()[k] for _ in range(2)])) for k in ("pixels",)}
    obs["proprio"] = torch.randn(2, 5)
    feats = ext({"pixels": obs["pixels"].float() / 255, "proprio": obs["proprio"]})  # as SB3 hands them over
    reference = create_encoder("hindex", weights=hand_ckpt)(obs["pixels"])
    torch.testing.assert_close(feats[:, :2048], reference)
    torch.testing.assert_close(feats[:, 2048:], obs["proprio"])
    box = HIndexExtractor(TinyPixelEnv(proprio=False).observation_space, weights=str(hand_ckpt))
    assert box.features_dim == 2048
    torch.testing.assert_close(box(obs["pixels"].float() / 255), reference)


def test_wrong_observation_spaces_are_refused():
    img = gym.spaces.Box(0, 255, (3, 32, 32), np.uint8)
    cases = {
        "no 'pixels' key": gym.spaces.Dict({"image": img}),
        "unsupported observation keys": gym.spaces.Dict({"pixels": img, "depth": img}),
        "channel-first": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
        "VecNormalize": gym.spaces.Box(-10.0, 10.0, (3, 32, 32), np.float32),
        "uint8 image": gym.spaces.Box(0, 255, (3, 32, 32), np.int16),
        "stacked RGB frames": gym.spaces.Box(0, 255, (1, 32, 32), np.uint8),
        "must be a Box": gym.spaces.Dict({"pixels": img, "proprio": gym.spaces.Discrete(3)}),
        "needs a Box image": gym.spaces.Discrete(4),
    }
    for message, space in cases.items():
        with pytest.raises(ValueError, match=message):
            HIndexExtractor(space, weights=None)


def test_ortho_init_train_mode_and_gradient_updates_leave_the_encoder_untouched(hand_ckpt):
    env = DummyVecEnv([TinyPixelEnv])
    kwargs = hindex_extractor(hand_ckpt, ortho_init=True)  # even if a user turns SB3's re-initialisation back on
    model = PPO("MultiInputPolicy", env, n_steps=4, batch_size=4, n_epochs=2, policy_kwargs=kwargs, device="cpu")
    ext = model.policy.features_extractor
    reference = create_encoder("hindex", weights=hand_ckpt).state_dict()
    assert all(torch.equal(reference[k], v) for k, v in ext.encoder.state_dict().items())
    model.policy.set_training_mode(True)
    assert not any(m.training for m in ext.encoder.modules())
    model.learn(8)  # two rollouts and two gradient epochs each, without the EMA callback
    assert all(torch.equal(reference[k], v) for k, v in ext.encoder.state_dict().items())


# ---------------------------------------------------------------------------------------------------------------------
# EMA-BN callback


class _RecordStepObs(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def _on_step(self) -> bool:
        self.batches.append(self.locals["obs_tensor"]["pixels"].clone())
        return True


@pytest.mark.parametrize(
    "cuda_graphs",
    [False, pytest.param(True, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_callback_updates_once_per_step_exactly_like_a_replay(hand_ckpt, cuda_graphs):
    """Also with the encoder replayed as CUDA graphs: the same updates as an eager replay of the step batches."""
    env = DummyVecEnv([TinyPixelEnv, TinyPixelEnv])
    kwargs = hindex_extractor(hand_ckpt, cuda_graphs=cuda_graphs)
    model = PPO("MultiInputPolicy", env, n_steps=4, batch_size=8, n_epochs=1, policy_kwargs=kwargs)
    spy, ema = _RecordStepObs(), EMABatchNormCallback(momentum=0.1)
    evaluation = EvalCallback(DummyVecEnv([TinyPixelEnv]), n_eval_episodes=1, eval_freq=5, warn=False, verbose=0)
    model.learn(16, callback=CallbackList([ema, spy, evaluation]))  # 2 rollouts x 4 steps x 2 envs
    assert len(spy.batches) == 8 and np.isfinite(evaluation.last_mean_reward)  # an evaluation ran
    ext = model.policy.features_extractor
    device = next(ext.encoder.parameters()).device
    replay = create_encoder("hindex", weights=hand_ckpt, ema_scope="all", ema_momentum=0.1, device=device)
    start = int(replay.backbone.bn1.num_batches_tracked)  # the checkpoint's counter
    # one update per frame: 8 step batches x 2 envs, no evaluation or bootstrap updates
    assert {int(bn.num_batches_tracked) - start for bn in ext.encoder.ema_layers} == {16}
    for batch in spy.batches:
        replay(batch, update_bn_stats=True)
    for (name, got), want in zip(_bn_buffers(ext.encoder).items(), _bn_buffers(replay).values(), strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_callback_needs_ema_layers():
    env = DummyVecEnv([TinyPixelEnv])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = PPO("MultiInputPolicy", env, n_steps=4, policy_kwargs=baseline_extractor("rrl", None))
    with pytest.raises(ValueError, match="no HIndexExtractor with EMA-BN"):
        model.learn(4, callback=EMABatchNormCallback(momentum=0.01))
    with pytest.raises(ValueError, match=r"momentum must be <= 1.0, got 2.0"):
        EMABatchNormCallback(momentum=2.0)
    for bad in (True, "0.1", None):  # True would have meant m = 1, the string was parsed
        with pytest.raises(TypeError, match="momentum must be a real number"):
            EMABatchNormCallback(momentum=bad)
    with pytest.raises(ValueError, match="momentum must be finite"):
        EMABatchNormCallback(momentum=float("nan"))
    with pytest.raises(ValueError, match="verbose must be >= 0"):
        EMABatchNormCallback(momentum=0.1, verbose=-1)


# ---------------------------------------------------------------------------------------------------------------------
# PPO / A2C / SAC on a HInDex pixel environment


def _make_model(algo: str, hand_ckpt: Path, n_steps: int):
    env = make_vec_env("HInDex/Door-v0", n_envs=1, env_kwargs={"image_size": 64}, seed=0)
    kwargs = hindex_extractor(hand_ckpt, algo=algo)
    if algo == "ppo":
        return PPO("MultiInputPolicy", env, n_steps=n_steps, batch_size=n_steps, n_epochs=1, policy_kwargs=kwargs)
    if algo == "a2c":
        return A2C("MultiInputPolicy", env, n_steps=max(n_steps // 4, 2), policy_kwargs=kwargs)
    return SAC(
        "MultiInputPolicy", env, buffer_size=1_000, learning_starts=n_steps, batch_size=4, train_freq=n_steps // 2,
        policy_kwargs=kwargs,
    )  # fmt: skip


def _run_and_check(algo: str, hand_ckpt: Path, tmp_path: Path, n_steps: int, total: int) -> None:
    model = _make_model(algo, hand_ckpt, n_steps)
    ext = model.policy.actor.features_extractor if algo == "sac" else model.policy.features_extractor
    reference = create_encoder("hindex", weights=hand_ckpt)
    expected = dict(reference.named_parameters())
    assert all(torch.equal(expected[k], v) for k, v in _encoder_params(ext).items()), "changed by construction"
    callback = EMABatchNormCallback(momentum=0.01)
    model.learn(total, callback=callback)
    assert all(torch.equal(expected[k], v) for k, v in _encoder_params(ext).items()), "changed by training"
    updates = total - n_steps if algo == "sac" else total  # SAC's warm-up actions are random: no forward
    assert callback.num_updates == updates
    adapted, frozen = ext.encoder.backbone.layer2[0].bn1, reference.backbone.layer2[0].bn1
    assert not torch.equal(adapted.running_mean.cpu(), frozen.running_mean)  # the statistics followed the observations

    path = tmp_path / f"{algo}.zip"
    model.save(path)
    loaded = ALGOS[algo].load(path, device=model.device)
    saved, restored = model.policy.state_dict(), loaded.policy.state_dict()
    assert set(saved) == set(restored) and all(torch.equal(saved[k], restored[k]) for k in saved)
    obs = model.env.reset()
    np.testing.assert_allclose(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac"])
def test_algorithms_train_save_and_load_fast(algo, hand_ckpt, tmp_path):
    _run_and_check(algo, hand_ckpt, tmp_path, n_steps=8, total=16)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac"])
def test_algorithms_run_a_few_hundred_steps(algo, hand_ckpt, tmp_path):
    _run_and_check(algo, hand_ckpt, tmp_path, n_steps=100, total=300)


def test_saved_model_loads_offline_without_the_weight_file(hand_ckpt, tmp_path):
    local = shutil.copy(hand_ckpt, tmp_path / "hand.pth")
    model = PPO("MultiInputPolicy", DummyVecEnv([TinyPixelEnv]), n_steps=4, policy_kwargs=hindex_extractor(local))
    model.save(tmp_path / "m.zip")
    Path(local).unlink()  # another machine: neither the path nor the cache has the file, and we are offline
    with pytest.warns(RandomWeightsWarning, match="unavailable"):
        loaded = PPO.load(tmp_path / "m.zip", env=DummyVecEnv([TinyPixelEnv]))
    obs = loaded.env.reset()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    with pytest.warns(RandomWeightsWarning):
        fresh = PPO("MultiInputPolicy", DummyVecEnv([TinyPixelEnv]), n_steps=4, policy_kwargs=hindex_extractor(local))
    with pytest.raises(WeightsUnavailableError, match=r"hand\.pth does not exist"):
        fresh.learn(4)  # never silently trains on random features


def test_dapg_gets_one_update_per_step_and_a_frozen_encoder(hand_ckpt):
    from hindex_sb3.dapg import DAPG

    kwargs = hindex_extractor(hand_ckpt, algo="dapg")
    model = DAPG("MultiInputPolicy", DummyVecEnv([TinyPixelEnv]), n_trajectories=2, policy_kwargs=kwargs)
    ext = model.policy.features_extractor
    expected = dict(create_encoder("hindex", weights=hand_ckpt).named_parameters())
    callback = EMABatchNormCallback(momentum=0.01)
    model.learn(12, callback=callback)  # one iteration: two 6-step episodes, then BC-free NPG and value updates
    assert model.num_timesteps == 12 and callback.num_updates == 12
    assert all(torch.equal(expected[k], v) for k, v in _encoder_params(ext).items())


def test_an_armed_update_is_one_shot_and_only_for_the_announced_no_grad_batch(hand_ckpt):
    space = TinyPixelEnv(proprio=False).observation_space
    ext = HIndexExtractor(space, weights=str(hand_ckpt))
    set_ema_momentum(ext.encoder, 0.1)
    step = np.stack([space.sample() for _ in range(2)])
    other = np.stack([space.sample() for _ in range(2)])
    count = lambda: int(ext.encoder.backbone.bn1.num_batches_tracked)  # noqa: E731
    start = count()
    as_sb3 = lambda a: torch.as_tensor(a).float() / 255.0  # noqa: E731
    ext.arm_bn_update(step)
    ext(as_sb3(step))  # grad enabled: a gradient update, never a statistics update
    with torch.no_grad():
        ext(as_sb3(other))  # e.g. an evaluation episode or a bootstrap value
    assert count() == start
    with torch.no_grad():
        ext(as_sb3(step))
        ext(as_sb3(step))
    assert count() == start + 2  # one update per frame of the announced batch
