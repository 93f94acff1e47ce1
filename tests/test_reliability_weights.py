"""Hostile and damaged weight files, and encoder/extractor arguments (issue 11; docs/reliability.md)."""

from __future__ import annotations

import struct
import time
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_checkpoints import frankmocap_checkpoint, random_resnet50_state, save
from torch import nn

from hindex_sb3._validation import check_device
from hindex_sb3.encoders import CheckpointError, RandomWeightsWarning, create_encoder, registry
from hindex_sb3.encoders import weights as weights_module
from hindex_sb3.encoders.registry import EncoderSpec, register_encoder
from hindex_sb3.encoders.weights import WeightSpec, register_weights
from hindex_sb3.extractor import HIndexExtractor, baseline_extractor, hindex_extractor

TINY = "tiny_reliability"


def _tiny_trunk() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


_TINY_WEIGHTS = WeightSpec(
    name=TINY,
    url="http://127.0.0.1:9/tiny.pth",  # never reached: the tests run offline
    file_name="tiny_reliability.pth",
    key_layout="plain state_dict",
    converter=lambda ckpt: dict(ckpt),
)


@pytest.fixture(autouse=True, scope="module")
def _tiny_encoder_registered():
    """A 4-feature encoder for plumbing tests, registered only while this module runs (other modules list the
    registry and must see only the package's encoders)."""
    register_weights(_TINY_WEIGHTS, overwrite=True)
    register_encoder(
        EncoderSpec(
            name=TINY, feature_dim=4, weights=_TINY_WEIGHTS, builder=_tiny_trunk, input_size=16, resize=16,
            mean=None, std=None,
        ),
        overwrite=True,
    )  # fmt: skip
    yield
    registry._ENCODERS.pop(TINY, None)
    weights_module._WEIGHTS.pop(TINY, None)


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")


def _tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return _tiny_trunk().state_dict()


class _PixelEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (3, 16, 16), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _ppo(weights: str) -> PPO:
    kwargs = {
        "features_extractor_class": HIndexExtractor,
        "features_extractor_kwargs": {"encoder": TINY, "weights": weights},
    }
    return PPO("CnnPolicy", DummyVecEnv([_PixelEnv]), n_steps=4, batch_size=4, n_epochs=1, policy_kwargs=kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Non-finite weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_file_is_refused_naming_the_key(tmp_path, bad):
    state = _tiny_state()
    state["1.running_var"][2] = bad
    path = save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"'1\.running_var'.*NaN or infinite") as info:
        create_encoder(TINY, weights=path)
    assert str(path) in str(info.value)


def test_non_finite_frankmocap_checkpoint_is_refused_naming_the_first_bad_key(tmp_path):
    ckpt = frankmocap_checkpoint(random_resnet50_state(seed=3))
    ckpt["main_encoder.layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    ckpt["main_encoder.layer3.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    path = save(ckpt, tmp_path / "pose_shape_best.pth")
    with pytest.raises(CheckpointError, match=r"'layer2\.0\.conv1\.weight' contains 1 NaN"):
        create_encoder("hindex", weights=path)


def test_a_deflated_checkpoint_that_inflates_like_a_bomb_is_refused_from_its_zip_headers(tmp_path):
    plain = save({"0.weight": torch.zeros(20_000_000)}, tmp_path / "plain.pth")  # 80 MB, stored uncompressed
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 1_000_000
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"bomb\.pth: member .*would inflate .*decompression bomb"):
        create_encoder(TINY, weights=bomb)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(CheckpointError, match="does not match the module"):  # the honest file gets to the loader
        create_encoder(TINY, weights=plain)


def test_a_legacy_checkpoint_declaring_storages_beyond_its_size_is_refused_before_allocating(tmp_path):
    honest = tmp_path / "legacy.pth"
    torch.save(_tiny_state(), honest, _use_new_zipfile_serialization=False)  # the pre-1.6 format (FrankMocap era)
    assert create_encoder(TINY, weights=honest).weights_source == str(honest)
    crafted = tmp_path / "crafted.pth"
    torch.save({"0.weight": torch.zeros(12345)}, crafted, _use_new_zipfile_serialization=False)
    data = crafted.read_bytes()
    at = data.index(b"M" + struct.pack("<H", 12345))  # the storage's declared element count (BININT2)
    crafted.write_bytes(data[:at] + b"J" + struct.pack("<i", 2_000_000_000) + data[at + 3 :])  # -> 8 GB of float32
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"declares tensor storages of 2,000,000,000 elements but holds only"):
        create_encoder(TINY, weights=crafted)
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------------------------------
# A damaged cache must not stop a saved model from loading (the zip holds every encoder tensor)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_saved_model_loads_when_the_cached_weight_file_is_truncated(tmp_path):
    cached = _TINY_WEIGHTS.cache_path
    cached.parent.mkdir(parents=True, exist_ok=True)
    save(_tiny_state(seed=1), cached)
    model = _ppo("default")
    model.save(tmp_path / "m.zip")
    _truncate(cached)
    with pytest.warns(RandomWeightsWarning, match="unreadable"):
        loaded = PPO.load(tmp_path / "m.zip", env=DummyVecEnv([_PixelEnv]))
    obs = loaded.env.reset()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.policy.features_extractor.encoder.weights_source == "state_dict"


@pytest.mark.parametrize("damage", ["truncate", "nan", "other_network"])
def test_fresh_model_with_a_broken_cache_fails_at_its_first_forward_naming_the_file(damage):
    cached = _TINY_WEIGHTS.cache_path
    cached.parent.mkdir(parents=True, exist_ok=True)
    state = _tiny_state()
    if damage == "nan":
        state["0.weight"][0] = float("nan")
    if damage == "other_network":
        state = {"conv.weight": torch.zeros(2, 2)}
    save(state, cached)
    if damage == "truncate":
        _truncate(cached)
    with pytest.warns(RandomWeightsWarning, match="unavailable or unreadable"):
        fresh = _ppo("default")
    with pytest.raises(CheckpointError, match=r"tiny_reliability\.pth"):
        fresh.save(cached.parent / "fresh.zip")  # random features must not be saved as if trained
    assert not (cached.parent / "fresh.zip").exists()
    with pytest.raises(CheckpointError, match=r"tiny_reliability\.pth"):
        fresh.learn(4)
    with pytest.raises(CheckpointError, match=r"tiny_reliability\.pth"):  # raise=immediate for direct users
        create_encoder(TINY)


# ---------------------------------------------------------------------------------------------------------------------
# Encoder and extractor arguments


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"ema_momentum": float("nan")}, ValueError, "ema_momentum"),
        ({"ema_momentum": 1.5}, ValueError, "ema_momentum"),
        ({"ema_momentum": True}, TypeError, "ema_momentum"),
        ({"ema_momentum": "0.1"}, TypeError, "ema_momentum"),
        ({"ema_scope": "everything"}, ValueError, "ema_scope"),
        ({"ema_scope": ["all"]}, ValueError, "ema_scope"),
        ({"channels_last": "yes"}, TypeError, "channels_last"),
        ({"cuda_graphs": 1}, TypeError, "cuda_graphs"),
        ({"weights": 3}, TypeError, "weights"),
        ({"weights": ""}, ValueError, "weights"),
        ({"on_unavailable": "ignore"}, ValueError, "on_unavailable"),
        ({"device": "gpu0"}, ValueError, "device 'gpu0' is not a torch device"),
        ({"device": True}, TypeError, "device must be a device name"),
        ({"device": -1}, ValueError, "device must be >= 0"),
    ],
)
def test_create_encoder_checks_its_arguments_before_reading_any_file(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        create_encoder(TINY, **{"weights": None, **kwargs})


@pytest.mark.parametrize("form", [int, lambda i: f"cuda:{i}", lambda i: torch.device("cuda", i)])
def test_a_cuda_device_this_machine_lacks_is_refused_naming_it(form):
    """The next index past this machine's GPUs (0 without CUDA): refused here, not by torch at the first ``.to()``."""
    missing = form(torch.cuda.device_count())
    with pytest.raises(ValueError, match=r"device .*(CUDA is not available|CUDA device\(s\))"):
        check_device("device", missing)
    with pytest.raises(ValueError, match=r"device .*(CUDA is not available|CUDA device\(s\))"):
        create_encoder(TINY, weights=None, device=missing)


def test_create_encoder_name_must_be_a_string():
    with pytest.raises(TypeError, match="name must be a string"):
        create_encoder(["hindex"])


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"hidden": (256, 0)}, ValueError, r"hidden\[1\]"),
        ({"hidden": (256, True)}, TypeError, r"hidden\[1\]"),
        ({"hidden": ()}, ValueError, "hidden"),
        ({"hidden": "256"}, TypeError, "hidden"),
        ({"hidden": (10**9,)}, ValueError, r"hidden\[0\]"),
        ({"cuda_graphs": "false"}, TypeError, "cuda_graphs"),
        ({"channels_last": 0}, TypeError, "channels_last"),
        ({"pixels_key": 5}, TypeError, "pixels_key"),
        ({"weights": 1.0}, TypeError, "weights"),
    ],
)
def test_extractor_factories_check_their_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        hindex_extractor(**kwargs)
    with pytest.raises(exc, match=name):
        baseline_extractor("rrl", **kwargs)


def test_hindex_extractor_checks_ema_scope():
    with pytest.raises(ValueError, match="ema_scope"):
        hindex_extractor(ema_scope="al")


def test_valid_factory_arguments_still_pass():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kwargs = hindex_extractor(np.str_("x.pth"), hidden=[np.int64(64), 64], ema_scope="stem", channels_last=True)
    assert kwargs["features_extractor_kwargs"]["ema_scope"] == "stem"


@pytest.mark.parametrize(
    ("images", "exc", "match"),
    [
        (np.zeros((1, 3, 16, 16), np.uint8), TypeError, "images must be a torch.Tensor, got ndarray"),
        ([[1, 2]], TypeError, "images must be a torch.Tensor, got list"),
        (torch.zeros(1, 3, 1, 100_000, dtype=torch.uint8), ValueError, "aspect ratio must be at most 16:1"),
        (torch.zeros(1, 3, 0, 16, dtype=torch.uint8), ValueError, "images of 0x16 pixels"),
    ],
)
def test_encoder_input_is_checked_before_any_resize(images, exc, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        encoder = create_encoder(TINY, weights=None)
    with pytest.raises(exc, match=match):
        encoder(images)
    assert encoder(torch.zeros(2, 3, 16, 200, dtype=torch.uint8)).shape == (2, 4)  # 12.5:1 is fine


# ---------------------------------------------------------------------------------------------------------------------
# Encoder options, EMA settings and the registries: flags are bools, numbers are numbers


def _tiny(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_encoder(TINY, None, **kwargs)


def test_create_encoder_refuses_ema_settings_it_would_drop():
    with pytest.raises(ValueError, match="ema_update must be one of"):
        _tiny(ema_update="bogus")  # without ema_scope it used to be ignored
    with pytest.raises(ValueError, match=r"ema_momentum=0\.5 needs EMA-BN layers: pass ema_scope"):
        _tiny(ema_momentum=0.5)
    assert [bn.momentum_ema for bn in _tiny(ema_scope="all", ema_momentum=0.5).ema_layers] == [0.5]


def test_forward_update_flag_must_be_a_bool():
    encoder = _tiny(ema_scope="all", ema_momentum=0.5)
    before = encoder.ema_layers[0].running_mean.clone()
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match="update_bn_stats must be True or False"):
            encoder(x, update_bn_stats=bad)
    assert torch.equal(encoder.ema_layers[0].running_mean, before)  # "no" used to update the statistics
    with pytest.raises(TypeError, match="momentum must be a real number"):
        _tiny().enable_ema_bn("all", "0.4")


def test_encoder_feature_switches_must_be_bools():
    encoder = _tiny()
    with pytest.raises(TypeError, match="enabled must be True or False"):
        encoder.to_channels_last("no")
    with pytest.raises(TypeError, match="enabled must be True or False"):
        encoder.use_cuda_graphs("no")
    assert not encoder.channels_last and not encoder.cuda_graphs
    for bad, exc in (("4", TypeError), (True, TypeError), (0, ValueError)):
        with pytest.raises(exc, match="max_graphs"):
            encoder.use_cuda_graphs(True, max_graphs=bad)
    assert encoder.use_cuda_graphs(True, max_graphs=np.int64(2)).cuda_graphs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_float_images_of_any_precision_are_encoded_in_float32(dtype):
    encoder = _tiny()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = encoder(images.to(dtype).float())
    torch.testing.assert_close(encoder(images.to(dtype)), expected, rtol=0, atol=0)


def _spec(**kwargs) -> EncoderSpec:
    return EncoderSpec(**{"name": "spec_probe", "feature_dim": 4, "weights": None, "builder": _tiny_trunk, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"feature_dim": 4.0}, TypeError, "feature_dim must be an integer"),
        ({"feature_dim": True}, TypeError, "feature_dim must be an integer"),
        ({"feature_dim": 0}, ValueError, "feature_dim must be >= 1"),
        ({"resize": "32"}, TypeError, "resize must be an integer"),
        ({"resize": 0}, ValueError, "resize must be >= 1"),
        ({"input_size": -1}, ValueError, "input_size must be >= 1"),
        ({"interpolation": "nearest"}, ValueError, "interpolation must be one of"),
        ({"mean": (0.5, 0.5), "std": (1.0, 1.0)}, ValueError, "mean must have 3 values"),
        ({"mean": "0.5", "std": (1.0, 1.0, 1.0)}, TypeError, "mean must be a sequence"),
        ({"mean": (0.0, 0.0, 0.0), "std": (0.0, 0.0, 0.0)}, ValueError, r"std\[0\] must be > 0"),
        ({"mean": (0.0, float("nan"), 0.0), "std": (1.0, 1.0, 1.0)}, ValueError, r"mean\[1\] must be finite"),
        ({"mean": (0.0, 0.0, 0.0), "std": (1.0, "1", 1.0)}, TypeError, r"std\[1\] must be a real number"),
        ({"batchnorm": "no"}, TypeError, "batchnorm must be True or False"),
        ({"channels_last": 1}, TypeError, "channels_last must be True or False"),
        ({"family": 5}, TypeError, "family must be a string"),
        ({"weights": "x"}, TypeError, "weights must be a WeightSpec"),
    ],
)
def test_encoder_spec_is_checked_at_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _spec(**kwargs)


def test_encoder_spec_accepts_numpy_numbers():
    spec = _spec(feature_dim=np.int64(4), resize=np.int32(20), mean=np.zeros(3), std=[np.float32(0.5)] * 3)
    assert spec.feature_dim == 4 and type(spec.feature_dim) is int and spec.resize == 20
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (0.5, 0.5, 0.5)


def test_registries_refuse_non_bool_overwrite_and_wrong_types():
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        register_encoder(registry.get_encoder_spec(TINY), overwrite="no")
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        register_encoder(_spec(name="spec_probe_new"), overwrite="no")  # even for a new name
    assert "spec_probe_new" not in registry._ENCODERS
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        register_weights(_TINY_WEIGHTS, overwrite="no")
    with pytest.raises(TypeError, match="register_weights expects a WeightSpec, got int"):
        register_weights(5)
