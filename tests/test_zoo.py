"""Bring your own encoder: timm/torchvision models by name, and encoders registered by other packages.

The plugin tests make the example package in ``tests/fixtures/user_encoder_pkg`` visible *without installing it*:
a temporary ``*.dist-info`` folder with its ``entry_points.txt`` on ``sys.path`` is exactly what ``pip install``
leaves behind for ``importlib.metadata`` to find, so the real discovery path runs, in CI, without touching the venv.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from synthetic_checkpoints import randomise_bn
from torch import nn

from hindex_sb3.encoders import (
    CheckpointMismatchError,
    RandomWeightsWarning,
    WeightsUnavailableError,
    create_encoder,
    get_encoder_spec,
    list_encoders,
    unregister_encoder,
)
from hindex_sb3.encoders.plugins import ENTRY_POINT_GROUP, plugin_errors, reset_plugins

FIXTURE_PKG = Path(__file__).parent / "fixtures" / "user_encoder_pkg"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=g)


def _reference_input(images_u8: torch.Tensor, resize: int, crop: int, mode: str, mean, std) -> torch.Tensor:
    """Shorter side -> ``resize`` (antialiased), centre ``crop``, mean/std: written out, not taken from the package."""
    x = images_u8.float() / 255.0
    x = F.interpolate(x, size=(resize, resize), mode=mode, align_corners=False, antialias=True)
    top = round((resize - crop) / 2.0)
    x = x[..., top : top + crop, top : top + crop]
    return (x - mean) / std


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------------------------------------------------
# timm


def test_timm_encoder_takes_timm_preprocessing_and_hub_weights(tmp_path, monkeypatch, images):
    import huggingface_hub
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = randomise_bn(timm.create_model("resnet18", pretrained=False), 1)  # with its fc classifier
    served = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(served))
    calls = []

    def fake_hub(repo_id, filename, revision=None, local_files_only=False, **kw):
        calls.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not in the local cache")
        return str(served)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub)
    spec = get_encoder_spec("timm:resnet18")
    # timm's published eval config of resnet18.a1_in1k: 224 crop, crop_pct 0.95 (235 px), bicubic, ImageNet mean/std
    assert (spec.feature_dim, spec.input_size, spec.resize, spec.interpolation) == (512, 224, 235, "bicubic")
    assert spec.has_batchnorm and spec.weights.url == "https://huggingface.co/timm/resnet18.a1_in1k"

    with pytest.raises(WeightsUnavailableError, match=r"timm/resnet18\.a1_in1k") as err:
        create_encoder("timm:resnet18")  # offline: only the local Hub cache may be used
    assert "HINDEX_SB3_OFFLINE" in str(err.value) and "weights=None" in str(err.value)
    assert calls and all(local for _, _, local in calls)

    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    enc = create_encoder("timm:resnet18")
    assert calls[-1] == ("timm/resnet18.a1_in1k", "model.safetensors", False)
    x = _reference_input(images, 235, 224, "bicubic", MEAN, STD)
    with torch.no_grad():
        expected = full.forward_head(full.forward_features(x), pre_logits=True)
    assert _rel_err(enc(images), expected) <= 1e-5


def test_timm_vit_has_no_batchnorm_and_random_init_is_labelled(images):
    spec = get_encoder_spec("timm:vit_small_patch16_224")
    assert (spec.feature_dim, spec.mean, spec.has_batchnorm) == (384, (0.5, 0.5, 0.5), False)
    with pytest.raises(ValueError, match="no BatchNorm"):
        create_encoder("timm:vit_small_patch16_224", None, ema_scope="all")
    with pytest.warns(RandomWeightsWarning):
        enc = create_encoder("timm:resnet18", None, ema_scope="all", ema_momentum=0.5)
    assert len(enc.ema_layers) == 20
    before = enc.ema_layers[0].running_mean.clone()
    enc(images[:1], update_bn_stats=True)
    assert not torch.equal(before, enc.ema_layers[0].running_mean)


def test_unknown_external_models_are_refused():
    with pytest.raises(KeyError, match="unknown timm model 'no_such_net'"):
        get_encoder_spec("timm:no_such_net")
    with pytest.raises(KeyError, match="unknown torchvision model 'no_such_net'"):
        get_encoder_spec("torchvision:no_such_net")
    with pytest.raises(KeyError, match="no weights 'IMAGENET1K_V9'"):
        get_encoder_spec("torchvision:resnet18.IMAGENET1K_V9")
    with pytest.raises(ValueError, match="Linear classifier"):
        get_encoder_spec("torchvision:squeezenet1_0")
    with pytest.raises(ValueError, match="reserved"):
        from hindex_sb3.encoders import register_encoder

        register_encoder(get_encoder_spec("timm:resnet18"))


# ---------------------------------------------------------------------------------------------------------------------
# torchvision


def test_torchvision_encoder_uses_the_weights_transforms_url_and_hash(images):
    torch.manual_seed(1)
    full = randomise_bn(torchvision.models.resnet18(weights=None), 2)
    spec = get_encoder_spec("torchvision:resnet18")
    assert (spec.feature_dim, spec.resize, spec.input_size, spec.interpolation) == (512, 256, 224, "bilinear")
    assert spec.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert spec.weights.sha256_prefix == "f37072fd"  # checked on download (see test_encoders' SHA-256 test)
    spec.weights.cache_path.parent.mkdir(parents=True)
    torch.save(full.state_dict(), spec.weights.cache_path)  # the official layout, classifier included
    enc = create_encoder("torchvision:resnet18")  # offline: from the cache
    full.fc = nn.Identity()
    with torch.no_grad():
        expected = full(_reference_input(images, 256, 224, "bilinear", MEAN, STD))
    assert _rel_err(enc(images), expected) <= 1e-5


def test_models_the_meta_device_cannot_build_or_run_in_train_mode_are_probed(images):
    regnet = get_encoder_spec("torchvision:regnet_y_400mf")  # its init copies data: built on the CPU instead
    inception = get_encoder_spec("torchvision:inception_v3")  # aux head: probed in eval mode, 299-px input
    assert (regnet.feature_dim, inception.feature_dim, inception.input_size) == (440, 2048, 299)
    with pytest.warns(RandomWeightsWarning):
        enc = create_encoder("torchvision:regnet_y_400mf", None)
    assert enc(images[:1]).shape == (1, 440)


def test_torchvision_wrong_layout_is_refused_with_the_differences(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        create_encoder("torchvision:resnet34", tmp_path / "r18.pth")
    assert "layer1.2.conv1.weight" in err.value.missing and not err.value.unexpected
    spec = get_encoder_spec("torchvision:convnext_tiny")
    assert (spec.resize, spec.input_size, spec.feature_dim, spec.has_batchnorm) == (236, 224, 768, False)


# ---------------------------------------------------------------------------------------------------------------------
# Plugins through the entry-point group


def _dist_info(root: Path, entry_points: str) -> Path:
    info = root / "hindex_user_encoder-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hindex-user-encoder\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")
    return root


@pytest.fixture
def user_plugin(tmp_path, monkeypatch):
    """The fixture package as if pip-installed: its code and a dist-info with the entry point on sys.path."""
    site = _dist_info(tmp_path / "site", "user_tiny = hindex_user_encoder:encoders")
    monkeypatch.syspath_prepend(str(FIXTURE_PKG))
    monkeypatch.syspath_prepend(str(site))
    reset_plugins()
    yield site
    if "user_tiny" in list_encoders(plugins=False):
        unregister_encoder("user_tiny")
    reset_plugins()
    sys.modules.pop("hindex_user_encoder", None)


def test_plugin_encoder_is_found_through_the_entry_point(user_plugin, tmp_path, images):
    assert "user_tiny" not in list_encoders(plugins=False)  # nothing is imported before it is needed
    spec = get_encoder_spec("user_tiny")
    assert spec.feature_dim == 16 and spec.has_batchnorm and "user_tiny" in list_encoders()
    from hindex_user_encoder import TinyConvNet

    torch.manual_seed(3)
    net = randomise_bn(TinyConvNet(), 4)
    path = tmp_path / "tiny.pth"
    torch.save(net.state_dict(), path)
    enc = create_encoder("user_tiny", path, ema_scope="all")
    with torch.no_grad():
        expected = net(_reference_input(images, 36, 32, "bilinear", MEAN, STD))
    assert _rel_err(enc(images), expected) <= 1e-5
    assert len(enc.ema_layers) == 2
    with pytest.raises(WeightsUnavailableError, match="no published weight file"):
        create_encoder("user_tiny")
    bad = {k: v for k, v in net.state_dict().items() if k != "bn2.bias"}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match=r"bn2\.bias"):
        create_encoder("user_tiny", tmp_path / "bad.pth")


def test_plugin_encoder_in_an_sb3_extractor_gets_ema_bn(user_plugin):
    import gymnasium as gym

    from hindex_sb3.extractor import HIndexExtractor

    space = gym.spaces.Dict(
        {"pixels": gym.spaces.Box(0, 255, (3, 40, 40), np.uint8), "proprio": gym.spaces.Box(-1, 1, (3,))}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        ext = HIndexExtractor(space, encoder="user_tiny", weights=None)
    assert ext.features_dim == 19 and ext.has_ema_bn


def test_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    site = _dist_info(tmp_path / "site", "broken = no_such_module_xyz:encoders")
    monkeypatch.syspath_prepend(str(site))
    reset_plugins()
    try:
        with pytest.warns(RuntimeWarning, match="'broken'"):
            names = list_encoders()
        assert "hindex" in names
        assert "broken" in plugin_errors()
        with pytest.raises(KeyError, match="entry points that failed to load"):
            get_encoder_spec("nothing_called_this")
    finally:
        reset_plugins()


def test_user_encoder_trains_with_dapg_through_the_cli(user_plugin, tmp_path, capsys):
    """``hindex train --encoder user_tiny``: the acceptance check of issue 14 (BYO encoder, DAPG, EMA-BN)."""
    from hindex_sb3.cli import main

    args = ["train", "door", "--encoder", "user_tiny", "--weights", "random", "--demos", "none", "--iterations", "1"]
    args += ["--trajectories", "1", "--horizon", "4", "--image-size", "32", "--eval-episodes", "1", "--no-video"]
    args += ["--no-progress", "--ema-momentum", "0.1", "--out", str(tmp_path)]
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads(next(tmp_path.glob("door_user_tiny*/summary.json")).read_text())
    assert summary["encoder"] == "user_tiny" and summary["ema_momentum"] == 0.1 and summary["iterations"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2 on all parameters (Fig. 7's ablation): hindex adapt --trainable all


@pytest.fixture(scope="module")
def adapt_parts():
    from test_adapt import moving_square_episodes

    from hindex_sb3.adapt import FrameDataset, vgg16_features
    from hindex_sb3.encoders.resnet import resnet50_trunk

    torch.manual_seed(0)
    frames = FrameDataset.from_episodes(moving_square_episodes(), {"env_id": "synthetic"})
    vgg = vgg16_features(None)
    torch.manual_seed(1)
    base = {k: v.clone() for k, v in randomise_bn(resnet50_trunk(), 5).state_dict().items()}
    return frames, vgg, base


def _adapter(adapt_parts, trainable: str):
    from hindex_sb3.adapt import Adapter, KeypointModel, PerceptualLoss

    frames, vgg, base = adapt_parts
    torch.manual_seed(0)
    model = KeypointModel(image_size=32)
    model.backbone.load_state_dict(base)
    return Adapter(model, PerceptualLoss(vgg), frames, batch_size=2, base_backbone=base, trainable=trainable)


def test_trainable_scopes_count_the_papers_numbers():
    from hindex_sb3.adapt import KeypointModel, freeze_for_adaptation, trainable_summary

    model = KeypointModel(image_size=32)
    freeze_for_adaptation(model, "bn")
    bn = trainable_summary(model)
    freeze_for_adaptation(model, "all")
    full = trainable_summary(model)
    assert (bn["backbone_trainable"], bn["trainable_total"]) == (53_120, 15_289_731)
    assert full["backbone_trainable"] == full["backbone_total"] == 23_508_032
    assert full["trainable_total"] == full["total"] == 38_752_353  # + keypoint layer 7,710 and the frozen convs
    assert full["parts_trainable"]["final_layer_unsup"] == 7_710
    with pytest.raises(ValueError, match="trainable must be one of"):
        freeze_for_adaptation(model, "conv")


def test_trainable_all_moves_every_backbone_parameter_and_exports(adapt_parts, tmp_path, images):
    from hindex_sb3.adapt import AdaptError
    from hindex_sb3.encoders import read_adapted_checkpoint
    from hindex_sb3.encoders.resnet import resnet50_trunk

    _, _, base = adapt_parts
    adapter = _adapter(adapt_parts, "all")
    adapter.calibrate(1)
    for _ in range(2):
        adapter.step()
    change = adapter.backbone_change()
    assert change["tensors_changed"] == change["tensors_total"] == 159  # 53 conv weights + 53 x (gamma, beta)
    # Not every *number*: at a 32-px input layer4 sees 1x1 maps, so the outer taps of its 3x3 kernels only ever
    # multiply zero padding and get no gradient (the 64-px CLI run in docs/representations.md: 70.8 %).
    assert change["numbers_total"] == 23_508_032 and change["numbers_changed"] > 0.3 * 23_508_032
    adapted = adapter.adapted_backbone()
    for k, v in base.items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(adapted[k], v), k  # eval mode throughout: statistics never move
    path = adapter.export(tmp_path / "all.pth", {"task": "synthetic"})
    state, provenance = read_adapted_checkpoint(path)
    assert provenance["trainable"] == "all" and provenance["backbone_change"]["tensors_changed"] == 159
    enc = create_encoder("hindex", weights=path)
    reference = resnet50_trunk().eval()
    reference.load_state_dict(state)
    with torch.no_grad():
        expected = reference(enc.preprocess(images[:1].float() / 255))
    assert _rel_err(enc(images[:1]), expected) <= 1e-5
    adapter.save_checkpoint(tmp_path / "run.pt")
    bn_only = _adapter(adapt_parts, "bn")
    with pytest.raises(AdaptError, match=r"trainable \(--trainable\)='all'"):
        bn_only.load_checkpoint(tmp_path / "run.pt")


def test_trainable_bn_export_still_refuses_moved_convolutions(adapt_parts):
    from hindex_sb3.adapt import AdaptError

    adapter = _adapter(adapt_parts, "bn")
    with torch.no_grad():
        adapter.model.backbone.layer2[0].conv1.weight.add_(1.0)
    with pytest.raises(AdaptError, match=r"BatchNorm gamma/beta.*layer2\.0\.conv1\.weight"):
        adapter.adapted_backbone()
    all_params = _adapter(adapt_parts, "all")
    with torch.no_grad():
        all_params.model.backbone.bn1.running_mean.add_(1.0)
    with pytest.raises(AdaptError, match=r"bn1\.running_mean"):
        all_params.adapted_backbone()


def test_cli_adapt_parser_takes_the_trainable_scope():
    from hindex_sb3.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["adapt", "door"]).trainable == "bn"
    assert parser.parse_args(["adapt", "door", "--trainable", "all"]).trainable == "all"
    with pytest.raises(SystemExit):
        parser.parse_args(["adapt", "door", "--trainable", "conv"])


def test_cli_adapt_trainable_all_end_to_end(tmp_path, capsys):
    from hindex_sb3.cli import main
    from hindex_sb3.encoders import read_adapted_checkpoint

    out = tmp_path / "door_all"
    args = ["adapt", "door", "--weights", "random", "--vgg-weights", "random", "--episodes", "2", "--max-steps", "3"]
    args += ["--image-size", "32", "--batch-size", "2", "--calibrate-batches", "1", "--checkpoint-every", "0"]
    args += ["--no-progress", "--no-figures", "--iterations", "2", "--trainable", "all", "--out", str(out)]
    assert main(args) == 0
    assert "23,508,032 of 23,508,032 parameters trainable (100.00 %, all)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trainable_scope"] == "all" and summary["backbone_change"]["tensors_changed"] == 159
    _, provenance = read_adapted_checkpoint(out / "adapted_encoder.pth")
    assert provenance["trainable"] == "all"
    assert create_encoder("hindex", weights=out / "adapted_encoder.pth")(torch.zeros(1, 3, 37, 37)).shape == (1, 2048)


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2 for any encoder with BatchNorm: hindex adapt --encoder NAME


def _layer4(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's layer4 map, written out module by module (the independent reference)."""
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    return trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))


def test_feature_map_rules_find_the_map_before_pooling():
    from hindex_sb3.adapt.feature_map import FeatureMap, FeatureMapError

    torch.manual_seed(0)
    resnet = randomise_bn(torchvision.models.resnet18(weights=None), 1)
    resnet.fc = nn.Identity()
    x = torch.rand(2, 3, 64, 64)
    tap = FeatureMap(resnet, probe_size=64)
    assert tap.rule == "input of the last adaptive pooling layer" and (tap.channels, tap.stride) == (512, 32)
    assert torch.equal(tap(x), _layer4(resnet, x))

    sys.path.insert(0, str(FIXTURE_PKG))
    try:
        from hindex_user_encoder import TinyConvNet
    finally:
        sys.path.remove(str(FIXTURE_PKG))
    tiny = randomise_bn(TinyConvNet(), 2)
    tap = FeatureMap(tiny, probe_size=32)  # it pools with x.mean((2, 3)): no pooling module to tap
    assert tap.rule == "last 4-D leaf output" and (tap.channels, tap.stride) == (16, 4)
    expected = tiny.bn2(tiny.conv2(torch.relu(tiny.bn1(tiny.conv1(x)))))
    assert torch.equal(tap(x), expected)

    explicit = FeatureMap(tiny, feature_map=lambda t, v: t.bn1(t.conv1(v)), probe_size=32)
    assert explicit.rule == "spec feature_map" and explicit.channels == 8
    mlp = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))
    with pytest.raises(FeatureMapError, match="no 4-D feature map"):
        FeatureMap(mlp, probe_size=32)


def test_feature_map_probe_leaves_batchnorm_statistics_alone():
    from hindex_sb3.adapt.feature_map import FeatureMap

    resnet = torchvision.models.resnet18(weights=None)  # train mode, as built
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    FeatureMap(resnet, probe_size=64)
    assert all(torch.equal(v, before[k]) for k, v in resnet.state_dict().items())
    assert resnet.training


def test_keypoint_model_on_a_timm_trunk_trains_exactly_its_batchnorm_affine():
    from hindex_sb3.adapt import KeypointModel, freeze_for_adaptation, trainable_summary

    torch.manual_seed(0)
    model = KeypointModel(image_size=64, encoder="timm:resnet18")
    assert model.pose_net._map.rule == "forward_features"
    bn_numbers = sum(2 * m.num_features for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    freeze_for_adaptation(model, "bn")
    counts = trainable_summary(model)
    assert counts["backbone_trainable"] == bn_numbers == 9_600  # resnet18: 20 BN layers, 4,800 channels
    assert counts["backbone_total"] == sum(p.numel() for p in model.backbone.parameters())
    src, tgt = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    out = model(src, tgt)
    assert out.heatmaps.shape == (2, 30, 16, 16) and out.reconstruction.shape == (2, 3, 64, 64)
    # the trunk sees timm's ImageNet normalisation, as the encoder does in Stage 3
    spec = get_encoder_spec("timm:resnet18")
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.backbone.forward_features((tgt - mean) / std)
        assert torch.allclose(model.pose_net.features(tgt), expected)


def test_keypoint_model_refuses_an_encoder_without_batchnorm():
    from hindex_sb3.adapt import KeypointModel

    with pytest.raises(ValueError, match="'mvp' \\(vit\\) has no BatchNorm"):
        KeypointModel(image_size=64, encoder="mvp")


def test_bn_scope_freezes_a_trunks_non_batchnorm_layers_too():
    """A trunk with a Linear and a conv with bias: under "bn" only the BN gamma/beta of the trunk may train."""
    from hindex_sb3.adapt import KeypointModel, freeze_for_adaptation
    from hindex_sb3.encoders import EncoderSpec

    def build() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(8, 8),
        )  # fmt: skip

    spec = EncoderSpec("linear_head_test", 8, None, build, family="user", batchnorm=True, input_size=32, resize=32)
    model = KeypointModel(image_size=32, encoder=spec)
    freeze_for_adaptation(model, "bn")
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"1.weight", "1.bias"}
    assert not any(p.requires_grad for p in model.pose_net.final_layer_unsup.parameters())
    assert all(p.requires_grad for p in model.pose_net.deconv_layers.parameters())


def test_adapted_checkpoint_names_its_encoder_and_loads_only_there(user_plugin, tmp_path, images):
    from test_adapt import moving_square_episodes

    from hindex_sb3.adapt import Adapter, AdaptError, FrameDataset, KeypointModel, PerceptualLoss, vgg16_features
    from hindex_sb3.encoders import CheckpointError, read_adapted_checkpoint, save_adapted_checkpoint
    from hindex_sb3.encoders.resnet import resnet50_trunk

    torch.manual_seed(0)
    frames = FrameDataset.from_episodes(moving_square_episodes(), {"env_id": "synthetic"})
    model = KeypointModel(image_size=32, encoder="user_tiny")
    base = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    adapter = Adapter(model, PerceptualLoss(vgg16_features(None)), frames, batch_size=2, base_backbone=base)
    adapter.calibrate(1)
    for _ in range(3):
        adapter.step()
    assert adapter.bn_change()["changed"] > 0
    path = adapter.export(tmp_path / "tiny_adapted.pth", {"task": "synthetic"})
    state, provenance = read_adapted_checkpoint(path)
    assert provenance["encoder"] == "user_tiny"
    moved = [k for k in state if not torch.equal(state[k], base[k])]
    assert moved and all(k.startswith(("bn1.", "bn2.")) and k.endswith(("weight", "bias")) for k in moved)

    from hindex_user_encoder import TinyConvNet

    reference = TinyConvNet().eval()
    reference.load_state_dict(state)
    enc = create_encoder("user_tiny", path)
    with torch.no_grad():
        expected = reference(_reference_input(images, 36, 32, "bilinear", MEAN, STD))
    assert _rel_err(enc(images), expected) <= 1e-5
    with pytest.raises(CheckpointError, match="adapted for encoder 'user_tiny', not 'hindex'"):
        create_encoder("hindex", path)
    adapter.save_checkpoint(tmp_path / "run.pt")
    other = KeypointModel(image_size=32)
    hand = Adapter(other, PerceptualLoss(vgg16_features(None)), frames, batch_size=2)
    with pytest.raises(AdaptError, match=r"encoder \(--encoder\)='user_tiny', this run has 'hindex'"):
        hand.load_checkpoint(tmp_path / "run.pt")
    # files written before exports named their encoder are the hand encoder's, and still load there
    old = tmp_path / "old.pth"
    save_adapted_checkpoint(old, resnet50_trunk().state_dict(), {"task": "door"})
    assert create_encoder("hindex", old).feature_dim == 2048
    with pytest.raises(CheckpointError, match="adapted for encoder 'hindex', not 'rrl'"):
        create_encoder("rrl", old)


def _main(args: list[str]) -> int:
    from hindex_sb3.cli import main

    try:
        return main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_user_encoder_adapts_then_trains_through_the_cli(user_plugin, tmp_path, capsys):
    """``hindex adapt --encoder user_tiny`` then ``hindex train --encoder user_tiny --weights <its export>``."""
    out = tmp_path / "adapt"
    args = ["adapt", "door", "--encoder", "user_tiny", "--weights", "random", "--vgg-weights", "random"]
    args += ["--episodes", "2", "--max-steps", "3", "--image-size", "32", "--batch-size", "2", "--iterations", "2"]
    args += ["--calibrate-batches", "1", "--checkpoint-every", "0", "--no-progress", "--no-figures", "--out", str(out)]
    assert _main(args) == 0, capsys.readouterr().err
    # TinyConvNet: convs 3*8*9 + 8*16*9 = 1,368 weights, BN gamma/beta 2 * (8 + 16) = 48
    assert "48 of 1,416 parameters trainable (3.39 %" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder_name"] == "user_tiny" and summary["bn_change"]["changed"] > 0
    weights = str(out / "adapted_encoder.pth")
    args = ["train", "door", "--encoder", "user_tiny", "--weights", weights, "--demos", "none", "--iterations", "1"]
    args += ["--trajectories", "1", "--horizon", "4", "--image-size", "32", "--eval-episodes", "1", "--no-video"]
    args += ["--no-progress", "--ema-momentum", "0.1", "--out", str(tmp_path / "train")]
    assert _main(args) == 0, capsys.readouterr().err
    run = json.loads(next((tmp_path / "train").glob("door_user_tiny*/summary.json")).read_text())
    assert run["encoder"] == "user_tiny" and run["iterations"] == 1


@pytest.mark.parametrize(
    ("encoder", "message"),
    [("mvp", "has no BatchNorm layers"), ("no_such_encoder", "unknown encoder"), ("", "encoder")],
)
def test_cli_adapt_refuses_an_encoder_it_cannot_adapt(encoder, message, tmp_path, capsys):
    args = ["adapt", "door", "--encoder", encoder, "--weights", "random", "--out", str(tmp_path / "x")]
    assert _main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x" / "frames.npz").exists()
