"""The ``hindex`` command line.

``hindex demo`` builds every task, steps it with random actions, renders its default camera and writes the frames,
so a fresh install can be checked end to end in seconds. ``hindex envs`` lists the registered tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from hindex_sb3.envs import env_ids
from hindex_sb3.episodes import run_episode


def _save_png(image_hwc: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_hwc).save(path)


def _write_json(path: Path, obj: object) -> None:
    """Strict JSON (no NaN), written atomically: an interrupted run never leaves half a file."""
    text = json.dumps(obj, indent=2, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_envs(args: argparse.Namespace) -> int:
    for env_id in env_ids():
        spec = gym.spec(env_id)
        cls = spec.entry_point.split(":")[-1]
        print(f"{env_id:32s} horizon={spec.max_episode_steps:<4d} {cls}")
    return 0


def _demo_plan(args: argparse.Namespace) -> tuple[list[str], Path]:
    """Every argument of ``hindex demo`` checked (task names as ``hindex train`` takes them) before any env is built."""
    from hindex_sb3._validation import check_int, check_output_dir
    from hindex_sb3.envs import resolve_env_id
    from hindex_sb3.envs.rendering import validate_image_size

    validate_image_size(args.image_size)
    check_int("--steps", args.steps, minimum=0, maximum=1_000_000)
    check_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    check_output_dir("--out", args.out)
    out = Path(args.out)
    return (env_ids() if not args.tasks else [resolve_env_id(t) for t in args.tasks]), out


def _random_steps(env: gym.Env, seed: int, steps: int) -> tuple[Any, float | None]:
    """Take ``steps`` small random actions from ``reset(seed=seed)``, restarting episodes that end.

    Returns the last observation and the steps per second counted from the first reset's end (None for no steps).
    """
    rng = np.random.default_rng(seed)
    start: list[float] = []

    def clock(obs: Any) -> None:
        if not start:
            start.append(time.perf_counter())

    left, episode_seed = steps, seed
    while True:
        episode = run_episode(
            env,
            lambda obs: rng.uniform(-1, 1, env.action_space.shape) * 0.2,
            seed=episode_seed,
            max_steps=left,
            on_reset=clock,
        )
        left, episode_seed = left - episode.length, None
        if not episode.done:  # the step budget, not the env, stopped it
            break
    rate = steps / max(time.perf_counter() - start[0], 1e-9) if steps else None
    return episode.final_obs, rate


def cmd_demo(args: argparse.Namespace) -> int:
    """Build each task, take a few random steps, and save the frame of its default camera."""
    try:
        ids, out = _demo_plan(args)
    except (TypeError, ValueError, OSError) as err:
        print(f"hindex demo: {err}", file=sys.stderr)
        return 2
    frames, summary = [], []
    for env_id in ids:
        env = gym.make(env_id, image_size=args.image_size, render_quality=args.quality)
        obs, rate = _random_steps(env, args.seed, args.steps)
        frame = obs["pixels"].transpose(1, 2, 0)
        name = env_id.split("/")[-1].removesuffix("-v0").lower()
        path = out / f"{name}.png"
        _save_png(frame, path)
        frames.append(frame)
        base = env.unwrapped
        summary.append(
            {
                "task": env_id,
                "camera": base.camera_name,
                "pixels": list(obs["pixels"].shape),
                "proprio": list(obs["proprio"].shape),
                "action_dim": int(env.action_space.shape[0]),
                "steps_per_s": None if rate is None else round(rate, 1),
                "frame": str(path),
            }
        )
        speed = "" if rate is None else f"{rate:7.1f} steps/s"
        print(f"{env_id:28s} camera={base.camera_name:11s} {speed} -> {path}", flush=True)
        env.close()
    if len(frames) > 1 and len({f.shape for f in frames}) == 1:
        _save_png(np.concatenate(frames, axis=1), out / "all_tasks.png")
    _write_json(out / "summary.json", summary)
    print(f"wrote {len(frames)} frames and summary.json to {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hindex_sb3.runs.cli_args import config_from_args, flag_name
    from hindex_sb3.train import ConfigError, TrainingError, train

    try:
        summary = train(config_from_args(args))
    except TrainingError as err:
        if args.debug:
            raise
        where = flag_name(err.field) + ": " + err.problem if isinstance(err, ConfigError) else str(err)
        print(f"hindex train: {where}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


@contextlib.contextmanager
def _show_adapt_progress() -> Iterator[None]:
    """Print the Stage-2 pipeline's progress lines (its logger's INFO records) on stdout, bare, as ``hindex adapt``
    always has; the library itself only logs. Not propagated, so a root handler does not print them twice."""
    import logging

    log = logging.getLogger("hindex_sb3.adapt")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


#: AdaptConfig fields whose flag is not ``--`` + the field's name with dashes
_ADAPT_FLAGS = {"out_dir": "--out", "figures": "--no-figures", "progress_bar": "--no-progress"}


def _as_flag(message: str) -> str:
    """A setting's error as the command line spells the setting: ``lr must be finite`` -> ``--lr must be finite``
    (the checks name AdaptConfig's fields, which is right for the Python API, not for the command)."""
    import dataclasses

    from hindex_sb3.adapt import AdaptConfig

    field, _, rest = message.partition(" ")
    names = {f.name for f in dataclasses.fields(AdaptConfig)} - {"task"}  # (task is the positional argument)
    if field not in names or not rest:
        return message
    return f"{_ADAPT_FLAGS.get(field, '--' + field.replace('_', '-'))} {rest}"


def cmd_adapt(args: argparse.Namespace) -> int:
    from hindex_sb3.adapt import AdaptConfig, AdaptError, adapt

    try:
        env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    except json.JSONDecodeError as err:
        print(f"hindex adapt: --env-kwargs is not JSON: {err}", file=sys.stderr)
        return 2
    if not isinstance(env_kwargs, dict):
        print(
            f'hindex adapt: --env-kwargs must be a JSON object such as \'{{"camera": "top"}}\', got {args.env_kwargs}',
            file=sys.stderr,
        )
        return 2
    cfg = AdaptConfig(
        task=args.task,
        encoder=args.encoder,
        weights=args.weights,
        episodes=args.episodes,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        frame_size=args.frame_size,
        trainable=args.trainable,
        policy=args.policy,
        deterministic=args.deterministic,
        camera=args.camera,
        max_steps=args.max_steps,
        pair_window=args.pair_window,
        dataset=args.dataset,
        env_kwargs=env_kwargs,
        vgg_weights=args.vgg_weights,
        calibrate_batches=args.calibrate_batches,
        seed=args.seed,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        out_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        figures=not args.no_figures,
        progress_bar=not args.no_progress,
    )
    try:
        with _show_adapt_progress():
            summary = adapt(cfg)
    except AdaptError as err:
        print(f"hindex adapt: {_as_flag(str(err))}", file=sys.stderr)
        return 2
    shown = ("encoder", "iterations", "bn_change", "backbone_change", "figures")
    print(json.dumps({k: summary[k] for k in shown if k in summary}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hindex", description="H-InDex for Stable-Baselines3 and Gymnasium")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("envs", help="list the registered HInDex/* environments")
    p.set_defaults(func=cmd_envs)
    p = sub.add_parser("demo", help="build every task, step it and save a frame from its default camera")
    p.add_argument("--out", default="hindex_demo", help="output folder (default: ./hindex_demo)")
    p.add_argument("--tasks", nargs="*", default=None, help="task names such as Door Pen (default: all)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--quality", choices=["fast", "paper"], default="fast")
    p.add_argument("--steps", type=int, default=50, help="random steps before the saved frame")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        help="BC + DAPG on a task from pixels (or state), as in H-InDex Stage 3",
        description="BC + DAPG on one task. Every setting is a flag (or --set NAME=VALUE, or --config FILE.json); "
        "unset run settings take the paper's per-task values. Checkpoints (.safetensors) load without executing code; "
        "final_model.zip is SB3's format for SB3 tools, and loading an SB3 zip runs pickled code: load only zips you "
        "trust.",
    )
    from hindex_sb3.runs.cli_args import add_train_arguments

    add_train_arguments(p)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "adapt", help="Stage 2: adapt an encoder's BatchNorm (default: the hand encoder's) by self-supervised keypoints"
    )
    p.add_argument("task", help="one of our tasks (door, hammer, ...) or any registered Gymnasium id")
    p.add_argument(
        "--encoder",
        default="hindex",
        help="the registered encoder to adapt (any with BatchNorm: hindex, rrl, timm:resnet18, a plugin's, ...)",
    )
    p.add_argument(
        "--weights", default="default", help="base weights: 'default' (the encoder's; FrankMocap), a path, or 'random'"
    )
    p.add_argument("--episodes", type=int, default=50, help="episodes of frames to collect")
    p.add_argument("--iterations", type=int, default=100_000)
    p.add_argument("--out", default="runs/adapt", help="run folder (frames, checkpoints, encoder, figures)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--image-size", type=int, default=224, help="model input (multiple of 32; 224 -> 56x56 heatmaps)")
    p.add_argument("--frame-size", type=int, default=None, help="render size (default image-size * 256/224)")
    p.add_argument(
        "--trainable",
        choices=["bn", "all"],
        default="bn",
        help="bn: the backbone's BatchNorm gamma/beta (the paper); all: every parameter (Fig. 7's ablation)",
    )
    p.add_argument(
        "--policy",
        default="auto",
        help="auto | random | scripted | expert:PATH.npz | DEMOS.npz | dapg:CHECKPOINT.safetensors | ALGO:MODEL.zip "
        "(an SB3 zip is unpickled on load, i.e. code: only files you trust)",
    )
    p.add_argument("--deterministic", action="store_true", help="mean actions for experts/SB3 (default: sampled)")
    p.add_argument("--camera", default=None)
    p.add_argument("--max-steps", type=int, default=None, help="actions per episode (default: the env's horizon)")
    p.add_argument("--pair-window", type=int, default=None, help="pairs among the first N frames (default: paper's)")
    p.add_argument("--dataset", default=None, help="an existing frames .npz instead of collecting")
    p.add_argument("--env-kwargs", default=None, help="JSON keyword arguments for gym.make (your own envs)")
    p.add_argument("--vgg-weights", default="default", help="'default' (torchvision ImageNet VGG16), a path, 'random'")
    p.add_argument("--calibrate-batches", type=int, default=8, help="head-BN calibration batches (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.pt")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the adapt run in --out (deletes its frames and outputs)"
    )
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_adapt)

    from hindex_sb3.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
