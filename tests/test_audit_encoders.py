"""Audit of the representation layer from an SB3 user's side: bad encoder specs and plugins, pickling, torchvision
layouts, and saved off-policy models loaded where the weight file is missing. Tiny encoders only (fast on CPU)."""

from __future__ import annotations

import io
import pickle
import warnings
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn
from torchvision.models import get_model

from hindex_sb3.encoders import (
    EncoderSpec,
    RandomWeightsWarning,
    WeightsUnavailableError,
    create_encoder,
    get_encoder_spec,
    register_encoder,
    registry,
    unregister_encoder,
)
from hindex_sb3.encoders import plugins as plugins_mod
from hindex_sb3.extractor import HIndexExtractor, encoder_extractor
from tests.tiny_encoder import PixelEnv

AUDIT = "audit_tiny"


def _trunk() -> nn.Module:
    layers = [nn.Conv2d(3, 6, 5, stride=4), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _pooled4() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _feature_map() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3))


def _stats_only() -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(3, affine=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _not_a_module() -> object:
    return lambda x: x.mean((2, 3))


def _spec(name: str, builder, feature_dim: int = 4, **kwargs) -> EncoderSpec:
    sizes = {"input_size": 32, "resize": 32, **kwargs}
    return EncoderSpec(name, feature_dim, None, builder, family="user", mean=None, std=None, **sizes)


@pytest.fixture
def registered():
    """Register specs for one test and remove them afterwards."""
    names: list[str] = []

    def add(spec: EncoderSpec) -> str:
        register_encoder(spec, overwrite=True)
        names.append(spec.name)
        return spec.name

    yield add
    for name in names:
        unregister_encoder(name)


def _quiet_create(name: str, weights=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_encoder(name, weights, **kwargs)


# -- bad encoder specs (what a plugin or a user registration can get wrong) ------------------------------------------


@pytest.mark.parametrize(
    ("builder", "returned"), [(_pooled4, r"\(2, 4\)"), (_feature_map, r"\(2, 4, 30, 30\)")], ids=["dim", "map"]
)
def test_trunk_output_that_contradicts_feature_dim_is_named_at_the_first_forward(registered, builder, returned):
    # before: (2, 4) or a (2, 4, 30, 30) map came out, and SB3 failed later with "mat1 and mat2 shapes cannot be
    # multiplied" inside the policy MLP sized by feature_dim
    enc = _quiet_create(registered(_spec("audit_bad_dim", builder, feature_dim=6)))
    with pytest.raises(ValueError, match=rf"audit_bad_dim encoder: the trunk returned {returned}.*feature_dim=6"):
        enc(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_resize_smaller_than_the_crop_is_refused_instead_of_padding_black_borders(registered):
    # before: accepted; center_crop zero-padded every 16-px resize to 32 px (a white image came out half black)
    name = registered(_spec("audit_small_resize", _pooled4, input_size=32, resize=16))
    with pytest.raises(ValueError, match=r"audit_small_resize encoder: resize \(16\) must be at least the crop \(32"):
        _quiet_create(name)


def test_builder_that_returns_no_module_is_refused(registered):
    # before: a plain function was accepted as the trunk (never moved by .to(), absent from state_dict); None gave
    # "'NoneType' object is not callable" at the first forward
    name = registered(_spec("audit_fn_trunk", _not_a_module, feature_dim=3))
    with pytest.raises(
        TypeError, match=r"audit_fn_trunk: the spec's builder must return a torch nn\.Module, got function"
    ):
        _quiet_create(name)


def test_ema_update_works_for_a_trunk_without_parameters(registered):
    # before: arm_bn_update / update_bn_stats raised a bare StopIteration (the device came from parameters() only)
    name = registered(_spec("audit_stats_only", _stats_only, feature_dim=3, batchnorm=True, input_size=8, resize=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        ext = HIndexExtractor(gym.spaces.Box(0, 255, (3, 8, 8), np.uint8), encoder=name, weights=None)
    ext.encoder.ema_layers[0].momentum_ema = 0.5
    frames = np.full((1, 3, 8, 8), 255, np.uint8)
    ext.arm_bn_update(frames)
    assert ext.is_armed and ext.update_bn_stats(frames).shape == (1, 3)
    assert torch.allclose(ext.encoder.ema_layers[0].running_mean, torch.full((3,), 0.5))  # 0 -> 0.5: one update


@pytest.mark.parametrize("name", ["mvp", "vc1"])
def test_vit_baseline_specs_pickle_like_the_resnet_ones(name):
    # before: their builders were lambdas, so torch.save(encoder) / pickle of an mvp or vc1 encoder failed
    spec = pickle.loads(pickle.dumps(get_encoder_spec(name)))
    with torch.device("meta"):
        out = spec.builder().eval()(torch.zeros(1, 3, 224, 224))
    assert tuple(out.shape) == (1, spec.feature_dim)


def test_a_pickled_mvp_encoder_round_trips():
    enc = _quiet_create("mvp")
    buffer = io.BytesIO()
    torch.save(enc, buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=False).spec.name == "mvp"


# -- torchvision:<model> with the published key layout -------------------------------------------------------------


def test_torchvision_googlenet_loads_its_published_layout(tmp_path):
    # torchvision builds GoogLeNet with aux classifiers to load its file (then deletes them): the file has aux1/aux2
    # keys. before: CheckpointMismatchError "unexpected in checkpoint (20): aux1.conv.bn.bias, ..."
    net = get_model("googlenet", weights=None, aux_logits=True, transform_input=True, init_weights=False).eval()
    torch.save(net.state_dict(), tmp_path / "googlenet.pth")
    enc = create_encoder("torchvision:googlenet", tmp_path / "googlenet.pth")
    net.fc = nn.Identity()
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(enc.backbone(x), net(x), rtol=1e-5, atol=1e-5)


# -- plugins -------------------------------------------------------------------------------------------------------


def _hijack() -> None:
    register_encoder(_spec("hindex", _pooled4), overwrite=True)


def _half_bad() -> list:
    return [_spec("audit_plugin_ok", _pooled4), "not a spec"]


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Serve the given ``{entry point name: object}`` as the ``hindex_sb3.encoders`` entry points."""
    saved = dict(registry._ENCODERS)

    def install(objects: dict) -> None:
        eps = [SimpleNamespace(name=n, value=f"fake:{n}", load=lambda o=o: o) for n, o in objects.items()]
        monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps)
        plugins_mod.reset_plugins()

    yield install
    plugins_mod.reset_plugins()
    registry._ENCODERS.clear()
    registry._ENCODERS.update(saved)


def test_a_plugin_cannot_replace_a_builtin_by_registering_it_itself(fake_entry_points):
    # before: a callable plugin calling register_encoder(..., overwrite=True) silently replaced "hindex"
    original = get_encoder_spec("hindex")
    fake_entry_points({"hijack": _hijack})
    with pytest.warns(RuntimeWarning, match=r"replaced or removed \['hindex'\]"):
        plugins_mod.load_plugins()
    assert get_encoder_spec("hindex") is original


def test_a_failed_plugin_registers_nothing(fake_entry_points):
    # before: the plugin was reported as failed, yet its first spec was registered and usable
    fake_entry_points({"half_bad": _half_bad})
    with pytest.warns(RuntimeWarning, match="could not be loaded: expected EncoderSpec objects, got str"):
        plugins_mod.load_plugins()
    assert "audit_plugin_ok" not in registry._ENCODERS
    assert "half_bad" in plugins_mod.plugin_errors()


# -- saved models where the weight file is missing ------------------------------------------------------------------


@pytest.fixture
def weights_file(registered, tmp_path):
    registered(_spec(AUDIT, _trunk, feature_dim=6, batchnorm=True))
    torch.manual_seed(0)
    trunk = _trunk()
    for p in trunk.parameters():
        p.data.normal_()
    return torch.save(trunk.state_dict(), tmp_path / "w.pth") or tmp_path / "w.pth"


def _off_policy(algo, path):
    kwargs = encoder_extractor(AUDIT, path, algo=algo.__name__.lower(), hidden=(8,))
    return algo("MultiInputPolicy", DummyVecEnv([PixelEnv]), policy_kwargs=kwargs, buffer_size=64, learning_starts=4)


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_off_policy_model_loads_offline_without_the_weight_file(algo, weights_file, tmp_path, monkeypatch):
    # before: SAC/TD3 build their target critic with critic_target.load_state_dict(critic.state_dict()), inside
    # load() too, and a pending encoder refused state_dict(): WeightsUnavailableError "w.pth does not exist"
    model = _off_policy(algo, weights_file)
    model.learn(8)
    model.save(tmp_path / "m.zip")
    weights_file.unlink()
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")
    with pytest.warns(RandomWeightsWarning, match="unavailable"):
        loaded = algo.load(tmp_path / "m.zip", env=DummyVecEnv([PixelEnv]))
    obs = loaded.env.reset()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    target = loaded.policy.critic_target.features_extractor.encoder
    assert target._pending_weights_error is None and target.weights_source == "state_dict"
    loaded.learn(4)


def test_off_policy_model_without_weights_still_refuses_to_save_and_train(weights_file, tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.warns(RandomWeightsWarning):
        model = _off_policy(SAC, missing)  # builds (the target critic copies flagged placeholders) ...
    assert model.policy.critic_target.features_extractor.encoder._pending_weights_error is not None
    with pytest.raises(WeightsUnavailableError, match=r"missing\.pth does not exist"):
        model.save(tmp_path / "m.zip")  # ... but random features are never saved as if trained
    assert not (tmp_path / "m.zip").exists()
    with pytest.raises(WeightsUnavailableError, match=r"missing\.pth does not exist"):
        model.learn(8)  # ... nor trained on (the first 4 steps are random actions)
