"""Weight files: where they come from, where they are cached, how their keys map onto our modules.

Every pretrained file the package can use (encoder or not; Stage 2 needs VGG16) is described once by a
:class:`WeightSpec`: its official URL, the file name in the cache, its *key layout* and a converter from the loaded
checkpoint object to the target module's ``state_dict``. Resolution of a ``weights`` argument is uniform:

* ``"default"``: the cached official file, downloaded on first use (with a progress bar) into
  :func:`weights_dir` (``$HINDEX_SB3_HOME/weights``, default ``~/.cache/hindex_sb3/weights``);
* a path: that file, never the network;
* ``None``: no file (the caller initialises randomly and says so).

Loading always uses ``torch.load(weights_only=True)`` (a checkpoint is data, not code), and
:func:`load_state_dict_strict` refuses any key or shape mismatch with a message listing what differed: a silent
partial load of a frozen encoder would train a policy on half-random features without any visible symptom.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import pickletools
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from hindex_sb3._io import atomic_torch_save
from hindex_sb3._validation import check_flag, check_inflation

logger = logging.getLogger(__name__)

HOME_ENV = "HINDEX_SB3_HOME"
OFFLINE_ENV = "HINDEX_SB3_OFFLINE"
ADAPTED_FORMAT = "hindex_sb3.adapted/1"

StateDict = dict[str, torch.Tensor]
Converter = Callable[[Any], StateDict]

__all__ = [
    "ADAPTED_FORMAT",
    "HOME_ENV",
    "OFFLINE_ENV",
    "CheckpointError",
    "CheckpointMismatchError",
    "WeightSpec",
    "WeightsCacheError",
    "WeightsError",
    "WeightsUnavailableError",
    "adapted_encoder_name",
    "adapted_state_for",
    "cache_home",
    "check_finite_state",
    "download",
    "file_sha256",
    "get_weight_spec",
    "is_google_drive",
    "is_offline",
    "list_weights",
    "load_checkpoint",
    "load_state_dict_strict",
    "load_weights",
    "negative_variance_keys",
    "nonfinite_keys",
    "read_adapted_checkpoint",
    "register_weights",
    "resolve_weights_file",
    "save_adapted_checkpoint",
    "weights_dir",
]


class WeightsError(RuntimeError):
    """Base class for everything that can go wrong while obtaining or loading weights."""


class WeightsUnavailableError(WeightsError, FileNotFoundError):
    """The file is not on disk and could not be downloaded (offline, host down, or a page instead of a file)."""


class WeightsCacheError(WeightsUnavailableError):
    """The weight cache folder cannot be created or written (``$HINDEX_SB3_HOME`` names a file, a read-only place).

    A subclass of :class:`WeightsUnavailableError` on purpose: for the caller it is the same situation as a missing
    file (nothing usable in the cache), so ``on_unavailable="defer"`` defers it and a saved model still loads.
    """


class CheckpointError(WeightsError):
    """The file exists but is not a checkpoint in a layout we understand."""


class CheckpointMismatchError(CheckpointError):
    """Keys or tensor shapes differ between the checkpoint and the module; lists every difference."""

    def __init__(
        self, what: str, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]]
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = [f"{what}: checkpoint does not match the module (nothing was loaded)."]
        if missing:
            parts.append(f"  missing from checkpoint ({len(missing)}): {_abbrev(missing)}")
        if unexpected:
            parts.append(f"  unexpected in checkpoint ({len(unexpected)}): {_abbrev(unexpected)}")
        if mismatched:
            shown = [f"{k}: checkpoint {tuple(a)} vs module {tuple(b)}" for k, a, b in mismatched]
            parts.append(f"  shape mismatch ({len(mismatched)}): {_abbrev(shown)}")
        super().__init__("\n".join(parts))


def _abbrev(items: list[str], limit: int = 12) -> str:
    head = ", ".join(items[:limit])
    return head + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained file.

    :param name: registry key, e.g. ``"frankmocap_hand"``.
    :param url: official download location.
    :param file_name: name inside :func:`weights_dir`.
    :param key_layout: human-readable description of the keys in the file (shown in errors and docs).
    :param converter: maps the object returned by ``torch.load`` to the target module's ``state_dict``
        (prefix stripping, dropping heads/decoders). It must raise :class:`CheckpointError` on a foreign layout.
    :param sha256_prefix: the published SHA-256 (prefix) of the file, if its publisher gives one (torchvision puts
        the first 8 hex digits into its file names); a download that does not match is discarded. ``None`` where
        nothing is published: we never make one up.
    :param description: one line for listings.
    :param manual_download: extra hint shown when the file cannot be fetched automatically.
    :param fetch: obtains the default file another way than ``url`` into our cache (e.g. through the Hugging Face
        Hub cache for timm models): ``fetch(spec, progress) -> Path``, raising :class:`WeightsUnavailableError`.
    An empty ``url`` (and no ``fetch``) means no published file: only ``weights=path`` or ``None`` work.
    """

    name: str
    url: str
    file_name: str
    key_layout: str
    converter: Converter = field(repr=False)
    sha256_prefix: str | None = None
    description: str = ""
    manual_download: str = ""
    fetch: Callable[[WeightSpec, bool], Path] | None = field(default=None, repr=False)

    @property
    def cache_path(self) -> Path:
        """Where the default file lives (or must be placed when offline)."""
        return weights_dir() / self.file_name


_WEIGHTS: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec, *, overwrite: bool = False) -> WeightSpec:
    """Add a weight file to the registry (raises on a duplicate name unless ``overwrite``)."""
    if not isinstance(spec, WeightSpec):
        raise TypeError(f"register_weights expects a WeightSpec, got {type(spec).__name__}")
    overwrite = check_flag("overwrite", overwrite)
    if spec.name in _WEIGHTS and not overwrite:
        raise ValueError(f"weights {spec.name!r} are already registered")
    _WEIGHTS[spec.name] = spec
    return spec


def get_weight_spec(name: str) -> WeightSpec:
    try:
        return _WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; registered: {sorted(_WEIGHTS)}") from None


def list_weights() -> list[str]:
    return sorted(_WEIGHTS)


def cache_home() -> Path:
    """``$HINDEX_SB3_HOME`` if set, else ``~/.cache/hindex_sb3``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hindex_sb3"


def weights_dir() -> Path:
    return cache_home() / "weights"


def is_offline() -> bool:
    """``$HINDEX_SB3_OFFLINE`` is set: nothing may be downloaded."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


_offline = is_offline


def _unavailable_message(spec: WeightSpec, reason: str) -> str:
    msg = (
        f"{spec.name} weights are not available: {reason}.\n"
        f"  Download {spec.url}\n"
        f"  and place the file at {spec.cache_path}\n"
        f"  (or pass weights='/path/to/{spec.file_name}'; set ${HOME_ENV} to move the cache)."
    )
    if spec.manual_download:
        msg += f"\n  Note: {spec.manual_download}"
    return msg


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head"))


GDRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


def is_google_drive(url: str) -> bool:
    """Google Drive serves large files behind a confirmation page; those go through ``gdown``."""
    return urlparse(url).hostname in GDRIVE_HOSTS


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(spec: WeightSpec, *, progress: bool = True) -> Path:
    """Fetch ``spec.url`` into the cache, atomically: the file appears at its cache path only once it is complete,
    is not a web page, and matches the published SHA-256 prefix where one exists (``spec.sha256_prefix``).

    Plain HTTPS files use torch.hub's downloader; Google Drive links use ``gdown`` (an optional dependency:
    ``pip install 'hindex-sb3[download]'``), which handles Drive's confirmation page for large files.
    """
    dst = spec.cache_path
    if not spec.url:
        raise WeightsUnavailableError(
            f"{spec.name} has no published weight file: pass weights='/path/to/{spec.file_name}' (a state_dict), "
            "or weights=None for random initialisation."
        )
    if _offline():
        raise WeightsUnavailableError(_unavailable_message(spec, f"not cached and ${OFFLINE_ENV} is set"))
    tmp = _writable_temp(spec, dst)
    logger.info("downloading %s weights from %s to %s", spec.name, spec.url, dst)
    try:
        if is_google_drive(spec.url):
            _gdown(spec, tmp, progress)
        else:
            _torch_hub(spec, tmp, progress)
        _check_download(spec, tmp)
        os.replace(tmp, dst)
    except Exception:
        tmp.unlink(missing_ok=True)  # our own temporary file only: another process's download goes on
        if dst.is_file():  # another process filled the cache meanwhile: only complete, checked files get there
            logger.info("%s: download failed here, but another process placed %s meanwhile; using it", spec.name, dst)
            return dst
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def _writable_temp(spec: WeightSpec, dst: Path) -> Path:
    """A temporary name next to ``dst`` unique to this process and call (several processes may fill the cache at
    once; a shared name let one process move or delete another's file), after checking the folder is usable."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb"):  # probe: a read-only folder fails here, not halfway through a download
            pass
        tmp.unlink()
    except OSError as err:
        raise WeightsCacheError(
            f"{spec.name} weights cannot be cached: the folder {dst.parent} cannot be created or written "
            f"({type(err).__name__}: {err}). Set ${HOME_ENV} (now {os.environ.get(HOME_ENV, 'unset')!r}) to a "
            f"writable folder, or pass weights='/path/to/{spec.file_name}'."
        ) from err
    return tmp


def _torch_hub(spec: WeightSpec, tmp: Path, progress: bool) -> None:
    """torch.hub's downloader: its own temp file + move, tqdm progress bar."""
    try:
        torch.hub.download_url_to_file(spec.url, str(tmp), progress=progress)
    except Exception as err:  # URLError, HTTPError, OSError: all mean "no usable file"
        raise WeightsUnavailableError(
            _unavailable_message(spec, f"download failed ({type(err).__name__}: {err})")
        ) from err


def _gdown(spec: WeightSpec, tmp: Path, progress: bool) -> None:
    try:
        import gdown
    except ImportError as err:
        raise WeightsUnavailableError(
            _unavailable_message(
                spec,
                "Google Drive downloads need the optional package gdown (pip install 'hindex-sb3[download]' or "
                "pip install gdown)",
            )
        ) from err
    try:
        out = gdown.download(url=spec.url, output=str(tmp), quiet=not progress)
    except Exception as err:  # gdown's FileURLRetrievalError (quota, permissions), HTTP and connection errors
        raise WeightsUnavailableError(
            _unavailable_message(spec, f"Google Drive download failed ({type(err).__name__}: {err})")
        ) from err
    if out is None or not tmp.is_file():
        raise WeightsUnavailableError(_unavailable_message(spec, "Google Drive download failed (gdown got no file)"))


def _check_download(spec: WeightSpec, tmp: Path) -> None:
    if not tmp.is_file():
        raise WeightsUnavailableError(_unavailable_message(spec, "download failed (no file was written)"))
    if _looks_like_html(tmp):  # e.g. a login, quota or "can't scan this file" page instead of the file
        raise WeightsUnavailableError(_unavailable_message(spec, "the server returned a web page, not the file"))
    digest = file_sha256(tmp)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        raise WeightsUnavailableError(
            _unavailable_message(
                spec, f"the downloaded file's SHA-256 {digest} does not start with the published {spec.sha256_prefix}"
            )
        )
    logger.info("%s: downloaded %s (SHA-256 %s)", spec.name, spec.file_name, digest)


def resolve_weights_file(spec: WeightSpec, weights: str | os.PathLike | None, *, progress: bool = True) -> Path | None:
    """Turn a ``weights`` argument into a file on disk (downloading the default if needed); ``None`` stays None."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "default":
        if spec.fetch is not None:
            return spec.fetch(spec, progress)
        path = spec.cache_path
        return path if path.is_file() else download(spec, progress=progress)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{spec.name} weights file {path} does not exist (official file: {spec.url}; "
            f"weights='default' caches it at {spec.cache_path})."
        )
    return path


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say which file and why.

    ``argparse.Namespace`` is allow-listed because MAE-style training scripts (MVP, VC-1) store their arguments next
    to the weights; it only carries plain values. Anything else that is not tensors/containers is refused.
    """
    path = Path(path)
    if path.suffix == ".safetensors":  # Hugging Face Hub files (timm): a pure tensor format, nothing to unpickle
        return _load_safetensors(path)
    _check_zip_inflation(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch words every weights-only failure with "weights_only" and advice to load with weights_only=False;
        # only an unsupported global means the file holds Python objects. Anything else is a damaged or foreign file,
        # which must never be unpickled without restrictions.
        text = str(err)
        found = _UNSUPPORTED_GLOBAL.search(text)
        if found:
            raise CheckpointError(
                f"{path} holds Python objects besides tensors ({found.group(1)}), which weights_only loading refuses. "
                "If you trust the file, re-save its tensors: torch.save({'model': torch.load(p, weights_only=False)"
                "['model']}, p2)."
            ) from err
        detail = _UNPICKLER_DETAIL.search(text)
        reason = " ".join((detail.group(1) if detail else text).split())
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (damaged or not a torch file): {reason}"
        ) from err
    except Exception as err:  # garbage bytes surface as almost any exception type from the unpickler
        reason = f"{type(err).__name__}: {err}"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {reason}") from err


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.S)


def _load_safetensors(path: Path) -> StateDict:
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise CheckpointError(f"{path}: reading .safetensors files needs the safetensors package ({err})") from err
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError, OSError on truncated or foreign files
        raise CheckpointError(f"{path} is not a readable safetensors file: {type(err).__name__}: {err}") from err


_PID_VALUES = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"}


def _legacy_storage_elements(path: Path) -> int:
    """Total elements the storages of a pre-1.6 (non-zip) checkpoint declare, read from its pickles' opcodes.

    torch allocates each storage at its declared size *before* reading its bytes, so a 50 KB file can ask for 8 GB.
    Each element takes at least one byte of the file, which bounds what an honest file can declare.
    """
    sizes: dict[str, int] = {}
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            for _op in pickletools.genops(f):
                pass
        stack: list[list[Any]] = []  # values pushed since each open MARK
        memo: dict[int, Any] = {}
        closed: list[Any] | None = None  # the tuple just built (a persistent id is a tuple of str/int)
        last: Any = None
        for op, arg, _ in pickletools.genops(f):
            name = op.name
            if name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):  # memo writes leave the stack as it is
                memo[len(memo) if name == "MEMOIZE" else arg] = last
                continue
            value = arg if name in _PID_VALUES else memo.get(arg) if name in ("BINGET", "LONG_BINGET", "GET") else None
            if name in ("BINPERSID", "PERSID") and closed and closed[0] == "storage":
                ints = [v for v in closed if isinstance(v, int) and not isinstance(v, bool)]
                keys = [v for v in closed[1:] if isinstance(v, str)]
                if ints and keys:
                    sizes[keys[0]] = ints[0]
            closed = None
            if name == "MARK":
                stack.append([])
            elif name == "TUPLE" and stack:
                closed = stack.pop()
            elif value is not None and stack:
                stack[-1].append(value)
            last = value
    return sum(sizes.values())


def _check_zip_inflation(path: Path) -> None:
    """torch.load inflates deflated zip members: refuse a bomb from the zip headers before it does. Legacy
    (non-zip) files get the equivalent bound: the storages they declare must fit in the file."""
    if not zipfile.is_zipfile(path):
        try:
            declared = _legacy_storage_elements(path)
        except Exception:  # not a legacy checkpoint either: torch.load reports what it is
            return
        if declared > path.stat().st_size:
            raise CheckpointError(
                f"{path} declares tensor storages of {declared:,} elements but holds only {path.stat().st_size:,} "
                "bytes: a damaged or crafted file (torch would allocate the declared size first); nothing was loaded"
            )
        return
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                check_inflation(f"{path}: member {info.filename!r}", info.file_size, info.compress_size)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    except (zipfile.BadZipFile, OSError):
        return  # let torch.load report the damage in its own words


def load_weights(
    spec: WeightSpec | str,
    weights: str | os.PathLike | None = "default",
    *,
    progress: bool = True,
    encoder: str | None = None,
):
    """Resolve, read and convert a weight file; returns ``(state_dict, path)`` or ``(None, None)`` for ``None``.

    :param encoder: the registry name the weights are for. A Stage-2 export (:data:`ADAPTED_FORMAT`) holds the
        encoder's own trunk keys and says which encoder it adapted; given ``encoder``, such a file loads for that
        encoder only (with a message naming both otherwise), whatever the layout of the encoder's published file.
    """
    spec = get_weight_spec(spec) if isinstance(spec, str) else spec
    path = resolve_weights_file(spec, weights, progress=progress)
    if path is None:
        return None, None
    ckpt = load_checkpoint(path)
    try:
        if encoder is not None and isinstance(ckpt, Mapping) and ckpt.get("format") == ADAPTED_FORMAT:
            state = adapted_state_for(ckpt, encoder)
        else:
            state = spec.converter(ckpt)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err} (expected layout for {spec.name}: {spec.key_layout})") from err
    check_finite_state(state, f"{spec.name} weights {path}")
    return state, path


def adapted_encoder_name(provenance: Mapping[str, Any]) -> str:
    """The encoder a Stage-2 export adapted (files written before exports named it were all ``hindex``)."""
    name = provenance.get("encoder", "hindex") if isinstance(provenance, Mapping) else "hindex"
    return name if isinstance(name, str) else "hindex"


def adapted_state_for(ckpt: Mapping[str, Any], encoder: str) -> StateDict:
    """The trunk ``state_dict`` of a Stage-2 export, if it was adapted for ``encoder``."""
    adapted = adapted_encoder_name(ckpt.get("provenance", {}))
    if adapted != encoder:
        raise CheckpointError(
            f"a Stage-2 checkpoint adapted for encoder {adapted!r}, not {encoder!r}: load it with --encoder {adapted}"
        )
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{ADAPTED_FORMAT} checkpoint without a state_dict")
    return dict(state)


def check_finite_state(state: Mapping[str, Any], what: str) -> None:
    """Refuse a state dict with NaN/inf in any floating tensor, naming the first such key.

    A frozen encoder with one non-finite weight yields non-finite features for every image; without this check the
    failure surfaces much later, far from its cause (e.g. inside ``torch.distributions`` during ``predict``).
    """
    bad = nonfinite_keys(state)
    if bad:
        n_bad = int((~torch.isfinite(state[bad[0]])).sum())
        raise CheckpointError(
            f"{what}: tensor {bad[0]!r} contains {n_bad} NaN or infinite value(s) (the file is damaged or was "
            "saved from a diverged run); nothing was loaded"
        )
    negative = negative_variance_keys(state)
    if negative:  # BatchNorm takes sqrt(running_var + eps): a negative variance gives NaN features just the same
        n_bad = int((state[negative[0]] < 0).sum())
        raise CheckpointError(
            f"{what}: tensor {negative[0]!r} holds {n_bad} negative running variance(s) (the file is damaged); "
            "nothing was loaded"
        )


def nonfinite_keys(state: Mapping[str, Any]) -> list[Any]:
    """The keys of ``state``'s floating tensors that hold NaN or infinity (loading refuses them, saving too)."""
    return [
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def negative_variance_keys(state: Mapping[str, Any]) -> list[Any]:
    """The BatchNorm ``running_var`` keys of ``state`` holding a negative value (loading refuses them, saving too)."""
    return [
        key
        for key, value in state.items()
        if str(key).endswith("running_var")
        and isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and bool((value < 0).any())
    ]


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str = "checkpoint",
    optional_suffixes: Iterable[str] = ("num_batches_tracked",),
) -> None:
    """Load ``state_dict`` into ``module`` only if keys and shapes match exactly; otherwise raise listing all diffs.

    Keys ending in ``optional_suffixes`` may be absent (BatchNorm's ``num_batches_tracked`` counter is missing from
    checkpoints written by old PyTorch versions and carries no weights); they then keep the module's value.
    """
    own = module.state_dict()
    optional = tuple(optional_suffixes)
    missing = sorted(k for k in own if k not in state_dict and not k.endswith(optional))
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in sorted(own)
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    bad_type = [k for k in state_dict if k in own and not isinstance(state_dict[k], torch.Tensor)]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(what, missing, unexpected, mismatched)
    if bad_type:
        raise CheckpointError(f"{what}: entries that are not tensors: {_abbrev(bad_type)}")
    full = {k: state_dict.get(k, v) for k, v in own.items()}
    module.load_state_dict(full, strict=True)


# ---------------------------------------------------------------------------------------------------------------------
# The package's own adapted-checkpoint format (written by Stage 2, read by create_encoder("hindex", weights=path)).


def save_adapted_checkpoint(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], provenance: Mapping[str, Any]
) -> Path:
    """Write an adapted encoder trunk as ``{"format": ADAPTED_FORMAT, "state_dict", "provenance"}``.

    ``state_dict`` holds the trunk's own keys (for ``hindex``: torchvision ResNet-50 names without ``fc.*``), and
    ``provenance["encoder"]`` names the registered encoder it belongs to (absent means ``hindex``), so that
    ``create_encoder(name, weights=path)`` loads it for that encoder only. ``provenance`` is a plain dict
    (str/int/float/bool/None/list/dict) saying where the weights came from, e.g. ``{"task": "door", "init":
    "frankmocap_hand", "iterations": 100000}``; it must survive ``weights_only`` loading, so arbitrary objects are
    refused here rather than at read time.
    """
    # Refused here, not at read time: a file that only fails on load is found far from the run that wrote it.
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of tensors, got {type(state_dict).__name__}")
    if not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    _check_plain(provenance, "provenance")
    encoder = provenance.get("encoder", "hindex")
    if not isinstance(encoder, str):  # read back as 'hindex' otherwise, and loaded into the wrong network
        raise TypeError(f"provenance['encoder'] must be an encoder name (str), got {encoder!r}")
    if not encoder.strip():
        raise ValueError("provenance['encoder'] must not be empty")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state_dict: entries that are not tensors: {_abbrev(bad)}")
    nonfinite = [str(k) for k in nonfinite_keys(state_dict)]
    if nonfinite:  # loading refuses it (check_finite_state): better to fail in the run that produced it
        raise ValueError(f"state_dict: NaN or infinite values in {_abbrev(nonfinite)} (a diverged run?); nothing saved")
    negative = [str(k) for k in negative_variance_keys(state_dict)]
    if negative:
        raise ValueError(f"state_dict: negative BatchNorm running variances in {_abbrev(negative)}; nothing saved")
    sd = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    if adapted_encoder_name(provenance) == "hindex" and any(k.startswith("fc.") for k in sd):
        raise ValueError("adapted checkpoints store the backbone without fc.*; drop the classifier first")
    # a run killed mid-save must not leave a truncated file at the final path (nor destroy the previous export there)
    return atomic_torch_save({"format": ADAPTED_FORMAT, "state_dict": sd, "provenance": dict(provenance)}, path)


def read_adapted_checkpoint(path: str | os.PathLike) -> tuple[StateDict, dict[str, Any]]:
    """Read a file written by :func:`save_adapted_checkpoint`; returns ``(state_dict, provenance)``."""
    ckpt = load_checkpoint(path)
    if not (isinstance(ckpt, dict) and ckpt.get("format") == ADAPTED_FORMAT):
        raise CheckpointError(f"{path} is not a {ADAPTED_FORMAT} checkpoint")
    return dict(ckpt["state_dict"]), dict(ckpt.get("provenance", {}))


def _check_plain(obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, str | int | float | bool):
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not a plain value (str/int/float/bool/None/list/dict)")
