"""Encoder benchmark: images/s per encoder and batch size, EMA-BN overhead, rollout memory per transition.

    python benchmarks/encoders.py                 # full run on the CPU (several minutes on 2 cores)
    python benchmarks/encoders.py --quick         # batch 1 and 4, fewer repeats
    python benchmarks/encoders.py --device cuda   # adds bf16 variants (create_encoder(precision="bf16"))
    python benchmarks/encoders.py --precision fp32 bf16 --encoders hindex --batch-sizes 1 4 16   # bf16 on the CPU
    python benchmarks/encoders.py --sections ema --ema-batch-sizes 1 16   # EMA-BN only: plain / batch / frame

Everything is measured side by side in one process: every configuration runs once per round, rounds are
interleaved, and the median is reported, so that slow drift (thermal, other processes) hits all configurations alike.
Weights are random (throughput does not depend on their values). Input is a uint8 (B, 3, 256, 256) batch, H-InDex's
render size, so the numbers include the encoder's preprocessing (resize 256 is then a no-op, centre crop 224).

EMA-BN is timed three ways on the same module and input: a plain eval forward, the per-batch update (one update
per forward) and the per-frame update (one per image, the default), interleaved with a rotating order.

Prints a JSON document (also written to ``--json``) and markdown tables.
"""

from __future__ import annotations

import argparse
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

from hindex_sb3._io import atomic_write_text, to_json_text
from hindex_sb3.ema_bn import set_ema_update
from hindex_sb3.encoders import RandomWeightsWarning, create_encoder, get_encoder_spec, list_encoders
from hindex_sb3.encoders.base import PRECISIONS

RESNETS = ("hindex", "rrl", "r3m")
SECTIONS = ("throughput", "ema", "memory")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(device: torch.device, fn: Callable[..., object], *args, **kwargs) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    _sync(device)
    return time.perf_counter() - t0


def _variants(name: str, precisions: list[str]) -> list[tuple[str, bool, str]]:
    """(label, channels_last, precision) combinations worth measuring for this encoder."""
    out = []
    for precision in precisions:
        out.append((precision, False, precision))
        if name in RESNETS:
            out.append((f"{precision}+channels_last", True, precision))
    return out


def _make(name: str, device: torch.device, channels_last: bool, ema_scope: str | None = None, precision="fp32"):
    """The package's encoder with these options: bf16 is its own ``precision="bf16"`` path, not an outer autocast."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        enc = create_encoder(
            name,
            weights=None,
            ema_scope=ema_scope,
            ema_momentum=0.01 if ema_scope else 0.0,
            channels_last=channels_last,
            precision=precision,
        )
    return enc.to(device)


def _images(batch: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, generator=g).to(device)


def bench_throughput(names, batches, repeats, device, precisions=("fp32",)) -> list[dict]:
    configs = []
    for name in names:
        for label, cl, precision in _variants(name, precisions):
            configs.append({"encoder": name, "variant": label, "enc": _make(name, device, cl, precision=precision)})
    results = []
    for batch in batches:
        x = _images(batch, device)
        times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
        for rnd in range(repeats + 1):  # round 0 is warm-up
            for i, cfg in enumerate(configs):
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


EMA_MODES = ("plain", "batch", "frame")  # no update; one update per forward; one update per frame (the default)


def _ema_forward(enc, x, mode: str) -> None:
    if mode != "plain":
        set_ema_update(enc, mode)
    enc(x, update_bn_stats=mode != "plain")


def bench_ema_overhead(batches, repeats, device, scopes=None, precisions=("fp32",)) -> list[dict]:
    """Plain eval forward vs per-batch vs per-frame EMA forward of the same module: interleaved, rotating order.

    Each round runs the three once (the starting mode rotates, so none always runs first); ratios are paired within a
    round, and the medians of those ratios are reported beside the ratio of the median times.
    """
    results = []
    configs = [("all", True, False), ("all", False, False), ("stem", True, False)]
    if device.type == "cuda":  # the same forwards replayed as CUDA graphs (no launch overhead)
        configs += [("all", True, True), ("all", False, True)]
    configs = [(*c, p) for c in configs if scopes is None or c[0] in scopes for p in precisions]
    for scope, channels_last, graphs, precision in configs:
        enc = _make("hindex", device, channels_last, ema_scope=scope, precision=precision)
        enc.use_cuda_graphs(graphs)
        layout = ("channels_last" if channels_last else "contiguous") + (" + CUDA graphs" if graphs else "")
        layout += "" if precision == "fp32" else f" + {precision}"
        for batch in batches:
            x = _images(batch, device)
            times: dict[str, list[float]] = {mode: [] for mode in EMA_MODES}
            for rnd in range(repeats + 1):  # round 0 is warm-up (and captures the graphs)
                k = rnd % len(EMA_MODES)
                for mode in EMA_MODES[k:] + EMA_MODES[:k]:
                    t = _timer(device, _ema_forward, enc, x, mode)
                    if rnd:
                        times[mode].append(t)
            med = {mode: statistics.median(ts) for mode, ts in times.items()}

            def paired(num: str, den: str) -> float:
                return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))  # noqa: B023

            res = {
                "scope": scope,
                "layout": layout,
                "batch": batch,
                "plain_ms": 1e3 * med["plain"],
                "batch_ema_ms": 1e3 * med["batch"],
                "frame_ema_ms": 1e3 * med["frame"],
                "batch_vs_plain_paired": paired("batch", "plain"),
                "frame_vs_plain_paired": paired("frame", "plain"),
                "frame_vs_batch_paired": paired("frame", "batch"),
                "batch_vs_plain_of_medians": med["batch"] / med["plain"],
                "frame_vs_plain_of_medians": med["frame"] / med["plain"],
                "repeats": repeats,
            }
            results.append(res)
            by_batch, by_frame = res["batch_vs_plain_paired"], res["frame_vs_plain_paired"]
            print(
                f"  EMA-BN {scope:4s} {layout:28s} b={batch:3d}: batch x{by_batch:.3f}, frame x{by_frame:.3f} of plain",
                file=sys.stderr,
            )
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
    lines = []
    if doc["throughput"]:
        lines += _throughput_markdown(doc["throughput"])
    if doc["ema_overhead"]:
        lines += _ema_markdown(doc["ema_overhead"])
    if doc["memory"]:
        lines += ["", "### Rollout buffer memory per transition (SB3 RolloutBuffer / DictRolloutBuffer)", ""]
        lines += ["| storage | bytes per transition |", "|---|---|"]
        for r in doc["memory"]:
            lines.append(f"| {r['storage']} | {r['bytes_per_transition']:,.0f} |")
    return "\n".join(lines)


def _throughput_markdown(rows: list[dict]) -> list[str]:
    lines = ["### Throughput (images/s, median)", ""]
    batches = sorted({r["batch"] for r in rows})
    lines.append("| encoder | variant | " + " | ".join(f"batch {b}" for b in batches) + " |")
    lines.append("|---|---|" + "---|" * len(batches))
    for enc, var in dict.fromkeys((r["encoder"], r["variant"]) for r in rows):
        vals = {r["batch"]: r["images_per_s"] for r in rows if (r["encoder"], r["variant"]) == (enc, var)}
        lines.append(f"| {enc} | {var} | " + " | ".join(f"{vals[b]:.1f}" for b in batches) + " |")
    return [*lines, ""]


def _ema_markdown(rows: list[dict]) -> list[str]:
    lines = ["### EMA-BN: per-batch and per-frame update vs plain eval forward (hindex, medians)", ""]
    lines.append(
        "| scope | layout | batch | plain ms | batch-EMA ms | frame-EMA ms | batch / plain | frame / plain "
        "| frame / batch |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['scope']} | {r['layout']} | {r['batch']} | {r['plain_ms']:.1f} | {r['batch_ema_ms']:.1f} | "
            f"{r['frame_ema_ms']:.1f} | {r['batch_vs_plain_paired']:.3f} | {r['frame_vs_plain_paired']:.3f} | "
            f"{r['frame_vs_batch_paired']:.3f} |"
        )
    return [*lines, "", "Ratios are medians of per-round paired ratios (same module, same input, rotating order)."]


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
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to measure")
    parser.add_argument("--ema-scopes", nargs="+", default=None, choices=("all", "stem"), help="EMA-BN scopes")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=None,
        choices=PRECISIONS,
        help="encoder precisions to measure (default: fp32 on CPU, fp32 and bf16 on CUDA)",
    )
    parser.add_argument("--json", default=None, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = args.batch_sizes or ([1, 4] if args.quick else [1, 16, 64])
    repeats = args.repeats or (2 if args.quick else 3)
    ema_repeats = args.ema_repeats or (4 if args.quick else 7)
    ema_batches = args.ema_batch_sizes or ([1, 4] if args.quick else [1, 16])
    precisions = args.precision or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])

    load_before = os.getloadavg()
    t0 = time.time()
    sections = set(args.sections)
    throughput = (
        bench_throughput(args.encoders, batches, repeats, device, precisions) if "throughput" in sections else []
    )
    ema = bench_ema_overhead(ema_batches, ema_repeats, device, args.ema_scopes, precisions) if "ema" in sections else []
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
            "precisions": precisions,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "seconds": round(time.time() - t0, 1),
        },
        "throughput": throughput,
        "ema_overhead": ema,
        "memory": bench_memory() if "memory" in sections else [],
    }
    text = to_json_text(doc)
    print(text)
    print(_markdown(doc))
    if args.json:
        atomic_write_text(args.json, text)
    return doc


if __name__ == "__main__":
    main()
