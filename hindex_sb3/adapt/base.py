"""The backbone Stage 2 starts from: the encoder's weights (FrankMocap's hand ResNet-50 for ``hindex``), an adapted
checkpoint, or a labelled random initialisation."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from hindex_sb3.adapt.errors import AdaptError

__all__ = ["load_base_backbone"]


def load_base_backbone(
    weights: str | os.PathLike | None, *, encoder: str = "hindex", seed: int = 0, progress: bool = True
) -> tuple[dict, dict]:
    """The starting trunk ``state_dict`` of ``encoder`` and a provenance record.

    ``weights``: ``"default"`` (the encoder's published file from the cache, downloaded on first use; for ``hindex``
    FrankMocap's hand ResNet-50), a path (for ``hindex``: a FrankMocap file or the authors' or this package's adapted
    checkpoint; for other encoders their own layout or this package's adapted checkpoint), or ``"random"``/``None``
    (the trunk's initialisation under ``torch.manual_seed(seed)``; labelled as NOT pretrained everywhere).
    """
    import warnings

    from hindex_sb3.encoders import RandomWeightsWarning, create_encoder, get_encoder_spec
    from hindex_sb3.encoders.weights import WeightsError

    record: dict = {"encoder": encoder}
    if weights in (None, "random"):
        torch.manual_seed(seed)
        return get_encoder_spec(encoder).builder().state_dict(), record | {
            "weights": "random (NOT pretrained)",
            "random_seed": seed,
        }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            loaded = create_encoder(encoder, weights, progress=progress)
    except (WeightsError, FileNotFoundError) as err:
        what = "FrankMocap pose_shape_best.pth or an adapted checkpoint" if encoder == "hindex" else "a weight file"
        raise AdaptError(
            f"{err}\n\nNo usable base encoder weights. Pass --weights PATH ({what}), or --weights random to run with "
            "a randomly initialised backbone (labelled)."
        ) from err
    path = Path(loaded.weights_source)
    record |= {"weights": str(path), "file": path.name, "sha256": _sha256(path)}
    if weights == "default":
        record["weights_arg"] = "default"
    return {k: v.clone() for k, v in loaded.backbone.state_dict().items()}, record


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
