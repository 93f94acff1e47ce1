"""Stage 2 (``hindex_sb3.adapt``): frames, model geometry, loss normalisation, trainable set, export, resume, errors.

Everything runs on tiny inputs (32 x 32 model input, batch 2) with random VGG16 and backbone weights; the 224 geometry
is checked with one no-grad forward. Nothing is downloaded.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from synthetic_checkpoints import frankmocap_checkpoint, random_resnet50_state
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from hindex_sb3.adapt import (
    INITIAL_RUNNING_MEANS,
    Adapter,
    AdaptError,
    FrameDataset,
    FrameDatasetError,
    KeypointModel,
    PerceptualLoss,
    collect_frames,
    freeze_for_adaptation,
    gaussian_maps,
    load_base_backbone,
    soft_argmax,
    trainable_summary,
    vgg16_features,
)
from hindex_sb3.encoders import (
    CheckpointMismatchError,
    WeightsUnavailableError,
    create_encoder,
    read_adapted_checkpoint,
)

SIZE = 32  # model input in these tests; frames are rendered/synthesised at 37 (= 32 * 256 / 224)


def moving_square_episodes(n_episodes: int = 3, length: int = 6, side: int = 37, seed: int = 0) -> list[np.ndarray]:
    """Episodes of a bright square sliding over a textured background: something a keypoint can follow."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        background = rng.integers(0, 80, size=(3, side, side), dtype=np.uint8)
        frames = np.repeat(background[None], length, axis=0)
        y0, x0 = rng.integers(2, side - 12, size=2)
        for t in range(length):
            y, x = y0 + t, x0 + (t % 5)
            frames[t, :, y : y + 8, x : x + 8] = np.array([230, 200, 40], dtype=np.uint8)[:, None, None]
        episodes.append(frames)
    return episodes


@pytest.fixture(scope="module")
def frames() -> FrameDataset:
    return FrameDataset.from_episodes(moving_square_episodes(), {"env_id": "synthetic"})


@pytest.fixture(scope="module")
def vgg() -> nn.Sequential:
    torch.manual_seed(0)
    return vgg16_features(None)


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    """A FrankMocap-layout base checkpoint with non-trivial BN statistics/affine (as the real file would have)."""
    path = tmp_path_factory.mktemp("base") / "pose_shape_best.pth"
    torch.save(frankmocap_checkpoint(random_resnet50_state(seed=3, with_fc=False)), path)
    return path


def make_adapter(frames, vgg, base_state, **kwargs) -> Adapter:
    torch.manual_seed(0)
    model = KeypointModel(image_size=SIZE)
    model.backbone.load_state_dict(base_state)
    kwargs = {"batch_size": 2, "seed": 0, **kwargs}
    return Adapter(model, PerceptualLoss(vgg), frames, base_backbone=base_state, **kwargs)


@pytest.fixture(scope="module")
def run(frames, vgg, base_file):
    """One short uninterrupted run (calibrated heads, 4 iterations), with the states before and after training."""
    base_state, record = load_base_backbone(base_file)
    adapter = make_adapter(frames, vgg, base_state)
    adapter.calibrate(2)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    for _ in range(4):
        adapter.step()
    return adapter, before, base_state, record


# model ----------------------------------------------------------------------------------------------------------------
def test_geometry_and_parameter_counts_at_224():
    torch.manual_seed(0)
    model = KeypointModel()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.image_encoder) == 1_177_056
    assert count(model.pose_encoder) == 1_219_392
    assert count(model.image_renderer) == 2_352_867
    assert count(model.pose_net.deconv_layers) == 10_487_296
    assert count(model.backbone) == 23_508_032
    frames = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    x = model.prepare(frames)
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert model.pose_net.features(x).shape == (1, 2048, 7, 7)
        out = model(x, x)
    assert out.heatmaps.shape == (1, 30, 56, 56)
    assert out.keypoints.shape == (1, 30, 2)
    assert out.gaussians.shape == (1, 30, 56, 56)
    assert out.reconstruction.shape == (1, 3, 224, 224)
    assert model.heatmap_size == 56
    with pytest.raises(ValueError, match="multiple of 32"):
        KeypointModel(image_size=100)


def test_soft_argmax_matches_a_hand_computation():
    h = torch.tensor([[0.0, 1.0, 2.0, 0.5], [1.0, -1.0, 0.0, 3.0], [0.2, 0.1, 0.0, 0.0]]).view(1, 1, 3, 4)
    rows = np.array([3.5, 3.0, 0.3])  # sums over columns
    cols = np.array([1.2, 0.1, 2.0, 3.5])  # sums over rows
    p_y, p_x = np.exp(rows) / np.exp(rows).sum(), np.exp(cols) / np.exp(cols).sum()
    expected = [(p_y * np.arange(3)).sum(), (p_x * np.arange(4)).sum()]
    np.testing.assert_allclose(soft_argmax(h)[0, 0].numpy(), expected, rtol=1e-6)
    peaked = torch.full((2, 3, 16, 16), -1e3)
    peaked[1, 2, 11, 4] = 1e3  # one very confident cell: the expectation is that cell
    kp = soft_argmax(peaked)
    assert torch.allclose(kp[1, 2], torch.tensor([11.0, 4.0]))
    assert torch.allclose(kp[0, 0], torch.tensor([7.5, 7.5]))  # flat map -> centre of the grid


def test_gaussian_maps_match_a_hand_computation():
    kp = torch.tensor([[[1.5, 2.0], [0.0, 4.0]]])  # (B=1, K=2, (y, x))
    g = gaussian_maps(kp, (4, 5), sigma=2.0)
    assert g.shape == (1, 2, 4, 5)
    assert g[0, 0, 1, 2] == pytest.approx(math.exp(-(0.5**2) / 8))
    assert g[0, 0, 3, 0] == pytest.approx(math.exp(-(1.5**2 + 2.0**2) / 8))
    assert g[0, 1, 0, 4] == pytest.approx(1.0)
    assert g[0, 1, 3, 0] == pytest.approx(math.exp(-(9 + 16) / 8))


# loss -----------------------------------------------------------------------------------------------------------------
def test_vgg_slices_end_at_the_listed_relus(vgg):
    loss = PerceptualLoss(vgg)
    for block, channels in zip(loss.slices, (64, 128, 256, 512, 512), strict=True):
        assert isinstance(block[-1], nn.ReLU)
        assert [m for m in block if isinstance(m, nn.Conv2d)][-1].out_channels == channels
    # relu3_2 / relu4_2 / relu5_2 are the 2nd ReLU of their stage: conv counts per cumulative slice are 2, 4, 6, 9, 12
    convs = np.cumsum([sum(isinstance(m, nn.Conv2d) for m in b) for b in loss.slices])
    assert convs.tolist() == [2, 4, 6, 9, 12]


def test_loss_running_mean_normalisation_matches_a_hand_computation(vgg):
    loss = PerceptualLoss(vgg)
    torch.manual_seed(1)
    pred = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    target = torch.rand(2, 3, SIZE, SIZE)

    def raw_terms(p, t):  # independent: run the whole VGG features stack and tap the ReLU outputs
        terms, x, y = [F.mse_loss(p, t)], p, t
        for i, layer in enumerate(vgg[:28]):
            x, y = layer(x.clone()), layer(y.clone())
            if i in (3, 8, 13, 20, 27):
                terms.append(F.mse_loss(x, y))
        return torch.stack(terms).detach()

    r1 = raw_terms(pred, target)
    m0 = torch.tensor(INITIAL_RUNNING_MEANS)
    l1, raw1 = loss(pred, target)
    torch.testing.assert_close(raw1, r1)
    torch.testing.assert_close(l1.detach(), (r1 / m0).sum())
    m1 = m0 + 0.01 * (r1 - m0)
    torch.testing.assert_close(loss.running_means, m1)
    l1.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    pred2 = (pred.detach() * 0.5).requires_grad_()
    r2 = raw_terms(pred2, target)
    l2, _ = loss(pred2, target)
    torch.testing.assert_close(l2.detach(), (r2 / m1).sum())
    torch.testing.assert_close(loss.running_means, m1 + 0.01 * (r2 - m1))
    _, _ = loss(pred2, target, update=False)  # evaluation forwards leave the normalisation alone
    torch.testing.assert_close(loss.running_means, m1 + 0.01 * (r2 - m1))
    assert all(not p.requires_grad for p in loss.parameters())


def test_vgg16_weights_come_from_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        vgg16_features("default")
    assert "vgg16-397923af.pth" in str(err.value) and "https://download.pytorch.org" in str(err.value)
    assert str(tmp_path / "home" / "weights") in str(err.value)
    # A synthetic file in torchvision's vgg16 layout (features only; the classifier is not needed by the loss).
    torch.manual_seed(5)
    layers = make_layers(cfgs["D"])
    path = tmp_path / "vgg.pth"
    state = {f"features.{k}": v for k, v in layers.state_dict().items()}
    torch.save(state, path)
    loaded = vgg16_features(path)
    assert torch.equal(loaded[26].weight, layers[26].weight) and len(loaded) == 28
    del state["features.12.bias"]
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"12\.bias"):
        vgg16_features(path)


# trainable set --------------------------------------------------------------------------------------------------------
def test_trainable_set_is_the_references():
    torch.manual_seed(0)
    model = KeypointModel(image_size=SIZE)
    freeze_for_adaptation(model)
    backbone_trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    bn_names = {n for n, m in model.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bn_names) == 53
    assert backbone_trainable == {f"{n}.{p}" for n in bn_names for p in ("weight", "bias")}
    s = trainable_summary(model)
    assert s["backbone_trainable"] == 53_120 and s["backbone_total"] == 23_508_032
    assert s["backbone_trainable_fraction"] == pytest.approx(0.00226, abs=5e-6)
    assert s["parts_trainable"]["final_layer_unsup"] == 0  # an nn.Conv2d of pose_net: frozen, as in the reference
    assert s["parts_trainable"]["deconv_layers"] == 10_487_296  # ConvTranspose2d is not a Conv2d: trainable
    assert s["trainable_total"] == 15_289_731
    model.train()
    assert not any(m.training for m in model.modules())  # eval mode throughout, whatever train() says


def test_training_changes_only_the_intended_parameters(run):
    adapter, before, base_state, _ = run
    after = adapter.model.state_dict()
    model = adapter.model
    assert not any(m.training for m in model.modules())
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed, "nothing trained"
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):  # running statistics never move during training
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                assert f"{name}.{buf}" not in changed, f"{name}.{buf} changed"
    conv_keys = {f"pose_net.{n}.{p}" for n, m in model.pose_net.named_modules() if isinstance(m, nn.Conv2d)
                 for p, _ in m.named_parameters()}  # fmt: skip
    assert len(conv_keys) == 53 + 2 and not (conv_keys & changed)  # 53 backbone convs + the 1x1 keypoint layer
    backbone_changed = {k.removeprefix("pose_net.backbone.") for k in changed if k.startswith("pose_net.backbone.")}
    assert backbone_changed and all(k.endswith((".weight", ".bias")) for k in backbone_changed)
    bn_affine = {f"{n}.{p}" for n, m in model.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)
                 for p in ("weight", "bias")}  # fmt: skip
    assert backbone_changed <= bn_affine and len(backbone_changed) > 0.9 * len(bn_affine)
    for part in (
        "pose_net.deconv_layers.0.weight",
        "image_encoder.stages.0.0.weight",
        "image_renderer.blocks.3.6.bias",
    ):
        assert part in changed, part
    # conv weights bit-identical to the *base file*, not only to the pre-training state
    adapted = adapter.adapted_backbone()
    for k, v in base_state.items():
        if k not in bn_affine:
            assert torch.equal(adapted[k], v), k


def test_head_calibration_leaves_the_backbone_statistics_alone(frames, vgg, base_file):
    base_state, _ = load_base_backbone(base_file)
    adapter = make_adapter(frames, vgg, base_state)
    head = adapter.model.image_renderer.blocks[0][1]
    assert torch.equal(head.running_var, torch.ones_like(head.running_var))
    adapter.calibrate(2)
    assert not torch.equal(head.running_var, torch.ones_like(head.running_var))
    assert head.momentum == 0.1 and not head.training
    for k, v in adapter.model.backbone.state_dict().items():
        assert torch.equal(v, base_state[k]), k


# export ---------------------------------------------------------------------------------------------------------------
def test_export_loads_with_create_encoder_and_differs_only_in_bn_affine(run, tmp_path, base_file):
    adapter, _, base_state, record = run
    path = adapter.export(tmp_path / "adapted.pth", {"task": "synthetic", "base": record})
    state, provenance = read_adapted_checkpoint(path)
    assert provenance["iterations"] == 4 and provenance["task"] == "synthetic"
    assert provenance["base"]["file"] == "pose_shape_best.pth" and len(provenance["base"]["sha256"]) == 64
    assert provenance["bn_change"]["changed"] > 0 and provenance["lr"] == 1e-4
    enc_base = create_encoder("hindex", weights=base_file)
    enc = create_encoder("hindex", weights=path)
    a, b = enc.backbone.state_dict(), enc_base.backbone.state_dict()
    differing = {k for k in a if not torch.equal(a[k], b[k])}
    bn_affine = {f"{n}.{p}" for n, m in enc.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)
                 for p in ("weight", "bias")}  # fmt: skip
    assert differing and differing <= bn_affine
    # Manual computation: base ResNet-50 with the adapted gamma/beta copied in, same preprocessing.
    manual = torchvision.models.resnet50()
    manual.fc = nn.Identity()
    manual.load_state_dict(base_state)
    with torch.no_grad():
        for k in differing:
            manual.get_parameter(k).copy_(state[k])
    manual.eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected = manual(enc.preprocess(images.float() / 255))
    feats, feats_base = enc(images), enc_base(images)
    # Equal up to float rounding (oneDNN's summation order differs between module instances, ~1e-6 relative) ...
    scale = float(expected.abs().max())
    assert float((feats - expected).abs().max()) < 1e-5 * scale
    # ... and far from the base encoder's features: the adapted gamma/beta are what changed them.
    assert float((feats - feats_base).abs().max()) > 1e-4 * scale


# resume ---------------------------------------------------------------------------------------------------------------
def test_resume_gives_the_same_result_as_an_uninterrupted_run(run, frames, vgg, tmp_path):
    full, _, base_state, _ = run
    first = make_adapter(frames, vgg, base_state)
    first.calibrate(2)
    first.run(2, checkpoint_path=tmp_path / "ckpt.pt", progress=False)
    resumed = make_adapter(frames, vgg, base_state)  # fresh process state: new model, new optimizer
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.iteration == 2 and len(resumed.history["fixed"]) == 2
    resumed.run(4, progress=False)
    assert resumed.iteration == 4
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 4
    # Same pairs, same Adam state, same running means: on one machine the runs agree bit for bit.
    assert resumed.history == full.history
    a, b = resumed.model.state_dict(), full.model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert torch.equal(resumed.loss.running_means, full.loss.running_means)
    other = FrameDataset.from_episodes(moving_square_episodes(seed=9), {"env_id": "synthetic"})
    with pytest.raises(AdaptError, match="another frame dataset"):
        make_adapter(other, vgg, base_state).load_checkpoint(tmp_path / "ckpt.pt")
    with pytest.raises(AdaptError, match="batch_size"):
        make_adapter(frames, vgg, base_state, batch_size=3).load_checkpoint(tmp_path / "ckpt.pt")


# data -----------------------------------------------------------------------------------------------------------------
def test_frame_dataset_roundtrip_pairs_and_errors(frames, tmp_path):
    path = frames.save(tmp_path / "f.npz")
    loaded = FrameDataset.load(path)
    assert np.array_equal(loaded.frames, frames.frames) and loaded.meta == {"env_id": "synthetic"}
    assert loaded.episode_lengths.tolist() == [6, 6, 6] and loaded.frame_size == (37, 37)
    rng = np.random.default_rng(0)
    src, tgt = frames.sample_pairs(200, rng, window=3)
    assert np.all(src != tgt)
    assert np.all(src // 6 == tgt // 6)  # same episode
    assert np.all(src % 6 < 3) and np.all(tgt % 6 < 3)  # within the window
    with pytest.raises(FrameDatasetError, match="empty"):
        FrameDataset(np.zeros((0, 3, 37, 37), np.uint8), np.zeros(0))
    with pytest.raises(FrameDatasetError, match="no episodes"):
        FrameDataset.from_episodes([])
    with pytest.raises(FrameDatasetError, match="fewer than 2 frames"):
        FrameDataset.from_episodes([np.zeros((3, 3, 8, 8), np.uint8), np.zeros((1, 3, 8, 8), np.uint8)])
    with pytest.raises(FrameDatasetError, match="uint8"):
        FrameDataset.from_episodes([np.zeros((3, 3, 8, 8), np.float32)])
    with pytest.raises(FrameDatasetError, match="smaller than the model input"):
        frames.check_image_size(64)
    with pytest.raises(FrameDatasetError, match="smaller than the model input"):
        Adapter(KeypointModel(image_size=64), PerceptualLoss(make_layers(cfgs["D"])), frames)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(FrameDatasetError, match=r"not a hindex_sb3\.frames/1"):
        FrameDataset.load(tmp_path / "other.npz")


class ImageEnv(gym.Env):
    """A user's environment whose observation is a channel-last image (no dict, no 'pixels' key)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (40, 48, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        obs = np.zeros((40, 48, 3), np.uint8)
        obs[:, :, 0] = 10 * self.t
        return obs

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 4, {}


def test_collect_frames_from_our_env_and_a_user_env():
    ds = collect_frames(
        "HInDex/Door-v0", "random", 2, max_steps=3, env_kwargs={"obs_mode": "all", "image_size": 37}, seed=4
    )
    assert ds.frames.shape == (8, 3, 37, 37) and ds.episode_lengths.tolist() == [4, 4]  # T + 1 frames
    assert ds.meta["env_id"] == "HInDex/Door-v0" and ds.meta["policy"] == "random"
    assert not np.array_equal(ds.frames[0], ds.frames[3])
    user = collect_frames(ImageEnv(), lambda obs: np.zeros(2, np.float32), 2)
    assert user.frames.shape == (10, 3, 40, 48) and user.episode_lengths.tolist() == [5, 5]
    assert user.frames[4, 0, 0, 0] == 40 and user.meta["policy"].startswith("callable")
    with pytest.raises(FrameDatasetError, match="n_episodes"):
        collect_frames(ImageEnv(), "random", 0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_episodes": True}, TypeError, "n_episodes must be an integer"),
        ({"n_episodes": 2.5}, TypeError, "n_episodes must be an integer"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": 1.0}, TypeError, "seed must be an integer"),
        ({"max_steps": 0}, ValueError, "max_steps must be >= 1"),
        ({"deterministic": "yes"}, TypeError, "deterministic"),
    ],
)
def test_collect_frames_refuses_bad_arguments_naming_them(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        collect_frames(ImageEnv(), "random", **{"n_episodes": 1, **kwargs})


def test_collect_frames_takes_a_numpy_integer_seed_as_the_same_int():
    # gymnasium's reset refuses numpy integers: collect_frames(seed=np.int64(4)) used to fail on the first reset
    kwargs = {"max_steps": 2, "env_kwargs": {"image_size": 24}}
    a = collect_frames("HInDex/Door-v0", "random", 1, seed=np.int64(4), **kwargs)
    b = collect_frames("HInDex/Door-v0", "random", 1, seed=4, **kwargs)
    assert np.array_equal(a.frames, b.frames) and a.meta["seed"] == 4 and type(a.meta["seed"]) is int


# loss falls -----------------------------------------------------------------------------------------------------------
def test_reconstruction_loss_falls_fast(frames, vgg, base_file):
    """Fast variant: 12 iterations on sliding squares; the pixel MSE ends well below its starting value."""
    base_state, _ = load_base_backbone(base_file)
    adapter = make_adapter(frames, vgg, base_state)
    adapter.calibrate(2)
    adapter.run(12, progress=False)
    mse = np.asarray(adapter.history["pixels"])
    assert mse[-4:].mean() < 0.6 * mse[0], mse.round(4).tolist()


@pytest.mark.slow
def test_reconstruction_loss_falls_between_the_first_and_last_100_iterations(vgg, base_file):
    """300 iterations at 32 x 32, batch 8: mean loss of the last 100 iterations clearly below the first 100."""
    ds = FrameDataset.from_episodes(moving_square_episodes(n_episodes=8, length=20, seed=2))
    base_state, _ = load_base_backbone(base_file)
    adapter = make_adapter(ds, vgg, base_state, batch_size=8)
    adapter.calibrate(4)
    adapter.run(300, progress=False)
    h = {k: np.asarray(v) for k, v in adapter.history.items()}
    assert h["pixels"][-100:].mean() < 0.8 * h["pixels"][:100].mean()
    assert h["fixed"][-100:].mean() < 0.8 * h["fixed"][:100].mean()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_adapter_trains_and_exports_on_cuda(frames, vgg, base_file, tmp_path):
    """The whole step (batch, model, loss, history bookkeeping) on a GPU; the export is still backbone-exact."""
    base_state, _ = load_base_backbone(base_file)
    adapter = make_adapter(frames, vgg, base_state, device=torch.device("cuda"))
    adapter.calibrate(2)
    rows = [adapter.step() for _ in range(3)]
    assert all(math.isfinite(v) for row in rows for v in row.values())
    path = adapter.export(tmp_path / "adapted.pth", {"task": "synthetic"})
    encoder = create_encoder("hindex", weights=path)
    convs = {k: v for k, v in encoder.backbone.state_dict().items() if v.dim() == 4}
    assert convs and all(torch.equal(v.cpu(), base_state[k].cpu()) for k, v in convs.items())
