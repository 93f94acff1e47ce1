"""EMA BatchNorm (H-InDex Stage 3): one update per frame, as the paper's single-frame forwards, in one batched pass.

References are computed independently: a numpy recursion for one layer, and a loop of single-frame forwards through a
whole ResNet-50 (where per-frame and per-batch updates coincide) for the network. m = 0 is frozen BN.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hindex_sb3.ema_bn import (
    EMABatchNorm2d,
    _ema_closed_form,
    _frame_mean_var_loop,
    _frame_mean_var_reduce,
    convert_to_ema_bn,
    ema_bn_modules,
    ema_bn_updates,
    set_ema_momentum,
    set_ema_update,
)
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


def _batches(k: int, c: int = 4, seed: int = 1, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [3.0 * torch.randn(n, c, 5, 3, generator=g) + i + torch.randn(n, c, 1, 1, generator=g) for i in range(k)]


def _affine(bn: EMABatchNorm2d, xn: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Eval-mode BN of ``xn`` (N, C, H, W) with per-frame statistics ``mean``/``var`` (N, C), in float64."""
    w, b = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    y = (xn - mean[:, :, None, None]) / np.sqrt(var[:, :, None, None] + bn.eps)
    return y * w[None, :, None, None] + b[None, :, None, None]


@pytest.mark.parametrize("m", [0.001, 0.1, 0.5, 1.0])
def test_per_frame_update_equals_hand_recursion_frame_by_frame(m):
    """Each frame of a batch is one update, in batch order, and is normalised with the statistics after it."""
    bn = _bn(m=m)
    mean = bn.running_mean.double().numpy().copy()
    var = bn.running_var.double().numpy().copy()
    count = 0
    for x in _batches(3, n=5):  # three forwards of five frames: 15 updates
        xn = x.double().numpy()
        means, variances = np.empty(xn.shape[:2]), np.empty(xn.shape[:2])
        for i, frame in enumerate(xn):
            mean = (1 - m) * mean + m * frame.mean(axis=(1, 2))
            var = (1 - m) * var + m * frame.var(axis=(1, 2))  # numpy's default ddof=0: biased
            means[i], variances[i] = mean, var
        y = bn(x)
        count += len(xn)
        np.testing.assert_allclose(y.detach().double().numpy(), _affine(bn, xn, means, variances), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.running_mean.double().numpy(), mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.double().numpy(), var, rtol=1e-6, atol=1e-6)
        assert int(bn.num_batches_tracked) == count


def test_batch_mode_is_the_authors_update_on_the_whole_batch():
    """``ema_update="batch"``: one update per forward from the (N, H, W) statistics, every frame normalised alike."""
    m, bn = 0.1, _bn(m=0.1)
    set_ema_update(bn, "batch")
    mean = bn.running_mean.double().numpy().copy()
    var = bn.running_var.double().numpy().copy()
    for i, x in enumerate(_batches(5)):
        xn = x.double().numpy()
        mean = (1 - m) * mean + m * xn.mean(axis=(0, 2, 3))
        var = (1 - m) * var + m * xn.var(axis=(0, 2, 3))
        y = bn(x)
        n = len(xn)
        expected = _affine(bn, xn, np.tile(mean, (n, 1)), np.tile(var, (n, 1)))
        np.testing.assert_allclose(y.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.running_mean.double().numpy(), mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.double().numpy(), var, rtol=1e-6, atol=1e-6)
        assert int(bn.num_batches_tracked) == i + 1


def test_frame_and_batch_modes_agree_on_single_frames_and_differ_on_batches():
    frame, batch = _bn(m=0.1), _bn(m=0.1)
    batch.ema_update = "batch"
    single = _batches(1, n=1)[0]
    torch.testing.assert_close(frame(single), batch(single), rtol=0, atol=0)
    torch.testing.assert_close(frame.running_var, batch.running_var, rtol=0, atol=0)
    x = _batches(1, n=4)[0]
    frame(x), batch(x)
    assert int(frame.num_batches_tracked) == 5 and int(batch.num_batches_tracked) == 2
    assert not torch.allclose(frame.running_var, batch.running_var, rtol=1e-3)


def test_closed_form_matches_the_recursion_for_long_batches_and_extreme_momenta():
    g = np.random.default_rng(3)
    frames, start = g.normal(size=(400, 6)), g.normal(size=6)
    for m in (0.0, 1e-4, 0.5, 0.9, 1.0):  # 0.1 ** -400 would overflow a (1 - m)^i / (1 - m)^j formulation
        r, want = start.copy(), []
        for f in frames:
            r = (1 - m) * r + m * f
            want.append(r)
        for _ in range(2):  # the second call uses the cached weights
            got = _ema_closed_form(torch.from_numpy(frames), torch.from_numpy(start), m).numpy()
            np.testing.assert_allclose(got, np.stack(want), rtol=1e-10, atol=1e-12)
        # a shorter batch reads its own weights, not a slice of a wrong-sized cached matrix
        short = _ema_closed_form(torch.from_numpy(frames[:7]), torch.from_numpy(start), m).numpy()
        np.testing.assert_allclose(short, np.stack(want[:7]), rtol=1e-10, atol=1e-12)


def test_per_frame_statistics_reductions_agree():
    """The CPU path (BN stats kernel per frame) and the one-kernel path used on GPUs compute the same statistics."""
    g = torch.Generator().manual_seed(4)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = (2.0 + torch.randn(5, 8, 9, 7, generator=g)).contiguous(memory_format=fmt)
        for a, b in zip(_frame_mean_var_loop(x), _frame_mean_var_reduce(x), strict=True):
            assert a.shape == (5, 8)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["frame", "batch"])
def test_zero_momentum_or_disabled_updates_are_plain_frozen_batchnorm(mode):
    plain = nn.BatchNorm2d(4).eval()
    for bn in (_bn(m=0.0), _bn(m=0.3)):
        bn.ema_update = mode
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
    with pytest.raises(ValueError, match=r"momentum_ema must be <= 1\.0"):
        EMABatchNorm2d(3, momentum_ema=1.5)
    with pytest.raises(ValueError, match="momentum_ema must be finite"):
        EMABatchNorm2d(3, momentum_ema=float("nan"))
    with pytest.raises(ValueError, match="ema_update"):
        EMABatchNorm2d(3, ema_update="step")
    with pytest.raises(ValueError, match="ema_update"):
        convert_to_ema_bn(nn.Sequential(nn.BatchNorm2d(3)), ema_update="frames")
    with pytest.raises(ValueError, match="scope"):
        convert_to_ema_bn(nn.Sequential(nn.BatchNorm2d(3)), scope="layer4")
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        convert_to_ema_bn(nn.Sequential(nn.Linear(2, 2)), scope="all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with pytest.raises(ValueError, match="no BatchNorm"):
            create_encoder("mvp", weights=None, ema_scope="all")


@pytest.mark.parametrize("bad", ["0.1", None, True, np.str_("0.2")])
def test_momentum_must_be_a_real_number_not_parsed(bad):
    net = nn.Sequential(nn.BatchNorm2d(3))
    with pytest.raises(TypeError, match="momentum_ema must be a real number"):
        EMABatchNorm2d(3, momentum_ema=bad)
    with pytest.raises(TypeError, match="momentum must be a real number"):
        convert_to_ema_bn(net, "all", bad)
    convert_to_ema_bn(net, "all", np.float32(0.25))  # numpy reals are numbers
    with pytest.raises(TypeError, match="momentum must be a real number"):
        set_ema_momentum(net, bad)
    assert net[0].momentum_ema == 0.25  # nothing was set


def test_update_flags_must_be_bools():
    net = nn.Sequential(nn.BatchNorm2d(3))
    with pytest.raises(TypeError, match="update_stats must be True or False"):
        EMABatchNorm2d(3, update_stats="no")
    with pytest.raises(TypeError, match="update_stats must be True or False"):
        convert_to_ema_bn(net, "all", 0.1, update_stats="no")
    assert not ema_bn_modules(net)  # refused before any layer was replaced
    convert_to_ema_bn(net, "all", 0.1, update_stats=False)
    with pytest.raises(TypeError, match="enabled must be True or False"), ema_bn_updates(net, enabled="no"):
        pass
    assert net[0].update_stats is False


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def test_scope_all_converts_every_nested_bn_and_stem_only_bn1(resnet):
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
        by_batch = create_encoder("hindex", weights=None, ema_scope="stem", ema_momentum=0.05, ema_update="batch")
    assert by_batch.backbone.bn1.ema_update == "batch"
    enc = copy.deepcopy(by_batch)
    assert set_ema_update(enc, "frame") == 1
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean0, var0 = enc.backbone.bn1.running_mean.clone(), enc.backbone.bn1.running_var.clone()
    plain = enc(x)
    assert torch.equal(enc.backbone.bn1.running_mean, mean0) and int(enc.backbone.bn1.num_batches_tracked) == 0
    with torch.no_grad():
        stem_in = enc.backbone.conv1(enc.preprocess(x.float() / 255))
    var_f, mean_f = torch.var_mean(stem_in, dim=(2, 3), correction=0)  # per frame
    adapted = enc(x, update_bn_stats=True)
    bn = enc.backbone.bn1
    torch.testing.assert_close(bn.running_mean, 0.95**2 * mean0 + 0.95 * 0.05 * mean_f[0] + 0.05 * mean_f[1])
    torch.testing.assert_close(bn.running_var, 0.95**2 * var0 + 0.95 * 0.05 * var_f[0] + 0.05 * var_f[1])
    assert int(bn.num_batches_tracked) == 2 and not torch.allclose(plain, adapted)
    by_batch(x, update_bn_stats=True)
    var_b, mean_b = torch.var_mean(stem_in, dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(by_batch.backbone.bn1.running_mean, 0.95 * mean0 + 0.05 * mean_b)
    torch.testing.assert_close(by_batch.backbone.bn1.running_var, 0.95 * var0 + 0.05 * var_b)
    with pytest.raises(ValueError, match="no EMA-BN layers"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        create_encoder("hindex", weights=None)(x, update_bn_stats=True)


# -- a whole ResNet-50: one batched forward == a loop of single-frame forwards ---------------------------------------
def _resnet50(m: float, seed: int = 0) -> nn.Module:
    """torchvision ResNet-50 (fc = Identity), random weights and BN statistics/affine, every BN an EMA-BN (frame)."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Identity()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for bn in (mod for mod in net.modules() if isinstance(mod, nn.BatchNorm2d)):
            bn.running_mean.normal_(0.0, 0.5, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.normal_(0.0, 0.2, generator=g)
    convert_to_ema_bn(net, "all", m)  # default update: per frame
    return net.eval()


def _frames(n: int, size: int, dtype: torch.dtype, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # per-frame brightness offsets: between-frame variance that a batch-statistics update would mix in
    return (0.6 * torch.rand(n, 3, size, size, generator=g) + 0.4 * torch.rand(n, 1, 1, 1, generator=g)).to(dtype)


def _batched_and_looped(net: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, nn.Module, torch.Tensor]:
    batched, looped = copy.deepcopy(net), copy.deepcopy(net)
    with torch.no_grad():
        y_batched = batched(x)
        y_looped = torch.cat([looped(frame) for frame in x.split(1)])
    return batched, y_batched, looped, y_looped


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _buffers(net: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for b in net.buffers()]


def _restore(net: nn.Module, saved: list[torch.Tensor]) -> None:
    for b, s in zip(net.buffers(), saved, strict=True):
        b.copy_(s)


@torch.no_grad()
def _check_resnet50_exact(net: nn.Module, batch_sizes: tuple[int, ...], size: int) -> None:
    """For each N: a batched forward of frames 1..N against the first N forwards of one single-frame loop.

    One network, its buffers reset between runs (weights never change; copying a float64 ResNet-50 is slow).
    """
    x = _frames(max(batch_sizes), size, torch.float64)
    start, y_looped, after = _buffers(net), [], {}
    for i, frame in enumerate(x.split(1), start=1):
        y_looped.append(net(frame))
        if i in batch_sizes:
            after[i] = _buffers(net)
    # the statistics did move: the comparison is not between two frozen networks
    assert _rel(net.layer4[2].bn3.running_var, start[-2]) > 1e-4
    for n in batch_sizes:
        _restore(net, start)
        y_batched = net(x[:n])
        for (name, a), b in zip(net.named_buffers(), after[n], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9, msg=f"N={n} {name}")  # every element and layer
        assert {int(bn.num_batches_tracked) for bn in ema_bn_modules(net)} == {n}
        torch.testing.assert_close(y_batched, torch.cat(y_looped[:n]), rtol=1e-5, atol=1e-9, msg=f"N={n} features")


@pytest.mark.parametrize("m", [0.001, 0.01, 0.1])
def test_resnet50_batched_forward_equals_single_frame_loop(m):
    """N = 1, 4, 16: statistics of all 53 layers and the features, elementwise to 1e-5 relative.

    In float64, so that the comparison tests the update rule rather than float32 rounding (measured agreement
    ~1e-10 elementwise; the float32 case is the next test). 48 px frames keep layer4 at 2x2 and the test fast.
    """
    _check_resnet50_exact(_resnet50(m).double(), (1, 4, 16), 48)


@pytest.mark.slow
@pytest.mark.parametrize("m", [0.001, 0.01, 0.1])
def test_resnet50_batched_forward_equals_single_frame_loop_224px(m):
    _check_resnet50_exact(_resnet50(m).double(), (1, 4, 16), 224)


@pytest.mark.parametrize("m", [0.001, 0.01, 0.1])
def test_resnet50_float32_channels_last_agrees_with_the_loop_to_rounding(m):
    """The encoder's own setting (float32, channels-last): agreement is float32 rounding through 53 layers.

    Both the batched forward and the loop differ from a float64 computation by up to ~1e-5 (norm-relative) at
    m = 0.1 and N = 16, so they are compared at 5e-5; a per-batch update is off by orders of magnitude more.
    """
    net = _resnet50(m).to(memory_format=torch.channels_last)
    batched, y_batched, looped, y_looped = _batched_and_looped(net, _frames(16, 48, torch.float32))
    for (name, a), b in zip(batched.named_buffers(), looped.buffers(), strict=True):
        if a.is_floating_point():
            assert _rel(a, b) < 5e-5, name
    assert _rel(y_batched, y_looped) < 5e-5
    assert y_batched.is_contiguous()


def test_bf16_autocast_per_frame_update():
    """CPU bf16 autocast: BN sees bf16 activations; statistics accumulate in float32, output stays bf16."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), EMABatchNorm2d(8, momentum_ema=0.1), nn.ReLU(), nn.Conv2d(8, 8, 3))
    net.append(EMABatchNorm2d(8, momentum_ema=0.1)).eval()
    net = net.to(memory_format=torch.channels_last)
    x = _frames(6, 20, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batched, y_batched, looped, y_looped = _batched_and_looped(net, x)
        with torch.no_grad():
            conv_out = net[0](x)
    assert y_batched.dtype == torch.bfloat16 and batched[1].running_mean.dtype == torch.float32
    assert y_batched.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(batched.buffers(), looped.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y_batched.float(), y_looped.float(), rtol=1e-2, atol=1e-2)
    # first layer against the hand recursion on the (bf16) activations it saw
    first, r = batched[1], net[1].running_var.double().clone()
    for frame in conv_out.double():
        r = 0.9 * r + 0.1 * frame.var(dim=(1, 2), correction=0)
    torch.testing.assert_close(first.running_var.double(), r, rtol=1e-5, atol=1e-6)


def _reduced_frames(dtype: torch.dtype, fmt: torch.memory_format) -> torch.Tensor:
    """Six frames whose channel means differ per frame and sit far from 0 (16-bit sums would drift visibly)."""
    g = torch.Generator().manual_seed(7)
    x = 2.0 * torch.randn(6, 16, 24, 20, generator=g) + 20.0 * torch.rand(6, 16, 1, 1, generator=g)
    return x.to(dtype).contiguous(memory_format=fmt)


def _within_one_ulp(y: torch.Tensor, ref: torch.Tensor) -> None:
    """``y`` (bf16/fp16) is within one unit in the last place of ``y``'s dtype of the float32 ``ref``.

    A float32 computation rounded once is within half a unit; another float32 evaluation order can round the other
    way. Outputs that cancel to near 0 have tiny units, hence the absolute floor of float32 rounding of the terms.
    """
    ulp = torch.finfo(y.dtype).eps * 2.0 ** torch.frexp(ref.abs())[1].sub(1).float()
    err = (y.float() - ref).abs()
    floor = 1e-5 * float(ref.abs().max())
    assert bool((err <= torch.maximum(ulp, torch.full_like(ulp, floor))).all()), float((err / ulp).max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format], ids=["channels_last", "contiguous"])
def test_reduced_precision_per_frame_layer_equals_float32_layer_on_the_same_values(dtype, fmt):
    """A bf16/fp16 per-frame forward (CPU) = the float32 layer run on the same (upcast) values, frame order kept.

    Statistics to float32 rounding (they accumulate in float32: a 16-bit accumulation is off by ~1e-3 here), each
    output within one bf16/fp16 unit of the float32 output (normalisation in float32, rounded once), layout kept.
    Frames with different means make any change of order, or normalising with the whole batch's final statistics,
    visible in both.
    """
    x = _reduced_frames(dtype, fmt)
    bn, ref = _bn(c=16, m=0.3), _bn(c=16, m=0.3)
    mean, var = bn.running_mean.double().numpy().copy(), bn.running_var.double().numpy().copy()
    with torch.no_grad():
        y, y_ref = bn(x), ref(x.float())
    assert y.dtype == dtype and y.is_contiguous(memory_format=fmt)
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32 and int(bn.num_batches_tracked) == 6
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=2e-6, atol=1e-6)
    _within_one_ulp(y, y_ref)
    # and against a float64 hand recursion, which shares no code with either layer
    xn, y_hand = x.double().numpy(), []
    for frame in xn:
        mean = 0.7 * mean + 0.3 * frame.mean(axis=(1, 2))
        var = 0.7 * var + 0.3 * frame.var(axis=(1, 2))
        y_hand.append(_affine(bn, frame[None], mean[None], var[None])[0])
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5)
    _within_one_ulp(y, torch.from_numpy(np.stack(y_hand)).float())


def test_bf16_per_frame_forward_makes_no_float32_copy_of_the_activation():
    """On the CPU the bf16 path works frame by frame in the kernels: no float32 tensor beyond (N, C) statistics.

    The former path made three activation-sized float32 tensors per layer (the statistics' input copy, addcmul's
    promoted input and its float32 result), which is where bf16 EMA-BN lost its speed.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestFloat32(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                    self.largest = max(self.largest, t.numel())
            return out

    x, bn = _reduced_frames(torch.bfloat16, torch.channels_last), _bn(c=16, m=0.3)
    with torch.no_grad(), LargestFloat32() as mode:
        bn(x)
    assert 0 < mode.largest <= 2 * x.shape[0] * x.shape[1] + 2 * x.shape[1]  # stats, EMA weights, scratch
    assert int(bn.num_batches_tracked) == 6


def test_reduced_precision_per_frame_gradients_match_float32():
    """The per-frame normalisation stays differentiable (input, weight and bias), as the float32 path is."""
    x = _reduced_frames(torch.bfloat16, torch.channels_last).requires_grad_(True)
    xf = x.detach().float().requires_grad_(True)
    bn, ref = _bn(c=16, m=0.3), _bn(c=16, m=0.3)
    bn(x).float().square().sum().backward()
    ref(xf).square().sum().backward()
    torch.testing.assert_close(x.grad.float(), xf.grad, rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad, rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(bn.bias.grad, ref.bias.grad, rtol=2e-2, atol=1e-2)


def test_update_mode_reaches_the_layers_through_the_sb3_factory():
    import gymnasium as gym

    from hindex_sb3.extractor import HIndexExtractor, hindex_extractor

    space = gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
    for mode in ("frame", "batch"):
        kwargs = hindex_extractor(None, ema_update=mode)["features_extractor_kwargs"]
        assert kwargs["ema_update"] == mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            extractor = HIndexExtractor(space, **kwargs)
        assert {bn.ema_update for bn in extractor.encoder.ema_layers} == {mode}


def test_set_ema_momentum_names_a_module_that_is_not_one():
    from hindex_sb3.ema_bn import set_ema_momentum

    with pytest.raises(TypeError, match=r"module must be a torch nn\.Module, got int"):
        set_ema_momentum(5, 0.1)  # an AttributeError from inside torch before
