"""State-based expert policies stored as plain ``.npz`` MLPs (the DAPG and DexMV experts' format).

The original experts are mjrl pickles, which cannot be loaded safely; their weights converted to ``.npz`` need no
pickle at all (``np.load(allow_pickle=False)``). The forward pass reproduces mjrl's ``FCNetwork`` in float32:
``mu(x) = (W2 tanh(W1 tanh(W0 (x - in_shift) / (in_scale + 1e-8) + b0) + b1) + b2) * out_scale + out_shift``.
Files without the shift/scale keys (the DexMV experts) use the identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hindex_sb3._npz import open_npz
from hindex_sb3._validation import check_flag

_REQUIRED = ("fc0_w", "fc0_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b", "log_std")
_OPTIONAL = ("in_shift", "in_scale", "out_shift", "out_scale")  # (other keys, e.g. "nonlinearity", are not read)


class NpzMLPPolicy:
    """A Gaussian MLP policy with tanh hidden layers; call it on a state vector (or a batch) to get an action."""

    def __init__(self, params: dict[str, np.ndarray], name: str = "expert"):
        missing = [k for k in _REQUIRED if k not in params]
        if missing:
            raise ValueError(f"{name}: not an MLP policy file, missing keys {missing}")
        for key in (*_REQUIRED, *(k for k in _OPTIONAL if k in params)):
            arr = np.asarray(params[key])  # a bool or complex array would be cast silently, NaN would act as NaN
            if arr.dtype.kind not in "iuf":
                raise ValueError(f"{name}: {key} holds {arr.dtype} values, not real numbers")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name}: {key} holds non-finite values (NaN or inf)")
        self.name = name
        self.weights = [np.asarray(params[f"fc{i}_w"], np.float32) for i in range(3)]
        self.biases = [np.asarray(params[f"fc{i}_b"], np.float32) for i in range(3)]
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"{name}: layer {i} has weight {w.shape} and bias {b.shape}")
            if i and w.shape[1] != self.weights[i - 1].shape[0]:
                raise ValueError(f"{name}: layer {i} expects {w.shape[1]} inputs, previous layer gives {b.shape}")
        self.obs_dim = self.weights[0].shape[1]
        self.act_dim = self.weights[2].shape[0]
        log_std = np.asarray(params["log_std"], np.float32)
        if log_std.size != self.act_dim:
            raise ValueError(f"{name}: log_std has {log_std.size} values for {self.act_dim} actions")
        self.log_std = log_std.reshape(self.act_dim)
        self.in_shift = np.asarray(params.get("in_shift", np.zeros(self.obs_dim)), np.float32)
        self.in_scale = np.asarray(params.get("in_scale", np.ones(self.obs_dim)), np.float32)
        self.out_shift = np.asarray(params.get("out_shift", np.zeros(self.act_dim)), np.float32)
        self.out_scale = np.asarray(params.get("out_scale", np.ones(self.act_dim)), np.float32)
        for name_, arr, n in (
            ("in_shift", self.in_shift, self.obs_dim),
            ("in_scale", self.in_scale, self.obs_dim),
            ("out_shift", self.out_shift, self.act_dim),
            ("out_scale", self.out_scale, self.act_dim),
        ):
            if arr.shape != (n,):
                raise ValueError(f"{name}: {name_} has shape {arr.shape}, expected ({n},)")

    @classmethod
    def load(cls, path: str | Path) -> NpzMLPPolicy:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no expert policy file at {path}")
        try:
            with open_npz(path) as f:  # sizes checked from the headers first: a crafted file is not inflated
                params = {k: f[k] for k in f.files}
        except (ValueError, OSError) as err:
            raise ValueError(f"{path} is not a readable .npz policy file: {err}") from err
        return cls(params, name=path.name)

    def mean(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic (evaluation) action."""
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim == 0 or x.shape[-1] != self.obs_dim:
            raise ValueError(f"{self.name} takes observations of size {self.obs_dim}, got shape {x.shape}")
        h = (x - self.in_shift) / (self.in_scale + 1e-8)
        h = np.tanh(h @ self.weights[0].T + self.biases[0])
        h = np.tanh(h @ self.weights[1].T + self.biases[1])
        y = h @ self.weights[2].T + self.biases[2]
        return y * self.out_scale + self.out_shift

    def __call__(
        self, obs: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        mu = self.mean(obs)
        if check_flag("deterministic", deterministic):  # a string such as "no" would be truthy
            return mu
        rng = np.random.default_rng() if rng is None else rng
        return mu + np.exp(self.log_std) * rng.standard_normal(mu.shape).astype(np.float32)
