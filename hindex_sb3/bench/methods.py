"""Methods: what a column of the paper's figures is (representation, Stage-2 scope, Stage-3 momentum).

The paper's comparisons differ along three axes only, so a method is those three values. ``hindex-m<M>`` names
H-InDex with a fixed momentum (the momentum ablation), and any encoder in the registry is a method of its own
(frozen, not adapted, momentum 0): that is how a user puts their own representation through the suite. An encoder
with BatchNorm also takes the H-InDex recipe as ``<encoder>+bn`` / ``<encoder>+all``: Stage 2 on its BN affine
parameters (or on all of them), then EMA-BN with the paper's per-task momentum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

AdaptScope = Literal["none", "bn", "all"]


@dataclass(frozen=True)
class Method:
    """One recipe.

    :param encoder: encoder registry name (``hindex`` is the FrankMocap hand ResNet-50)
    :param adapt: Stage 2 scope: ``"none"``, ``"bn"`` (BatchNorm affine parameters, the paper) or ``"all"``
    :param momentum: Stage 3 EMA-BN momentum; ``None`` takes the paper's per-task value
    """

    name: str
    encoder: str
    adapt: AdaptScope = "none"
    momentum: float | None = 0.0
    description: str = ""


BUILTIN: dict[str, Method] = {
    m.name: m
    for m in (
        Method("hindex", "hindex", "bn", None, "H-InDex: FrankMocap hand + Stage 2 (BN affine) + EMA-BN (paper m)"),
        Method("frankmocap", "hindex", "none", 0.0, "Stage 1 only: the FrankMocap hand encoder, frozen"),
        Method("hindex-no-ema", "hindex", "bn", 0.0, "Stages 1+2: adapted BN affine, frozen statistics"),
        Method("hindex-full-adapt", "hindex", "all", None, "Stage 2 on every backbone parameter, then EMA-BN"),
        Method("vc1", "vc1", description="VC-1 ViT-B/16 (CLS token)"),
        Method("mvp", "mvp", description="MVP ViT-S/16 HOI (CLS token)"),
        Method("r3m", "r3m", description="R3M ResNet-50"),
        Method("rrl", "rrl", description="RRL: ImageNet ResNet-50"),
        Method("state", "state", description="DAPG on the state vector: a privileged reference, not a representation"),
    )
}


def _momentum_variant(name: str) -> Method | None:
    """``hindex-m0.01`` -> H-InDex with momentum 0.01 (Stage 2 as usual)."""
    if not name.startswith("hindex-m"):
        return None
    try:
        m = float(name.removeprefix("hindex-m"))
    except ValueError:
        return None
    if not (math.isfinite(m) and 0.0 <= m <= 1.0):
        return None
    return Method(name, "hindex", "bn", m, f"H-InDex with EMA-BN momentum {m}")


def _adapted_variant(name: str) -> Method | None:
    """``<encoder>+bn`` / ``<encoder>+all``: the H-InDex recipe (Stage 2, then EMA-BN at the paper's m)."""
    encoder, plus, scope = name.rpartition("+")
    if not plus or scope not in ("bn", "all") or not encoder:
        return None
    from hindex_sb3.adapt.model import adaptable_spec

    try:
        adaptable_spec(encoder)
    except KeyError:
        raise ValueError(f"method {name!r}: unknown encoder {encoder!r}") from None
    except ValueError as err:
        raise ValueError(f"method {name!r}: {err}") from None
    what = "BN affine" if scope == "bn" else "all parameters"
    return Method(name, encoder, scope, None, f"{encoder} + Stage 2 ({what}) + EMA-BN (paper m)")


def get_method(name: str) -> Method:
    """A built-in method, a momentum variant ``hindex-m<M>``, ``<encoder>+bn|all``, or any registered encoder."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"method must be a non-empty string, got {name!r}")
    if name in BUILTIN:
        return BUILTIN[name]
    variant = _momentum_variant(name) or _adapted_variant(name)
    if variant is not None:
        return variant
    from hindex_sb3.encoders import list_encoders

    if name in list_encoders():
        return Method(name, name, "none", 0.0, f"registered encoder {name!r}, frozen")
    raise ValueError(
        f"unknown method {name!r}; known: {', '.join(method_names())}, 'hindex-m<momentum>', a registered encoder, "
        "or '<encoder>+bn' / '<encoder>+all'"
    )


def method_names() -> list[str]:
    return list(BUILTIN)
