"""The errors of Stage 2: what the CLI shows as one message without a traceback."""

from __future__ import annotations

__all__ = ["AdaptConfigError", "AdaptError", "NonFiniteLossError"]


class AdaptError(RuntimeError):
    """A problem the user can fix (no weights, wrong dataset, bad resume); the CLI prints it without a traceback."""


class AdaptConfigError(AdaptError, ValueError):
    """An :class:`AdaptConfig` setting that cannot work (see :mod:`hindex_sb3.adapt.checks`); names the setting."""


class NonFiniteLossError(AdaptError):
    """The loss (or a trained parameter) became NaN or infinite: training stops there, before the bad step is applied
    or saved, because every later iteration and the export would only carry the NaN on (a lower lr usually helps)."""

    def __init__(self, message: str, iteration: int) -> None:
        super().__init__(message)
        self.iteration = iteration
