"""Every random-number state a DAPG run consumes, as JSON plus tensors, so a resumed run draws the same numbers.

Python's ``random``, numpy's global generator (BC minibatches, baseline permutations), torch's CPU and CUDA
generators (action noise) and each environment's ``np_random`` (episode start states). Numbers wider than 2**53 are
stored as strings so that any JSON parser keeps them exact.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng", "restore_rng"]

_BIG = 2**53
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def _encode(obj: Any) -> Any:
    if isinstance(obj, bool) or obj is None or isinstance(obj, float | str):
        return obj
    if isinstance(obj, int):
        return {"int": str(obj)} if abs(obj) >= _BIG else obj
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    raise TypeError(f"cannot store {type(obj).__name__} in an RNG state")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"int"}:
            return int(obj["int"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def capture_rng(venv: Any | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(json_state, tensors)`` of the global generators and of every env of ``venv``."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "numpy": {
            "name": name,
            "keys": base64.b64encode(np.asarray(keys, dtype="<u4").tobytes()).decode(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "envs": None,
    }
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    if venv is not None:
        state["envs"] = [_encode(g.bit_generator.state) for g in venv.get_attr("np_random")]
    return _encode(state), tensors


def restore_rng(state: dict[str, Any], tensors: dict[str, torch.Tensor], venv: Any | None = None) -> None:
    """Put back what :func:`capture_rng` recorded (the envs only when the number of envs matches)."""
    state = _decode(state)
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    n = state["numpy"]
    keys = np.frombuffer(base64.b64decode(n["keys"]), dtype="<u4").astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if venv is not None and state["envs"] is not None:
        if len(state["envs"]) != venv.num_envs:
            raise ValueError(f"the checkpoint has {len(state['envs'])} env RNG states, the run {venv.num_envs} envs")
        for i, bit_state in enumerate(state["envs"]):
            kind = bit_state.get("bit_generator")
            if kind not in _BIT_GENERATORS:
                raise ValueError(f"unknown bit generator {kind!r} in an env RNG state")
            bit_generator = getattr(np.random, kind)()
            bit_generator.state = bit_state
            venv.set_attr("np_random", np.random.Generator(bit_generator), indices=[i])
        venv._reset_seeds()  # seeds still pending from make_vec_env would re-seed the next reset
