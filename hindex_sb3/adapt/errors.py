"""The errors of Stage 2: what the CLI shows as one message without a traceback."""

from __future__ import annotations

__all__ = ["AdaptConfigError", "AdaptError"]


class AdaptError(RuntimeError):
    """A problem the user can fix (no weights, wrong dataset, bad resume); the CLI prints it without a traceback."""


class AdaptConfigError(AdaptError, ValueError):
    """An :class:`AdaptConfig` setting that cannot work (see :mod:`hindex_sb3.adapt.checks`); names the setting."""
