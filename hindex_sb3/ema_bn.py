"""Stage-3 "test-time" BatchNorm: running statistics that follow the RL observation stream by EMA, frame by frame.

H-InDex (Ze et al., 2023, Stage 3) keeps the encoder frozen but lets its BatchNorm statistics drift towards the
images the policy actually sees. The authors' ``TestTimeBatchNorm2D`` (``stage3_RL/rrl/modules.py``) does this *in
eval mode*: every forward first folds the batch statistics into the running ones and then normalises with the
*updated* running statistics. Their rollouts encode one rendered frame per forward, so each frame is one EMA update.

We batch the frames of all environments stepped together, and keep the paper's per-frame meaning: by default
(``ema_update="frame"``) a forward over N frames equals N single-frame forwards in batch order, frame i normalised
with the statistics after its own update, computed in one batched forward (closed form of the recursion, below).
``ema_update="batch"`` is the authors' module applied to the whole batch (one update from the statistics of all N
frames): with N environments that moves the statistics N times slower per frame and mixes the variance between
frames into the running variance, so it is only an explicit option. Two further deliberate differences:

* updates are switchable (:attr:`EMABatchNorm2d.update_stats`), because in an RL library many forwards happen that
  must not move the statistics (PPO's gradient epochs, value bootstrapping, evaluation episodes). The callback in
  :mod:`hindex_sb3.callbacks` decides which forward is "the" forward of an environment step;
* the buffers are updated in place rather than re-assigned, so that references held elsewhere stay valid (SB3's SAC
  keeps a list of ``running_*`` tensors to copy into its target network, ``state_dict`` aliases, and replayed CUDA
  graphs, which write to the buffers they were captured with).

``scope="all"`` converts every BatchNorm2d (what the paper describes), ``scope="stem"`` only the first one, ``bn1``,
which is what the released code effectively did (its replacement loop silently failed for nested names, see
``docs/representations.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hindex_sb3._validation import check_flag, check_real

EMAScope = Literal["all", "stem"]
EMAUpdate = Literal["frame", "batch"]

__all__ = [
    "EMABatchNorm2d",
    "EMAScope",
    "EMAUpdate",
    "all_modules",
    "convert_to_ema_bn",
    "ema_bn_modules",
    "ema_bn_updates",
    "set_ema_momentum",
    "set_ema_update",
]


class EMABatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose eval-mode forward updates the running statistics by EMA, then normalises with them.

    In eval mode, with ``update_stats`` on, ``momentum_ema = m > 0`` and ``track_running_stats``, a forward over
    frames ``x_1 .. x_N`` does, with ``ema_update="frame"`` (default; the paper's one update per rendered frame)::

        for i in 1..N:                                    # in batch order, computed in closed form
            running_mean <- (1 - m) running_mean + m mean_{H,W}(x_i)
            running_var  <- (1 - m) running_var  + m var_{H,W}(x_i)      # biased (population) variance
            y_i = (x_i - running_mean) / sqrt(running_var + eps) * weight + bias    # its own updated statistics
        num_batches_tracked += N

    and with ``ema_update="batch"`` (the authors' module on a whole batch) one update from ``mean_{N,H,W}(x)`` and
    ``var_{N,H,W}(x)``, ``num_batches_tracked += 1``, and all frames normalised with the result. For N = 1 the two
    are the same. ``m`` is the weight of the new frame (PyTorch's convention); ``m = 0`` (or ``update_stats =
    False``) is ordinary frozen eval-mode BatchNorm. The statistics update never builds an autograd graph, whatever
    the grad mode.

    In train mode the module is a plain :class:`torch.nn.BatchNorm2d` (batch statistics, PyTorch's own running
    update with unbiased variance), as in the authors' code; frozen encoders in this package never enter train mode.

    The state dict is exactly that of ``nn.BatchNorm2d`` (``momentum_ema``, ``update_stats`` and ``ema_update`` are
    settings, not state), so checkpoints move freely between the two classes.
    """

    ema_update: EMAUpdate = "frame"  # class default: modules pickled before the option existed unpickle with it

    def __init__(
        self,
        num_features: int,
        *,
        momentum_ema: float = 0.0,
        update_stats: bool = True,
        ema_update: EMAUpdate = "frame",
        **kwargs,
    ) -> None:
        super().__init__(num_features, **kwargs)
        self.momentum_ema = _check_momentum(momentum_ema, "momentum_ema")
        self.update_stats = check_flag("update_stats", update_stats)
        self.ema_update = _check_update(ema_update)

    @classmethod
    def from_batchnorm(
        cls, bn: nn.BatchNorm2d, momentum_ema: float = 0.0, update_stats: bool = True, ema_update: EMAUpdate = "frame"
    ) -> EMABatchNorm2d:
        """A copy of ``bn`` (same parameters, buffers, eps, affine/tracking flags, device, dtype, train/eval mode)."""
        new = cls(
            bn.num_features,
            momentum_ema=momentum_ema,
            update_stats=update_stats,
            ema_update=ema_update,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
        )
        ref = bn.weight if bn.affine else bn.running_mean
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        new.load_state_dict(bn.state_dict())
        if bn.affine:
            new.weight.requires_grad_(bn.weight.requires_grad)
            new.bias.requires_grad_(bn.bias.requires_grad)
        new.train(bn.training)
        return new

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, momentum_ema={self.momentum_ema}, update_stats={self.update_stats}, "
            f"ema_update={self.ema_update}"
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training or not self.track_running_stats:
            return super().forward(input)
        self._check_input_dim(input)
        if self.update_stats and self.momentum_ema > 0.0 and input.shape[0] > 0:
            if self.ema_update == "frame" and input.shape[0] > 1:  # one frame: the same update, the cheaper path
                return self._forward_per_frame(input)
            self._batch_update(input)
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    @torch.no_grad()
    def _batch_update(self, x: torch.Tensor) -> None:
        mean, var = _batch_mean_var(x.detach())
        running = [self.running_mean, self.running_var]
        if mean.dtype != self.running_mean.dtype:
            mean, var = mean.to(self.running_mean.dtype), var.to(self.running_var.dtype)
        # r <- r + m (batch - r), both buffers in one call: on a GPU at RL batch sizes every kernel launch counts, and
        # this halves the update's launches (measured: EMA forward 12.9 -> 9.3 ms at batch 1 on an H100).
        torch._foreach_lerp_(running, [mean, var], self.momentum_ema)
        self.num_batches_tracked.add_(1)

    def _forward_per_frame(self, x: torch.Tensor) -> torch.Tensor:
        """N sequential single-frame updates and normalisations in one batched pass (no host sync: graph-safe)."""
        c = self.num_features
        with torch.no_grad():
            mean, var = _frame_mean_var(x.detach())
            start = torch.cat([self.running_mean, self.running_var])
            # Rounded to the buffers' dtype, so frame i is normalised with exactly what a batch of one would store.
            stats = _ema_closed_form(torch.cat([mean, var], 1), start, self.momentum_ema).to(start.dtype)
            # In place, so that aliases and captured CUDA graphs see the new statistics.
            self.running_mean.copy_(stats[-1, :c])
            self.running_var.copy_(stats[-1, c:])
            self.num_batches_tracked.add_(x.shape[0])
        if x.device.type == "cpu" and x.dtype in _REDUCED:
            return self._normalise_frames(x, stats)
        scale = torch.rsqrt(stats[:, c:] + self.eps)  # (N, C), statistics after each frame's own update
        if self.affine:
            scale = scale * self.weight
        shift = -stats[:, :c] * scale
        if self.affine:
            shift = shift + self.bias
        compute = torch.promote_types(x.dtype, torch.float32)
        scale, shift = (t.to(compute)[:, :, None, None] for t in (scale, shift))
        # bf16/fp16 on a GPU: normalise in float32 and round once, as F.batch_norm does (casts happen in the kernel).
        return torch.addcmul(shift, x, scale).to(x.dtype)

    def _normalise_frames(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Frame i through ``F.batch_norm`` with its own statistics: exactly what a batch of one does with them.

        For bf16/fp16 on the CPU. The eval kernel converts each element to float32, normalises and rounds once, in
        one pass; ``addcmul`` with float32 scale and shift would first copy the whole activation to float32 and
        write a float32 result (CPU type promotion makes temporaries), then round it in a third pass (measured
        at (4, 64, 112, 112) channels-last: 17 ms against 1.1 ms for this loop).
        """
        c = self.num_features
        frames = [
            F.batch_norm(frame, s[:c], s[c:], self.weight, self.bias, False, 0.0, self.eps)
            for frame, s in zip(x.split(1), stats, strict=True)
        ]
        return torch.cat(frames)


def _ema_closed_form(frames: torch.Tensor, start: torch.Tensor, m: float) -> torch.Tensor:
    """All intermediate states of ``r_i = (1 - m) r_{i-1} + m frames_i`` from ``r_0 = start``: shape ``(N, K)``.

    ``r_i = (1 - m)^i r_0 + m sum_{j <= i} (1 - m)^(i - j) frames_j`` is one ``(N, N + 1) @ (N + 1, K)`` product,
    run in float64 (float32 on devices without it), so the result is at least as accurate as the float32 recursion
    it replaces; every weight is non-negative, so nothing cancels but the data itself.
    """
    acc = torch.float32 if frames.device.type == "mps" else torch.float64
    weights = _ema_weights(frames.shape[0], m, frames.device, acc)
    return weights @ torch.cat([start[None].to(acc), frames.to(acc)])


_REDUCED = (torch.bfloat16, torch.float16)
_WEIGHTS: dict[tuple, torch.Tensor] = {}
_MAX_CACHED = 64  # entries; never evicted, see below


def _ema_weights(n: int, m: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``(N, N + 1)`` weights of :func:`_ema_closed_form` (column 0 for ``r_0``), cached per setting.

    Built from the lag ``i - j`` (never as ``(1 - m)^i / (1 - m)^j``, which overflows for long batches). They are the
    same for every layer, so a process keeps them: on a GPU that saves seven small kernel launches per layer and
    forward. Entries are never evicted (a captured CUDA graph may read one), hence the cap, and none is created while
    a graph is being captured (its kernels have not run yet, so the tensor would hold no values outside the graph).
    """
    key = (n, m, device, dtype)
    weights = _WEIGHTS.get(key)
    if weights is not None:
        return weights
    steps = torch.arange(n + 1, device=device, dtype=dtype)
    lag = steps[1:, None] - steps[None, :]  # (N, N + 1): column 0 is r_0, column j is frame j
    weights = torch.pow(1.0 - m, lag.clamp(min=0.0)) * (lag >= 0)
    weights[:, 1:] *= m
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if len(_WEIGHTS) < _MAX_CACHED and n <= 1024 and not capturing:
        _WEIGHTS[key] = weights
    return weights


def _frame_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame, per-channel mean and biased variance over (H, W), shape ``(N, C)``, in float32 or wider.

    On the CPU the statistics pass of PyTorch's BN kernel, one frame at a time, is 20-30x faster than ``var_mean``
    over (H, W) in channels-last (measured at 64x112x112) and gives exactly the statistics of a batch-of-one
    forward. Elsewhere one ``var_mean`` kernel beats N launches.
    """
    if x.device.type == "cpu":
        return _frame_mean_var_loop(x)  # bf16/fp16: each frame accumulates in float32 inside the kernel
    if x.dtype in _REDUCED:
        x = x.float()  # stats in the accumulation dtype, not rounded back to bf16
    return _frame_mean_var_reduce(x)


def _frame_mean_var_loop(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    stats = [_batch_mean_var(frame) for frame in x.split(1)]
    return torch.stack([s[0] for s in stats]), torch.stack([s[1] for s in stats])


def _frame_mean_var_reduce(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
    return mean, var


def _batch_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over (N, H, W), in the accumulation dtype (float32 for bf16/fp16).

    ``torch.batch_norm_update_stats`` with no running buffers is the stats half of PyTorch's own training-mode BN
    kernel (one vectorised pass, any memory format); it is ~3x faster on CPU than ``var_mean`` over dims (0, 2, 3),
    which is what keeps the EMA forward close to a plain eval forward. Fallback for devices without the kernel.
    """
    running: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    if x.device.type == "cpu" and x.dtype in _REDUCED:
        # Without running buffers the CPU kernel rounds its float32-accumulated stats to the input dtype; given
        # float32 ones it returns them in float32. These are scratch (momentum 0 leaves them as they are): they spare
        # a float32 copy of the whole activation. CUDA accumulates and returns float32 by itself.
        running = (torch.zeros(x.shape[1]), torch.ones(x.shape[1]))
    try:
        return torch.batch_norm_update_stats(x, *running, 0.0)
    except (RuntimeError, NotImplementedError):
        var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
        return mean, var


def _check_momentum(m: float, name: str = "momentum") -> float:
    """The weight of the new frame: a real number, never a string (``float("0.1")`` would hide a caller's bug)."""
    return check_real(name, m, minimum=0.0, maximum=1.0)


def _check_update(mode: str) -> EMAUpdate:
    if mode not in ("frame", "batch"):
        raise ValueError(f"ema_update must be 'frame' (one update per frame) or 'batch', got {mode!r}")
    return mode


def convert_to_ema_bn(
    module: nn.Module,
    scope: EMAScope = "all",
    momentum: float = 0.0,
    update_stats: bool = True,
    ema_update: EMAUpdate = "frame",
) -> list[str]:
    """Replace BatchNorm2d layers of ``module`` in place by :class:`EMABatchNorm2d`; return the replaced names.

    ``scope="all"`` replaces every ``nn.BatchNorm2d`` (at any depth); ``scope="stem"`` replaces only the top-level
    child named ``bn1`` (the ResNet stem BN, the only layer the released H-InDex code adapted). Raises if nothing
    matched, so a typo or a BN-free network (a ViT) cannot silently disable the feature. ``ema_update``: ``"frame"``
    (one update per image of a batch, the paper) or ``"batch"`` (one per forward), see :class:`EMABatchNorm2d`.
    """
    if scope not in ("all", "stem"):
        raise ValueError(f"EMA-BN scope must be 'all' or 'stem', got {scope!r}")
    momentum, ema_update = _check_momentum(momentum), _check_update(ema_update)
    update_stats = check_flag("update_stats", update_stats)
    if scope == "stem":
        targets = [("bn1", module.get_submodule("bn1"))] if hasattr(module, "bn1") else []
    else:
        targets = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    targets = [(n, m) for n, m in targets if isinstance(m, nn.BatchNorm2d)]
    if not targets:
        raise ValueError(f"no BatchNorm2d layer matched EMA-BN scope {scope!r} in {type(module).__name__}")
    for name, bn in targets:
        if isinstance(bn, EMABatchNorm2d):
            bn.momentum_ema, bn.update_stats, bn.ema_update = momentum, update_stats, ema_update
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        # setattr on the *parent*: assigning into the root's _modules with a dotted name (the authors' bug) would
        # add a dangling module and leave the real layer untouched.
        setattr(parent, child, EMABatchNorm2d.from_batchnorm(bn, momentum, update_stats, ema_update))
    return [n for n, _ in targets]


def all_modules(module: nn.Module) -> list[nn.Module]:
    """``module.modules()`` plus the modules some of them hold outside their registered children (each once).

    :class:`~hindex_sb3.extractor.HIndexExtractor` keeps its frozen encoder out of ``modules()`` so that code walking
    every policy parameter (TRPO's gradients, target networks) never meets it; it lists it in ``hidden_modules()``,
    and code about normalisation statistics must look there too.
    """
    seen: dict[int, nn.Module] = {}
    stack = [module]
    while stack:
        for m in stack.pop().modules():
            if id(m) in seen:
                continue
            seen[id(m)] = m
            hidden = getattr(m, "hidden_modules", None)
            if callable(hidden):
                stack.extend(hidden())
    return list(seen.values())


def ema_bn_modules(module: nn.Module) -> list[EMABatchNorm2d]:
    """All :class:`EMABatchNorm2d` layers inside ``module`` (each once), hidden encoders included."""
    return [m for m in all_modules(module) if isinstance(m, EMABatchNorm2d)]


def set_ema_momentum(module: nn.Module, momentum: float) -> int:
    """Set the EMA momentum of every EMA-BN layer in ``module``; return how many layers were set."""
    if not isinstance(module, nn.Module):  # (an encoder name or a model wrapper would fail inside torch)
        raise TypeError(f"module must be a torch nn.Module, got {type(module).__name__}")
    momentum = _check_momentum(momentum)
    layers = ema_bn_modules(module)
    for bn in layers:
        bn.momentum_ema = momentum
    return len(layers)


def set_ema_update(module: nn.Module, ema_update: EMAUpdate) -> int:
    """Set ``"frame"`` / ``"batch"`` updates on every EMA-BN layer in ``module``; return how many layers were set."""
    ema_update = _check_update(ema_update)
    layers = ema_bn_modules(module)
    for bn in layers:
        bn.ema_update = ema_update
    return len(layers)


@contextmanager
def ema_bn_updates(module: nn.Module, enabled: bool = True) -> Iterator[list[EMABatchNorm2d]]:
    """Temporarily switch statistics updates of all EMA-BN layers in ``module`` on (or off); restores on exit."""
    enabled = check_flag("enabled", enabled)
    layers = ema_bn_modules(module)
    previous = [bn.update_stats for bn in layers]
    for bn in layers:
        bn.update_stats = enabled
    try:
        yield layers
    finally:
        for bn, flag in zip(layers, previous, strict=True):
            bn.update_stats = flag
