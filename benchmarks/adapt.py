"""Stage-2 benchmark: training iterations per second of the keypoint model (H-InDex ``hindex adapt``).

    python benchmarks/adapt.py                          # 224 x 224, batch 8 (the paper's setting), on the CPU
    python benchmarks/adapt.py --image-size 224 64 --iterations 3
    python benchmarks/adapt.py --device cuda            # on a GPU

One iteration is exactly what :meth:`hindex_sb3.adapt.Adapter.step` does: draw 8 pairs from a uint8 frame dataset,
preprocess (resize to ``s * 256/224``, centre-crop ``s``), forward the keypoint model and the VGG16 perceptual loss,
backward, Adam step over the 15.3 M trainable parameters. The split below re-times the same phases separately on one
batch. Weights are random (speed does not depend on their values). Frames are 256 x 256 for s = 224, as rendered by
the authors. After ``--warmup`` iterations, ``--iterations`` are timed one by one and the median is reported.

Prints markdown rows for docs/benchmarks.md and a JSON document (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch

from hindex_sb3.adapt import Adapter, FrameDataset, KeypointModel, PerceptualLoss, vgg16_features


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frames(image_size: int, seed: int = 0) -> FrameDataset:
    side = round(image_size * 256 / 224)
    rng = np.random.default_rng(seed)
    episodes = [rng.integers(0, 256, size=(12, 3, side, side), dtype=np.uint8) for _ in range(4)]
    return FrameDataset.from_episodes(episodes, {"env_id": "benchmark"})


def _split(adapter: Adapter, device: torch.device) -> dict[str, float]:
    """Seconds per phase for one batch: data (sampling + preprocessing), model forward, loss forward, backward, Adam."""
    times = {}
    _sync(device)
    t = time.perf_counter()
    source, target = adapter.batch(10_000)
    _sync(device)
    times["data"] = time.perf_counter() - t
    t = time.perf_counter()
    out = adapter.model(source, target)
    _sync(device)
    times["model_forward"] = time.perf_counter() - t
    t = time.perf_counter()
    loss, _ = adapter.loss(out.reconstruction, target, update=False)
    _sync(device)
    times["vgg_loss_forward"] = time.perf_counter() - t
    t = time.perf_counter()
    adapter.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _sync(device)
    times["backward"] = time.perf_counter() - t
    t = time.perf_counter()
    adapter.optimizer.step()
    _sync(device)
    times["adam"] = time.perf_counter() - t
    return times


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def bench(image_size: int, batch_size: int, iterations: int, warmup: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = KeypointModel(image_size=image_size)
    adapter = Adapter(
        model, PerceptualLoss(vgg16_features(None)), _frames(image_size), batch_size=batch_size, device=device
    )
    adapter.calibrate(1)
    for _ in range(warmup):
        adapter.step()
    per_it = []
    for _ in range(iterations):
        _sync(device)
        t = time.perf_counter()
        adapter.step()
        _sync(device)
        per_it.append(time.perf_counter() - t)
    split = _split(adapter, device)
    median = statistics.median(per_it)
    return {
        "image_size": image_size,
        "heatmap": image_size // 4,
        "batch_size": batch_size,
        "iterations_timed": iterations,
        "s_per_it_median": median,
        "s_per_it_all": per_it,
        "it_per_s": 1.0 / median,
        "split_s": split,
        "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs="+", default=[224])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    for size in args.image_size:
        r = bench(size, args.batch_size, args.iterations, args.warmup, device)
        results.append(r)
        print(
            f"image {size} (heatmaps {size // 4}) batch {args.batch_size}: {r['s_per_it_median']:.2f} s/it "
            f"= {r['it_per_s']:.4f} it/s  (per iteration: {', '.join(f'{t:.2f}' for t in r['s_per_it_all'])})",
            flush=True,
        )
    doc = {
        "date": str(date.today()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "results": results,
    }
    print()
    columns = ["device", "image (heatmap)", "batch", "s/it (median)", "it/s", "data", "model fwd", "VGG loss fwd"]
    print("| " + " | ".join([*columns, "backward", "Adam"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r["split_s"]
        print(
            f"| {args.device} ({doc['torch_threads']} threads) | {r['image_size']} ({r['heatmap']}) | "
            f"{r['batch_size']} | {r['s_per_it_median']:.2f} | {r['it_per_s']:.3f} | {s['data']:.2f} | "
            f"{s['model_forward']:.2f} | {s['vgg_loss_forward']:.2f} | {s['backward']:.2f} | {s['adam']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}))


if __name__ == "__main__":
    main()
