"""bf16 against fp32: how far reduced precision moves the encoder's features, its EMA-BN statistics and an action.

    python benchmarks/precision.py                                  # hindex, calibrated random weights, CPU
    python benchmarks/precision.py --weights pose_shape_best.pth    # the real encoder (no calibration)
    python benchmarks/precision.py --device cuda --json out.json

The same frozen encoder runs on the same rendered frames (four Adroit tasks, random actions, 224x224 uint8) with
``precision="fp32"`` and with ``precision="bf16"``, and, for scale, in fp32 on the frames with -1/0/+1 added to every
pixel value (a change nobody could see). Reported per frame: the norm-relative feature error
``||f_bf16 - f_fp32|| / ||f_fp32||`` and the cosine similarity (median and max / min over frames), for the plain
frozen encoder and with per-frame EMA-BN (every BN layer, momentum 0.1 and 0.01: each encoder folds the frames into
its own statistics, in batches of ``--batch`` frames, as VecEncode / the extractor do in rollouts), plus the largest
relative difference of the EMA running statistics after the sequence. The action effect is measured with a policy
head shaped as DAPG's: inputs normalised by the mean and std of the task's fp32 features (floor 1e-3), an MLP 256-256
with tanh, PyTorch's default initialisation (untrained), ``||a_bf16 - a_fp32|| / ||a_fp32||`` per frame. On a GPU
the bf16 encoder runs as a rollout runs it there (channels-last, replayed as CUDA graphs) against the eager fp32
reference, and ``fp32_graphs_rel_max`` reports what the CUDA graphs alone change in fp32.

Without ``--weights`` no pretrained file is needed: the ResNet-50 is randomly initialised, with random BatchNorm
affine parameters like the test suite's synthetic checkpoints, and its BatchNorm statistics are then *calibrated* on
rendered frames (a separate set, other seeds), the way a network's statistics come to match its data in training.
Two such networks are measured: "trained-like residuals" (the last BN of each residual branch scaled by 0.05-0.3, so
blocks refine the identity path as in trained ResNets) and "chaotic" (scales 0.5-1.5 everywhere: a random ResNet-50
then amplifies any small perturbation layer by layer, bf16 rounding and grey-level noise alike).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import date

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import hindex_sb3  # noqa: F401  (registers the envs)
from hindex_sb3._io import atomic_write_text, to_json_text
from hindex_sb3.encoders import RandomWeightsWarning, create_encoder

TASKS = ("HInDex/Door-v0", "HInDex/Hammer-v0", "HInDex/Pen-v0", "HInDex/Relocate-v0")


def render_frames(tasks, per_task: int, seed: int, every: int = 5) -> torch.Tensor:
    """``per_task`` frames of each task under random actions, one every ``every`` steps: uint8 (N, 3, 224, 224)."""
    frames = []
    for i, task in enumerate(tasks):
        env = gym.make(task)
        env.action_space.seed(seed + i)
        obs, _ = env.reset(seed=seed + i)
        for step in range(per_task * every):
            if step % every == 0:
                frames.append(obs["pixels"])
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                obs, _ = env.reset()
        env.close()
    return torch.as_tensor(np.stack(frames))


def calibrate(encoder, frames: torch.Tensor, batch: int, seed: int = 0, residual_gamma=None) -> None:
    """Random BN affine parameters, then BN running statistics set to the frames' cumulative batch statistics.

    :param residual_gamma: ``(lo, hi)``: the last BN of each bottleneck's residual branch (``bn3``) gets scales drawn
        from this range instead of ``[0.5, 1.5]``, so that blocks add small corrections to the identity path, as in
        trained ResNets (the property zero-init-residual training builds in). Without it a random ResNet-50 is in
        the chaotic regime: it amplifies any small perturbation layer by layer.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [(name, m) for name, m in encoder.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, bn in bns:
            n = bn.num_features
            lo, hi = residual_gamma if residual_gamma and name.endswith("bn3") else (0.5, 1.5)
            bn.weight.copy_(lo + (hi - lo) * torch.rand(n, generator=g))
            bn.bias.copy_(0.1 * torch.randn(n, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
            bn.train()  # the Encoder itself stays in eval mode; its BN layers are switched directly
    for chunk in frames.split(batch):
        encoder(chunk)
    for _, bn in bns:
        bn.momentum = 0.1
        bn.eval()


def grey_level_noise(frames: torch.Tensor, seed: int) -> torch.Tensor:
    """The frames with -1, 0 or +1 added to every pixel value: the reference size of a negligible input change."""
    g = torch.Generator().manual_seed(seed)
    return (frames.int() + torch.randint(-1, 2, frames.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def _rel(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    a, b = a.double(), b.double()
    return ((b - a).norm(dim=1) / a.norm(dim=1)).tolist()


def _cos(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).tolist()


def _policy_actions(feats: dict[str, torch.Tensor], tasks: torch.Tensor, actions: int, seed: int) -> dict:
    """DAPG's shape of head: inputs normalised by the fp32 features of the same task (DAPG normalises with the
    task's demonstration features), an MLP 256-256 with tanh, PyTorch's default (untrained) initialisation."""
    torch.manual_seed(seed)
    ref = feats["fp32"]
    mlp = nn.Sequential(
        nn.Linear(ref.shape[1], 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, actions)
    )
    out = {key: torch.empty(len(ref), actions) for key in feats}
    with torch.no_grad():
        for t in tasks.unique():
            sel = tasks == t
            mean, std = ref[sel].mean(0), ref[sel].std(0).clamp_min(1e-3)
            for key, f in feats.items():
                out[key][sel] = mlp((f[sel] - mean) / std)
    return out


def encode_sequence(encoder, frames: torch.Tensor, batch: int, update: bool) -> torch.Tensor:
    return torch.cat([encoder(chunk, update_bn_stats=update) for chunk in frames.split(batch)])


def _run(
    state: dict, frames: torch.Tensor, precision: str, momentum: float | None, batch: int, device, graphs: bool = False
):
    """``graphs``: replay the forwards as CUDA graphs (the rollout's fast path on a GPU; ignored on the CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        enc = create_encoder(
            "hindex", None, ema_scope="all" if momentum else None, precision=precision, cuda_graphs=graphs
        )
    enc.backbone.load_state_dict(state)
    for bn in enc.ema_layers:
        bn.momentum_ema = momentum
    enc.to(device)
    t0 = time.perf_counter()
    feats = encode_sequence(enc, frames.to(device), batch, update=bool(momentum)).cpu()
    return enc, feats, time.perf_counter() - t0


def compare(state: dict, frames: torch.Tensor, tasks: torch.Tensor, args, device: torch.device) -> list[dict]:
    """bf16 and fp32 (and fp32 on +-1 grey-level noise, for scale) on the same frame sequence, per EMA setting."""
    rows = []
    noisy = grey_level_noise(frames, args.seed)
    for momentum in (None, *args.momenta):
        enc32, f32, t32 = _run(state, frames, "fp32", momentum, args.batch, device)
        # bf16 as a GPU rollout runs it (channels-last, CUDA graphs) against the eager fp32 reference
        enc16, f16, t16 = _run(state, frames, "bf16", momentum, args.batch, device, graphs=device.type == "cuda")
        _, fnoise, _ = _run(state, noisy, "fp32", momentum, args.batch, device)
        rel, cos, rel_noise = _rel(f32, f16), _cos(f32, f16), _rel(f32, fnoise)
        acts = _policy_actions({"fp32": f32, "bf16": f16, "noise": fnoise}, tasks, args.actions, args.seed)
        act_rel, act_noise = _rel(acts["fp32"], acts["bf16"]), _rel(acts["fp32"], acts["noise"])
        row = {
            "ema": f"per-frame, m={momentum}" if momentum else "off",
            "frames": len(frames),
            "rel_median": statistics.median(rel),
            "rel_max": max(rel),
            "cos_median": statistics.median(cos),
            "cos_min": min(cos),
            "noise_rel_median": statistics.median(rel_noise),
            "noise_rel_max": max(rel_noise),
            "action_rel_median": statistics.median(act_rel),
            "action_rel_max": max(act_rel),
            "noise_action_rel_median": statistics.median(act_noise),
            "fp32_s": t32,
            "bf16_s": t16,
        }
        if device.type == "cuda":  # CUDA graphs alone, in fp32: replay must not move the features
            _, fgraph, _ = _run(state, frames, "fp32", momentum, args.batch, device, graphs=True)
            row["fp32_graphs_rel_max"] = max(_rel(f32, fgraph))
        if momentum:
            row["stats_rel_max"] = max(
                float(((b16 - b32).norm() / b32.norm()).item())
                for m32, m16 in zip(enc32.ema_layers, enc16.ema_layers, strict=True)
                for b32, b16 in ((m32.running_mean, m16.running_mean), (m32.running_var, m16.running_var))
            )
            row["stats_dtypes"] = sorted({str(m.running_var.dtype) for m in enc16.ema_layers})
        rows.append(row)
        print(
            f"  {row['ema']:20s} bf16 rel median {row['rel_median']:.2e} max {row['rel_max']:.2e}; "
            f"+-1 grey level {row['noise_rel_median']:.2e}",
            file=sys.stderr,
        )
    return rows


def _markdown(results: list[dict]) -> str:
    lines = [
        "| weights | EMA-BN | feature rel. error median / max | cosine median / min | +-1 grey level: rel. median "
        "/ max | action rel. diff median / max | +-1 grey level: action median | EMA stats rel. diff max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            stats = f"{r['stats_rel_max']:.1e}" if "stats_rel_max" in r else "-"
            lines.append(
                f"| {res['weights']} | {r['ema']} | {r['rel_median']:.2e} / {r['rel_max']:.2e} | "
                f"{r['cos_median']:.5f} / {r['cos_min']:.5f} | {r['noise_rel_median']:.2e} / {r['noise_rel_max']:.2e} "
                f"| {r['action_rel_median']:.2e} / {r['action_rel_max']:.2e} | {r['noise_action_rel_median']:.2e} "
                f"| {stats} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None, help="a hindex checkpoint (default: calibrated random weights)")
    parser.add_argument("--frames-per-task", type=int, default=16)
    parser.add_argument("--calibration-frames-per-task", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="frames per forward (environments stepped together)")
    parser.add_argument("--momenta", nargs="+", type=float, default=[0.1, 0.01], help="EMA-BN momenta to measure")
    parser.add_argument(
        "--residual-gamma",
        nargs=2,
        type=float,
        default=[0.05, 0.3],
        metavar=("LO", "HI"),
        help="bn3 scales of the trained-like calibration (see calibrate)",
    )
    parser.add_argument("--actions", type=int, default=28, help="action size of the policy head (Door: 28)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before, t0 = os.getloadavg(), time.time()
    frames = render_frames(TASKS, args.frames_per_task, seed=args.seed)
    tasks = torch.arange(len(TASKS)).repeat_interleave(args.frames_per_task)
    results = []
    if args.weights is None:
        calib = render_frames(TASKS, args.calibration_frames_per_task, seed=args.seed + 1000)
        setups = {"calibrated, trained-like residuals": tuple(args.residual_gamma), "calibrated, chaotic": None}
    else:
        setups = {args.weights: None}
    for label, residual_gamma in setups.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            base = create_encoder("hindex", args.weights)
        if args.weights is None:
            calibrate(base, calib, args.batch, seed=args.seed, residual_gamma=residual_gamma)
        print(f"{label}:", file=sys.stderr)
        rows = compare(base.backbone.state_dict(), frames, tasks, args, device)
        results.append({"weights": label, "rows": rows})
    doc = {
        "meta": {
            "date": date.today().isoformat(),
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "weights": args.weights or "random ResNet-50, BN affine random, BN statistics calibrated on frames",
            "residual_gamma": args.residual_gamma,
            "frames_per_task": args.frames_per_task,
            "tasks": list(TASKS),
            "batch": args.batch,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "seconds": round(time.time() - t0, 1),
        },
        "results": results,
    }
    text = to_json_text(doc)
    print(text)
    print(_markdown(results))
    if args.json:
        atomic_write_text(args.json, text)
    return doc


if __name__ == "__main__":
    main()
