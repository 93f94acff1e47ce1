"""Encoder benchmark: images/s per encoder and batch size, EMA-BN overhead, rollout memory per transition.

    python benchmarks/encoders.py                 # full run on the CPU (several minutes on 2 cores)
    python benchmarks/encoders.py --quick         # batch 1 and 4, fewer repeats
    python benchmarks/encoders.py --device cuda   # adds bf16 autocast variants (channels_last for all)

Everything is measured side by side in one process: every configuration runs once per round, rounds are
interleaved, and the median is reported, so that slow drift (thermal, other processes) hits all configurations alike.
Weights are random (throughput does not depend on their values). Input is a uint8 (B, 3, 256, 256) batch, H-InDex's
render size, so the numbers include the encoder's preprocessing (resize 256 is then a no-op, centre crop 224).

Prints a JSON document (also written to ``--json``) and markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import date

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from hindex_sb3.encoders import RandomWeightsWarning, create_encoder, get_encoder_spec, list_encoders

RESNETS = ("hindex", "rrl", "r3m")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(device: torch.device, fn: Callable[..., object], *args, **kwargs) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    _sync(device)
    return time.perf_counter() - t0


def _variants(name: str, device: torch.device) -> list[tuple[str, bool, bool]]:
    """(label, channels_last, bf16) combinations worth measuring for this encoder on this device."""
    out = [("fp32", False, False)]
    if name in RESNETS:
        out.append(("fp32+channels_last", True, False))
    if device.type == "cuda":
        out.append(("bf16", False, True))
        if name in RESNETS:
            out.append(("bf16+channels_last", True, True))
    return out


def _make(name: str, device: torch.device, channels_last: bool, ema_scope: str | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        enc = create_encoder(
            name,
            weights=None,
            ema_scope=ema_scope,
            ema_momentum=0.01 if ema_scope else 0.0,
            channels_last=channels_last,
        )
    return enc.to(device)


def _images(batch: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, generator=g).to(device)


def bench_throughput(names, batches, repeats, device) -> list[dict]:
    configs = []
    for name in names:
        for label, cl, bf16 in _variants(name, device):
            configs.append({"encoder": name, "variant": label, "enc": _make(name, device, cl), "bf16": bf16})
    results = []
    for batch in batches:
        x = _images(batch, device)
        times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
        for rnd in range(repeats + 1):  # round 0 is warm-up
            for i, cfg in enumerate(configs):
                ac = torch.autocast(device.type, dtype=torch.bfloat16) if cfg["bf16"] else contextlib.nullcontext()
                with ac:
                    t = _timer(device, cfg["enc"], x)
                if rnd:
                    times[i].append(t)
        for i, cfg in enumerate(configs):
            med = statistics.median(times[i])
            results.append(
                {
                    "encoder": cfg["encoder"],
                    "variant": cfg["variant"],
                    "batch": batch,
                    "images_per_s": batch / med,
                    "ms_per_batch": 1e3 * med,
                }
            )
            print(f"  {cfg['encoder']:6s} {cfg['variant']:20s} b={batch:3d}: {batch / med:8.1f} img/s", file=sys.stderr)
    return results


def bench_ema_overhead(batches, repeats, device) -> list[dict]:
    """EMA forward (update + normalise) vs plain eval forward of the same module, interleaved, paired."""
    results = []
    configs = [("all", True, False), ("all", False, False), ("stem", True, False)]
    if device.type == "cuda":  # the same forwards replayed as CUDA graphs (no launch overhead)
        configs += [("all", True, True), ("all", False, True)]
    for scope, channels_last, graphs in configs:
        enc = _make("hindex", device, channels_last, ema_scope=scope)
        enc.use_cuda_graphs(graphs)
        layout = ("channels_last" if channels_last else "contiguous") + (" + CUDA graphs" if graphs else "")
        for batch in batches:
            x = _images(batch, device)
            plain, ema = [], []
            for rnd in range(repeats + 1):
                order = [False, True] if rnd % 2 else [True, False]  # alternate which goes first
                for update in order:
                    t = _timer(device, enc, x, update_bn_stats=update)
                    if rnd:
                        (ema if update else plain).append(t)
            ratios = [e / p for e, p in zip(ema, plain, strict=True)]
            res = {
                "scope": scope,
                "layout": layout,
                "batch": batch,
                "plain_ms": 1e3 * statistics.median(plain),
                "ema_ms": 1e3 * statistics.median(ema),
                "overhead_pct_of_medians": 100 * (statistics.median(ema) / statistics.median(plain) - 1),
                "overhead_pct_median_paired": 100 * (statistics.median(ratios) - 1),
                "repeats": repeats,
            }
            results.append(res)
            pct = res["overhead_pct_median_paired"]
            print(f"  EMA-BN {scope:4s} {layout:28s} b={batch:3d}: {pct:+.1f} %", file=sys.stderr)
    return results


def _buffer_bytes(buffer) -> int:
    total = 0
    for value in vars(buffer).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, dict):
            total += sum(v.nbytes for v in value.values() if isinstance(v, np.ndarray))
    return total


def bench_memory(image_size: int = 224, proprio: int = 24, actions: int = 28, n_steps: int = 256) -> list[dict]:
    """Bytes per transition of SB3's rollout buffers: pixels + proprio vs features + proprio (VecEncode)."""
    act = gym.spaces.Box(-1, 1, (actions,), np.float32)
    prop = gym.spaces.Box(-np.inf, np.inf, (proprio,), np.float32)
    rows = []
    pix_space = gym.spaces.Dict(
        {"pixels": gym.spaces.Box(0, 255, (3, image_size, image_size), np.uint8), "proprio": prop}
    )
    buf = DictRolloutBuffer(n_steps, pix_space, act, device="cpu", n_envs=1)
    rows.append({"storage": f"pixels 3x{image_size}x{image_size} uint8 + proprio", "bytes": _buffer_bytes(buf)})
    for name in ("hindex", "mvp", "vc1"):
        dim = get_encoder_spec(name).feature_dim
        space = gym.spaces.Box(-np.inf, np.inf, (dim + proprio,), np.float32)
        buf = RolloutBuffer(n_steps, space, act, device="cpu", n_envs=1)
        rows.append({"storage": f"{name} features {dim} float32 + proprio", "bytes": _buffer_bytes(buf)})
    for row in rows:
        row["bytes_per_transition"] = row.pop("bytes") / n_steps
    return rows


def _markdown(doc: dict) -> str:
    lines = ["### Throughput (images/s, median)", ""]
    batches = sorted({r["batch"] for r in doc["throughput"]})
    lines.append("| encoder | variant | " + " | ".join(f"batch {b}" for b in batches) + " |")
    lines.append("|---|---|" + "---|" * len(batches))
    keys = dict.fromkeys((r["encoder"], r["variant"]) for r in doc["throughput"])
    for enc, var in keys:
        vals = {r["batch"]: r["images_per_s"] for r in doc["throughput"] if (r["encoder"], r["variant"]) == (enc, var)}
        lines.append(f"| {enc} | {var} | " + " | ".join(f"{vals[b]:.1f}" for b in batches) + " |")
    lines += ["", "### EMA-BN overhead vs plain eval forward (hindex)", ""]
    lines.append("| scope | layout | batch | plain ms | EMA ms | overhead (paired median) | ratio of medians |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in doc["ema_overhead"]:
        lines.append(
            f"| {r['scope']} | {r['layout']} | {r['batch']} | {r['plain_ms']:.1f} | {r['ema_ms']:.1f} | "
            f"{r['overhead_pct_median_paired']:+.1f} % | {r['overhead_pct_of_medians']:+.1f} % |"
        )
    lines += ["", "### Rollout buffer memory per transition (SB3 RolloutBuffer / DictRolloutBuffer)", ""]
    lines += ["| storage | bytes per transition |", "|---|---|"]
    for r in doc["memory"]:
        lines.append(f"| {r['storage']} | {r['bytes_per_transition']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batches 1 and 4, 2 repeats")
    parser.add_argument("--encoders", nargs="+", default=list_encoders(), choices=list_encoders())
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--ema-repeats", type=int, default=None)
    parser.add_argument("--ema-batch-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = args.batch_sizes or ([1, 4] if args.quick else [1, 16, 64])
    repeats = args.repeats or (2 if args.quick else 3)
    ema_repeats = args.ema_repeats or (4 if args.quick else 7)
    ema_batches = args.ema_batch_sizes or ([1, 4] if args.quick else [1, 16])

    load_before = os.getloadavg()
    t0 = time.time()
    throughput = bench_throughput(args.encoders, batches, repeats, device)
    ema = bench_ema_overhead(ema_batches, ema_repeats, device)
    doc = {
        "meta": {
            "date": date.today().isoformat(),
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "repeats": repeats,
            "ema_repeats": ema_repeats,
            "input": "uint8 (B, 3, 256, 256), random weights",
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "seconds": round(time.time() - t0, 1),
        },
        "throughput": throughput,
        "ema_overhead": ema,
        "memory": bench_memory(),
    }
    print(json.dumps(doc, indent=2))
    print()
    print(_markdown(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return doc


if __name__ == "__main__":
    main()
