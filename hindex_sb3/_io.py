"""Writing files so that a crash never leaves a broken one, and JSON that any parser reads.

Every output of the package goes through these helpers: the bytes land in a temporary file next to the target, are
flushed to disk, and replace the target in one ``os.replace`` (atomic on POSIX and Windows), so a reader sees the old
file or the new one, never half of one. JSON is strict (``allow_nan=False``): ``NaN`` and ``Infinity`` are not JSON,
and Python's default of writing them anyway produces files that other tools refuse.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_text", "read_json", "to_json_text", "write_json"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and one ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name opened with "x" (not mkstemp): the file gets the usual permissions (umask), not 0600
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, serialised in memory first and written atomically: a save that fails or is killed
    leaves the previous file at ``path`` whole, never a truncated one."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any, where: str = "$") -> Any:
    """Plain JSON values; a non-finite float is reported with its location (``$.final_eval.mean_return``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{where} is {obj}, which JSON cannot hold (use null for a missing number)")
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj


def to_json_text(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text: a ``NaN`` or infinity anywhere raises ``ValueError`` naming where it is."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON, atomically."""
    return atomic_write_text(path, to_json_text(obj, indent))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path_or_text: str | os.PathLike, *, text: bool = False) -> Any:
    """Parse strict JSON (``NaN`` / ``Infinity`` refused) from a file, or from a string with ``text=True``."""
    raw = path_or_text if text else Path(path_or_text).read_text(encoding="utf-8")
    return json.loads(raw, parse_constant=_refuse_constant)  # type: ignore[arg-type]
