"""VecEncode: features computed once per step in the VecEnv, EMA-BN there, and the rollout memory it saves."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_checkpoints import frankmocap_checkpoint, random_resnet50_state, save
from test_extractor import TinyPixelEnv
from tiny_encoder import NAME as TINY

from hindex_sb3.encoders import RandomWeightsWarning, create_encoder
from hindex_sb3.extractor import paper_policy_kwargs
from hindex_sb3.vec_encode import VecEncode


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")


@pytest.fixture(scope="module")
def hand_ckpt(tmp_path_factory):
    return save(frankmocap_checkpoint(random_resnet50_state(seed=11)), tmp_path_factory.mktemp("w") / "hand.pth")


def _venv(n: int = 2, **kwargs) -> DummyVecEnv:
    venv = DummyVecEnv([lambda: TinyPixelEnv(**kwargs) for _ in range(n)])
    venv.seed(0)
    return venv


def _expected(encoder, raw: dict) -> np.ndarray:
    feats = encoder(torch.as_tensor(raw["pixels"])).numpy()
    return np.concatenate([feats, raw["proprio"].reshape(len(feats), -1)], axis=1)


def test_observations_and_terminal_observations_are_encoded(hand_ckpt):
    reference = create_encoder("hindex", weights=hand_ckpt)
    raw, venv = _venv(), VecEncode(_venv(), "hindex", hand_ckpt, device="cpu")
    assert venv.observation_space == gym.spaces.Box(-np.inf, np.inf, (2048 + 5,), np.float32)
    obs = venv.reset()
    np.testing.assert_allclose(obs, _expected(reference, raw.reset()), rtol=1e-5, atol=1e-5)
    actions = np.zeros((2, 2), np.float32)
    for _ in range(6):  # the 6th step truncates both episodes
        obs, _, dones, infos = venv.step(actions)
        raw_obs, _, _, raw_infos = raw.step(actions)
    assert dones.all()
    np.testing.assert_allclose(obs, _expected(reference, raw_obs), rtol=1e-5, atol=1e-5)  # auto-reset frames
    for info, raw_info in zip(infos, raw_infos, strict=True):
        terminal = {k: v[None] for k, v in raw_info["terminal_observation"].items()}
        np.testing.assert_allclose(
            info["terminal_observation"], _expected(reference, terminal)[0], rtol=1e-5, atol=1e-5
        )


def test_channel_last_pixels_and_dict_output(hand_ckpt):
    reference = create_encoder("hindex", weights=hand_ckpt)
    raw, venv = _venv(channel_last=True), VecEncode(_venv(channel_last=True), reference, flatten=False, device="cpu")
    assert set(venv.observation_space.spaces) == {"features", "proprio"}
    obs, raw_obs = venv.reset(), raw.reset()
    expected = reference(torch.as_tensor(raw_obs["pixels"]).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(obs["features"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(obs["proprio"], raw_obs["proprio"])


@pytest.mark.parametrize(("ema_update", "per_batch"), [("frame", 2), ("batch", 1)])
def test_ema_updates_once_per_frame_and_not_for_eval_or_terminal_frames(hand_ckpt, ema_update, per_batch):
    """Default: one update per env frame (2 envs: 2 per step); ``ema_update="batch"``: one per step batch."""
    train = VecEncode(
        _venv(), "hindex", hand_ckpt, ema_momentum=0.05, ema_scope="all", ema_update=ema_update, device="cpu"
    )
    evaluation = VecEncode(_venv(1), train.encoder, update_stats=False, device="cpu")
    count = lambda: int(train.encoder.backbone.layer1[0].bn2.num_batches_tracked)  # noqa: E731
    start = count()
    train.reset()
    for _ in range(7):  # includes one step with two terminal observations
        train.step(np.zeros((2, 2), np.float32))
    assert count() - start == 8 * per_batch
    before = train.encoder.backbone.bn1.running_mean.clone()
    evaluation.reset()
    evaluation.step(np.zeros((1, 2), np.float32))
    assert count() - start == 8 * per_batch and torch.equal(before, train.encoder.backbone.bn1.running_mean)


def test_rollout_memory_per_transition_features_vs_pixels():
    act = gym.spaces.Box(-1, 1, (28,), np.float32)
    pixels = gym.spaces.Dict(
        {"pixels": gym.spaces.Box(0, 255, (3, 224, 224), np.uint8), "proprio": gym.spaces.Box(-1, 1, (24,), np.float32)}
    )
    features = gym.spaces.Box(-np.inf, np.inf, (2048 + 24,), np.float32)

    def per_transition(buffer) -> float:
        arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
        arrays += [a for v in vars(buffer).values() if isinstance(v, dict) for a in v.values() if hasattr(a, "nbytes")]
        return sum(a.nbytes for a in arrays) / (buffer.buffer_size * buffer.n_envs)

    pix = per_transition(DictRolloutBuffer(16, pixels, act, device="cpu", n_envs=2))
    feat = per_transition(RolloutBuffer(16, features, act, device="cpu", n_envs=2))
    assert 150_528 < pix < 151_500 and 8_288 <= feat < 8_600 and pix / feat > 17


def test_ppo_on_features_and_encoder_state_round_trip(hand_ckpt, tmp_path):
    venv = VecEncode(_venv(), "hindex", hand_ckpt, ema_momentum=0.1, device="cpu")
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, policy_kwargs=paper_policy_kwargs("ppo"))
    model.learn(8)
    assert model.rollout_buffer.observations.shape == (8, 2053)  # 4 steps x 2 envs of features, no pixels
    venv.save_encoder(tmp_path / "enc.pt")
    other = VecEncode(_venv(), "hindex", hand_ckpt, ema_momentum=0.1, device="cpu")
    assert not torch.equal(other.encoder.backbone.bn1.running_var, venv.encoder.backbone.bn1.running_var)
    other.load_encoder(tmp_path / "enc.pt")
    state, restored = venv.encoder.state_dict(), other.encoder.state_dict()
    assert all(torch.equal(state[k], restored[k]) for k in state)


def test_invalid_setups_are_refused():
    flat = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    with pytest.raises(ValueError, match="uint8 RGB image"):
        VecEncode(flat, "hindex", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with pytest.raises(ValueError, match="no BatchNorm"):
            VecEncode(_venv(1), "mvp", None, ema_momentum=0.1)
        frozen = create_encoder("hindex", None)
    with pytest.raises(ValueError, match="EMA-BN layers"):
        VecEncode(_venv(1), frozen, ema_momentum=0.1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"ema_momentum": float("nan")}, ValueError, "ema_momentum must be finite"),
        ({"ema_momentum": -0.5}, ValueError, "ema_momentum must be >= 0"),
        ({"ema_momentum": "0.1"}, TypeError, "ema_momentum must be a real number"),
        ({"ema_scope": "bogus"}, ValueError, "ema_scope must be one of"),  # refused even with EMA off
        ({"ema_update": "bogus"}, ValueError, "ema_update must be one of"),
        ({"flatten": "no"}, TypeError, "flatten must be True or False"),
        ({"update_stats": "no", "ema_momentum": 0.1}, TypeError, "update_stats must be True or False"),
        ({"cuda_graphs": "no"}, TypeError, "cuda_graphs must be True or False"),
        ({"channels_last": "no"}, TypeError, "channels_last must be True or False"),
        ({"device": None}, TypeError, "device must be a device name"),
        ({"device": "gpu"}, ValueError, "device 'gpu' is not a torch device"),
    ],
)
def test_vec_encode_checks_its_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        VecEncode(_venv(1), TINY, None, **kwargs)


def test_encode_update_flag_must_be_a_bool():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        venv = VecEncode(_venv(1), TINY, None, ema_momentum=0.5, update_stats=False)
    obs = venv.venv.reset()
    before = venv.encoder.ema_layers[0].running_mean.clone()
    with pytest.raises(TypeError, match="update_stats must be True or False"):
        venv.encode(obs, update_stats="no")
    assert torch.equal(venv.encoder.ema_layers[0].running_mean, before)


def test_encoder_options_share_one_check_of_the_update_mode():
    from hindex_sb3._validation import check_encoder_options

    with pytest.raises(ValueError, match="ema_update must be one of"):
        check_encoder_options(ema_update="per-frame")
    check_encoder_options(ema_update="batch")
