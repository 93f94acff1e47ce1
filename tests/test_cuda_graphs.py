"""CUDA-graph replay of encoders: same features and same EMA-BN statistics as eager forwards.

The GPU tests skip without CUDA (CI has none); the CPU tests check what must hold everywhere: graphs are opt-in,
CPU input runs eagerly, and encoders with graphs enabled still copy and pickle.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

from hindex_sb3.ema_bn import set_ema_momentum, set_ema_update
from hindex_sb3.encoders import RandomWeightsWarning, create_encoder
from hindex_sb3.encoders.cuda_graphs import GraphCache

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _encoder(device: str = "cpu", **kwargs):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_encoder("hindex", weights=None, device=device, **kwargs)


def _images(batch: int, seed: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, 96, 96), dtype=torch.uint8, generator=g).to(device)


def _stats(encoder) -> list[torch.Tensor]:
    return [t.clone() for bn in encoder.ema_layers for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]


# -- everywhere ----------------------------------------------------------------------------------------------------
def test_graphs_are_opt_in_and_cpu_input_runs_eagerly():
    plain = _encoder()
    graphed = _encoder(cuda_graphs=True)
    assert not plain.cuda_graphs and graphed.cuda_graphs
    x = _images(2, 0)
    torch.testing.assert_close(graphed(x), plain(x), rtol=0, atol=0)
    assert len(graphed._graphs) == 0  # nothing captured for CPU input
    assert not graphed.use_cuda_graphs(False).cuda_graphs


def test_encoder_with_graphs_copies_and_pickles_without_its_graphs():
    encoder = _encoder(cuda_graphs=True, ema_scope="all", ema_momentum=0.1)
    clone = copy.deepcopy(encoder)
    assert clone.cuda_graphs and clone._graphs.module is clone and len(clone._graphs) == 0
    buffer = io.BytesIO()
    torch.save(encoder, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    assert restored.cuda_graphs and restored._graphs.module is restored


def test_graph_key_covers_every_ema_setting():
    """What a captured graph bakes in (momentum, update mode, update flag) must change the key (checked on the CPU)."""
    encoder = _encoder(ema_scope="all", ema_momentum=0.1)
    keys = {encoder._graph_key(True), encoder._graph_key(False)}
    set_ema_update(encoder, "batch")
    keys.add(encoder._graph_key(True))
    set_ema_momentum(encoder, 0.2)
    keys.add(encoder._graph_key(True))
    assert len(keys) == 4


def test_graph_cache_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_graphs"):
        GraphCache(torch.nn.Identity(), max_graphs=0)
    with pytest.raises(ValueError, match="CUDA input"):
        GraphCache(torch.nn.Identity()).run(lambda t: t, torch.zeros(2))


# -- on a GPU ------------------------------------------------------------------------------------------------------
@cuda
def test_replayed_features_equal_eager_features_for_each_batch_size():
    eager = _encoder("cuda")
    graphed = _encoder("cuda", cuda_graphs=True)
    for batch, seed in ((1, 0), (4, 1), (1, 2), (4, 3)):
        x = _images(batch, seed, "cuda")
        torch.testing.assert_close(graphed(x), eager(x), rtol=1e-4, atol=1e-5)
    assert len(graphed._graphs) == 2  # one graph per batch size, reused


@cuda
def test_ema_bn_updates_match_eager_step_by_step():
    """Each replay makes the same updates as an eager forward of the same batch; capturing changes nothing."""
    eager = _encoder("cuda", ema_scope="all", ema_momentum=0.1)
    graphed = copy.deepcopy(eager).use_cuda_graphs()
    for seed in range(4):
        x = _images(2, seed, "cuda")
        got, want = graphed(x, update_bn_stats=True), eager(x, update_bn_stats=True)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        for a, b in zip(_stats(graphed), _stats(eager), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # a forward without updates in between: its own graph, statistics untouched
        before = _stats(graphed)
        torch.testing.assert_close(graphed(x), eager(x), rtol=1e-4, atol=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(before, _stats(graphed), strict=True))


@cuda
def test_capturing_without_statistics_updates_leaves_the_buffers_version_counters_alone():
    """DAPG reads the statistics' version counters as "the statistics moved" and refused to cache demo features
    when a capture had copied the (unchanged) buffers back after its warm-up."""
    graphed = _encoder("cuda", cuda_graphs=True, ema_scope="all", ema_momentum=0.1)
    versions = [b._version for b in graphed.buffers()]
    graphed(_images(3, 0, "cuda"))
    graphed(_images(3, 1, "cuda"))
    assert (graphed._graphs.captures, graphed._graphs.replays) == (1, 2)
    assert [b._version for b in graphed.buffers()] == versions


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.fixture
def no_tf32():
    """Batch 4 against batch 1 compares different convolution kernels: keep them in full float32 precision."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


@cuda
def test_replay_equals_eager_single_frame_updates(no_tf32):
    """A replayed batch of N frames makes the N updates of N eager one-frame forwards, frame i with its own.

    Different batch sizes run different kernels, so agreement is float32 rounding through 53 layers (~1e-5
    norm-relative on the CPU), compared norm-wise; a per-batch update differs by orders of magnitude more.
    """
    eager = _encoder("cuda", ema_scope="all", ema_momentum=0.1)
    graphed = copy.deepcopy(eager).use_cuda_graphs()
    start = int(graphed.backbone.bn1.num_batches_tracked)
    for seed in range(3):  # the second and third replays reuse the graph, starting from the moved statistics
        x = _images(4, seed, "cuda")
        got = graphed(x, update_bn_stats=True)
        want = torch.cat([eager(frame, update_bn_stats=True) for frame in x.split(1)])
        assert _rel(got, want) < 1e-4
        for a, b in zip(_stats(graphed), _stats(eager), strict=True):
            assert _rel(a, b) < 1e-4
    assert int(graphed.backbone.bn1.num_batches_tracked) - start == 12
    assert len(graphed._graphs) == 1


@cuda
def test_update_mode_is_part_of_the_key():
    eager = _encoder("cuda", ema_scope="all", ema_momentum=0.1)
    graphed = copy.deepcopy(eager).use_cuda_graphs()
    x = _images(4, 0, "cuda")
    torch.testing.assert_close(graphed(x, update_bn_stats=True), eager(x, update_bn_stats=True), rtol=1e-4, atol=1e-5)
    for enc in (eager, graphed):
        set_ema_update(enc, "batch")
    torch.testing.assert_close(graphed(x, update_bn_stats=True), eager(x, update_bn_stats=True), rtol=1e-4, atol=1e-5)
    assert len(graphed._graphs) == 2
    for a, b in zip(_stats(graphed), _stats(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@cuda
def test_changed_momentum_and_loaded_weights_are_not_replayed_stale():
    eager = _encoder("cuda", ema_scope="all", ema_momentum=0.1)
    graphed = copy.deepcopy(eager).use_cuda_graphs()
    x = _images(2, 0, "cuda")
    graphed(x, update_bn_stats=True), eager(x, update_bn_stats=True)
    for enc in (eager, graphed):
        set_ema_momentum(enc, 0.5)
    torch.testing.assert_close(graphed(x, update_bn_stats=True), eager(x, update_bn_stats=True), rtol=1e-4, atol=1e-5)
    other = _encoder("cuda", ema_scope="all", ema_momentum=0.5)
    torch.manual_seed(1)
    for p in other.parameters():
        p.data.normal_(0.0, 0.05)
    eager.load_state_dict(other.state_dict())
    graphed.load_state_dict(other.state_dict())
    assert len(graphed._graphs) == 0
    torch.testing.assert_close(graphed(x), eager(x), rtol=1e-4, atol=1e-5)


@cuda
def test_callers_autocast_neither_changes_features_nor_replays_a_stale_graph():
    """The encoder's precision is its own: a caller's bf16 autocast leaves an fp32 encoder fp32 (its own graph)."""
    eager = _encoder("cuda")
    graphed = _encoder("cuda", cuda_graphs=True)
    x = _images(2, 0, "cuda")
    want = eager(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        torch.testing.assert_close(graphed(x), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(graphed(x), want, rtol=1e-4, atol=1e-5)
    assert len(graphed._graphs) == 2


@cuda
def test_bf16_precision_replays_equal_eager_bf16_with_per_frame_ema():
    """precision="bf16" under graphs: eager bf16's features and per-frame EMA statistics (float32 buffers)."""
    eager = _encoder("cuda", ema_scope="all", ema_momentum=0.1, precision="bf16")
    graphed = copy.deepcopy(eager).use_cuda_graphs()
    for seed in range(3):
        x = _images(4, seed, "cuda")
        got, want = graphed(x, update_bn_stats=True), eager(x, update_bn_stats=True)
        assert got.dtype == torch.float32 and _rel(got, want) < 1e-3
        for a, b in zip(_stats(graphed), _stats(eager), strict=True):
            assert _rel(a, b) < 1e-4
    assert {bn.running_var.dtype for bn in graphed.ema_layers} == {torch.float32}
    assert len(graphed._graphs) == 1
    for enc in (eager, graphed):
        enc.set_precision("fp32")
    assert len(graphed._graphs) == 0  # a precision change drops the bf16 graphs
    x = _images(4, 9, "cuda")
    torch.testing.assert_close(graphed(x), eager(x), rtol=1e-4, atol=1e-5)
