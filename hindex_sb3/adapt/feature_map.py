"""Which spatial map of an encoder's trunk Stage 2's keypoint head reads.

The keypoint head needs a ``(B, C, h, w)`` feature map, but an encoder in the registry is a trunk that returns the
pooled ``(B, D)`` vector the policy sees. For the paper's ResNet-50 the map is ``layer4``'s output, the input of the
global average pool. For any other BatchNorm trunk (a user's registered encoder, ``timm:``, ``torchvision:``) the
same idea applies, found in this order:

1. the spec's own ``feature_map(trunk, x)`` function, when the author registered one (the documented way for trunks
   the rules below misread);
2. timm's ``forward_features(x)`` when it returns a 4-D map (every timm CNN);
3. the input of the trunk's last adaptive pooling module (``nn.AdaptiveAvgPool2d`` / ``AdaptiveMaxPool2d``, timm's
   ``SelectAdaptivePool2d``): torchvision ResNets, RegNets, EfficientNets. The forward stops there, so nothing after
   the pool runs;
4. otherwise the last 4-D output of a leaf module in the forward (a trunk that pools with ``x.mean((2, 3))``).

Whatever the rule, the map is computed by the trunk's own modules on the way to its features, so gradients reach the
BatchNorm layers that Stage 2 adapts and that Stage 3 then runs with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FeatureMap", "FeatureMapError"]

FeatureMapFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]

_POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class FeatureMapError(ValueError):
    """The trunk gives no usable spatial map (none found, or not 4-D)."""


class _Tapped(Exception):
    """Carries the pooling layer's input out of the forward, so the rest of the trunk does not run."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x


def _is_pool(module: nn.Module) -> bool:
    return isinstance(module, _POOL_TYPES) or type(module).__name__ == "SelectAdaptivePool2d"


class FeatureMap(nn.Module):
    """``trunk`` wrapped to return its spatial feature map ``(B, C, h, w)`` instead of its pooled features.

    :param trunk: the encoder's trunk (its ``state_dict`` keys stay those of the trunk, under ``trunk.``).
    :param feature_map: an explicit ``(trunk, x) -> map`` function (rule 1 of the module docstring).
    :param probe_size: side of the zero image used once to find the map (rule 4) and its channel count.
    """

    def __init__(self, trunk: nn.Module, feature_map: FeatureMapFn | None = None, probe_size: int = 64) -> None:
        super().__init__()
        self.trunk = trunk
        self._fn = feature_map
        self._pool: nn.Module | None = None
        self._leaf: nn.Module | None = None
        self.rule = self._choose_rule()
        was_training = trunk.training
        trunk.eval()  # the probe must not move BatchNorm running statistics
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, probe_size, probe_size))
        trunk.train(was_training)
        self.channels = int(probe.shape[1])
        self.stride = probe_size / probe.shape[-1]

    def _choose_rule(self) -> str:
        if self._fn is not None:
            return "spec feature_map"
        if callable(getattr(self.trunk, "forward_features", None)):
            return "forward_features"
        pools = [m for m in self.trunk.modules() if _is_pool(m)]
        if pools:
            self._pool = pools[-1]
            return "input of the last adaptive pooling layer"
        self._leaf = self._last_4d_leaf()
        return "last 4-D leaf output"

    def _last_4d_leaf(self) -> nn.Module:
        """The leaf module whose 4-D output comes last in a probe forward."""
        order: list[nn.Module] = []

        def record(module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                order.append(module)

        leaves = [m for m in self.trunk.modules() if not list(m.children())]
        handles = [m.register_forward_hook(record) for m in leaves]
        was_training = self.trunk.training
        self.trunk.eval()
        try:
            with torch.no_grad():
                self.trunk(torch.zeros(1, 3, 64, 64))
        finally:
            self.trunk.train(was_training)
            for h in handles:
                h.remove()
        if not order:
            raise FeatureMapError(
                "the encoder's trunk produces no 4-D feature map (a ViT or an MLP?): Stage 2's keypoint head needs "
                "one; register the encoder with feature_map=<function (trunk, x) -> (B, C, h, w)>"
            )
        return order[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._map(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FeatureMapError(f"the feature map ({self.rule}) must be (B, C, h, w), got {shape}")
        return out

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if self._fn is not None:
            return self._fn(self.trunk, x)
        if self._pool is None and self._leaf is None:
            return self.trunk.forward_features(x)
        if self._pool is not None:
            return self._tap(self._pool.register_forward_pre_hook(_raise_input), x)
        captured: list[torch.Tensor] = []
        handle = self._leaf.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.trunk(x)
        finally:
            handle.remove()
        return captured[-1]

    def _tap(self, handle, x: torch.Tensor) -> torch.Tensor:
        try:
            self.trunk(x)
        except _Tapped as tapped:
            return tapped.x
        finally:
            handle.remove()
        raise FeatureMapError("the trunk's pooling layer was never called: register a feature_map function")


def _raise_input(_module: nn.Module, inputs: tuple) -> None:
    raise _Tapped(inputs[0])
