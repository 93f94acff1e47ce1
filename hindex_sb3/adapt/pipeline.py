"""The pipeline behind ``hindex adapt``: check the settings, load the weights, get the frames, train, export, report.

Each step is a function of its own so that :func:`adapt` reads as the list of them. Progress lines go to this
module's logger (``hindex_sb3.adapt.pipeline``); the CLI shows them, library callers see them only if they configure
logging.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hindex_sb3._io import write_json
from hindex_sb3.adapt.base import load_base_backbone
from hindex_sb3.adapt.checks import check_adapt_config
from hindex_sb3.adapt.config import PAPER_PAIR_WINDOW, AdaptConfig
from hindex_sb3.adapt.errors import AdaptConfigError, AdaptError, NonFiniteLossError
from hindex_sb3.adapt.frames import FrameDataset, FrameDatasetError, collect_frames
from hindex_sb3.adapt.loss import PerceptualLoss
from hindex_sb3.adapt.model import KeypointModel
from hindex_sb3.adapt.params import check_trainable, trainable_summary
from hindex_sb3.adapt.trainer import Adapter, _plain

__all__ = ["adapt", "resolve_env"]

logger = logging.getLogger(__name__)


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


#: what ``hindex adapt`` may find in a fresh ``--out``: the frames of a run killed before its first checkpoint (reused
#: when their settings match) and temporary files a kill left behind; anything else is someone's output
_RESTARTABLE = ("frames.npz", "checkpoints")
#: everything a run writes in ``--out``: what ``--overwrite`` deletes, and nothing else
_RUN_OUTPUTS = (
    *_RESTARTABLE,
    "adapted_encoder.pth",
    "history.json",
    "summary.json",
    "keypoints.png",
    "bn_distribution.png",
    "loss.png",
)


def _is_temporary(name: str) -> bool:
    return name.endswith((".partial", ".partial.npz"))


def _foreign_outputs(out: Path, ours: tuple[str, ...]) -> list[str]:
    """Entries of ``out`` other than ``ours`` that a start would overwrite or mix with (stale temporary files aside).

    ``checkpoints/latest.pt`` counts as ours: the caller has already decided whether it may be resumed or replaced.
    """
    if not out.is_dir():
        return []
    found = []
    for entry in sorted(out.iterdir()):
        if _is_temporary(entry.name):
            continue
        if entry.name == "checkpoints" and entry.is_dir():
            found += [
                f"checkpoints/{e.name}"
                for e in sorted(entry.iterdir())
                if not (_is_temporary(e.name) or e.name == "latest.pt")
            ]
        elif entry.name not in ours:
            found.append(entry.name)
    return found


def _clear_previous_run(out: Path) -> None:
    """``--overwrite``: delete what an earlier run wrote, once this one has loaded what it needs."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.name in _RUN_OUTPUTS or _is_temporary(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _check_run(cfg: AdaptConfig) -> tuple[str, str | None, Path, Path]:
    """The whole configuration and the run folder, before any weights are read or frames collected.

    Creates nothing: a refused start (here or while loading weights) must leave no empty ``--out`` behind; the
    folder appears with the first file written into it. Returns ``(env id, our task name or None, run folder,
    checkpoint path)``.
    """
    env_id, task_name = resolve_env(cfg.task)
    try:
        check_adapt_config(cfg, our_task=task_name is not None)
    except (TypeError, ValueError, OSError) as err:
        raise AdaptConfigError(str(err)) from err
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoints" / "latest.pt"
    if cfg.resume and not ckpt_path.is_file():
        hint = ""
        if (out / "frames.npz").is_file():
            hint = (
                f" (the run stopped before its first checkpoint; {out / 'frames.npz'} is kept: run the same command "
                "without --resume to train on those frames without collecting them again)"
            )
        raise AdaptError(f"--resume: no checkpoint at {ckpt_path}{hint}")
    if not cfg.resume:
        if ckpt_path.is_file() and not cfg.overwrite:
            raise AdaptError(
                f"{ckpt_path} exists: pass --resume to continue that run, --overwrite to replace it, "
                "or choose another --out"
            )
        foreign = _foreign_outputs(out, _RUN_OUTPUTS if cfg.overwrite else _RESTARTABLE)
        if foreign:
            shown = ", ".join(foreign[:6]) + (", ..." if len(foreign) > 6 else "")
            what = "an adapt run's" if cfg.overwrite else "an unfinished adapt run"
            raise AdaptError(
                f"{out} already holds files that are not {what} ({shown}); hindex adapt would "
                "overwrite them: choose another --out (or empty this one)"
            )
    try:
        check_trainable(cfg.trainable)
    except ValueError as err:
        raise AdaptError(str(err)) from err
    return env_id, task_name, out, ckpt_path


def _load_weights(cfg: AdaptConfig) -> tuple[dict, dict, PerceptualLoss]:
    """Base backbone, its provenance record and the perceptual loss.

    Weights come first: a missing file should fail in a second, not after collecting 10,000 frames.
    """
    from hindex_sb3.encoders.weights import WeightsError

    base_state, base_record = load_base_backbone(
        cfg.weights, encoder=cfg.encoder, seed=cfg.seed, progress=cfg.progress_bar
    )
    try:
        torch.manual_seed(cfg.seed)
        loss = PerceptualLoss.from_weights(None if _random_vgg(cfg) else cfg.vgg_weights, progress=cfg.progress_bar)
    except (WeightsError, FileNotFoundError) as err:
        raise AdaptError(
            f"{err}\n\nThe perceptual loss needs torchvision's ImageNet VGG16. Pass --vgg-weights PATH, or "
            "--vgg-weights random for a smoke test (the loss is then not perceptual; labelled)."
        ) from err
    return base_state, base_record, loss


def _random_vgg(cfg: AdaptConfig) -> bool:
    return cfg.vgg_weights in (None, "random")


def _log_frames(ds: FrameDataset, path: Path) -> None:
    logger.info(f"frames: {path} ({ds.n_episodes} episodes, {ds.n_frames} frames of {ds.frame_size})")


def _load_dataset(cfg: AdaptConfig, env_id: str, task_name: str | None, path: Path) -> FrameDataset:
    """``cfg.dataset`` or an earlier run's frames, refused when they belong to another task or another request."""
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
        differ = _collection_differences(cfg, env_id, task_name, ds)
        if differ:
            raise AdaptError(
                f"{path} was collected with other frame settings than this run asks for ({'; '.join(differ)}): "
                f"pass the settings it was collected with, delete {path} to collect new frames (before the first "
                f"checkpoint), choose another --out, or pass --dataset {path} to use it as it is"
            )
    return ds


def _collection_request(
    cfg: AdaptConfig, env_id: str, task_name: str | None
) -> tuple[dict[str, Any], str | None, str, dict[str, Any]]:
    """``(env kwargs, policy observation key, policy, what the frames' meta records of this request)``.

    The record is compared with an existing ``OUT/frames.npz`` (:func:`_collection_differences`): frames are reused
    only when every collection setting they recorded matches, never silently in place of the ones asked for.
    """
    env_kwargs, obs_key = dict(cfg.env_kwargs), None
    if task_name is not None:
        env_kwargs = {"obs_mode": "all", "image_size": cfg.frame_side(), **env_kwargs}
        if cfg.camera:
            env_kwargs["camera"] = cfg.camera
        obs_key = None if cfg.policy in ("auto", "random", "scripted") or ".zip" in cfg.policy else "state"
    policy = _collection_policy(cfg, env_id, task_name)
    record = {
        "n_episodes": cfg.episodes,
        "seed": cfg.seed,
        "max_steps": cfg.max_steps,
        # as collect_frames records them (JSON scalars only)
        "env_kwargs": {k: v for k, v in env_kwargs.items() if isinstance(v, str | int | float | bool)},
        "policy_request": policy,
        "deterministic": cfg.deterministic,
    }
    return env_kwargs, obs_key, policy, record


#: the flag that sets each recorded collection setting, for the refusal
_COLLECTION_FLAGS = {
    "n_episodes": "--episodes",
    "seed": "--seed",
    "max_steps": "--max-steps",
    "env_kwargs": "--env-kwargs/--camera/--frame-size",
    "policy_request": "--policy",
    "deterministic": "--deterministic",
}


def _collection_differences(cfg: AdaptConfig, env_id: str, task_name: str | None, ds: FrameDataset) -> list[str]:
    """The collection settings ``ds`` recorded that differ from this run's, as ``--flag: recorded X, asked Y``.

    Frames written before ``policy_request``/``deterministic`` were recorded are compared on what they hold (their
    policy label for ``random``/``scripted``).
    """
    _, _, policy, want = _collection_request(cfg, env_id, task_name)
    have = {**ds.meta, "n_episodes": ds.n_episodes}
    if "policy_request" not in have and policy in ("random", "scripted") and isinstance(have.get("policy"), str):
        have["policy_request"] = have["policy"].split(":")[0]
    differ = [
        f"{_COLLECTION_FLAGS[k]}: recorded {have[k]!r}, asked {want[k]!r}"
        for k in want
        if k in have and have[k] != want[k]
    ]
    if task_name and ds.frame_size[0] != cfg.frame_side():
        differ.append(f"--frame-size/--image-size: frames of {ds.frame_size[0]}, asked {cfg.frame_side()}")
    return differ


def _collection_policy(cfg: AdaptConfig, env_id: str, task_name: str | None) -> str:
    """``cfg.policy``, with ``auto`` read as a scripted demonstrator where this package has one, random otherwise."""
    if cfg.policy != "auto":
        return cfg.policy
    if task_name is not None:
        try:
            from hindex_sb3.demonstrators import available_demonstrators

            if env_id in available_demonstrators():
                return "scripted"
        except ImportError:
            pass
    return "random"


def _collect_dataset(cfg: AdaptConfig, env_id: str, task_name: str | None, path: Path) -> FrameDataset:
    """Collect ``cfg.episodes`` episodes of frames and save them to ``path`` (recording the request in the meta)."""
    env_kwargs, obs_key, policy, record = _collection_request(cfg, env_id, task_name)
    logger.info(f"collecting {cfg.episodes} episodes of {env_id} frames with policy {policy} ...")
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
            meta={"policy_request": record["policy_request"], "deterministic": record["deterministic"]},
        )
    except (FrameDatasetError, FileNotFoundError, ValueError, TypeError) as err:
        raise AdaptError(f"could not collect frames: {err}") from err
    ds.save(path)
    return ds


def _prepare_dataset(cfg: AdaptConfig, env_id: str, task_name: str | None, out: Path) -> tuple[FrameDataset, Path]:
    """Load ``cfg.dataset`` / ``out/frames.npz`` (checked against the request) or collect and save new frames."""
    path = Path(cfg.dataset) if cfg.dataset else out / "frames.npz"
    if not cfg.dataset:  # a kill during an earlier collection left its temporary file; those episodes are lost
        path.with_name(path.name + ".partial.npz").unlink(missing_ok=True)
    if cfg.dataset or path.is_file():
        ds = _load_dataset(cfg, env_id, task_name, path)
    else:
        ds = _collect_dataset(cfg, env_id, task_name, path)
    _log_frames(ds, path)
    return ds, path


def _build_adapter(
    cfg: AdaptConfig, task_name: str | None, base_state: dict, loss: PerceptualLoss, dataset: FrameDataset
) -> Adapter:
    """The keypoint model on the base backbone, inside an :class:`Adapter` with the run's settings."""
    torch.manual_seed(cfg.seed)
    model = KeypointModel(cfg.num_keypoints, cfg.sigma, cfg.image_size, encoder=cfg.encoder)
    model.backbone.load_state_dict(base_state)
    return Adapter(
        model,
        loss,
        dataset,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        window=cfg.pair_window if cfg.pair_window is not None else PAPER_PAIR_WINDOW.get(task_name or ""),
        device=_device(cfg.device),
        base_backbone=base_state,
        trainable=cfg.trainable,
    )


def _log_trainable(counts: dict[str, Any], trainable: str) -> None:
    which = f"BatchNorm gamma/beta of {counts['backbone_bn_layers']} layers" if trainable == "bn" else "all"
    logger.info(
        f"backbone: {counts['backbone_trainable']:,} of {counts['backbone_total']:,} parameters trainable "
        f"({100 * counts['backbone_trainable_fraction']:.2f} %, {which}); heads/encoders/renderer trainable: "
        f"{counts['trainable_total'] - counts['backbone_trainable']:,}; total trainable {counts['trainable_total']:,}"
    )


def _labels(cfg: AdaptConfig) -> list[str]:
    """Warnings that travel with every output of a run that is not the real method."""
    labels = []
    if cfg.weights in (None, "random"):
        labels.append("RANDOM BASE ENCODER (not pretrained)")
    if _random_vgg(cfg):
        labels.append("RANDOM VGG16 (loss not perceptual)")
    return labels


def _check_resumed(cfg: AdaptConfig, extra: dict[str, Any], ckpt_path: Path, done: int) -> None:
    """What :meth:`Adapter.load_checkpoint` cannot see: the settings only the run's config records (which label the
    outputs or changed the start), and an iteration target the checkpoint has already passed."""
    old = extra.get("config") if isinstance(extra.get("config"), dict) else {}
    changed = []
    if "vgg_weights" in old and (old["vgg_weights"] in (None, "random")) != _random_vgg(cfg):
        changed.append(f"vgg_weights (--vgg-weights)={old['vgg_weights']!r}, this run has {cfg.vgg_weights!r}")
    if "calibrate_batches" in old and old["calibrate_batches"] != cfg.calibrate_batches:
        changed.append(
            f"calibrate_batches (--calibrate-batches)={old['calibrate_batches']!r}, "
            f"this run has {cfg.calibrate_batches!r}"
        )
    if changed:
        raise AdaptError(
            f"cannot resume {ckpt_path}: it was trained with other settings: {'; '.join(changed)} (resume with the "
            "same settings, or start a new run in another --out)"
        )
    if done > cfg.iterations:
        raise AdaptError(
            f"cannot resume {ckpt_path} to --iterations {cfg.iterations}: the checkpoint has already done {done}; "
            f"ask for {done} or more"
        )


def _train(cfg: AdaptConfig, adapter: Adapter, ckpt_path: Path) -> None:
    """Resume (or calibrate the heads' BN statistics), then train to ``cfg.iterations`` with checkpoints.

    A diverging run stops at its first non-finite loss, before that step is applied or saved: the checkpoint on disk
    stays the last good one, and nothing is exported (a NaN encoder is no result).
    """
    config = asdict(cfg)
    if cfg.resume:
        extra = adapter.load_checkpoint(ckpt_path)
        _check_resumed(cfg, extra, ckpt_path, adapter.iteration)
        logger.info(f"resumed {ckpt_path} at iteration {adapter.iteration}")
    elif cfg.calibrate_batches > 0:
        adapter.calibrate(cfg.calibrate_batches)
    try:
        adapter.run(
            cfg.iterations,
            checkpoint_path=ckpt_path,
            checkpoint_every=cfg.checkpoint_every,
            progress=cfg.progress_bar,
            extra={"config": _plain(config)},
        )
    except NonFiniteLossError as err:
        if adapter.saved_iteration is not None:
            kept = f"{ckpt_path} keeps iteration {adapter.saved_iteration}, the last good state"
        else:
            kept = "no checkpoint was written"
        raise NonFiniteLossError(
            f"{err}. Stopped without exporting: {kept}; start a new run with a lower --lr (another --out, with "
            f"--dataset {Path(cfg.out_dir) / 'frames.npz'} to reuse these frames)",
            err.iteration,
        ) from err


def _provenance(
    cfg: AdaptConfig, env_id: str, task_name: str | None, base_record: dict, frames_path: Path, labels: list[str]
) -> dict[str, Any]:
    if _random_vgg(cfg):
        vgg = "random (NOT pretrained)"
    else:
        vgg = "vgg16_imagenet (torchvision IMAGENET1K_V1)" if cfg.vgg_weights == "default" else str(cfg.vgg_weights)
    return {
        "encoder": cfg.encoder,
        "task": task_name or env_id,
        "env_id": env_id,
        "base": base_record,
        "heads_init": "random (TTP-Penn penn_joint.pth unavailable)",
        "head_bn_calibration_batches": cfg.calibrate_batches,
        "vgg16": vgg,
        "frames": str(frames_path),
        "labels": labels,
        "package": "hindex_sb3",
    }


def _draw_figures(adapter: Adapter, out: Path, title: str) -> dict[str, str]:
    from hindex_sb3.adapt import figures as figs

    return {
        "keypoints": str(figs.keypoint_figure(adapter, out / "keypoints.png", title=title)),
        "bn_distribution": str(
            figs.bn_distribution_figure(
                adapter.base_backbone, adapter.adapted_backbone(), out / "bn_distribution.png", title=title
            )
        ),
        "loss": str(figs.loss_figure(adapter.history, out / "loss.png", title=title)),
    }


def _log_keypoints(kp: dict[str, float]) -> None:
    logger.info(
        f"keypoints: move {kp['keypoint_std_px']:.2f} heatmap px (std over 16 frames), marginal softmax peak "
        f"{kp['mean_peak_probability']:.2f}"
        + (
            "  <- nearly static keypoints: the bottleneck has not learned to track anything yet"
            if kp["keypoint_std_px"] < 0.5
            else ""
        )
    )


def _loss_means(history: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean fixed-normalised loss and pixel MSE over the first and last ``k`` iterations (k <= 100, half the run)."""
    n = len(history["fixed"])
    k = min(100, n // 2) if n >= 2 else 0
    if not k:
        return {}
    return {
        f"first_{k}": {m: float(np.mean(history[m][:k])) for m in ("fixed", "pixels")},
        f"last_{k}": {m: float(np.mean(history[m][-k:])) for m in ("fixed", "pixels")},
    }


def adapt(cfg: AdaptConfig) -> dict[str, Any]:
    """Collect (or load) task frames, train the keypoint model, export the adapted encoder, draw the figures.

    Outputs in ``cfg.out_dir``: ``frames.npz``, ``checkpoints/latest.pt``, ``adapted_encoder.pth`` (the
    ``hindex_sb3.adapted/1`` checkpoint for ``create_encoder(cfg.encoder, weights=...)``), ``keypoints.png``,
    ``bn_distribution.png``, ``loss.png``, ``history.json`` and ``summary.json``.
    """
    env_id, task_name, out, ckpt_path = _check_run(cfg)
    base_state, base_record, loss = _load_weights(cfg)
    if cfg.overwrite:
        _clear_previous_run(out)
    dataset, frames_path = _prepare_dataset(cfg, env_id, task_name, out)
    try:
        dataset.check_image_size(cfg.image_size)
    except FrameDatasetError as err:
        raise AdaptError(str(err)) from err
    adapter = _build_adapter(cfg, task_name, base_state, loss, dataset)
    counts = trainable_summary(adapter.model)
    _log_trainable(counts, cfg.trainable)
    labels = _labels(cfg)
    _train(cfg, adapter, ckpt_path)

    provenance = _provenance(cfg, env_id, task_name, base_record, frames_path, labels)
    encoder_path = adapter.export(out / "adapted_encoder.pth", provenance)
    write_json(out / "history.json", dict(adapter.history.items()), indent=None)
    title = f"{task_name or env_id}: {adapter.iteration} iterations, image {cfg.image_size}"
    if labels:
        title = " / ".join(labels) + " - " + title
    figures = _draw_figures(adapter, out, title) if cfg.figures else {}
    kp = adapter.keypoint_stats()
    _log_keypoints(kp)
    summary = {
        "task": task_name or env_id,
        "env_id": env_id,
        "encoder_name": cfg.encoder,
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
        "pair_window": adapter.window,
        "device": str(adapter.device),
        "figures": figures,
        **_loss_means(adapter.history),
    }
    write_json(out / "summary.json", _plain(summary))
    return summary
