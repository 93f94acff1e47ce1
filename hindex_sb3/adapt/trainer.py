"""Stage-2 training: the loop, resumable checkpoints and the adapted-encoder export.

What may train is decided in :mod:`hindex_sb3.adapt.params`; the model stays in eval mode throughout, so the only
thing the RL encoder inherits from Stage 2 is the backbone's BN affine parameters (``trainable="bn"``, the paper) or
every backbone parameter (``trainable="all"``, Fig. 7's ablation); BN running statistics never move in either mode,
and the export is the same ``hindex_sb3.adapted/1`` file. :meth:`Adapter.export` checks exactly that before writing
the checkpoint.

Resuming is exact: pair sampling for iteration ``i`` uses ``np.random.default_rng([seed, 0, i])`` rather than a stateful
generator, and a checkpoint holds the model, Adam's state, the loss's running means and the per-iteration history.

The names that used to live here (the trainable set, base weights, :class:`AdaptConfig`, :func:`adapt`) are still
importable from this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hindex_sb3.adapt.base import load_base_backbone
from hindex_sb3.adapt.config import PAPER_PAIR_WINDOW, AdaptConfig
from hindex_sb3.adapt.errors import AdaptConfigError, AdaptError, NonFiniteLossError
from hindex_sb3.adapt.frames import FrameDataset
from hindex_sb3.adapt.loss import TERM_NAMES, PerceptualLoss
from hindex_sb3.adapt.model import KeypointModel
from hindex_sb3.adapt.params import (
    TRAINABLE_SCOPES,
    backbone_bn_affine,
    calibrate_head_batchnorm,
    check_trainable,
    freeze_for_adaptation,
    trainable_summary,
)
from hindex_sb3.encoders.weights import CheckpointError, load_checkpoint, save_adapted_checkpoint

__all__ = [
    "PAPER_PAIR_WINDOW",
    "RUN_FORMAT",
    "TRAINABLE_SCOPES",
    "AdaptConfig",
    "AdaptConfigError",
    "AdaptError",
    "Adapter",
    "adapt",  # noqa: F822 (module __getattr__ below)
    "backbone_bn_affine",
    "calibrate_head_batchnorm",
    "check_trainable",
    "freeze_for_adaptation",
    "load_base_backbone",
    "trainable_summary",
]

RUN_FORMAT = "hindex_sb3.adapt_run/1"


class Adapter:
    """Stage-2 optimisation of a :class:`KeypointModel` on a :class:`FrameDataset` (library API behind ``adapt``).

    >>> adapter = Adapter(model, loss, dataset, batch_size=8, lr=1e-4)
    >>> adapter.calibrate()                       # head BN statistics (random heads); skip when resuming
    >>> adapter.run(1000, checkpoint_path="ckpt.pt", checkpoint_every=500)
    >>> adapter.export("adapted.pth", {"task": "door"})

    :param window: draw pairs among the first ``window`` frames of each episode (``None``: all).
    :param trainable: ``"bn"`` (backbone BN gamma/beta, the paper) or ``"all"`` (every parameter, Fig. 7 ablation).
    """

    def __init__(
        self,
        model: KeypointModel,
        loss: PerceptualLoss,
        dataset: FrameDataset,
        *,
        batch_size: int = 8,
        lr: float = 1e-4,
        seed: int = 0,
        window: int | None = None,
        device: str | torch.device = "cpu",
        base_backbone: dict[str, torch.Tensor] | None = None,
        trainable: str = "bn",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dataset.check_image_size(model.image_size)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss = loss.to(self.device)
        self.dataset = dataset
        self.batch_size, self.lr, self.seed, self.window = int(batch_size), float(lr), int(seed), window
        self.trainable = check_trainable(trainable)
        freeze_for_adaptation(self.model, self.trainable)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr)
        self.iteration = 0
        self.history: dict[str, list[float]] = {"loss": [], "fixed": [], **{t: [] for t in TERM_NAMES}}
        self.seconds = 0.0
        self.saved_iteration: int | None = None  #: the iteration the checkpoint on disk holds (None: none written)
        state = base_backbone if base_backbone is not None else self.model.backbone.state_dict()
        self.base_backbone = {k: v.detach().cpu().clone() for k, v in state.items()}
        # VGG16 is frozen: one digest identifies the loss's weights (random or a file), so resume can refuse others
        self.loss_digest = _digest(self.loss.slices.state_dict())

    # -- data ----------------------------------------------------------------------------------------------------------
    def batch(
        self, iteration: int, batch_size: int | None = None, stream: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed ``(source, target)`` for ``iteration``; the same pairs whenever it is asked for (resume).

        ``stream`` separates independent draws: 0 training, 1 head-BN calibration, 2 figures.
        """
        rng = np.random.default_rng([self.seed, stream, iteration])
        src, tgt = self.dataset.sample_pairs(batch_size or self.batch_size, rng, self.window)
        frames = self.dataset.frames
        s = torch.from_numpy(frames[src]).to(self.device)
        t = torch.from_numpy(frames[tgt]).to(self.device)
        return self.model.prepare(s), self.model.prepare(t)

    def calibrate(self, n_batches: int = 8) -> int:
        """Head BN statistics from ``n_batches`` batches (drawn from a stream separate from training's)."""
        return calibrate_head_batchnorm(self.model, (self.batch(i, stream=1) for i in range(n_batches)))

    # -- optimisation --------------------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One Adam step on one batch; returns the losses of this iteration."""
        t0 = time.perf_counter()
        source, target = self.batch(self.iteration)
        out = self.model(source, target)
        running = self.loss.running_means.clone()
        loss, raw = self.loss(out.reconstruction, target)
        # One device-to-host copy per iteration (loss, fixed-normalised loss, the raw terms), on CPU and GPU alike; it
        # comes before the backward pass so that a NaN stops the run before Adam spreads it into every parameter.
        values = torch.cat([loss.detach().reshape(1), self.loss.fixed_normalised(raw).reshape(1), raw]).tolist()
        if not all(math.isfinite(v) for v in values):
            self.loss.running_means.copy_(running)  # the adapter stays as it was after the last good iteration
            raise NonFiniteLossError(
                f"the loss became {values[0]} at iteration {self.iteration + 1} (lr {self.lr:g}): training diverged; "
                "lower the learning rate (--lr)",
                self.iteration + 1,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        self.seconds += time.perf_counter() - t0
        row = {"loss": values[0], "fixed": values[1]}
        row.update(zip(TERM_NAMES, values[2:], strict=True))
        for k, v in row.items():
            self.history[k].append(v)
        return row

    def run(
        self,
        iterations: int,
        *,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int = 500,
        progress: bool = True,
        extra: dict[str, Any] | None = None,
        callback: Callable[[Adapter, dict[str, float]], None] | None = None,
    ) -> None:
        """Train until ``self.iteration == iterations`` (a resumed adapter continues where it stopped).

        Saves a checkpoint every ``checkpoint_every`` iterations and at the end when ``checkpoint_path`` is given.
        """
        from tqdm.auto import tqdm

        bar = tqdm(
            total=iterations, initial=self.iteration, disable=not progress, desc="adapt", unit="it", dynamic_ncols=True
        )
        try:
            while self.iteration < iterations:
                row = self.step()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", fixed=f"{row['fixed']:.3f}", mse=f"{row['pixels']:.4f}")
                if callback is not None:
                    callback(self, row)
                if checkpoint_path and checkpoint_every and self.iteration % checkpoint_every == 0:
                    self.save_checkpoint(checkpoint_path, extra)
        finally:
            bar.close()
        if checkpoint_path:
            self.save_checkpoint(checkpoint_path, extra)

    # -- checkpoints ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "iteration": self.iteration,
            "seconds": self.seconds,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "loss_running_means": self.loss.running_means.detach().cpu().clone(),
            "history": {k: torch.tensor(v, dtype=torch.float32) for k, v in self.history.items()},
            "base_backbone_digest": _digest(self.base_backbone),
            "settings": {
                "encoder": self.model.encoder_name,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "seed": self.seed,
                "window": self.window,
                "image_size": self.model.image_size,
                "num_keypoints": self.model.num_keypoints,
                "sigma": self.model.sigma,
                "trainable": self.trainable,
                "loss_weights": self.loss_digest,
            },
            "dataset": self.dataset.fingerprint(),
        }

    def save_checkpoint(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the run state atomically (a crash mid-write keeps the previous checkpoint)."""
        path = Path(path)
        bad = [n for n, p in self.model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
        if bad:  # never replace a good checkpoint with a diverged one
            raise NonFiniteLossError(
                f"parameters became NaN or infinite by iteration {self.iteration} (lr {self.lr:g}; {bad[:3]}): "
                "training diverged; lower the learning rate (--lr)",
                self.iteration,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        state["extra"] = dict(extra or {})
        tmp = path.with_name(path.name + ".partial")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.saved_iteration = self.iteration
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore a run saved by :meth:`save_checkpoint`; refuses other settings, another dataset, other base or VGG16
        weights, and damaged or incomplete files (all as :class:`AdaptError`, naming the file and what is wrong)."""
        ckpt = self._read_run_checkpoint(path)
        self._check_same_run(path, ckpt)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.loss.running_means.copy_(ckpt["loss_running_means"])
            history = {k: v.tolist() for k, v in ckpt["history"].items()}
            iteration, seconds = int(ckpt["iteration"]), float(ckpt.get("seconds", 0.0))
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise AdaptError(f"cannot resume {path}: the checkpoint does not fit this model ({err})") from err
        self.history, self.iteration, self.seconds = history, iteration, seconds
        self.saved_iteration = iteration
        return dict(ckpt.get("extra", {}))

    @staticmethod
    def _read_run_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
        """The checkpoint's dict, refused unless it is a whole checkpoint of this format."""
        try:
            ckpt = load_checkpoint(path)
        except (CheckpointError, OSError) as err:
            raise AdaptError(f"cannot resume {path}: it is damaged or unreadable ({err})") from err
        if not (isinstance(ckpt, dict) and ckpt.get("format") == RUN_FORMAT):
            raise AdaptError(f"cannot resume {path}: it is not a {RUN_FORMAT} checkpoint")
        required = ("settings", "model", "optimizer", "loss_running_means", "history", "iteration", "dataset")
        missing = [k for k in (*required, "base_backbone_digest") if k not in ckpt]
        if missing or not isinstance(ckpt["settings"], dict):
            raise AdaptError(f"cannot resume {path}: the checkpoint is incomplete (missing {missing or ['settings']})")
        return ckpt

    def _check_same_run(self, path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
        """Refuse a checkpoint of other settings, frames, base weights or VGG16 weights, naming each difference."""
        mine = self.state_dict()
        # runs saved before --trainable / --encoder existed were BN-only, on the hand encoder; runs saved before the
        # VGG16 digest existed are checked by the pipeline against their recorded --vgg-weights instead
        theirs = {"trainable": "bn", "encoder": "hindex", "loss_weights": self.loss_digest, **ckpt["settings"]}
        changed = [k for k in mine["settings"] if theirs.get(k) != mine["settings"][k]]
        if changed:
            raise AdaptError(
                f"cannot resume {path}: it was trained with other settings: "
                + "; ".join(
                    f"{_setting(k)}: other VGG16 weights than this run's"
                    if k == "loss_weights"
                    else f"{_setting(k)}={theirs.get(k)!r}, this run has {mine['settings'][k]!r}"
                    for k in changed
                )
                + " (resume with the same settings, or start a new run in another --out)"
            )
        if ckpt["dataset"] != mine["dataset"]:
            raise AdaptError(
                f"cannot resume {path}: it was trained on another frame dataset ({ckpt['dataset']} vs "
                f"{mine['dataset']}); use the same frames file or start a new run"
            )
        if ckpt["base_backbone_digest"] != _digest(self.base_backbone):
            raise AdaptError(f"cannot resume {path}: it started from other base encoder weights")

    @torch.no_grad()
    def keypoint_stats(self, n: int = 16) -> dict[str, float]:
        """Is the bottleneck alive? Over ``n`` fixed target frames: how far keypoints move between frames (std of
        their positions, heatmap pixels, averaged over keypoints) and how peaked the marginal softmaxes are (1.0
        = saturated: those keypoints get no gradient). Keypoints that never move carry no information about the
        frame; early in training, or with random weights, that is what to expect."""
        _, target = self.batch(0, n, stream=2)
        heatmaps, keypoints = self.model.keypoints(target)
        peak = torch.cat(
            [torch.softmax(heatmaps.sum(d), -1).amax(-1).flatten() for d in (2, 3)]
        )  # marginals over x and y
        return {
            "keypoint_std_px": float(keypoints.std(0).norm(dim=-1).mean()),
            "mean_peak_probability": float(peak.mean()),
            "heatmap_size": int(heatmaps.shape[-1]),
        }

    # -- export --------------------------------------------------------------------------------------------------------
    def adapted_backbone(self) -> dict[str, torch.Tensor]:
        """The backbone ``state_dict`` (torchvision ResNet-50 keys, no ``fc``), checked to differ from the base
        only where the mode allows: BatchNorm weight/bias (``"bn"``) or any parameter (``"all"``); buffers (BN
        running statistics) never."""
        adapted = {k: v.detach().cpu().clone() for k, v in self.model.backbone.state_dict().items()}
        if self.trainable == "all":
            allowed = {k for k, _ in self.model.backbone.named_parameters()}
            what = "parameters"
        else:
            allowed = {f"{n}.{p}" for n in backbone_bn_affine(self.model.backbone) for p in ("weight", "bias")}
            what = "BatchNorm gamma/beta"
        if adapted.keys() != self.base_backbone.keys():
            raise AdaptError("the backbone's keys changed during adaptation")
        moved = [k for k in adapted if k not in allowed and not torch.equal(adapted[k], self.base_backbone[k])]
        if moved:
            raise AdaptError(f"tensors outside the backbone's {what} changed during adaptation: {moved[:8]}")
        return adapted

    def backbone_change(self) -> dict[str, int]:
        """How many backbone parameter tensors (and numbers) differ from the base, out of how many."""
        adapted = self.adapted_backbone()
        names = [k for k, _ in self.model.backbone.named_parameters()]
        moved = [k for k in names if not torch.equal(adapted[k], self.base_backbone[k])]
        return {
            "tensors_changed": len(moved),
            "tensors_total": len(names),
            "numbers_changed": int(sum((adapted[k] != self.base_backbone[k]).sum() for k in moved)),
            "numbers_total": int(sum(adapted[k].numel() for k in names)),
        }

    def bn_change(self) -> dict[str, float]:
        """How far BN gamma/beta moved from the base: max and mean absolute change, and how many numbers moved."""
        adapted = self.adapted_backbone()
        affine = {f"{n}.{p}" for n in backbone_bn_affine(self.model.backbone) for p in ("weight", "bias")}
        keys = [k for k in adapted if k in affine and not torch.equal(adapted[k], self.base_backbone[k])]
        if not keys:
            return {"changed": 0, "max_abs": 0.0, "mean_abs": 0.0}
        diffs = torch.cat([(adapted[k] - self.base_backbone[k]).abs().flatten() for k in keys])
        return {"changed": int((diffs > 0).sum()), "max_abs": float(diffs.max()), "mean_abs": float(diffs.mean())}

    def export(self, path: str | os.PathLike, provenance: dict[str, Any]) -> Path:
        """Write the adapted encoder in the ``hindex_sb3.adapted/1`` format that ``create_encoder(<the model's
        encoder>, weights=path)`` loads; ``provenance`` is completed with the iteration count and training settings."""
        record = {
            "encoder": self.model.encoder_name,
            "stage": "H-InDex stage 2 (self-supervised keypoint adaptation, "
            + ("BN affine only)" if self.trainable == "bn" else "all parameters: Fig. 7 ablation)"),
            "trainable": self.trainable,
            "iterations": self.iteration,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": "Adam",
            "image_size": self.model.image_size,
            "num_keypoints": self.model.num_keypoints,
            "sigma": self.model.sigma,
            "seed": self.seed,
            "pair_window": self.window,
            "dataset": self.dataset.fingerprint() | {"meta": self.dataset.meta},
            "bn_change": self.bn_change(),
            "backbone_change": self.backbone_change(),
            **provenance,
        }
        return save_adapted_checkpoint(path, self.adapted_backbone(), _plain(record))


def _setting(key: str) -> str:
    """A checkpoint setting as both spellings a user may have typed: ``vgg_weights (--vgg-weights)``."""
    name = {"loss_weights": "vgg_weights", "window": "pair_window"}.get(key, key)
    return f"{name} (--{name.replace('_', '-')})"


def _digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and bytes of a state dict: identifies the base weights without storing them again."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    """JSON round trip: provenance must be plain values (it is loaded with ``weights_only``)."""
    return json.loads(json.dumps(obj, default=str))


def __getattr__(name: str) -> Any:
    """``adapt`` and its helpers moved to :mod:`hindex_sb3.adapt.pipeline`, which imports this module; resolved lazily
    so that old ``from hindex_sb3.adapt.trainer import adapt`` keeps working without an import cycle."""
    if name in ("adapt", "resolve_env", "_prepare_dataset", "_device"):
        from hindex_sb3.adapt import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
