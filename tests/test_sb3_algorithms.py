"""One ``hindex_extractor()`` dict for every SB3 / sb3-contrib algorithm that takes a features extractor.

Each algorithm x {``CnnPolicy`` on image-only observations, ``MultiInputPolicy`` on pixels + proprio} runs a short
``learn()`` with the EMA-BN callback, then ``save``/``load`` and ``predict``. The encoder is a tiny BatchNorm ResNet
registered here (the plumbing is what is under test, not ResNet-50 on a CPU).
"""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize
from test_extractor import TinyPixelEnv
from torch import nn

from hindex_sb3.callbacks import EMABatchNormCallback
from hindex_sb3.encoders import EncoderSpec, RandomWeightsWarning, get_encoder_spec, register_encoder
from hindex_sb3.extractor import HIndexExtractor, baseline_extractor, hindex_extractor

sb3_contrib = pytest.importorskip("sb3_contrib")
from sb3_contrib import TQC, TRPO, CrossQ, RecurrentPPO  # noqa: E402
from sb3_contrib.crossq.policies import CrossQPolicy  # noqa: E402

TINY = "tiny_bn_resnet"
TINY_DIM = 8

pytestmark = pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning")


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class _TinyResNet(nn.Module):
    """ResNet layout in miniature (stem conv + ``bn1``, one residual block, pooled): EMA-BN "all" and "stem" apply."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, TINY_DIM, 3, stride=2, bias=False), nn.BatchNorm2d(TINY_DIM)
        self.layer1 = _Block(TINY_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(torch.relu(self.bn1(self.conv1(x)))).mean(dim=(2, 3))


register_encoder(
    EncoderSpec(
        name=TINY,
        feature_dim=TINY_DIM,
        weights=get_encoder_spec("hindex").weights,
        builder=_TinyResNet,
        input_size=16,
        resize=16,
        mean=None,
        std=None,
        description="tests only: a BatchNorm ResNet in miniature",
    ),
    overwrite=True,
)


def tiny_kwargs(baseline: str | None = None, **overrides) -> dict:
    """``hindex_extractor()`` (or ``baseline_extractor(baseline)``) as a user writes it, with the tiny encoder."""
    kwargs = baseline_extractor(baseline, None, **overrides) if baseline else hindex_extractor(None, **overrides)
    kwargs["features_extractor_kwargs"]["encoder"] = TINY
    return kwargs


# name -> (class, CnnPolicy name, MultiInputPolicy name, constructor keywords)
_OFF = {"buffer_size": 64, "learning_starts": 4, "batch_size": 4, "train_freq": 4, "gradient_steps": 1}
ALGOS = {
    "ppo": (PPO, "CnnPolicy", "MultiInputPolicy", {"n_steps": 8, "batch_size": 8, "n_epochs": 1}),
    "a2c": (A2C, "CnnPolicy", "MultiInputPolicy", {"n_steps": 4}),
    "trpo": (TRPO, "CnnPolicy", "MultiInputPolicy", {"n_steps": 8, "batch_size": 8, "cg_max_steps": 3}),
    "recurrentppo": (
        RecurrentPPO,
        "CnnLstmPolicy",
        "MultiInputLstmPolicy",
        {"n_steps": 8, "batch_size": 8, "n_epochs": 1},
    ),
    "sac": (SAC, "CnnPolicy", "MultiInputPolicy", _OFF),
    "td3": (TD3, "CnnPolicy", "MultiInputPolicy", _OFF),
    "ddpg": (DDPG, "CnnPolicy", "MultiInputPolicy", _OFF),
    "tqc": (TQC, "CnnPolicy", "MultiInputPolicy", {**_OFF, "top_quantiles_to_drop_per_net": 1}),
    # CrossQ registers only "MlpPolicy"; its policy class takes any observation space with a features extractor.
    "crossq": (CrossQ, CrossQPolicy, CrossQPolicy, _OFF),
}
TOTAL_STEPS = 16


def _extractors(model) -> list[HIndexExtractor]:
    unique = {id(m): m for m in model.policy.modules() if isinstance(m, HIndexExtractor)}
    return list(unique.values())


def _encoder_state(extractor: HIndexExtractor) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in extractor.encoder.state_dict().items()}


def _make(name: str, observation: str, policy_kwargs: dict | None = None, venv=None):
    cls, cnn_policy, dict_policy, kwargs = ALGOS[name]
    venv = venv or DummyVecEnv([lambda: TinyPixelEnv(image_size=20, proprio=observation == "dict")])
    policy = dict_policy if observation == "dict" else cnn_policy
    policy_kwargs = policy_kwargs or tiny_kwargs()
    if name == "recurrentppo":
        policy_kwargs["lstm_hidden_size"] = 16
    return cls(policy, venv, policy_kwargs=policy_kwargs, seed=0, device="cpu", **kwargs)


def _predict(model, obs):
    return model.predict(obs, deterministic=True)[0]


def _params(name: str) -> list:
    params = []
    for obs in ("rgb", "dict"):
        extra = []
        if name == "crossq" and obs == "dict":  # sb3-contrib 2.9: CrossQ.train does th.cat(observations)
            extra = [pytest.mark.skip(reason="CrossQ does not support Dict observations (sb3-contrib limitation)")]
        params.append(pytest.param(name, obs, marks=extra, id=f"{name}-{obs}"))
    return params


@pytest.mark.parametrize(("name", "observation"), [p for name in ALGOS for p in _params(name)])
def test_algorithm_learns_saves_loads_and_keeps_the_encoder_frozen(name, observation, tmp_path):
    model = _make(name, observation)
    extractors = _extractors(model)
    assert extractors and all(not list(e.parameters()) for e in extractors)  # the frozen encoder is not trainable
    before = _encoder_state(extractors[0])
    callback = EMABatchNormCallback(momentum=0.1)
    model.learn(TOTAL_STEPS, callback=callback)
    assert callback.num_updates > 0
    after = _encoder_state(extractors[0])
    for key, value in before.items():
        if "running_" in key or "num_batches" in key:
            continue
        assert torch.equal(value, after[key]), f"{key} changed by learn()"
    assert not torch.equal(before["backbone.bn1.running_mean"], after["backbone.bn1.running_mean"]), "EMA-BN idle"

    path = tmp_path / f"{name}.zip"
    model.save(path)
    loaded = type(model).load(path, device="cpu")
    saved, restored = model.policy.state_dict(), loaded.policy.state_dict()
    assert set(saved) == set(restored) and all(torch.equal(saved[k], restored[k]) for k in saved)
    assert any(k.endswith("encoder.backbone.bn1.running_mean") for k in saved)  # the adapted statistics travel
    obs = model.get_env().reset()
    np.testing.assert_allclose(_predict(model, obs), _predict(loaded, obs), rtol=1e-6, atol=1e-6)


def test_dapg_with_cnn_policy_on_image_only_observations(tmp_path):
    from hindex_sb3.dapg import DAPG

    venv = DummyVecEnv([lambda: TinyPixelEnv(image_size=20, proprio=False)])
    model = DAPG("CnnPolicy", venv, n_trajectories=2, policy_kwargs=tiny_kwargs(), seed=0, device="cpu")
    before = _encoder_state(model.policy.features_extractor)
    model.learn(12, callback=EMABatchNormCallback(momentum=0.1))
    after = _encoder_state(model.policy.features_extractor)
    assert torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    model.save(tmp_path / "dapg.zip")
    loaded = DAPG.load(tmp_path / "dapg.zip", device="cpu")
    obs = venv.reset()
    np.testing.assert_allclose(_predict(model, obs), _predict(loaded, obs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("baseline", [None, "rrl"])
def test_one_policy_kwargs_dict_serves_on_and_off_policy_algorithms(baseline):
    kwargs = tiny_kwargs(baseline)
    assert "ortho_init" not in kwargs and kwargs["net_arch"] == [256, 256]
    for name in ("trpo", "sac", "tqc"):  # the same dict object, unchanged by the previous algorithm
        model = _make(name, "dict", policy_kwargs=kwargs)
        model.learn(8)
    assert tiny_kwargs(baseline, algo="ppo")["ortho_init"] is False  # the paper's (mjrl's) head init, on request


@pytest.mark.parametrize("name", ["sac", "td3", "ppo"])
def test_separate_critic_extractors_follow_the_same_frames_as_the_actor(name):
    """``share_features_extractor=False``: SAC's and TD3's critics see only replay batches, never the action forward.

    Started from the actor's encoder state, every extractor must end with the actor's statistics (the same updates
    on the same frames), and each made one update per step taken after the random warm-up.
    """
    cls, _, policy, kwargs = ALGOS[name]
    venv = DummyVecEnv([lambda: TinyPixelEnv(image_size=20, proprio=True)] * 2)
    model = cls(policy, venv, policy_kwargs=tiny_kwargs(share_features_extractor=False), seed=0, device="cpu",
                **kwargs)  # fmt: skip
    extractors = _extractors(model)
    assert len(extractors) >= 2
    for extractor in extractors[1:]:
        extractor.encoder.load_state_dict(extractors[0].encoder.state_dict())
    callback = EMABatchNormCallback(momentum=0.1)
    model.learn(TOTAL_STEPS, callback=callback)
    warm_up = kwargs.get("learning_starts", 0) if name != "ppo" else 0
    assert callback.num_updates == TOTAL_STEPS - warm_up  # one update per frame
    reference = _encoder_state(extractors[0])
    for extractor in extractors[1:]:
        state = _encoder_state(extractor)
        for key in reference:
            if "running_" in key or "num_batches" in key:
                assert torch.equal(state[key], reference[key]), f"{key} of a critic's extractor"


def test_sac_target_critic_sees_no_frozen_parameters():
    """Polyak averaging walks critic.parameters(): the 25M frozen weights of a ResNet-50 must not be in there."""
    model = _make("sac", "dict")
    frozen = {id(p) for e in _extractors(model) for p in e.encoder.parameters()}
    assert frozen and not frozen & {id(p) for p in model.critic_target.parameters()}
    assert not frozen & {id(p) for p in model.policy.parameters()}


def test_state_dict_round_trip_and_device_moves_include_the_hidden_encoder():
    space = TinyPixelEnv(image_size=20).observation_space
    a = HIndexExtractor(space, encoder=TINY, weights=None)
    b = HIndexExtractor(space, encoder=TINY, weights=None)
    state = a.state_dict()
    assert {k for k in state if k.startswith("encoder.")} == {f"encoder.{k}" for k in a.encoder.state_dict()}
    assert not torch.equal(state["encoder.backbone.conv1.weight"], b.state_dict()["encoder.backbone.conv1.weight"])
    b.load_state_dict(state)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Missing key"):
        b.load_state_dict({k: v for k, v in state.items() if k != "encoder.backbone.conv1.weight"})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        b.load_state_dict({**state, "encoder.bogus": torch.zeros(1)})
    b.to(torch.float64)
    assert b.encoder.backbone.conv1.weight.dtype == torch.float64


# ---------------------------------------------------------------------------------------------------------------------
# Wrappers


@pytest.mark.parametrize("proprio", [False, True])
def test_frame_stacks_are_encoded_frame_by_frame(proprio):
    venv = VecFrameStack(DummyVecEnv([lambda: TinyPixelEnv(image_size=20, proprio=proprio)]), n_stack=3)
    pixels_space = venv.observation_space["pixels"] if proprio else venv.observation_space
    assert pixels_space.shape == (9, 20, 20)
    model = PPO("MultiInputPolicy" if proprio else "CnnPolicy", venv, n_steps=4, batch_size=4, n_epochs=1,
                policy_kwargs=tiny_kwargs(), device="cpu")  # fmt: skip
    ext = model.policy.features_extractor
    assert ext.n_frames == 3 and ext.features_dim == 3 * TINY_DIM + (15 if proprio else 0)
    obs = venv.reset()
    tensor, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        feats = model.policy.extract_features(tensor, ext)
    pixels = torch.as_tensor(obs["pixels"] if proprio else obs)
    for k in range(3):  # frame k of the stack -> features k * D ... (k + 1) * D
        torch.testing.assert_close(
            feats[:, k * TINY_DIM : (k + 1) * TINY_DIM], ext.encoder(pixels[:, 3 * k : 3 * k + 3])
        )
    model.learn(8, callback=EMABatchNormCallback(momentum=0.1))


def test_channel_counts_that_are_not_rgb_frames_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="3k, H, W"):
        HIndexExtractor(gym.spaces.Box(0, 255, (4, 32, 32), np.uint8), encoder=TINY, weights=None)
    with pytest.raises(ValueError, match="VecTransposeImage"):
        HIndexExtractor(gym.spaces.Box(0, 255, (32, 32, 3), np.uint8), encoder=TINY, weights=None)
    stacked = gym.wrappers.FrameStackObservation(TinyPixelEnv(image_size=20, proprio=False), 3)
    with pytest.raises(ValueError, match="stack frames with SB3's VecFrameStack"):
        HIndexExtractor(stacked.observation_space, encoder=TINY, weights=None)


def test_vec_normalize_on_pixels_names_the_fix_and_the_fix_works():
    def venv(proprio: bool = True):  # fresh each time: VecNormalize rewrites the wrapped env's Dict space in place
        return DummyVecEnv([lambda: TinyPixelEnv(image_size=20, proprio=proprio)])

    for policy, proprio in (("MultiInputPolicy", True), ("CnnPolicy", False)):
        with pytest.raises(ValueError, match=r"norm_obs_keys=\['proprio'\]"):
            PPO(policy, VecNormalize(venv(proprio)), n_steps=4, policy_kwargs=tiny_kwargs(), device="cpu")
    normalised = VecNormalize(venv(), norm_obs_keys=["proprio"])
    assert normalised.observation_space["pixels"].dtype == np.uint8
    model = PPO("MultiInputPolicy", normalised, n_steps=4, batch_size=4, n_epochs=1, policy_kwargs=tiny_kwargs())
    model.learn(4)
    assert normalised.obs_rms["proprio"].count > 1  # the proprioception was normalised


def test_cnn_policy_on_a_real_task_in_rgb_mode():
    """The README's first line, as an SB3 user writes it: PPO("CnnPolicy", gym.make(..., obs_mode="rgb"), ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        env = gym.make("HInDex/Door-v0", obs_mode="rgb", image_size=24)
        model = PPO("CnnPolicy", env, n_steps=4, batch_size=4, n_epochs=1, policy_kwargs=tiny_kwargs(), device="cpu")
    assert model.observation_space == gym.spaces.Box(0, 255, (3, 24, 24), np.uint8)  # no VecTransposeImage needed
    assert model.policy.features_extractor.features_dim == TINY_DIM
    model.learn(4)


def test_statistics_code_finds_the_hidden_encoders_batchnorm():
    """The encoder is outside ``modules()`` (for TRPO); EMA-BN helpers and DAPG's demo re-encoding must still see it."""
    from hindex_sb3.ema_bn import ema_bn_modules, set_ema_momentum

    model = _make("ppo", "rgb")
    layers = ema_bn_modules(model.policy)
    assert layers and set_ema_momentum(model.policy, 0.25) == len(layers)
    assert all(bn.momentum_ema == 0.25 for bn in model.policy.features_extractor.encoder.ema_layers)


def test_frame_stack_updates_the_statistics_once_per_new_frame():
    """Under VecFrameStack only the newest frame of a stack updates EMA-BN: one update per env frame, as unstacked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        extractor = HIndexExtractor(gym.spaces.Box(0, 255, (9, 20, 20), np.uint8), encoder=TINY, weights=None)
    ema = extractor.encoder.ema_layers[0]
    for bn in extractor.encoder.ema_layers:
        bn.momentum_ema = 0.1
    stack = torch.randint(0, 256, (2, 9, 20, 20), dtype=torch.uint8)
    reference = copy.deepcopy(extractor.encoder)
    with torch.no_grad():
        extractor.update_bn_stats(stack)
    assert int(ema.num_batches_tracked) == 2  # two envs, one new frame each
    with torch.no_grad():
        reference(stack[:, 6:], update_bn_stats=True)  # the same update from the newest frames alone
    torch.testing.assert_close(ema.running_mean, reference.ema_layers[0].running_mean, rtol=0, atol=0)
