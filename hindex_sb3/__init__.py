"""hindex-sb3: H-InDex hand-informed visual representations for Stable-Baselines3 and Gymnasium.

Importing the package prepares the process for headless rendering (see :mod:`hindex_sb3._platform`) and registers
the ``HInDex/*`` Gymnasium environments. The learning API (``DAPG``, ``hindex_extractor``, ...) is imported on first
use, so that environment worker processes stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from hindex_sb3._platform import prepare_process

prepare_process()

from hindex_sb3.envs import register_envs  # noqa: E402

register_envs()

__version__ = "0.1.0"

_LAZY = {
    "DAPG": "hindex_sb3.dapg",
    "hindex_extractor": "hindex_sb3.extractor",
    "baseline_extractor": "hindex_sb3.extractor",
    "HIndexExtractor": "hindex_sb3.extractor",
    "EMABatchNormCallback": "hindex_sb3.callbacks",
    "VecEncode": "hindex_sb3.vec_encode",
    "create_encoder": "hindex_sb3.encoders",
    "evaluate": "hindex_sb3.evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hindex_sb3' has no attribute {name!r}")


__all__ = ["__version__", "register_envs", *_LAZY]
