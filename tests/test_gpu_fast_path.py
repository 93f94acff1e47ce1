"""On a GPU, the fast rollout path gives the simple path's rollouts.

Fast: shared-memory env workers, two env halves in flight (``overlap``), the hindex ResNet-50 replayed as CUDA
graphs in channels-last, per-frame EMA-BN. Simple: the same four envs in one process, lockstep, eager forwards.
Overlap encodes two halves of the batch instead of the whole, and batch size and graphs can change which kernels run,
so the check is: the same episodes, with actions, features and EMA statistics equal to float32 rounding (bf16: within
the stated tolerance). On this CPU the fp32 gap measured 6e-7 (features) and 6e-8 (actions). Skips without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bench_scripts import load_benchmark
from stable_baselines3.common.env_util import make_vec_env
from test_overlap import record_paths

from hindex_sb3.callbacks import EMABatchNormCallback
from hindex_sb3.dapg import DAPG
from hindex_sb3.ema_bn import all_modules
from hindex_sb3.encoders import create_encoder
from hindex_sb3.encoders.base import BF16_TOLERANCE
from hindex_sb3.extractor import hindex_extractor
from hindex_sb3.runs.build import build_model, make_venv, policy_setup
from hindex_sb3.runs.config import TrainConfig, resolve_task
from hindex_sb3.runs.demos import load_demos
from hindex_sb3.runs.paper import resolve_settings
from hindex_sb3.vec_env import SharedMemoryVecEnv

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning"),
]

ENV_KWARGS = {"image_size": 96, "max_episode_steps": 8}
#: fp32 on the GPU, other batch sizes / graphs vs eager: float32 rounding through a ResNet-50 and an untrained head
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def trunk() -> dict:
    """ResNet-50 weights shaped like a trained one (benchmarks/precision.py): random BN affine parameters with small
    residual-branch scales, BN statistics calibrated on rendered Door frames. A plain random ResNet-50 amplifies
    every rounding difference layer by layer, which would say nothing about the paths under test."""
    bench = load_benchmark("precision")
    torch.manual_seed(0)
    base = create_encoder("hindex", None)
    bench.calibrate(base, bench.render_frames(("HInDex/Door-v0",), 16, seed=1000), batch=8, residual_gamma=(0.05, 0.3))
    return base.backbone.state_dict()


def _run(trunk: dict, fast: bool, momentum: float, precision: str = "fp32") -> dict:
    if fast:
        venv = make_vec_env(
            "hindex_sb3:HInDex/Door-v0", n_envs=4, env_kwargs=ENV_KWARGS, vec_env_cls=SharedMemoryVecEnv
        )
    else:  # the same 4 envs (EMA-BN's frame order depends on how many envs step together), in this process
        venv = make_vec_env("HInDex/Door-v0", n_envs=4, env_kwargs=ENV_KWARGS)
    kwargs = hindex_extractor(None, algo="dapg", cuda_graphs=fast, precision=precision, hidden=(32, 32))
    try:
        torch.manual_seed(0)  # the trunk is loaded below; the rest starts from the same seed in both runs
        model = DAPG(
            "MultiInputPolicy", venv, n_trajectories=6, policy_kwargs=kwargs, seed=3, device="cuda", overlap=fast
        )
        model.policy.features_extractor.encoder.backbone.load_state_dict(trunk)
        recorded = record_paths(model)
        model.learn(1, callback=EMABatchNormCallback(momentum) if momentum else None)
        stats = {k: v for k, v in model.policy.state_dict().items() if "running_mean" in k or "running_var" in k}
        return {
            "paths": [(p.actions.copy(), p.rewards.copy()) for p in recorded],
            "features": th_cat([p.features for p in recorded]),
            "stats": {k: v.detach().cpu().clone() for k, v in stats.items()},
            "replays": replays(model),
        }
    finally:
        venv.close()


def replays(model: DAPG) -> int:
    """CUDA-graph replays of the policy's encoders (the frozen encoder sits outside ``policy.modules()``)."""
    caches = [getattr(m, "_graphs", None) for m in all_modules(model.policy)]
    return sum(c.replays for c in caches if c is not None)


def th_cat(tensors: list) -> torch.Tensor:
    return torch.cat([t.detach().float().cpu() for t in tensors])


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame ``||a - b|| / ||b||``."""
    return (a - b).double().norm(dim=1) / b.double().norm(dim=1)


@pytest.fixture
def no_tf32():
    """cuDNN runs float32 convolutions in TF32 by default (PyTorch's default): off, the paths differ by float32
    rounding only, which is what the fp32 test states."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


def _assert_same_episodes(fast: dict, simple: dict, atol: float, feature_rtol: float) -> None:
    assert fast["replays"] > 0 and simple["replays"] == 0  # the fast run really replayed graphs
    assert len(fast["paths"]) == len(simple["paths"]) == 6
    for (a_fast, r_fast), (a_simple, r_simple) in zip(fast["paths"], simple["paths"], strict=True):
        assert a_fast.shape == a_simple.shape
        np.testing.assert_allclose(a_fast, a_simple, rtol=0, atol=atol)
        np.testing.assert_allclose(r_fast, r_simple, rtol=10 * atol, atol=10 * atol)
    assert _rel(fast["features"], simple["features"]).max() < feature_rtol
    for key, ref in simple["stats"].items():  # per layer, relative to the statistics' size
        assert float((fast["stats"][key] - ref).norm() / ref.norm()) < feature_rtol, key


@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("momentum", [0.0, 0.1])
def test_fast_path_rollouts_match_the_simple_paths_on_the_gpu(trunk, momentum):
    simple, fast = _run(trunk, False, momentum), _run(trunk, True, momentum)
    _assert_same_episodes(fast, simple, atol=FP32_ATOL, feature_rtol=1e-4)
    if momentum:  # EMA-BN moved the statistics, identically on both paths
        fresh = _run(trunk, False, 0.0)["stats"]
        assert any(not torch.equal(fresh[k], v) for k, v in simple["stats"].items() if "running_var" in k)


def test_with_cudnn_default_tf32_the_paths_differ_less_than_the_bf16_tolerance(trunk):
    """TF32 keeps 10 mantissa bits, bf16 7: the default fp32 path's kernel differences stay below bf16's bound."""
    assert torch.backends.cudnn.allow_tf32
    simple, fast = _run(trunk, False, 0.1), _run(trunk, True, 0.1)
    _assert_same_episodes(fast, simple, atol=10 * FP32_ATOL, feature_rtol=BF16_TOLERANCE)


def test_bf16_fast_path_features_stay_within_the_tolerance_on_the_gpu(trunk):
    """The bf16 fast path's rollout features (with per-frame EMA-BN) against the fp32 simple path's."""
    reference, fast = _run(trunk, False, 0.1), _run(trunk, True, 0.1, precision="bf16")
    assert fast["features"].shape == reference["features"].shape
    rel = _rel(fast["features"], reference["features"])
    assert 0 < rel.max() < BF16_TOLERANCE


def test_bc_and_an_iteration_with_demos_run_on_the_gpu_fast_path(tmp_path):
    """``hindex train``'s GPU defaults (CUDA graphs on) with demonstrations: BC encodes the demos with frozen
    statistics. Capturing a graph used to restore the buffers after its warm-up with copies, which bump the buffers'
    version counters, and DAPG refused: "encoding the demonstrations changed the feature extractor's statistics"."""
    cfg = TrainConfig(
        task="door",
        weights="random",
        demos="scripted",
        num_demos=1,
        n_envs=2,
        vec_env="shm",
        overlap=True,
        device="cuda",
        image_size=64,
        horizon=10,
        trajectories=2,
        iterations=1,
        video=False,
        progress_bar=False,
        out_dir=str(tmp_path),
    )
    env_id = resolve_task(cfg.task)
    cfg = resolve_settings(cfg, env_id)
    assert cfg.cuda_graphs
    venv = make_venv(cfg, env_id)
    try:
        model = build_model(cfg, venv, load_demos(cfg, env_id), policy_spec=policy_setup(cfg))
        model.pretrain_bc()
        model.learn(1, callback=EMABatchNormCallback(cfg.ema_momentum) if cfg.ema_momentum else None)
        assert replays(model) > 0 and model.num_timesteps == 2 * 10
    finally:
        venv.close()
