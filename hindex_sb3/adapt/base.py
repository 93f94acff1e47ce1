"""The backbone Stage 2 starts from: FrankMocap's hand ResNet-50, an adapted checkpoint or a labelled random one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from hindex_sb3.adapt.errors import AdaptError

__all__ = ["load_base_backbone"]


def load_base_backbone(weights: str | os.PathLike | None, *, seed: int = 0, progress: bool = True) -> tuple[dict, dict]:
    """The starting backbone ``state_dict`` and a provenance record.

    ``weights``: ``"default"`` (FrankMocap hand ResNet-50 from the cache, downloaded on first use), a path (FrankMocap
    file, the authors' or this package's adapted checkpoint), or ``"random"``/``None`` (torchvision init under
    ``torch.manual_seed(seed)``; labelled as NOT pretrained everywhere).
    """
    import warnings

    from hindex_sb3.encoders import RandomWeightsWarning, create_encoder
    from hindex_sb3.encoders.resnet import resnet50_trunk
    from hindex_sb3.encoders.weights import WeightsError

    if weights in (None, "random"):
        torch.manual_seed(seed)
        return resnet50_trunk().state_dict(), {"weights": "random (NOT pretrained)", "random_seed": seed}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            encoder = create_encoder("hindex", weights, progress=progress)
    except (WeightsError, FileNotFoundError) as err:
        raise AdaptError(
            f"{err}\n\nNo usable base encoder weights. Pass --weights PATH (FrankMocap pose_shape_best.pth or an "
            "adapted checkpoint), or --weights random to run with a randomly initialised backbone (labelled)."
        ) from err
    path = Path(encoder.weights_source)
    record = {"weights": str(path), "file": path.name, "sha256": _sha256(path)}
    if weights == "default":
        record["weights_arg"] = "default"
    return {k: v.clone() for k, v in encoder.backbone.state_dict().items()}, record


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
