"""Stage-2 training: what may change, the loop, resumable checkpoints and the adapted-encoder export.

What changes, and why (``shared/reference/hindex.md`` §2): the authors freeze every ``nn.Conv2d`` of the pose network
(backbone convolutions, downsample convolutions and the 1x1 keypoint layer) and train everything else: the backbone's
BatchNorm gamma/beta (53,120 numbers, 0.23 % of the 23.5 M backbone parameters), the deconvolution block (a
``ConvTranspose2d`` is not an ``nn.Conv2d``), the appearance and pose encoders and the renderer. The model stays in
eval mode throughout, so BatchNorm normalises with its running statistics and never updates them: the only thing the
RL encoder inherits from Stage 2 is the backbone's BN affine parameters. :meth:`Adapter.export` checks exactly that
before writing the checkpoint.

``trainable="all"`` is the ablation of the paper's Fig. 6c / 7 (Stage 2 on all parameters; the reference's
``freeze_conv=0``): nothing is frozen, so every backbone parameter (23,508,032) and the 1x1 keypoint layer train as
well. The model still stays in eval mode, so BN running statistics never move in either mode, and the export is the
same ``hindex_sb3.adapted/1`` file; only the check of what may differ from the base follows the mode.

Without the authors' TTP-Penn initialisation (``penn_joint.pth``, Google-Drive only) the heads, encoders and renderer
start random. Their BatchNorm layers then hold the default statistics (mean 0, variance 1), which in eval mode makes
them plain affine maps and leaves the 9-layer renderer without any normalisation, so its output starts near zero and
learns slowly. :func:`calibrate_head_batchnorm` therefore estimates the *heads'* BN statistics once, on task frames,
before training (a data-dependent initialisation standing in for TTP-Penn's statistics); the backbone's statistics
are never touched.

Resuming is exact: pair sampling for iteration ``i`` uses ``np.random.default_rng([seed, 0, i])`` rather than a stateful
generator, and a checkpoint holds the model, Adam's state, the loss's running means and the per-iteration history.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hindex_sb3.adapt.checks import check_adapt_config
from hindex_sb3.adapt.frames import FrameDataset, FrameDatasetError, collect_frames
from hindex_sb3.adapt.loss import TERM_NAMES, PerceptualLoss
from hindex_sb3.adapt.model import GAUSSIAN_SIGMA, NUM_KEYPOINTS, KeypointModel
from hindex_sb3.encoders.weights import load_checkpoint, save_adapted_checkpoint

__all__ = [
    "PAPER_PAIR_WINDOW",
    "RUN_FORMAT",
    "TRAINABLE_SCOPES",
    "AdaptConfig",
    "AdaptError",
    "Adapter",
    "adapt",
    "backbone_bn_affine",
    "calibrate_head_batchnorm",
    "freeze_for_adaptation",
    "load_base_backbone",
    "trainable_summary",
]

RUN_FORMAT = "hindex_sb3.adapt_run/1"

#: what Stage 2 may train: "bn" = the paper's method (BN gamma/beta of the backbone), "all" = Fig. 7's ablation
TRAINABLE_SCOPES = ("bn", "all")

#: the authors' ``VIDEO_LENGH_LIMIT``: pairs are drawn among the first L frames of each episode
PAPER_PAIR_WINDOW = {
    "Door": 150,
    "Hammer": 150,
    "Pen": 100,
    "Relocate": 100,
    "Pour": 200,
    "PlaceInside": 200,
    "RelocateMug": 100,
    "RelocateMustardBottle": 100,
    "RelocatePottedMeatCan": 100,
    "RelocateTomatoSoupCan": 100,
    "RelocateSugarBox": 100,
    "RelocateLargeClamp": 100,
    "RelocateFoamBrick": 100,
}


class AdaptError(RuntimeError):
    """A problem the user can fix (no weights, wrong dataset, bad resume); the CLI prints it without a traceback."""


class AdaptConfigError(AdaptError, ValueError):
    """An :class:`AdaptConfig` setting that cannot work (see :mod:`hindex_sb3.adapt.checks`); names the setting."""


# ---------------------------------------------------------------------------------------------------------------------
# The trainable set


def backbone_bn_affine(backbone: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """The backbone's BatchNorm layers by name (53 in a ResNet-50)."""
    return {name: m for name, m in backbone.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def check_trainable(trainable: object) -> str:
    """``trainable`` must be one of :data:`TRAINABLE_SCOPES`."""
    if not isinstance(trainable, str) or trainable not in TRAINABLE_SCOPES:
        raise ValueError(f"trainable must be one of {TRAINABLE_SCOPES}, got {trainable!r}")
    return trainable


def freeze_for_adaptation(model: KeypointModel, trainable: str = "bn") -> None:
    """Set ``requires_grad`` for Stage 2.

    ``"bn"`` (the paper's method, as the reference sets it): every ``nn.Conv2d`` of ``pose_net`` frozen, the rest
    trainable. That leaves, in ``pose_net``, the backbone's BN gamma/beta and the deconvolution block
    (ConvTranspose2d + BN); outside it, the appearance encoder, the pose encoder and the renderer, all of them.
    ``"all"`` (Fig. 7's ablation, the reference's ``freeze_conv=0``): every parameter trainable.
    """
    check_trainable(trainable)
    for p in model.parameters():
        p.requires_grad_(True)
    if trainable == "all":
        return
    for m in model.pose_net.modules():
        if isinstance(m, nn.Conv2d):  # ConvTranspose2d is not a Conv2d subclass, so the deconvolutions stay trainable
            for p in m.parameters():
                p.requires_grad_(False)


def trainable_summary(model: KeypointModel) -> dict[str, Any]:
    """Parameter counts: backbone total / trainable (and the fraction), per part, and the trainable total."""

    def count(module: nn.Module, trainable: bool | None = None) -> int:
        return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)

    backbone_total = count(model.backbone)
    backbone_trainable = count(model.backbone, True)
    parts = {
        "deconv_layers": model.pose_net.deconv_layers,
        "final_layer_unsup": model.pose_net.final_layer_unsup,
        "image_encoder": model.image_encoder,
        "pose_encoder": model.pose_encoder,
        "image_renderer": model.image_renderer,
    }
    return {
        "backbone_total": backbone_total,
        "backbone_trainable": backbone_trainable,
        "backbone_trainable_fraction": backbone_trainable / backbone_total,
        "backbone_bn_layers": len(backbone_bn_affine(model.backbone)),
        "parts_trainable": {k: count(m, True) for k, m in parts.items()},
        "trainable_total": count(model, True),
        "total": count(model),
    }


def _head_batchnorms(model: KeypointModel) -> list[nn.modules.batchnorm._BatchNorm]:
    in_backbone = {id(m) for m in model.backbone.modules()}
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_backbone]


@torch.no_grad()
def calibrate_head_batchnorm(model: KeypointModel, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Set the running statistics of every BatchNorm *outside the backbone* to their average over ``batches``.

    The backbone stays in eval mode (its FrankMocap statistics are part of the representation and must not move);
    the head BNs run in train mode with ``momentum=None`` (a cumulative average) for these forwards only. Afterwards
    the whole model is back in eval mode with the original momenta. Returns the number of batches used.
    """
    bns = _head_batchnorms(model)
    saved = [(m, m.momentum) for m in bns]
    n = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            nn.Module.train(m, True)
        for source, target in batches:
            model(source, target)
            n += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
            nn.Module.train(m, False)
    if n == 0:
        raise AdaptError("no batches to calibrate the heads' BatchNorm statistics with")
    return n


# ---------------------------------------------------------------------------------------------------------------------
# Base weights


def load_base_backbone(weights: str | os.PathLike | None, *, seed: int = 0, progress: bool = True) -> tuple[dict, dict]:
    """The starting backbone ``state_dict`` and a provenance record.

    ``weights``: ``"default"`` (FrankMocap hand ResNet-50 from the cache, downloaded on first use), a path (FrankMocap
    file, the authors' or this package's adapted checkpoint), or ``"random"``/``None`` (torchvision init under
    ``torch.manual_seed(seed)``; labelled as NOT pretrained everywhere).
    """
    import warnings

    from hindex_sb3.encoders import RandomWeightsWarning, create_encoder
    from hindex_sb3.encoders.resnet import resnet50_trunk
    from hindex_sb3.encoders.weights import WeightsError

    if weights in (None, "random"):
        torch.manual_seed(seed)
        return resnet50_trunk().state_dict(), {"weights": "random (NOT pretrained)", "random_seed": seed}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            encoder = create_encoder("hindex", weights, progress=progress)
    except (WeightsError, FileNotFoundError) as err:
        raise AdaptError(
            f"{err}\n\nNo usable base encoder weights. Pass --weights PATH (FrankMocap pose_shape_best.pth or an "
            "adapted checkpoint), or --weights random to run with a randomly initialised backbone (labelled)."
        ) from err
    path = Path(encoder.weights_source)
    record = {"weights": str(path), "file": path.name, "sha256": _sha256(path)}
    if weights == "default":
        record["weights_arg"] = "default"
    return {k: v.clone() for k, v in encoder.backbone.state_dict().items()}, record


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# The loop


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
        state = base_backbone if base_backbone is not None else self.model.backbone.state_dict()
        self.base_backbone = {k: v.detach().cpu().clone() for k, v in state.items()}

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
        loss, raw = self.loss(out.reconstruction, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        self.seconds += time.perf_counter() - t0
        # One device-to-host copy per iteration (loss, fixed-normalised loss, the raw terms), on CPU and GPU alike.
        values = torch.cat([loss.detach().reshape(1), self.loss.fixed_normalised(raw).reshape(1), raw]).tolist()
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
                "batch_size": self.batch_size,
                "lr": self.lr,
                "seed": self.seed,
                "window": self.window,
                "image_size": self.model.image_size,
                "num_keypoints": self.model.num_keypoints,
                "sigma": self.model.sigma,
                "trainable": self.trainable,
            },
            "dataset": self.dataset.fingerprint(),
        }

    def save_checkpoint(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the run state atomically (a crash mid-write keeps the previous checkpoint)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        state["extra"] = dict(extra or {})
        tmp = path.with_name(path.name + ".partial")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore a run saved by :meth:`save_checkpoint`; refuses other settings or another dataset."""
        ckpt = load_checkpoint(path)
        if not (isinstance(ckpt, dict) and ckpt.get("format") == RUN_FORMAT):
            raise AdaptError(f"{path} is not a {RUN_FORMAT} checkpoint")
        mine = self.state_dict()
        theirs = {"trainable": "bn", **ckpt["settings"]}  # runs saved before --trainable existed were BN-only
        for key in ("image_size", "num_keypoints", "sigma", "batch_size", "lr", "seed", "window", "trainable"):
            if theirs.get(key) != mine["settings"][key]:
                raise AdaptError(
                    f"cannot resume {path}: it was trained with {key}={theirs.get(key)!r}, this run has "
                    f"{mine['settings'][key]!r}"
                )
        if ckpt["dataset"] != mine["dataset"]:
            raise AdaptError(
                f"cannot resume {path}: it was trained on another frame dataset ({ckpt['dataset']} vs "
                f"{mine['dataset']}); use the same frames file or start a new run"
            )
        if ckpt["base_backbone_digest"] != _digest(self.base_backbone):
            raise AdaptError(f"cannot resume {path}: it started from other base encoder weights")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.loss.running_means.copy_(ckpt["loss_running_means"])
        self.history = {k: v.tolist() for k, v in ckpt["history"].items()}
        self.iteration = int(ckpt["iteration"])
        self.seconds = float(ckpt.get("seconds", 0.0))
        return dict(ckpt.get("extra", {}))

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
        """Write the adapted encoder in the ``hindex_sb3.adapted/1`` format that ``create_encoder("hindex",
        weights=path)`` loads; ``provenance`` is completed with the iteration count and training settings."""
        record = {
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


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline behind ``hindex adapt``


@dataclass
class AdaptConfig:
    """Settings of :func:`adapt` (and ``hindex adapt``); defaults are the paper's where it has one."""

    task: str
    weights: str | None = "default"  #: base encoder: "default", a path, or "random"
    episodes: int = 50
    iterations: int = 100_000
    batch_size: int = 8
    lr: float = 1e-4
    image_size: int = 224
    frame_size: int | None = None  #: render size for our tasks; default image_size * 256/224 (256 at 224)
    trainable: str = "bn"  #: "bn": backbone BN gamma/beta (the paper); "all": every parameter (Fig. 7 ablation)
    num_keypoints: int = NUM_KEYPOINTS
    sigma: float = GAUSSIAN_SIGMA
    policy: str = "auto"  #: auto | random | scripted | expert:PATH.npz | DEMOS.npz | ALGO:PATH.zip
    deterministic: bool = False  #: mean actions for experts / SB3 policies (the authors sampled)
    camera: str | None = None
    max_steps: int | None = None  #: actions per collected episode (default: the env's horizon)
    pair_window: int | None = None  #: None: the paper's per-task limit for our tasks, whole episodes otherwise
    dataset: str | None = None  #: an existing frames .npz instead of collecting
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vgg_weights: str | None = "default"  #: "default", a path, or "random" (labelled; smoke tests only)
    calibrate_batches: int = 8  #: head-BN calibration batches (0: keep default statistics)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500
    out_dir: str = "runs/adapt"
    resume: bool = False
    figures: bool = True
    progress_bar: bool = True

    def frame_side(self) -> int:
        return self.frame_size or round(self.image_size * 256 / 224)


def resolve_env(task: str) -> tuple[str, str | None]:
    """``(env id, our task name or None)``: one of our tasks (``door``, ``HInDex/Door-v0``) or any registered id."""
    import gymnasium as gym

    from hindex_sb3.envs import UnknownTaskError, resolve_env_id

    if not isinstance(task, str) or not task.strip():
        raise AdaptConfigError(f"task must be a task name or a registered Gymnasium id, got {task!r}")
    try:
        env_id = resolve_env_id(task)
        return env_id, env_id.split("/")[1].removesuffix("-v0")
    except UnknownTaskError:
        pass
    try:
        gym.spec(task)
    except Exception as err:
        raise AdaptError(f"unknown task or environment id {task!r} ({err}); see `hindex envs`") from err
    return task, None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _prepare_dataset(cfg: AdaptConfig, env_id: str, task_name: str | None, out: Path) -> tuple[FrameDataset, Path]:
    """Load ``cfg.dataset`` / ``out/frames.npz`` (checked against the request) or collect and save new frames."""
    path = Path(cfg.dataset) if cfg.dataset else out / "frames.npz"
    if cfg.dataset or path.is_file():
        try:
            ds = FrameDataset.load(path)
        except FrameDatasetError as err:
            raise AdaptError(str(err)) from err
        if ds.meta.get("env_id") not in (None, env_id):
            raise AdaptError(
                f"frame dataset {path} was recorded in {ds.meta.get('env_id')}, not {env_id}: adapting on another "
                "task's frames would adapt to the wrong domain (pass the right --dataset, or another --out)"
            )
        if not cfg.dataset:
            want = {"n_episodes": cfg.episodes, "frame_size": cfg.frame_side() if task_name else None}
            have = {"n_episodes": ds.n_episodes, "frame_size": ds.frame_size[0] if task_name else None}
            if want != have:
                raise AdaptError(
                    f"{path} holds {have} but this run asks for {want}; delete it, or pass --dataset {path} to use it "
                    "as it is"
                )
        print(f"frames: {path} ({ds.n_episodes} episodes, {ds.n_frames} frames of {ds.frame_size})")
        return ds, path
    policy, env_kwargs, obs_key = cfg.policy, dict(cfg.env_kwargs), None
    if task_name is not None:
        env_kwargs = {"obs_mode": "all", "image_size": cfg.frame_side(), **env_kwargs}
        if cfg.camera:
            env_kwargs["camera"] = cfg.camera
        obs_key = None if policy in ("auto", "random", "scripted") or ".zip" in policy else "state"
    if policy == "auto":  # a scripted demonstrator where this package has one, random actions otherwise
        policy = "random"
        if task_name is not None:
            try:
                from hindex_sb3.demonstrators import available_demonstrators

                if env_id in available_demonstrators():
                    policy = "scripted"
            except ImportError:
                pass
    print(f"collecting {cfg.episodes} episodes of {env_id} frames with policy {policy} ...")
    try:
        ds = collect_frames(
            env_id,
            policy,
            cfg.episodes,
            seed=cfg.seed,
            max_steps=cfg.max_steps,
            deterministic=cfg.deterministic,
            policy_obs_key=obs_key,
            env_kwargs=env_kwargs,
            progress=cfg.progress_bar,
        )
    except (FrameDatasetError, FileNotFoundError, ValueError, TypeError) as err:
        raise AdaptError(f"could not collect frames: {err}") from err
    ds.save(path)
    print(f"frames: {path} ({ds.n_episodes} episodes, {ds.n_frames} frames of {ds.frame_size})")
    return ds, path


def adapt(cfg: AdaptConfig) -> dict[str, Any]:
    """Collect (or load) task frames, train the keypoint model, export the adapted encoder, draw the figures.

    Outputs in ``cfg.out_dir``: ``frames.npz``, ``checkpoints/latest.pt``, ``adapted_encoder.pth`` (the
    ``hindex_sb3.adapted/1`` checkpoint for ``create_encoder("hindex", weights=...)``), ``keypoints.png``,
    ``bn_distribution.png``, ``loss.png``, ``history.json`` and ``summary.json``.
    """
    from hindex_sb3.encoders.weights import WeightsError

    env_id, task_name = resolve_env(cfg.task)
    try:  # the whole configuration before any weights are read or frames collected
        check_adapt_config(cfg, our_task=task_name is not None)
    except (TypeError, ValueError, OSError) as err:
        raise AdaptConfigError(str(err)) from err
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoints" / "latest.pt"
    if ckpt_path.is_file() and not cfg.resume:
        raise AdaptError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    if cfg.resume and not ckpt_path.is_file():
        raise AdaptError(f"--resume: no checkpoint at {ckpt_path}")
    try:
        check_trainable(cfg.trainable)
    except ValueError as err:
        raise AdaptError(str(err)) from err
    random_base = cfg.weights in (None, "random")
    random_vgg = cfg.vgg_weights in (None, "random")
    # Weights first: a missing file should fail in a second, not after collecting 10,000 frames.
    base_state, base_record = load_base_backbone(cfg.weights, seed=cfg.seed, progress=cfg.progress_bar)
    try:
        torch.manual_seed(cfg.seed)
        loss = PerceptualLoss.from_weights(None if random_vgg else cfg.vgg_weights, progress=cfg.progress_bar)
    except (WeightsError, FileNotFoundError) as err:
        raise AdaptError(
            f"{err}\n\nThe perceptual loss needs torchvision's ImageNet VGG16. Pass --vgg-weights PATH, or "
            "--vgg-weights random for a smoke test (the loss is then not perceptual; labelled)."
        ) from err
    dataset, frames_path = _prepare_dataset(cfg, env_id, task_name, out)
    try:
        dataset.check_image_size(cfg.image_size)
    except FrameDatasetError as err:
        raise AdaptError(str(err)) from err

    torch.manual_seed(cfg.seed)
    model = KeypointModel(cfg.num_keypoints, cfg.sigma, cfg.image_size)
    model.backbone.load_state_dict(base_state)
    window = cfg.pair_window if cfg.pair_window is not None else PAPER_PAIR_WINDOW.get(task_name or "")
    device = _device(cfg.device)
    adapter = Adapter(
        model,
        loss,
        dataset,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        window=window,
        device=device,
        base_backbone=base_state,
        trainable=cfg.trainable,
    )
    counts = trainable_summary(model)
    which = f"BatchNorm gamma/beta of {counts['backbone_bn_layers']} layers" if cfg.trainable == "bn" else "all"
    print(
        f"backbone: {counts['backbone_trainable']:,} of {counts['backbone_total']:,} parameters trainable "
        f"({100 * counts['backbone_trainable_fraction']:.2f} %, {which}); heads/encoders/renderer trainable: "
        f"{counts['trainable_total'] - counts['backbone_trainable']:,}; total trainable {counts['trainable_total']:,}"
    )
    labels = []
    if random_base:
        labels.append("RANDOM BASE ENCODER (not pretrained)")
    if random_vgg:
        labels.append("RANDOM VGG16 (loss not perceptual)")
    config = asdict(cfg)
    if cfg.resume:
        adapter.load_checkpoint(ckpt_path)
        print(f"resumed {ckpt_path} at iteration {adapter.iteration}")
    elif cfg.calibrate_batches > 0:
        adapter.calibrate(cfg.calibrate_batches)
    adapter.run(
        cfg.iterations,
        checkpoint_path=ckpt_path,
        checkpoint_every=cfg.checkpoint_every,
        progress=cfg.progress_bar,
        extra={"config": _plain(config)},
    )

    provenance = {
        "task": task_name or env_id,
        "env_id": env_id,
        "base": base_record,
        "heads_init": "random (TTP-Penn penn_joint.pth unavailable)",
        "head_bn_calibration_batches": cfg.calibrate_batches,
        "vgg16": "random (NOT pretrained)"
        if random_vgg
        else ("vgg16_imagenet (torchvision IMAGENET1K_V1)" if cfg.vgg_weights == "default" else str(cfg.vgg_weights)),
        "frames": str(frames_path),
        "labels": labels,
        "package": "hindex_sb3",
    }
    encoder_path = adapter.export(out / "adapted_encoder.pth", provenance)
    history = {k: v for k, v in adapter.history.items()}
    (out / "history.json").write_text(json.dumps(history))
    figures: dict[str, str] = {}
    title = f"{task_name or env_id}: {adapter.iteration} iterations, image {cfg.image_size}"
    if labels:
        title = " / ".join(labels) + " - " + title
    if cfg.figures:
        from hindex_sb3.adapt import figures as figs

        figures["keypoints"] = str(figs.keypoint_figure(adapter, out / "keypoints.png", title=title))
        figures["bn_distribution"] = str(
            figs.bn_distribution_figure(
                adapter.base_backbone, adapter.adapted_backbone(), out / "bn_distribution.png", title=title
            )
        )
        figures["loss"] = str(figs.loss_figure(adapter.history, out / "loss.png", title=title))
    kp = adapter.keypoint_stats()
    print(
        f"keypoints: move {kp['keypoint_std_px']:.2f} heatmap px (std over 16 frames), marginal softmax peak "
        f"{kp['mean_peak_probability']:.2f}"
        + (
            "  <- nearly static keypoints: the bottleneck has not learned to track anything yet"
            if kp["keypoint_std_px"] < 0.5
            else ""
        )
    )
    n = len(adapter.history["fixed"])
    k = min(100, n // 2) if n >= 2 else 0
    summary = {
        "task": task_name or env_id,
        "env_id": env_id,
        "encoder": str(encoder_path),
        "base": base_record,
        "labels": labels,
        "iterations": adapter.iteration,
        "seconds_training": round(adapter.seconds, 1),
        "iterations_per_s": round(adapter.iteration / adapter.seconds, 4) if adapter.seconds else None,
        "trainable_scope": cfg.trainable,
        "trainable": counts,
        "bn_change": adapter.bn_change(),
        "backbone_change": adapter.backbone_change(),
        "keypoints": kp,
        "dataset": {"path": str(frames_path), **dataset.fingerprint(), "meta": dataset.meta},
        "pair_window": window,
        "device": str(device),
        "figures": figures,
    }
    if k:
        h = adapter.history
        summary[f"first_{k}"] = {m: float(np.mean(h[m][:k])) for m in ("fixed", "pixels")}
        summary[f"last_{k}"] = {m: float(np.mean(h[m][-k:])) for m in ("fixed", "pixels")}
    (out / "summary.json").write_text(json.dumps(_plain(summary), indent=2))
    return summary
