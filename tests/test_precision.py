"""Reduced precision: ``precision="bf16"`` from the encoder through the extractor, VecEncode and ``hindex train``.

Plumbing runs on the tiny registered test encoder; one slow test measures the ResNet-50 on rendered frames against
the stated tolerance (:data:`hindex_sb3.encoders.base.BF16_TOLERANCE`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_scripts import load_benchmark
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from test_extractor import TinyPixelEnv
from tiny_encoder import NAME as TINY
from tiny_encoder import tiny_policy_kwargs

from hindex_sb3.encoders import RandomWeightsWarning, create_encoder
from hindex_sb3.encoders.base import BF16_TOLERANCE, PRECISIONS
from hindex_sb3.extractor import HIndexExtractor, baseline_extractor, encoder_extractor, hindex_extractor
from hindex_sb3.runs.config import RESUMABLE_FIELDS, ConfigError, TrainConfig, TrainingError
from hindex_sb3.vec_encode import VecEncode


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")


def _tiny(**kwargs):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_encoder(TINY, None, **kwargs)


def _images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row ``||b - a|| / ||a||``."""
    return (b.double() - a.double()).norm(dim=1) / a.double().norm(dim=1)


# -- the option --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["fp16", "BF16", "float32", torch.bfloat16, True, None, ["bf16"]])
def test_bad_precisions_are_refused_naming_the_argument(bad):
    with pytest.raises(ValueError, match="precision") as info:
        _tiny(precision=bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="precision"):
        _tiny().set_precision(bad)
    with pytest.raises(ValueError, match="precision"):
        hindex_extractor(None, precision=bad)
    with pytest.raises(ValueError, match="precision"):
        baseline_extractor("rrl", None, precision=bad)


def test_bf16_features_are_float32_differ_from_fp32_and_stay_within_the_tolerance():
    enc, x = _tiny(), _images(8)
    assert enc.precision == "fp32" and PRECISIONS == ("fp32", "bf16")
    f32 = enc(x)
    assert enc.set_precision("bf16") is enc
    f16 = enc(x)
    assert f16.dtype == torch.float32 and f16.shape == f32.shape
    rel = _rel(f32, f16)
    assert rel.min() > 0  # the option really computes in bf16
    assert rel.max() < BF16_TOLERANCE
    torch.testing.assert_close(enc.set_precision("fp32")(x), f32, rtol=0, atol=0)
    assert _tiny(precision="bf16").precision == "bf16"


def test_precision_is_the_encoders_own_whatever_the_callers_autocast():
    x = _images(4)
    enc32, enc16 = _tiny(), _tiny(precision="bf16")
    f32, f16 = enc32(x), enc16(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(enc32(x), f32, rtol=0, atol=0)  # fp32 means fp32
        torch.testing.assert_close(enc16(x), f16, rtol=0, atol=0)
    seen = []
    hook = enc16.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc16(x)
    hook.remove()
    assert seen == [torch.float32]  # preprocessing ran in float32; only the trunk's ops autocast


def test_graph_key_includes_the_precision():
    enc = _tiny(ema_scope="all", ema_momentum=0.1)
    key32 = enc._graph_key(True)
    assert enc.set_precision("bf16")._graph_key(True) != key32


# -- EMA-BN under bf16 -------------------------------------------------------------------------------------------------
def test_bf16_ema_bn_keeps_float32_statistics_and_per_frame_semantics():
    """A bf16 batch of N frames = N bf16 single-frame forwards, and stays close to the fp32 per-frame statistics."""
    x = _images(8, seed=3)
    batched = _tiny(ema_scope="all", ema_momentum=0.1, precision="bf16")
    looped = _tiny(ema_scope="all", ema_momentum=0.1, precision="bf16")
    reference = _tiny(ema_scope="all", ema_momentum=0.1)  # fp32, one frame per forward
    start = batched.ema_layers[0].running_var.clone()
    f_batched = batched(x, update_bn_stats=True)
    f_looped = torch.cat([looped(frame[None], update_bn_stats=True) for frame in x])
    f_reference = torch.cat([reference(frame[None], update_bn_stats=True) for frame in x])
    (bn,), (bn_loop,), (bn_ref,) = batched.ema_layers, looped.ema_layers, reference.ema_layers
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32
    assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 8
    assert not torch.equal(bn.running_var, start)  # the statistics moved
    torch.testing.assert_close(bn.running_mean, bn_loop.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, bn_loop.running_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f_batched, f_looped, rtol=1e-2, atol=1e-3)
    # against fp32: the same recursion on activations that differ by bf16 rounding (stated: 1e-2 relative)
    for ours, ref in ((bn.running_mean, bn_ref.running_mean), (bn.running_var, bn_ref.running_var)):
        rel = float((ours - ref).norm() / ref.norm())
        assert 0 < rel < 1e-2
    assert _rel(f_reference, f_batched).max() < BF16_TOLERANCE


# -- through SB3, VecEncode and hindex train ---------------------------------------------------------------------------
def test_factories_pass_the_precision_and_default_to_fp32():
    assert hindex_extractor(None)["features_extractor_kwargs"]["precision"] == "fp32"
    assert hindex_extractor(None, precision="bf16")["features_extractor_kwargs"]["precision"] == "bf16"
    assert baseline_extractor("rrl", None, precision="bf16")["features_extractor_kwargs"]["precision"] == "bf16"
    assert encoder_extractor(TINY, None, precision="bf16")["features_extractor_kwargs"]["precision"] == "bf16"


def test_precision_round_trips_through_sb3_save_and_load(tmp_path):
    kwargs = tiny_policy_kwargs()
    kwargs["features_extractor_kwargs"]["precision"] = "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = PPO("MultiInputPolicy", DummyVecEnv([TinyPixelEnv]), n_steps=8, batch_size=8, policy_kwargs=kwargs)
        extractor = model.policy.features_extractor
        assert isinstance(extractor, HIndexExtractor) and extractor.encoder.precision == "bf16"
        model.save(tmp_path / "m.zip")
        loaded = PPO.load(tmp_path / "m.zip", env=DummyVecEnv([TinyPixelEnv]))
    assert loaded.policy.features_extractor.encoder.precision == "bf16"
    obs = loaded.env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_vec_encode_sets_the_precision_on_its_encoder():
    venv = lambda: DummyVecEnv([TinyPixelEnv])  # noqa: E731
    assert VecEncode(venv(), _tiny(), device="cpu").precision == "fp32"  # CPU default, as before
    enc = _tiny()
    wrapped = VecEncode(venv(), enc, device="cpu", precision="bf16")
    assert enc.precision == "bf16" and wrapped.bf16
    raw = DummyVecEnv([TinyPixelEnv])
    raw.seed(0)
    wrapped.venv.seed(0)
    obs, expected = wrapped.reset(), enc(torch.as_tensor(raw.reset()["pixels"])).numpy()
    np.testing.assert_array_equal(obs[:, : enc.feature_dim], expected)
    assert VecEncode(venv(), _tiny(), device="cpu", bf16=True).precision == "bf16"  # the older flag still works
    assert VecEncode(venv(), _tiny(), device="cpu", bf16=False, precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="contradicts"):
        VecEncode(venv(), _tiny(), device="cpu", bf16=False, precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        VecEncode(venv(), _tiny(), device="cpu", precision="fp16")


def test_train_config_precision_reaches_the_policy_and_is_fixed_on_resume():
    from hindex_sb3.runs.build import policy_setup
    from hindex_sb3.runs.runner import _refuse_changes

    cfg = TrainConfig(task="door", encoder=TINY, weights="random", precision="bf16")
    _, kwargs = policy_setup(cfg)
    assert kwargs["features_extractor_kwargs"]["precision"] == "bf16"
    assert TrainConfig(task="door").precision == "fp32"
    assert "precision" not in RESUMABLE_FIELDS
    with pytest.raises(TrainingError, match="precision"):
        _refuse_changes(cfg, cfg.replace(precision="fp32"), Path("ckpt"))
    with pytest.raises(ConfigError) as info:
        TrainConfig(task="door", encoder=TINY, precision="fp16")
    assert info.value.field == "precision"
    with pytest.raises(ConfigError, match="state"):
        TrainConfig(task="door", encoder="state", precision="bf16")


def test_train_cli_has_a_precision_flag():
    from hindex_sb3.cli import build_parser
    from hindex_sb3.runs.cli_args import config_from_args

    args = build_parser().parse_args(["train", "door", "--encoder", TINY, "--precision", "bf16"])
    assert config_from_args(args).precision == "bf16"


# -- the ResNet-50 on rendered frames ----------------------------------------------------------------------------------
def _bench():
    return load_benchmark("precision")


def _calibrated_runs(bench, residual_gamma, momentum, noise: bool = False, device: str = "cpu"):
    """fp32 and bf16 (and fp32 on +-1 grey-level noise) features of 16 rendered Door / Hammer frames; on a GPU the
    bf16 encoder runs as rollouts run it there (channels-last, CUDA graphs), the fp32 reference eagerly."""
    tasks = ("HInDex/Door-v0", "HInDex/Hammer-v0")
    frames = bench.render_frames(tasks, 8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        base = create_encoder("hindex", None)
    bench.calibrate(base, bench.render_frames(tasks, 8, seed=1000), batch=8, residual_gamma=residual_gamma)
    state, dev = base.backbone.state_dict(), torch.device(device)
    graphs = dev.type == "cuda"
    runs = [bench._run(state, frames, p, momentum, 8, dev, graphs=graphs and p == "bf16") for p in ("fp32", "bf16")]
    if noise:
        runs.append(bench._run(state, bench.grey_level_noise(frames, 0), "fp32", momentum, 8, dev))
    return runs


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [None, 0.1])
def test_resnet50_bf16_features_on_rendered_frames_are_within_the_tolerance(momentum, device):
    """hindex ResNet-50, statistics calibrated on rendered Adroit frames (benchmarks/precision.py), 16 frames."""
    (enc32, f32, _), (enc16, f16, _) = _calibrated_runs(_bench(), (0.05, 0.3), momentum, device=device)
    rel = _rel(f32, f16)
    assert rel.min() > 0 and rel.max() < BF16_TOLERANCE
    assert torch.nn.functional.cosine_similarity(f32, f16).min() > 0.999
    for ours, ref in zip(enc16.ema_layers, enc32.ema_layers, strict=True):
        assert ours.running_var.dtype == torch.float32
        assert float((ours.running_var - ref.running_var).norm() / ref.running_var.norm()) < BF16_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_resnet50_bf16_moves_features_no_more_than_one_grey_level_of_noise(device):
    """Weights that amplify every perturbation (random BN scales everywhere): bf16 stays at the input-noise scale."""
    (_, f32, _), (_, f16, _), (_, fnoise, _) = _calibrated_runs(_bench(), None, None, noise=True, device=device)
    assert _rel(f32, f16).median() < 1.5 * _rel(f32, fnoise).median()
