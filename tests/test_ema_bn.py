"""EMA BatchNorm (H-InDex Stage 3): statistics after k updates equal a hand computation; m = 0 is frozen BN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hindex_sb3.ema_bn import EMABatchNorm2d, convert_to_ema_bn, ema_bn_modules, ema_bn_updates, set_ema_momentum
from hindex_sb3.encoders import RandomWeightsWarning, create_encoder


def _bn(c: int = 4, m: float = 0.1, seed: int = 0) -> EMABatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = EMABatchNorm2d(c, momentum_ema=m)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
        bn.weight.copy_(0.5 + torch.rand(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


def _batches(k: int, c: int = 4, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [3.0 * torch.randn(2, c, 5, 3, generator=g) + i for i in range(k)]


def test_k_updates_equal_hand_computation_with_biased_variance():
    m, bn = 0.1, _bn(m=0.1)
    mean = bn.running_mean.double().numpy().copy()
    var = bn.running_var.double().numpy().copy()
    w, b, eps = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy(), bn.eps
    for i, x in enumerate(_batches(5)):
        xn = x.double().numpy()
        mean = (1 - m) * mean + m * xn.mean(axis=(0, 2, 3))
        var = (1 - m) * var + m * xn.var(axis=(0, 2, 3))  # numpy's default ddof=0: biased
        y = bn(x)
        expected = (xn - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps)
        expected = expected * w[None, :, None, None] + b[None, :, None, None]
        # normalised with the *updated* statistics
        np.testing.assert_allclose(y.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.running_mean.double().numpy(), mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.double().numpy(), var, rtol=1e-6, atol=1e-6)
        assert int(bn.num_batches_tracked) == i + 1


def test_zero_momentum_or_disabled_updates_are_plain_frozen_batchnorm():
    plain = nn.BatchNorm2d(4).eval()
    for bn in (_bn(m=0.0), _bn(m=0.3)):
        if bn.momentum_ema > 0:
            bn.update_stats = False
        plain.load_state_dict(bn.state_dict())
        before = {k: v.clone() for k, v in bn.state_dict().items()}
        for x in _batches(3):
            torch.testing.assert_close(bn(x), plain(x), rtol=0, atol=0)
        assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())


def test_train_mode_is_ordinary_batchnorm():
    bn, plain = _bn(m=0.5).train(), nn.BatchNorm2d(4).train()
    plain.load_state_dict(bn.state_dict())
    for x in _batches(2):
        torch.testing.assert_close(bn(x), plain(x))
    torch.testing.assert_close(bn.running_var, plain.running_var)  # PyTorch's unbiased running update


def test_update_builds_no_graph_keeps_buffers_in_place_and_gradients_flow():
    bn = _bn(m=0.2)
    ptrs = (bn.running_mean.data_ptr(), bn.running_var.data_ptr())
    x = _batches(1)[0].requires_grad_(True)
    y = bn(x)
    y.sum().backward()
    assert x.grad is not None and not bn.running_mean.requires_grad and bn.running_mean.grad_fn is None
    assert (bn.running_mean.data_ptr(), bn.running_var.data_ptr()) == ptrs  # SAC's target-BN copies hold references


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EMABatchNorm2d(3, momentum_ema=1.5)
    with pytest.raises(ValueError, match="scope"):
        convert_to_ema_bn(nn.Sequential(nn.BatchNorm2d(3)), scope="layer4")
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        convert_to_ema_bn(nn.Sequential(nn.Linear(2, 2)), scope="all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with pytest.raises(ValueError, match="no BatchNorm"):
            create_encoder("mvp", weights=None, ema_scope="all")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def test_scope_all_converts_every_nested_bn_and_stem_only_bn1(resnet):
    import copy

    full, stem = copy.deepcopy(resnet), copy.deepcopy(resnet)
    names = convert_to_ema_bn(full, "all", 0.1)
    assert len(names) == 53 and len(ema_bn_modules(full)) == 53
    assert not any(type(m) is nn.BatchNorm2d for m in full.modules())
    assert convert_to_ema_bn(stem, "stem", 0.1) == ["bn1"]
    assert isinstance(stem.bn1, EMABatchNorm2d) and type(stem.layer1[0].bn1) is nn.BatchNorm2d
    # The converted layers are the ones used in the forward (the authors' code added dangling top-level copies).
    assert set(full.state_dict()) == set(resnet.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full(x), stem(x)
    assert int(full.layer4[2].bn3.num_batches_tracked) == 1 and int(full.bn1.num_batches_tracked) == 1
    assert int(stem.bn1.num_batches_tracked) == 1 and int(stem.layer4[2].bn3.num_batches_tracked) == 0
    with ema_bn_updates(full, enabled=False), torch.no_grad():
        full(x)
    assert int(full.bn1.num_batches_tracked) == 1
    assert set_ema_momentum(full, 0.0) == 53


def test_encoder_updates_only_when_asked_and_matches_hand_computation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        enc = create_encoder("hindex", weights=None, ema_scope="stem", ema_momentum=0.05)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean0, var0 = enc.backbone.bn1.running_mean.clone(), enc.backbone.bn1.running_var.clone()
    plain = enc(x)
    assert torch.equal(enc.backbone.bn1.running_mean, mean0) and int(enc.backbone.bn1.num_batches_tracked) == 0
    with torch.no_grad():
        stem_in = enc.backbone.conv1(enc.preprocess(x.float() / 255))
    var_b, mean_b = torch.var_mean(stem_in, dim=(0, 2, 3), correction=0)
    adapted = enc(x, update_bn_stats=True)
    torch.testing.assert_close(enc.backbone.bn1.running_mean, 0.95 * mean0 + 0.05 * mean_b)
    torch.testing.assert_close(enc.backbone.bn1.running_var, 0.95 * var0 + 0.05 * var_b)
    assert not torch.allclose(plain, adapted)
    with pytest.raises(ValueError, match="no EMA-BN layers"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        create_encoder("hindex", weights=None)(x, update_bn_stats=True)
