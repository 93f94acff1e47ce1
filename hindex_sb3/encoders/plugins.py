"""Encoders from other installed packages, through the ``hindex_sb3.encoders`` entry-point group.

A package that wants its representation to be usable as ``hindex train --encoder NAME`` (and by the extractor,
``VecEncode`` and the benchmarks) declares, in its ``pyproject.toml``::

    [project.entry-points."hindex_sb3.encoders"]
    my_encoder = "my_package.encoders:hindex_encoders"

The object an entry point names may be

* an :class:`~hindex_sb3.encoders.registry.EncoderSpec` (registered as is),
* a callable taking no arguments that returns an ``EncoderSpec``, an iterable of them, or ``None`` (it called
  :func:`~hindex_sb3.encoders.registry.register_encoder` itself).

Entry points are loaded lazily, once per process, the first time a name is not found (or when the list of encoders is
asked for), so importing this package never imports the plugins. A plugin that fails to import or returns something
else is skipped with a warning naming it: one broken package must not make every encoder unusable. A plugin cannot
replace a built-in or previously registered encoder (a warning says which name was refused).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from importlib.metadata import entry_points

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hindex_sb3.encoders"

__all__ = ["ENTRY_POINT_GROUP", "load_plugins", "plugin_errors", "reset_plugins"]

_loaded = False
_errors: dict[str, str] = {}
_registered: dict[str, list[str]] = {}


def load_plugins(*, force: bool = False) -> dict[str, list[str]]:
    """Load every ``hindex_sb3.encoders`` entry point (once); returns ``{entry point: [encoder names]}``."""
    global _loaded
    if _loaded and not force:
        return dict(_registered)
    _loaded = True
    from hindex_sb3.encoders.registry import _ENCODERS

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registered:
            continue
        before = dict(_ENCODERS)  # importing or calling the plugin may register (or replace) encoders itself
        try:
            names = _register_from(ep.load(), before)
        except Exception as err:  # a broken plugin is reported, not fatal, and leaves nothing registered
            _ENCODERS.clear()
            _ENCODERS.update(before)
            _errors[ep.name] = f"{ep.value}: {type(err).__name__}: {err}"
            warnings.warn(
                f"hindex_sb3 encoder plugin {ep.name!r} ({ep.value}) could not be loaded: {err}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        _registered[ep.name] = names
        _errors.pop(ep.name, None)
        logger.info("encoder plugin %s (%s) registered %s", ep.name, ep.value, names)
    return dict(_registered)


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load, with the reason."""
    return dict(_errors)


def reset_plugins() -> None:
    """Forget what was loaded (the encoders stay registered); the next lookup scans the entry points again."""
    global _loaded
    _loaded = False
    _errors.clear()
    _registered.clear()


def _register_from(obj: object, before: dict) -> list[str]:
    """Register what an entry point gave; ``before`` is the registry as it was before the plugin was imported.

    All specs are checked before any is registered (a plugin reported as failed must not be half-registered), and
    encoders the plugin replaced or removed by calling the registry itself are put back: plugins only add names.
    """
    from hindex_sb3.encoders.registry import _ENCODERS, EncoderSpec, register_encoder

    if not isinstance(obj, EncoderSpec) and callable(obj):
        obj = obj()
    _restore_replaced(before)
    if obj is None:
        return sorted(set(_ENCODERS) - set(before))
    if isinstance(obj, str | bytes) or not isinstance(obj, EncoderSpec | Iterable):
        raise TypeError(f"expected an EncoderSpec, an iterable of them or None, got {type(obj).__name__}")
    specs = [obj] if isinstance(obj, EncoderSpec) else list(obj)
    bad = [type(spec).__name__ for spec in specs if not isinstance(spec, EncoderSpec)]
    if bad:
        raise TypeError(f"expected EncoderSpec objects, got {', '.join(bad)}")
    names = sorted(set(_ENCODERS) - set(before))  # what it registered itself
    for spec in specs:
        try:
            if _ENCODERS.get(spec.name) is spec:  # a callable that registered and also returned it
                continue
            register_encoder(spec)
        except ValueError as err:
            warnings.warn(f"encoder plugin: {err}; keeping the existing one", RuntimeWarning, stacklevel=3)
            continue
        names.append(spec.name)
    return names


def _restore_replaced(before: dict) -> None:
    """Put back every encoder that existed before the plugin loaded and that it replaced or removed (warning)."""
    from hindex_sb3.encoders.registry import _ENCODERS

    replaced = sorted(name for name, spec in before.items() if _ENCODERS.get(name) is not spec)
    if replaced:
        warnings.warn(
            f"encoder plugin replaced or removed {replaced}, which were registered before it; keeping the originals",
            RuntimeWarning,
            stacklevel=4,
        )
        _ENCODERS.update({name: before[name] for name in replaced})
