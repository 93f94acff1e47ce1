"""On a GPU, the fast rollout path gives the simple path's rollouts.

Fast: shared-memory env workers, two env halves in flight (``overlap``), the hindex ResNet-50 replayed as CUDA
graphs in channels-last, per-frame EMA-BN. Simple: the same four envs in one process, lockstep, eager forwards.
Overlap encodes two halves of the batch instead of the whole, and batch size and graphs can change which kernels run,
so the check is: the same episodes, with actions, features and EMA statistics equal to float32 rounding (bf16: within
the stated tolerance). On this CPU the fp32 gap measured 6e-7 (features) and 6e-8 (actions). Skips without CUDA.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from test_overlap import record_paths

from hindex_sb3.callbacks import EMABatchNormCallback
from hindex_sb3.dapg import DAPG
from hindex_sb3.encoders import create_encoder
from hindex_sb3.encoders.base import BF16_TOLERANCE
from hindex_sb3.extractor import hindex_extractor
from hindex_sb3.vec_env import SharedMemoryVecEnv

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::hindex_sb3.encoders.RandomWeightsWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
ENV_KWARGS = {"image_size": 96, "max_episode_steps": 8}
#: fp32 on the GPU, other batch sizes / graphs vs eager: float32 rounding through a ResNet-50 and an untrained head
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def trunk() -> dict:
    """ResNet-50 weights shaped like a trained one (benchmarks/precision.py): random BN affine parameters with small
    residual-branch scales, BN statistics calibrated on rendered Door frames. A plain random ResNet-50 amplifies
    every rounding difference layer by layer, which would say nothing about the paths under test."""
    bench = _precision_bench()
    torch.manual_seed(0)
    base = create_encoder("hindex", None)
    bench.calibrate(base, bench.render_frames(("HInDex/Door-v0",), 16, seed=1000), batch=8, residual_gamma=(0.05, 0.3))
    return base.backbone.state_dict()


def _precision_bench():
    spec = importlib.util.spec_from_file_location("precision_bench", ROOT / "benchmarks" / "precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            "graphs": sum(len(m._graphs) for m in model.policy.modules() if hasattr(m, "_graphs")),
        }
    finally:
        venv.close()


def th_cat(tensors: list) -> torch.Tensor:
    return torch.cat([t.detach().float().cpu() for t in tensors])


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame ``||a - b|| / ||b||``."""
    return (a - b).double().norm(dim=1) / b.double().norm(dim=1)


@pytest.mark.parametrize("momentum", [0.0, 0.1])
def test_fast_path_rollouts_match_the_simple_paths_on_the_gpu(trunk, momentum):
    simple, fast = _run(trunk, False, momentum), _run(trunk, True, momentum)
    assert fast["graphs"] > 0 and simple["graphs"] == 0  # the fast run really replayed graphs
    assert len(fast["paths"]) == len(simple["paths"]) == 6
    for (a_fast, r_fast), (a_simple, r_simple) in zip(fast["paths"], simple["paths"], strict=True):
        assert a_fast.shape == a_simple.shape
        np.testing.assert_allclose(a_fast, a_simple, rtol=0, atol=FP32_ATOL)
        np.testing.assert_allclose(r_fast, r_simple, rtol=1e-4, atol=1e-4)
    assert _rel(fast["features"], simple["features"]).max() < 1e-4
    for key, ref in simple["stats"].items():  # per layer, relative to the statistics' size
        assert float((fast["stats"][key] - ref).norm() / ref.norm()) < 1e-4, key
    if momentum:  # EMA-BN moved the statistics, identically on both paths
        fresh = _run(trunk, False, 0.0)["stats"]
        assert any(not torch.equal(fresh[k], v) for k, v in simple["stats"].items() if "running_var" in k)


def test_bf16_fast_path_features_stay_within_the_tolerance_on_the_gpu(trunk):
    """The bf16 fast path's rollout features (with per-frame EMA-BN) against the fp32 simple path's."""
    reference, fast = _run(trunk, False, 0.1), _run(trunk, True, 0.1, precision="bf16")
    assert fast["features"].shape == reference["features"].shape
    rel = _rel(fast["features"], reference["features"])
    assert 0 < rel.max() < BF16_TOLERANCE
