"""CUDA-graph replay of a frozen encoder's forward: one launch instead of hundreds at RL batch sizes.

At the batch sizes of RL rollouts (1-32 images) a ResNet-50 forward on a modern GPU is bound by kernel launches, not
arithmetic: on an H100 it takes 5-7 ms at batch 1 and at batch 16 alike, and EMA-BN's four extra small kernels per
BatchNorm layer nearly double it. Capturing the whole forward once per input shape and replaying it removes the
launch cost for both paths.

Replays are exact: the same kernels run on the same buffers, EMA-BN's in-place statistics updates included (one
update per image, or per replay with ``ema_update="batch"``, as in an eager forward). What a graph bakes in is part of
its cache key (input shape, dtype, memory layout, device, autocast state, EMA momentum, update mode and whether
statistics update), so changing any of them captures a new graph rather than replaying a stale one. Module changes
that replace tensors (``.to()``, channels-last, converting BN layers, loading a state dict) must call
:meth:`GraphCache.clear`; :class:`~hindex_sb3.encoders.base.Encoder` does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import nn

__all__ = ["GraphCache"]


class GraphCache:
    """Least-recently-used cache of captured CUDA graphs for ``fn(x) -> tensor`` over one module's state.

    :param module: whose buffers the warm-up runs may change (EMA-BN statistics); they are restored after capture, so
        capturing is invisible to the module's state.
    :param max_graphs: graphs kept alive (each holds a private memory pool with the activations of its batch size).
    """

    def __init__(self, module: nn.Module, max_graphs: int = 4) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.module = module
        self.max_graphs = int(max_graphs)
        self._graphs: OrderedDict[Hashable, tuple[torch.Tensor, torch.cuda.CUDAGraph, torch.Tensor]] = OrderedDict()
        #: graphs captured and replays run since this cache was made (diagnostics: did a run really replay?)
        self.captures = 0
        self.replays = 0

    def __getstate__(self) -> dict:
        """Graphs hold device pointers of this process: copies and pickles start with an empty cache."""
        return {"module": self.module, "max_graphs": self.max_graphs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["module"], state["max_graphs"])

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def run(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, key: Hashable = ()) -> torch.Tensor:
        """``fn(x)`` by graph replay (capturing on first use of this key); returns a fresh tensor."""
        if not x.is_cuda:
            raise ValueError("CUDA graphs need CUDA input")
        full_key = (
            tuple(x.shape),
            x.stride(),
            x.dtype,
            x.device,
            torch.is_autocast_enabled("cuda"),
            torch.get_autocast_dtype("cuda"),
            key,
        )
        entry = self._graphs.get(full_key)
        if entry is None:
            entry = self._capture(fn, x)
            self._graphs[full_key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(full_key)
        static_in, graph, static_out = entry
        static_in.copy_(x)
        graph.replay()
        self.replays += 1
        return static_out.clone()

    def _capture(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
        saved = {name: b.detach().clone() for name, b in self.module.named_buffers()}
        static_in = x.detach().clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):  # warm-up on a side stream: cuDNN algorithm choice, allocator, lazy init
                fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # autocast's weight-cast cache would hand the graph tensors that die after capture
        dtype, enabled = torch.get_autocast_dtype("cuda"), torch.is_autocast_enabled("cuda")
        autocast = torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)
        with torch.no_grad(), autocast, torch.cuda.graph(graph):
            static_out = fn(static_in)
        self.captures += 1
        with torch.no_grad():  # undo the warm-up's EMA updates: capture must not change the module's state
            for name, b in self.module.named_buffers():
                # only where the warm-up changed them: a copy bumps the buffer's version counter, which callers
                # read as "the statistics moved" (DAPG re-encodes its demonstrations on that signal)
                if not torch.equal(b, saved[name]):
                    b.copy_(saved[name])
        return static_in, graph, static_out
