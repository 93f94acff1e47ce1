"""Any timm or torchvision image model as a frozen encoder: ``"timm:<model>"`` and ``"torchvision:<model>"``.

A user who wants to try another representation on these tasks should not have to write an :class:`EncoderSpec` for
a model that timm or torchvision already describes completely. Both libraries publish, per model, the preprocessing
it was trained with and where its weights live, so the spec is derived from them:

* ``timm:<name>`` (``timm:resnet18``, ``timm:convnext_tiny.fb_in22k``): ``timm.create_model(name, num_classes=0)``
  (pooled pre-logits features); preprocessing from ``timm.data.resolve_model_data_config`` (shorter side resized to
  ``floor(size / crop_pct)`` with the model's interpolation, centre crop, its mean/std), exactly timm's eval
  transform; weights from the model's Hugging Face Hub repository (``pretrained_cfg['hf_hub_id']``) through
  ``huggingface_hub`` and its cache.
* ``torchvision:<name>`` or ``torchvision:<name>.<WEIGHTS>`` (``torchvision:resnet50``,
  ``torchvision:resnet50.IMAGENET1K_V1``): ``torchvision.models.get_model(name)`` with its final 1000-way
  ``Linear`` replaced by Identity; preprocessing from the weights' ``transforms()`` (resize, crop, interpolation,
  mean/std); weights from the weights' URL, SHA-256 prefix checked as torchvision does, cached with the package's
  other files.

The spec is built once per name on the ``meta`` device (no memory, no init cost) to read the feature size and whether
every normalisation layer is a plain ``BatchNorm2d`` (then EMA-BN applies). ``weights=None`` gives random
initialisation, ``weights=path`` a local file (a ``.safetensors`` file or a ``state_dict`` saved with
``torch.save``, with or without the classifier); loading is strict like every other encoder's.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hindex_sb3.encoders.weights import (
    OFFLINE_ENV,
    CheckpointError,
    StateDict,
    WeightSpec,
    WeightsUnavailableError,
    is_offline,
)

logger = logging.getLogger(__name__)

__all__ = ["EXTERNAL_PREFIXES", "external_spec", "is_external"]

EXTERNAL_PREFIXES = ("timm:", "torchvision:")
_INTERPOLATIONS = ("bilinear", "bicubic")


def is_external(name: str) -> bool:
    return name.startswith(EXTERNAL_PREFIXES)


@functools.lru_cache(maxsize=64)
def external_spec(name: str):
    """The :class:`~hindex_sb3.encoders.registry.EncoderSpec` of ``"timm:<model>"`` or ``"torchvision:<model>"``.

    :raises KeyError: the library does not know the model.
    :raises ValueError: the model cannot serve as an encoder here (non-square input, no linear classifier, an
        unsupported interpolation).
    """
    library, _, model = name.partition(":")
    if not model:
        raise KeyError(f"encoder {name!r}: give a model name after '{library}:'")
    return _timm_spec(name, model) if library == "timm" else _torchvision_spec(name, model)


# ---------------------------------------------------------------------------------------------------------------------
# shared helpers


def _build(build: Callable[[], nn.Module]) -> nn.Module:
    """The model in eval mode on the ``meta`` device (no memory, no init cost) when its builder allows it; some
    builders copy data during init (e.g. torchvision's RegNets), and those are built on the CPU instead."""
    try:
        with torch.device("meta"):
            return build().eval()
    except (NotImplementedError, RuntimeError) as err:
        logger.debug("cannot build on the meta device (%s); building on the CPU", err)
        return build().eval()


def _probe(build: Callable[[], nn.Module], size: int) -> tuple[nn.Module, int]:
    """The model and its feature size, read from one forward: exact whatever its head attributes say."""
    model = _build(build)
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        return model, int(model(torch.zeros(1, 3, size, size, device=device)).shape[-1])


def _plain_batchnorm(model: nn.Module) -> bool:
    """True when the model normalises with BatchNorm and every such layer is exactly ``nn.BatchNorm2d``.

    EMA-BN swaps layers for :class:`~hindex_sb3.ema_bn.EMABatchNorm2d`; a subclass (timm's ``BatchNormAct2d``
    fuses an activation) would lose its extra behaviour, so such models run with plain frozen BN instead.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return bool(bns) and all(type(m) is nn.BatchNorm2d for m in bns)


def _drop_prefix(ckpt: Any, prefixes: tuple[str, ...], what: str) -> StateDict:
    """A flat state dict (possibly ``{'state_dict'|'model': ...}``) without the classifier's keys."""
    if isinstance(ckpt, dict) and not any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        for key in ("state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not ckpt:
        raise CheckpointError(f"{what}: expected a state dict, got {type(ckpt).__name__}")
    return {k: v for k, v in ckpt.items() if not (isinstance(k, str) and k.startswith(prefixes))}


def _check_interpolation(name: str, interpolation: str) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"encoder {name!r}: its preprocessing uses {interpolation!r} resizing; supported: bilinear")
    return interpolation


# ---------------------------------------------------------------------------------------------------------------------
# timm


def _timm_model(model_name: str) -> nn.Module:
    import timm

    return timm.create_model(model_name, pretrained=False, num_classes=0)


def _timm_spec(name: str, model_name: str):
    import timm
    from timm.data import resolve_model_data_config

    from hindex_sb3.encoders.registry import EncoderSpec

    if not timm.is_model(model_name.split(".")[0]):
        raise KeyError(f"unknown timm model {model_name!r} (timm.list_models() lists them)")
    with torch.device("meta"):  # the data config needs the model, not its weights
        meta = _timm_model(model_name)
    cfg = resolve_model_data_config(meta)
    _, h, w = cfg["input_size"]
    if h != w:
        raise ValueError(f"encoder {name!r}: non-square input {h}x{w} is not supported")
    if cfg.get("crop_mode", "center") != "center":
        raise ValueError(f"encoder {name!r}: timm crop_mode {cfg['crop_mode']!r} is not supported (only 'center')")
    pcfg = meta.pretrained_cfg
    classifier = pcfg.get("classifier") or "head"
    classifiers = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    return EncoderSpec(
        name=name,
        feature_dim=_probe(functools.partial(_timm_model, model_name), h)[1],
        weights=_timm_weights(name, model_name, pcfg, classifiers),
        builder=functools.partial(_timm_model, model_name),
        family="timm",
        batchnorm=_plain_batchnorm(meta),
        input_size=h,
        resize=math.floor(h / cfg.get("crop_pct", 0.875)),
        interpolation=_check_interpolation(name, cfg["interpolation"]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        channels_last=False,
        description=f"timm {model_name} ({pcfg.get('tag') or 'default'} weights), pooled pre-logits features",
    )


def _timm_weights(name: str, model_name: str, pcfg: dict, classifiers: tuple[str, ...]) -> WeightSpec:
    hub_id = pcfg.get("hf_hub_id")
    url = pcfg.get("url") or ""
    converter = functools.partial(_drop_prefix, prefixes=classifiers, what=f"{name} checkpoint")
    if hub_id:
        return WeightSpec(
            name=name,
            url=f"https://huggingface.co/{hub_id.split('@')[0]}",
            file_name=pcfg.get("hf_hub_filename") or "model.safetensors",
            key_layout=f"timm {model_name} state_dict (classifier {', '.join(classifiers)}* dropped)",
            converter=converter,
            fetch=functools.partial(_fetch_hf_hub, hub_id),
            description=f"timm {model_name} pretrained weights (Hugging Face Hub {hub_id})",
            manual_download=(
                "the file is cached by huggingface_hub ($HF_HOME); set HF_ENDPOINT for a mirror, or download "
                "model.safetensors from the repository above and pass weights=path"
            ),
        )
    if url.endswith((".pth", ".pt", ".bin")):  # older timm weights published as GitHub release files
        return WeightSpec(
            name=name,
            url=url,
            file_name=f"timm-{url.rsplit('/', 1)[-1]}",
            key_layout=f"timm {model_name} state_dict (classifier dropped)",
            converter=converter,
            description=f"timm {model_name} pretrained weights",
        )
    return WeightSpec(
        name=name,
        url="",
        file_name=f"{model_name}.pth",
        key_layout=f"timm {model_name} state_dict",
        converter=converter,
        description=f"timm {model_name}: no downloadable pretrained weights known to timm",
    )


def _fetch_hf_hub(hub_id: str, spec: WeightSpec, progress: bool = True) -> Path:
    """timm's own resolution: ``model.safetensors`` (else ``pytorch_model.bin``) from the Hub, through its cache."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:  # timm lists it as a dependency, but keep the message useful
        raise WeightsUnavailableError(f"{spec.name}: huggingface_hub is needed to fetch {hub_id} ({err})") from err
    repo, _, revision = hub_id.partition("@")
    offline = is_offline()
    errors = []
    for file_name in dict.fromkeys((spec.file_name, "model.safetensors", "pytorch_model.bin")):
        try:
            return Path(hf_hub_download(repo, file_name, revision=revision or None, local_files_only=offline))
        except Exception as err:  # EntryNotFound, LocalEntryNotFound, HTTP and connection errors
            errors.append(f"{file_name}: {type(err).__name__}: {err}")
    reason = f"not in the Hugging Face cache and ${OFFLINE_ENV} is set" if offline else "download failed"
    raise WeightsUnavailableError(
        f"{spec.name} weights are not available: {reason} (Hub repository {repo}).\n  "
        + "\n  ".join(errors)
        + f"\n  Download {spec.url} (model.safetensors) and pass weights='/path/to/model.safetensors', "
        "or weights=None for random initialisation."
    )


# ---------------------------------------------------------------------------------------------------------------------
# torchvision

#: torchvision builders that change the architecture when pretrained weights are requested (their model builders
#: override these arguments when ``weights`` is given; we build with ``weights=None`` and load the file ourselves)
_TV_PRETRAINED_KWARGS = {
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": False},
}
#: keys of published files that the model we build does not have: torchvision builds GoogLeNet with its auxiliary
#: classifiers to load the file, then deletes them (``aux1 = aux2 = None``); they only run in training mode anyway
_TV_EXTRA_KEYS = {"googlenet": ("aux1.", "aux2.")}


def _torchvision_model(model_name: str, head: str, pretrained_layout: bool) -> nn.Module:
    from torchvision.models import get_model

    kwargs = dict(_TV_PRETRAINED_KWARGS.get(model_name, {})) if pretrained_layout else {}
    model = get_model(model_name, weights=None, **kwargs)
    parent, _, child = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def _hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix torchvision and timm put into release file names (``name-<hex>.pth``)."""
    m = re.search(r"-([a-f0-9]{6,})\.", url.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def _torchvision_spec(name: str, model_spec: str):
    from torchvision.models import get_model, get_model_weights, list_models

    from hindex_sb3.encoders.registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec

    model_name, _, weights_tag = model_spec.partition(".")
    if model_name not in list_models():
        raise KeyError(f"unknown torchvision model {model_name!r} (torchvision.models.list_models() lists them)")
    try:
        enum = get_model_weights(model_name)
        weights = enum[weights_tag] if weights_tag else enum.DEFAULT
    except KeyError:
        raise KeyError(f"torchvision {model_name} has no weights {weights_tag!r}") from None
    except ValueError:
        weights = None
    meta = _build(functools.partial(get_model, model_name, weights=None))
    linears = [n for n, m in meta.named_modules() if isinstance(m, nn.Linear) and m.out_features == 1000]
    if not linears:
        raise ValueError(f"encoder {name!r}: no final 1000-way Linear classifier to remove")
    head = linears[-1]
    if weights is not None:
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        interpolation, mean, std = t.interpolation.value, tuple(t.mean), tuple(t.std)
    else:
        crop, resize, interpolation, mean, std = 224, 256, "bilinear", IMAGENET_MEAN, IMAGENET_STD
    trunk, feature_dim = _probe(functools.partial(_torchvision_model, model_name, head, weights is not None), crop)
    url = weights.url if weights is not None else ""
    return EncoderSpec(
        name=name,
        feature_dim=feature_dim,
        weights=WeightSpec(
            name=name,
            url=url,
            file_name=url.rsplit("/", 1)[-1] if url else f"{model_name}.pth",
            key_layout=f"torchvision {model_name} state_dict ({head}.* dropped)",
            converter=functools.partial(
                _drop_prefix, prefixes=(f"{head}.", *_TV_EXTRA_KEYS.get(model_name, ())), what=f"{name} checkpoint"
            ),
            sha256_prefix=_hash_prefix(url) if url else None,
            description=f"torchvision {model_name} {weights.name if weights is not None else '(no weights)'}",
        ),
        builder=functools.partial(_torchvision_model, model_name, head, weights is not None),
        family="torchvision",
        batchnorm=_plain_batchnorm(trunk),
        input_size=crop,
        resize=resize,
        interpolation=_check_interpolation(name, interpolation),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        channels_last=False,
        description=f"torchvision {model_name}, features before the {head} classifier",
    )
