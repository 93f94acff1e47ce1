"""Pictures of a Stage-2 run, for people to look at (PNG, matplotlib ``Agg``).

* :func:`keypoint_figure`: source frames, target frames with the 30 soft-argmax keypoints drawn on them, and the
  reconstructions (the paper's Fig. 10 shows such keypoints on task frames). A keypoint that sits on the hand or
  the object and follows it between frames is what the bottleneck is meant to learn.
* :func:`bn_distribution_figure`: per backbone BatchNorm layer, the distribution of the scale (gamma) and shift (beta)
  before and after adaptation, and the mean absolute change (the paper's Fig. 11). Stage 2 changes nothing else in
  the encoder, so this is the whole difference between the base and the adapted representation.
* :func:`loss_figure`: the loss over iterations (raw per-term and fixed-normalised, with a moving average).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hindex_sb3._io import atomic_write_bytes

if TYPE_CHECKING:
    from hindex_sb3.adapt.trainer import Adapter

__all__ = ["bn_distribution_figure", "keypoint_figure", "loss_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def keypoint_figure(adapter: Adapter, path: str | os.PathLike, *, n: int = 6, title: str = "") -> Path:
    """Rows: source, target + keypoints, reconstruction, for ``n`` pairs (a fixed draw, so runs are comparable).

    Keypoints are drawn at the centre of their heatmap cell in input pixels, ``(k + 0.5) * stride - 0.5``, with one
    colour per keypoint index throughout the figure.
    """
    plt = _plt()
    model = adapter.model
    source, target = adapter.batch(0, n, stream=2)
    out = model(source, target)
    stride = model.image_size / out.heatmaps.shape[-1]
    pts = ((out.keypoints + 0.5) * stride - 0.5).cpu().numpy()
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, model.num_keypoints, endpoint=False))
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 7.0), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_image(source[i]))
        axes[1, i].imshow(_image(target[i]))
        axes[1, i].scatter(pts[i, :, 1], pts[i, :, 0], c=colours, s=22, edgecolors="black", linewidths=0.5)
        axes[2, i].imshow(_image(out.reconstruction[i]))
        for r in range(3):
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
    for r, label in enumerate(("source (appearance)", f"target + {model.num_keypoints} keypoints", "reconstruction")):
        axes[r, 0].set_ylabel(label, fontsize=9)
    return _save(plt, fig, path, title or "Stage-2 keypoints")


def _save(plt, fig, path: str | os.PathLike, title: str) -> Path:
    """Title, tight layout, write the PNG and free the figure: every figure ends this way.

    The PNG is rendered into memory and written atomically (:func:`hindex_sb3._io.atomic_write_bytes`), so a crash or
    Ctrl-C mid-write leaves the previous figure, never half a PNG, and a file linked elsewhere is replaced, not edited.
    """
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _bn_layers(state: Mapping[str, torch.Tensor]) -> list[str]:
    """BN layer names of a ResNet state dict, in network order (those with running statistics)."""
    return [k.removesuffix(".running_mean") for k in state if k.endswith(".running_mean")]


def bn_distribution_figure(
    base: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Box plots of gamma and beta per BN layer, original (grey) beside adapted (colour), and mean |change|."""
    plt = _plt()
    layers = _bn_layers(base)
    x = np.arange(len(layers))
    fig, axes = plt.subplots(3, 1, figsize=(max(12, 0.3 * len(layers)), 10), sharex=True)
    for ax, param, colour in ((axes[0], "weight", "tab:blue"), (axes[1], "bias", "tab:orange")):
        for offset, state, c, label in ((-0.18, base, "0.6", "original"), (0.18, adapted, colour, "adapted")):
            data = [state[f"{name}.{param}"].float().numpy() for name in layers]
            bp = ax.boxplot(
                data, positions=x + offset, widths=0.32, showfliers=False, patch_artist=True, manage_ticks=False
            )
            for box in bp["boxes"]:
                box.set_facecolor(c)
                box.set_alpha(0.8)
            ax.plot([], [], color=c, linewidth=6, label=label)
        ax.set_ylabel("scale γ" if param == "weight" else "shift β")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for param, c, label in (("weight", "tab:blue", "mean |Δγ|"), ("bias", "tab:orange", "mean |Δβ|")):
        change = [float((adapted[f"{n}.{param}"] - base[f"{n}.{param}"]).abs().mean()) for n in layers]
        axes[2].plot(x, change, "o-", color=c, markersize=3, label=label)
    axes[2].set_ylabel("mean |adapted - original|")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[2].grid(alpha=0.3)
    axes[2].set_xticks(x)
    axes[2].set_xticklabels(layers, rotation=90, fontsize=6)
    return _save(plt, fig, path, title or "Backbone BatchNorm affine parameters, original vs adapted")


def _smooth(values: np.ndarray, k: int) -> np.ndarray:
    if len(values) < k or k < 2:
        return values
    return np.convolve(values, np.ones(k) / k, mode="valid")


def loss_figure(history: Mapping[str, list[float]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Left: the fixed-normalised loss (sum of terms / initial means); right: the raw terms (both log scale)."""
    plt = _plt()
    fixed = np.asarray(history["fixed"], dtype=np.float64)
    k = max(1, min(100, len(fixed) // 10))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    its = np.arange(1, len(fixed) + 1)
    axes[0].plot(its, fixed, color="0.75", linewidth=0.7, label="per iteration")
    if k > 1:
        axes[0].plot(its[k - 1 :], _smooth(fixed, k), color="tab:red", label=f"moving average ({k})")
    axes[0].set_yscale("log")  # Adam's first steps make a short spike that would flatten a linear axis
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("Σ raw term / initial running mean")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3, which="both")
    for name in ("pixels", "relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"):
        v = np.asarray(history[name], dtype=np.float64)
        axes[1].plot(its[k - 1 :] if k > 1 else its, _smooth(v, k), label=name)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel(f"raw MSE per term (moving average {k})" if k > 1 else "raw MSE per term")
    axes[1].legend(fontsize=7, ncol=2)
    return _save(plt, fig, path, title or "Stage-2 loss")
