"""Reading ``.npz`` files that may be hostile: sizes are checked from the headers before anything is inflated.

``np.load`` trusts each member's .npy header and inflates the member whole when it is read, so a 2 MB file can
claim 2 GB. :func:`open_npz` first checks, for every member it will be asked for, the zip's declared sizes
(:func:`~hindex_sb3._validation.check_inflation`, a total bound) and that the .npy header's shape and dtype agree
with the zip's declared size; only then does ``np.load`` read anything. Pickled members are never loaded.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hindex_sb3._validation import check_inflation, check_int

__all__ = ["MAX_NPZ_BYTES", "open_npz"]

#: Default bound on the uncompressed bytes read from one file (pass ``max_bytes`` for very large pixel sets).
MAX_NPZ_BYTES = 8 << 30


def _read_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
    """Check a member's .npy header against the zip's declared size; inflates only the ~100 header bytes."""
    with zf.open(info) as fp:
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as err:
            raise ValueError(f"{where}: not a numpy array ({err})") from None
        header_len = fp.tell()
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects (dtype {dtype}); only numeric arrays are read")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_len + nbytes != info.file_size:
        raise ValueError(
            f"{where}: its header declares shape {shape} of {dtype} ({nbytes:,} bytes) but the archive says the "
            f"member holds {info.file_size - header_len:,} bytes: the file is damaged or crafted"
        )


def _check_members(path: Path, zf: zipfile.ZipFile, names: Iterable[str], max_bytes: int) -> None:
    total = 0
    for name in names:
        where = f"{path}: entry {name!r}"
        info = zf.getinfo(name + ".npy") if name + ".npy" in zf.NameToInfo else zf.getinfo(name)
        check_inflation(where, info.file_size, info.compress_size)
        total += info.file_size
        if total > max_bytes:
            raise ValueError(
                f"{where}: the file would take more than max_bytes={max_bytes:,} bytes of memory "
                "(pass a larger max_bytes if the file is genuine)"
            )
        _read_npy_header(zf, info, where)


def _check_magic(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith((b"\x80", b"(lp", b"]q", b"(dp")):
        raise ValueError(
            f"{path} is a pickle, not an .npz file (DAPG demonstration pickles: load_dapg_pickle, --demos FILE.pickle)"
        )
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ValueError(f"{path} is not an .npz (zip) file (it starts with {head!r})")


def open_npz(path: str | Path, select: Callable[[str], bool] | None = None, *, max_bytes: int = MAX_NPZ_BYTES) -> Any:
    """``np.load(path, allow_pickle=False)`` after checking from the headers the members the caller will read.

    :param select: which member names will be read (default: all); the others are never inflated, so not checked.

    :raises ValueError: naming the file and member, for anything that is not a plain, honestly sized .npz.
    """
    check_int("max_bytes", max_bytes, minimum=1)
    path = Path(path)
    _check_magic(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err
    try:
        _check_members(path, f.zip, [n for n in f.files if select is None or select(n)], max_bytes)
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # a truncated or corrupt member header
        f.close()
        raise ValueError(f"{path} is damaged: {err}") from None
    except BaseException:
        f.close()
        raise
    return f
