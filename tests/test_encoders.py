"""Encoder registry: official key layouts load, features match independent references, failures are explicit."""

from __future__ import annotations

import sys
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
from synthetic_checkpoints import (
    frankmocap_checkpoint,
    hindex_adapted_checkpoint,
    mae_checkpoint,
    r3m_checkpoint,
    random_resnet50_state,
    random_vit_state,
    reference_preprocess,
    reference_resnet,
    reference_vit_cls,
    save,
)

from hindex_sb3.encoders import (
    ADAPTED_FORMAT,
    IMAGENET_MEAN,
    CheckpointError,
    CheckpointMismatchError,
    RandomWeightsWarning,
    WeightsUnavailableError,
    create_encoder,
    get_encoder_spec,
    get_weight_spec,
    list_encoders,
    load_weights,
    read_adapted_checkpoint,
    save_adapted_checkpoint,
)
from hindex_sb3.encoders.base import Preprocess
from hindex_sb3.encoders.weights import is_google_drive


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    """No test may touch the network or the user's cache."""
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    return random_resnet50_state(seed=0)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpts")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=g)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = b.abs().max().item()
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(scale, 1.0))


# ---------------------------------------------------------------------------------------------------------------------
# Registry and specs


def test_registry_lists_the_seven_encoders_with_their_specs():
    names = ["alphapose", "frankmocap_body", "hindex", "mvp", "r3m", "rrl", "vc1"]
    # other test modules register tiny encoders (names with "tiny") at import; everything else is the package's own
    assert [n for n in list_encoders(plugins=False) if "tiny" not in n] == names
    dims = {n: get_encoder_spec(n).feature_dim for n in names}
    assert dims == {"hindex": 2048, "rrl": 2048, "r3m": 2048, "mvp": 384, "vc1": 768, "frankmocap_body": 2048,
                    "alphapose": 2048}  # fmt: skip
    hindex = get_encoder_spec("hindex")
    assert hindex.mean is None and hindex.std is None  # H-InDex: no mean/std normalisation
    assert (hindex.resize, hindex.input_size, hindex.interpolation) == (256, 224, "bilinear")
    assert hindex.file_name == "pose_shape_best.pth" and hindex.url.startswith("https://dl.fbaipublicfiles.com/")
    for name in ("rrl", "r3m", "mvp", "vc1", "frankmocap_body", "alphapose"):
        spec = get_encoder_spec(name)
        assert spec.mean == IMAGENET_MEAN and spec.url.startswith("https://") and spec.key_layout
    assert get_encoder_spec("rrl").weights.sha256_prefix == "0676ba61"
    assert get_weight_spec("vgg16_imagenet").file_name == "vgg16-397923af.pth"  # Stage-2 perceptual loss
    with pytest.raises(KeyError, match="unknown encoder 'resnet'"):
        get_encoder_spec("resnet")


def test_encoder_is_frozen_and_ignores_train_and_apply():
    with pytest.warns(RandomWeightsWarning, match="randomly initialised"):
        enc = create_encoder("hindex", weights=None)
    assert enc.weights_source == "random"
    assert enc.channels_last and enc.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in enc.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    enc.apply(lambda m: torch.nn.init.zeros_(m.weight) if isinstance(m, torch.nn.Conv2d) else None)  # ortho_init-like
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(k.startswith("preprocess.") for k in after), "mean/std buffers must not be persistent"


# ---------------------------------------------------------------------------------------------------------------------
# Features equal an independent reference, for every official layout


def test_hindex_frankmocap_checkpoint_matches_reference(resnet_state, ckpt_dir, images):
    path = save(frankmocap_checkpoint(resnet_state), ckpt_dir / "pose_shape_best.pth")
    enc = create_encoder("hindex", weights=path)
    assert enc.weights_source == str(path) and enc.feature_dim == 2048
    ref = reference_resnet(resnet_state)
    with torch.no_grad():
        expected = ref(reference_preprocess(images, normalize=False))
    _close(enc(images), expected)


def test_hindex_authors_adapted_checkpoint_matches_reference(resnet_state, ckpt_dir, images):
    adapted = dict(resnet_state)
    adapted["layer3.2.bn2.weight"] = adapted["layer3.2.bn2.weight"] * 1.5  # Stage 2 changes BN affine parameters
    path = save(hindex_adapted_checkpoint(adapted), ckpt_dir / "door-v0.pth")
    enc = create_encoder("hindex", weights=path)
    with torch.no_grad():
        expected = reference_resnet(adapted)(reference_preprocess(images, normalize=False))
    _close(enc(images), expected)
    torch.testing.assert_close(enc.backbone.layer3[2].bn2.weight, adapted["layer3.2.bn2.weight"], rtol=0, atol=0)


def test_hindex_own_adapted_format_round_trips(resnet_state, tmp_path, images):
    backbone = {k: v for k, v in resnet_state.items() if not k.startswith("fc.")}
    provenance = {"task": "door", "init": "frankmocap_hand", "iterations": 100, "lr": 1e-4, "tags": ["bn-only"]}
    path = save_adapted_checkpoint(tmp_path / "adapted.pth", backbone, provenance)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == ADAPTED_FORMAT and set(raw) == {"format", "state_dict", "provenance"}
    sd, prov = read_adapted_checkpoint(path)
    assert prov == provenance and set(sd) == set(backbone)
    enc = create_encoder("hindex", weights=path)
    with torch.no_grad():
        expected = reference_resnet(backbone)(reference_preprocess(images[:1], normalize=False))
    _close(enc(images[:1]), expected)


def test_adapted_format_refuses_bad_input(resnet_state, tmp_path):
    with pytest.raises(TypeError, match=r"provenance\.when"):
        save_adapted_checkpoint(tmp_path / "a.pth", {"conv1.weight": torch.zeros(1)}, {"when": object()})
    with pytest.raises(ValueError, match="without fc"):
        save_adapted_checkpoint(tmp_path / "a.pth", resnet_state, {})
    torch.save({"format": "hindex_sb3.adapted/99", "state_dict": {}}, tmp_path / "future.pth")
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        create_encoder("hindex", weights=tmp_path / "future.pth")


@pytest.mark.parametrize(
    ("state", "provenance", "exc", "match"),
    [
        ({"w": torch.tensor([1.0, float("nan")])}, {}, ValueError, "state_dict: NaN or infinite values in w"),
        ({"w": torch.tensor([float("inf")])}, {}, ValueError, "state_dict: NaN or infinite values in w"),
        (None, {}, TypeError, "state_dict must be a mapping"),
        ({"w": 1.0}, {}, TypeError, "state_dict: entries that are not tensors: w"),
        ({"w": torch.zeros(1)}, {"encoder": 5}, TypeError, r"provenance\['encoder'\] must be an encoder name"),
        ({"w": torch.zeros(1)}, {"encoder": " "}, ValueError, r"provenance\['encoder'\] must not be empty"),
        ({"w": torch.zeros(1)}, None, TypeError, "provenance must be a dict"),
    ],
)
def test_adapted_format_refuses_what_could_not_be_loaded_back(tmp_path, state, provenance, exc, match):
    with pytest.raises(exc, match=match):
        save_adapted_checkpoint(tmp_path / "a.pth", state, provenance)
    assert not (tmp_path / "a.pth").exists()


@pytest.mark.parametrize("name", ["rrl", "r3m"])
def test_resnet_baselines_match_reference(name, resnet_state, ckpt_dir, images):
    ckpt = resnet_state if name == "rrl" else r3m_checkpoint(resnet_state)  # rrl: torchvision file with fc.*
    path = save(ckpt, ckpt_dir / f"{name}.pth")
    enc = create_encoder(name, weights=path)
    with torch.no_grad():
        expected = reference_resnet(resnet_state)(reference_preprocess(images, normalize=True))
    _close(enc(images), expected)


@pytest.mark.parametrize(("name", "dim"), [("mvp", 384), ("vc1", 768)])
def test_vit_baselines_match_handwritten_reference(name, dim, tmp_path, images):
    state = random_vit_state(seed=3, embed_dim=dim)
    path = save(mae_checkpoint(state), tmp_path / f"{name}.pth")
    enc = create_encoder(name, weights=path)
    x = images[:1]
    feats = enc(x)
    assert feats.shape == (1, dim)
    with torch.no_grad():
        expected = reference_vit_cls(state, reference_preprocess(x, normalize=True), num_heads=12)
    _close(feats, expected)
    if name == "mvp":  # timm's vit_small default (6 heads) loads the same tensors but computes something else
        wrong = reference_vit_cls(state, reference_preprocess(x, normalize=True), num_heads=6)
        assert (wrong - feats).abs().max() > 1e-2


def test_vit_pos_embed_of_another_grid_is_resampled_but_width_mismatch_is_refused(tmp_path):
    state = random_vit_state(seed=4, embed_dim=384, depth=1, grid=16)  # 256-px checkpoint
    state.update({k: v for k, v in random_vit_state(seed=4, embed_dim=384).items() if k.startswith("blocks.")})
    path = save(mae_checkpoint(state), tmp_path / "mvp.pth")
    enc = create_encoder("mvp", weights=path)
    assert enc.backbone.pos_embed.shape == (1, 197, 384)
    bad = random_vit_state(seed=4, embed_dim=384)
    bad["norm.weight"] = torch.ones(385)
    with pytest.raises(CheckpointMismatchError, match=r"norm\.weight: checkpoint \(385,\) vs module \(384,\)"):
        create_encoder("mvp", weights=save({"model": bad}, tmp_path / "bad.pth"))


def test_uint8_and_float01_inputs_agree_and_bad_inputs_raise(images):
    with pytest.warns(RandomWeightsWarning):
        enc = create_encoder("rrl", weights=None)
    x = images[:1]
    _close(enc(x.float() / 255.0), enc(x))
    with pytest.raises(ValueError, match=r"finite and in \[0, 1\]"):
        enc(x.float())  # 0..255 floats: forgot to normalise
    nan = x.float() / 255.0
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        enc(nan)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(x[:, :1])
    with pytest.raises(ValueError, match="dtype"):
        enc(x.int())


def test_preprocess_non_square_and_small_images_like_reference():
    g = torch.Generator().manual_seed(1)
    for h, w in [(64, 64), (300, 200), (240, 320)]:
        imgs = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=g)
        pre = Preprocess(256, 224, "bilinear", IMAGENET_MEAN, (0.229, 0.224, 0.225))
        torch.testing.assert_close(pre(imgs.float() / 255), reference_preprocess(imgs, True), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# The paper's ablation encoders (Fig. 5): FrankMocap body and AlphaPose, in their official layouts


def frankmocap_body_checkpoint(backbone: dict[str, torch.Tensor]) -> dict:
    """FrankMocap body module ``.pt`` (SPIN's CheckpointSaver): ``{'model': HMR.state_dict(), 'optimizer', ...}``."""
    g = torch.Generator().manual_seed(7)
    model = {k: v for k, v in backbone.items() if not k.startswith("fc.")}
    head = {"fc1.weight": (1024, 2048 + 144 + 13), "fc1.bias": (1024,), "fc2.weight": (1024, 1024), "fc2.bias": (1024,),
            "decpose.weight": (144, 1024), "decpose.bias": (144,), "decshape.weight": (10, 1024),
            "decshape.bias": (10,), "deccam.weight": (3, 1024), "deccam.bias": (3,), "init_pose": (1, 144),
            "init_shape": (1, 10), "init_cam": (1, 3)}  # fmt: skip
    model.update({k: 0.01 * torch.randn(shape, generator=g) for k, shape in head.items()})
    optimizer = {"state": {}, "param_groups": [{"lr": 5e-5, "params": list(range(4))}]}
    return {"model": model, "optimizer": optimizer, "epoch": 51, "batch_idx": 0, "batch_size": 64,
            "total_step_count": 100_000}  # fmt: skip


def alphapose_checkpoint(backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AlphaPose ``fast_res50_256x192.pth``: FastPose state dict, SE-ResNet-50 under ``preact.``, DUC heads."""
    g = torch.Generator().manual_seed(8)
    ckpt = {f"preact.{k}": v for k, v in backbone.items() if not k.startswith("fc.")}
    for i, c in zip(range(1, 5), (256, 512, 1024, 2048), strict=True):  # SELayer(planes * 4, reduction=1)
        for j in (0, 2):
            ckpt[f"preact.layer{i}.0.se.fc.{j}.weight"] = 0.01 * torch.randn(c, c, generator=g)
            ckpt[f"preact.layer{i}.0.se.fc.{j}.bias"] = torch.zeros(c)
    for name, c_in, c_out in (("duc1", 512, 1024), ("duc2", 256, 512)):
        ckpt[f"{name}.conv.weight"] = 0.01 * torch.randn(c_out, c_in, 3, 3, generator=g)
        for buf, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            ckpt[f"{name}.bn.{buf}"] = torch.full((c_out,), value)
        ckpt[f"{name}.bn.num_batches_tracked"] = torch.tensor(10)
    ckpt["conv_out.weight"] = 0.01 * torch.randn(17, 128, 3, 3, generator=g)
    ckpt["conv_out.bias"] = torch.zeros(17)
    return ckpt


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", ["frankmocap_body", "alphapose"])
def test_ablation_encoders_match_reference_in_their_official_layouts(name, resnet_state, ckpt_dir, images):
    build = frankmocap_body_checkpoint if name == "frankmocap_body" else alphapose_checkpoint
    path = save(build(resnet_state), ckpt_dir / f"{name}.pt")
    enc = create_encoder(name, weights=path)
    # H-InDex fed both through a torchvision ResNet-50 (fc = Identity) with its Resize(256)/CenterCrop(224)/ImageNet
    # normalisation (rrl/encoder.py FrankMocapBodyEncoder, representations/alphapose_encoder.py).
    with torch.no_grad():
        expected = reference_resnet(resnet_state)(reference_preprocess(images, normalize=True))
    assert enc.feature_dim == 2048 and _rel_err(enc(images), expected) <= 1e-5


def test_ablation_encoders_refuse_other_layouts_and_list_key_differences(resnet_state, tmp_path):
    body = frankmocap_body_checkpoint(resnet_state)
    del body["model"]["layer4.2.conv3.weight"]
    body["model"]["layer4.2.se.fc.0.weight"] = torch.zeros(4, 4)
    with pytest.raises(CheckpointMismatchError) as err:
        create_encoder("frankmocap_body", weights=save(body, tmp_path / "body.pt"))
    assert err.value.missing == ["layer4.2.conv3.weight"] and err.value.unexpected == ["layer4.2.se.fc.0.weight"]
    hand = save(frankmocap_checkpoint(resnet_state), tmp_path / "hand.pth")
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        create_encoder("frankmocap_body", weights=hand)
    with pytest.raises(CheckpointError, match="not a FrankMocap/SPIN HMR"):
        create_encoder("frankmocap_body", weights=save({"model": resnet_state}, tmp_path / "tv.pt"))
    dcn = alphapose_checkpoint(resnet_state)  # the DCN variant's offset convolutions are not a plain ResNet-50
    dcn["preact.layer2.0.conv2_offset.weight"] = torch.zeros(18, 128, 3, 3)
    dcn["preact.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        create_encoder("alphapose", weights=save(dcn, tmp_path / "dcn.pth"))
    assert err.value.unexpected == ["layer2.0.conv2_offset.weight"]
    assert err.value.mismatched == [("conv1.weight", (64, 3, 3, 3), (64, 3, 7, 7))]
    with pytest.raises(CheckpointError, match="no 'preact"):
        create_encoder("alphapose", weights=save(resnet_state, tmp_path / "imagenet.pth"))


# ---------------------------------------------------------------------------------------------------------------------
# Strict loading: mismatches and foreign files are errors that say what differed


def test_missing_unexpected_and_misshaped_keys_are_listed(resnet_state, tmp_path):
    ckpt = frankmocap_checkpoint(resnet_state)
    del ckpt["main_encoder.layer4.2.conv3.weight"]
    ckpt["main_encoder.layer5.0.conv1.weight"] = torch.zeros(3)
    ckpt["main_encoder.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        create_encoder("hindex", weights=save(ckpt, tmp_path / "bad.pth"))
    assert err.value.missing == ["layer4.2.conv3.weight"]
    assert err.value.unexpected == ["layer5.0.conv1.weight"]
    assert err.value.mismatched == [("conv1.weight", (64, 3, 3, 3), (64, 3, 7, 7))]
    assert "nothing was loaded" in str(err.value)


def test_missing_num_batches_tracked_is_tolerated(resnet_state, tmp_path):
    ckpt = {k: v for k, v in frankmocap_checkpoint(resnet_state).items() if not k.endswith("num_batches_tracked")}
    enc = create_encoder("hindex", weights=save(ckpt, tmp_path / "old.pth"))
    torch.testing.assert_close(enc.backbone.bn1.running_var, resnet_state["bn1.running_var"])


def test_foreign_layouts_are_refused(resnet_state, tmp_path):
    imagenet = save(resnet_state, tmp_path / "resnet50.pth")
    with pytest.raises(CheckpointError, match="not an H-InDex checkpoint"):
        create_encoder("hindex", weights=imagenet)  # would silently be the RRL baseline otherwise
    with pytest.raises(CheckpointError, match="no 'r3m' entry"):
        create_encoder("r3m", weights=imagenet)
    with pytest.raises(CheckpointError, match="no 'cls_token'"):
        create_encoder("vc1", weights=imagenet)
    with pytest.raises(CheckpointError, match="not a torchvision ResNet"):
        create_encoder("rrl", weights=save({"r3m": {}}, tmp_path / "x.pth"))


def test_corrupt_files_and_pickled_objects_are_refused(resnet_state, tmp_path):
    good = save(frankmocap_checkpoint(resnet_state), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        create_encoder("hindex", weights=truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        create_encoder("hindex", weights=garbage)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")  # arbitrary objects need weights_only=False
    with pytest.raises(CheckpointError, match="weights_only"):
        create_encoder("vc1", weights=tmp_path / "module.pth")


# ---------------------------------------------------------------------------------------------------------------------
# Cache, download, offline


def test_offline_without_file_names_url_and_destination(tmp_path):
    spec = get_encoder_spec("vc1").weights
    with pytest.raises(WeightsUnavailableError) as err:
        create_encoder("vc1")
    msg = str(err.value)
    assert spec.url in msg and str(tmp_path / "home" / "weights" / "vc1_vitb.pth") in msg
    with pytest.raises(WeightsUnavailableError, match=r"does not exist.*dl\.fbaipublicfiles\.com"):
        create_encoder("vc1", weights=tmp_path / "nope.pth")


def test_default_weights_come_from_the_cache_without_network(resnet_state, tmp_path):
    cached = tmp_path / "home" / "weights" / "pose_shape_best.pth"
    cached.parent.mkdir(parents=True)
    save(frankmocap_checkpoint(resnet_state), cached)
    enc = create_encoder("hindex")  # offline is set: this must not try to download
    assert enc.weights_source == str(cached)


def test_download_goes_to_cache_with_progress_and_failures_are_explained(resnet_state, tmp_path, monkeypatch):
    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    source = save(frankmocap_body_checkpoint(resnet_state), tmp_path / "served.pt")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, progress))
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    enc = create_encoder("frankmocap_body", progress=False)
    spec = get_weight_spec("frankmocap_body")
    # complete files only reach the cache path, through a temporary name of this process's own in the same folder
    assert [(url, progress) for url, _, progress in calls] == [(spec.url, False)]
    assert Path(calls[0][1]).parent == spec.cache_path.parent and calls[0][1].endswith(".partial")
    assert enc.weights_source == str(spec.cache_path) and spec.cache_path.is_file()
    assert list(spec.cache_path.parent.glob("*.partial")) == []

    def html_page(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_text("<!DOCTYPE html><html>Sign in to continue</html>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", html_page)
    with pytest.raises(WeightsUnavailableError, match="returned a web page"):
        create_encoder("mvp")
    assert not get_weight_spec("mvp_vits_mae_hoi").cache_path.exists()

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"download failed.*Name or service not known") as err:
        create_encoder("rrl")
    assert "resnet50-0676ba61.pth" in str(err.value)


def test_published_sha256_prefix_is_checked_and_a_mismatch_discarded(tmp_path, monkeypatch):
    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **kw: Path(dst).write_bytes(b"x" * 100))
    spec = get_weight_spec("resnet50_imagenet_v1")
    assert spec.sha256_prefix == "0676ba61"  # torchvision publishes it in the file name
    with pytest.raises(
        WeightsUnavailableError, match=r"SHA-256 [0-9a-f]{64} does not start with the published 0676ba61"
    ):
        create_encoder("rrl")
    assert not spec.cache_path.exists() and not list(spec.cache_path.parent.glob("*.partial"))
    # where no hash is published, none is invented
    for name in ("frankmocap_hand", "frankmocap_body", "r3m_resnet50", "mvp_vits_mae_hoi", "vc1_vitb"):
        assert get_weight_spec(name).sha256_prefix is None, name
    assert get_weight_spec("alphapose_fast_res50").sha256_prefix is None
    assert get_weight_spec("vgg16_imagenet").sha256_prefix == "397923af"


def test_google_drive_files_go_through_gdown(resnet_state, tmp_path, monkeypatch):
    """R3M and AlphaPose live on Google Drive: gdown (mocked here) handles Drive's confirmation page."""
    import types

    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    assert is_google_drive(get_weight_spec("r3m_resnet50").url)
    assert is_google_drive(get_weight_spec("alphapose_fast_res50").url)
    assert not is_google_drive(get_weight_spec("frankmocap_hand").url)
    source = save(r3m_checkpoint(resnet_state), tmp_path / "served.pt")
    calls = []

    def fake_gdown(url=None, output=None, quiet=False, **kw):
        calls.append((url, output, quiet))
        Path(output).write_bytes(source.read_bytes())
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake_gdown))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("Drive URL sent to torch.hub"))
    spec = get_weight_spec("r3m_resnet50")
    enc = create_encoder("r3m", progress=False)
    assert [(url, quiet) for url, _, quiet in calls] == [(spec.url, True)]
    assert Path(calls[0][1]).parent == spec.cache_path.parent and calls[0][1].endswith(".partial")
    assert enc.weights_source == str(spec.cache_path)

    def quota(url=None, output=None, quiet=False, **kw):
        Path(output).write_bytes(b"partial")
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=quota))
    alphapose = get_weight_spec("alphapose_fast_res50")
    with pytest.raises(WeightsUnavailableError, match=r"Google Drive download failed.*Too many users") as err:
        create_encoder("alphapose")
    assert str(alphapose.cache_path) in str(err.value) and "browser" in str(err.value)  # the manual route
    assert not list(alphapose.cache_path.parent.glob("*.partial"))

    monkeypatch.setitem(sys.modules, "gdown", None)  # not installed
    with pytest.raises(WeightsUnavailableError, match=r"pip install gdown") as err:
        create_encoder("alphapose")
    assert alphapose.url in str(err.value)


def test_non_encoder_weights_use_the_same_machinery(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"vgg16-397923af\.pth"):
        load_weights("vgg16_imagenet")
    path = save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "vgg.pth")
    sd, where = load_weights("vgg16_imagenet", path)
    assert where == path and set(sd) == {"features.0.weight"}
    assert load_weights("vgg16_imagenet", None) == (None, None)


def test_deferred_weights_refuse_to_run_until_a_full_state_dict_arrives(resnet_state, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        enc = create_encoder("hindex", on_unavailable="defer")
    with pytest.raises(WeightsUnavailableError, match=r"pose_shape_best\.pth"):
        enc(images[:1])
    partial = {f"backbone.{k}": v for k, v in resnet_state.items() if k.startswith("conv1")}
    enc.load_state_dict(partial, strict=False)
    with pytest.raises(WeightsUnavailableError):
        enc(images[:1])  # still incomplete
    full = {f"backbone.{k}": v for k, v in resnet_state.items() if not k.startswith("fc.")}
    enc.load_state_dict(full)
    assert enc(images[:1]).shape == (1, 2048) and enc.weights_source == "state_dict"
