"""Natural-policy-gradient building blocks, written to match mjrl (``npg_cg.py``, ``cg_solve.py``) exactly.

Kept as pure functions so that each can be checked against a dense computation in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch as th


def flat_grad(
    output: th.Tensor, params: Sequence[th.Tensor], retain_graph: bool = False, create_graph: bool = False
) -> th.Tensor:
    """Gradient of a scalar with respect to ``params``, flattened into one vector (zeros for unused params)."""
    grads = th.autograd.grad(
        output, params, retain_graph=retain_graph or create_graph, create_graph=create_graph, allow_unused=True
    )
    return th.cat([(th.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)])


def get_flat_params(params: Sequence[th.Tensor]) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in params])


def set_flat_params(params: Sequence[th.Tensor], flat: th.Tensor) -> None:
    offset = 0
    with th.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, parameters {offset}")


def conjugate_gradient(
    matvec: Callable[[th.Tensor], th.Tensor], b: th.Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> tuple[th.Tensor, float]:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``matvec``; mjrl's CG (x0 = 0).

    Returns the solution and the final residual norm ``||b - A x||`` as tracked by the recursion.
    """
    x = th.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rdotr = th.dot(r, r)
    for _ in range(iters):
        z = matvec(p)
        alpha = rdotr / th.dot(p, z)
        x += alpha * p
        r -= alpha * z
        new_rdotr = th.dot(r, r)
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
        if rdotr < residual_tol:
            break
    return x, float(th.sqrt(rdotr))


def gaussian_kl(mean_old: th.Tensor, log_std_old: th.Tensor, mean_new: th.Tensor, log_std_new: th.Tensor) -> th.Tensor:
    """Per-sample KL(old || new) of diagonal Gaussians, in mjrl's form (including its 1e-8 in the denominator)."""
    std_old, std_new = th.exp(log_std_old), th.exp(log_std_new)
    numerator = (mean_old - mean_new) ** 2 + std_old**2 - std_new**2
    denominator = 2 * std_new**2 + 1e-8
    return th.sum(numerator / denominator + log_std_new - log_std_old, dim=-1)


def npg_step_size(grad: th.Tensor, direction: th.Tensor, delta: float) -> float:
    """mjrl's normalised step: ``alpha = sqrt(|delta / (g . F^-1 g + 1e-20)|)``."""
    return float(np.sqrt(abs(delta / (float(th.dot(grad, direction)) + 1e-20))))


def discount_cumsum(x: np.ndarray, discount: float) -> np.ndarray:
    """``y[t] = sum_k discount^k x[t+k]`` (mjrl's ``discount_sum``)."""
    out = np.empty_like(x, dtype=np.float64)
    running = 0.0
    for t in range(len(x) - 1, -1, -1):
        running = x[t] + discount * running
        out[t] = running
    return out


def gae_advantages(
    rewards: np.ndarray, values: np.ndarray, terminated: bool, gamma: float, gae_lambda: float
) -> np.ndarray:
    """GAE on one path as mjrl computes it: the value after the last step is 0 if terminated, else ``values[-1]``."""
    bootstrap = 0.0 if terminated else float(values[-1])
    next_values = np.append(values[1:], bootstrap)
    deltas = rewards + gamma * next_values - values
    return discount_cumsum(deltas, gamma * gae_lambda)
