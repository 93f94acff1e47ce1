"""Does rendering several envs' scenes into one framebuffer, read back once, beat one read-back per frame?

On a lent H200 (docs/benchmarks.md, "Pixel throughput") one process rendered 3,766 door frames/s at 224 px and 32
worker processes only 4,061-5,926 together: one GL context and one blocking ``mjr_readPixels`` per env and frame is
bound by the GPU side. The alternative: ``k`` scenes into one offscreen buffer (one GL context), then one read-back
of the buffer, split into ``k`` channel-first frames. Measured per scene count ``k`` (fast quality), in frames/s:

* ``single`` - the envs' own renderer (:class:`hindex_sb3.envs.rendering.OffscreenRenderer`): ``render_chw`` for each
  of the ``k`` states, one read-back per frame (what a worker with one env per process does);
* ``tiled`` - :class:`hindex_sb3.envs.rendering.TiledRenderer`, what ``SharedMemoryVecEnv(envs_per_worker=k)``
  workers run: each scene drawn at the buffer's origin, as ``single`` draws it, then copied on the GPU to its tile;
* ``viewport`` - each scene drawn straight into its tile (the first design, measured on the H200: 13,000 frames/s
  at ``k = 16``; its frames differ from ``single``'s at a few edge pixels, which is why the package copies instead).

With ``--processes P`` (one value or several) the same runs in ``P`` processes at once (spawned, each with its own GL
context) and the rate is ``P * frames / slowest process's time``: what ``P`` env workers would get from one GPU.
Each measurement first compares every tile with the single renderer's frame of the same state and reports, for
``tiled`` and ``viewport``, the largest pixel difference and the share of pixel values that differ at all (``tiled``
must be 0: the package's tests hold it to that on the CPU), so that a faster path cannot be a wrong one unnoticed.

    python benchmarks/render_batching.py --quick                       # CPU-sized check (64 px, k in 1 4)
    python benchmarks/render_batching.py --tiles 1 4 8 16 --processes 1 4 16 --json out.json   # a GPU machine

The states are ``k`` different door (or ``--task``) states, reached with random actions from different seeds and
copied into ``k`` ``MjData`` of one model: poses come from each ``MjData``, so one model serves all tiles.
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

import hindex_sb3
from hindex_sb3._io import to_json_text, write_json
from hindex_sb3.envs.rendering import OffscreenRenderer, TiledRenderer, _gl_context_class, validate_image_size

RENDERERS = ("single", "tiled", "viewport")


class ViewportTiles:
    """Draws up to ``tiles`` scenes of one model straight into the tiles of one offscreen buffer; one read-back."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int, tiles: int, max_geom: int = 2000) -> None:
        self.model, self.height, self.width, self.tiles = model, height, width, tiles
        self.cols = math.ceil(math.sqrt(tiles))
        self.rows = math.ceil(tiles / self.cols)
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        model.vis.global_.offwidth = self.cols * width
        model.vis.global_.offheight = self.rows * height
        self._gl = _gl_context_class()(self.cols * width, self.rows * height)
        self._gl.make_current()
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._option, self._perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._full = mujoco.MjrRect(0, 0, self.cols * width, self.rows * height)
        self._buffer = np.empty((self.rows * height, self.cols * width, 3), dtype=np.uint8)

    def _tile(self, i: int) -> mujoco.MjrRect:
        """Tile ``i`` counted from the top-left, as GL rectangles count from the bottom-left."""
        row, col = divmod(i, self.cols)
        return mujoco.MjrRect(col * self.width, (self.rows - 1 - row) * self.height, self.width, self.height)

    def render_chw(self, datas: list[mujoco.MjData], camera_id: int) -> np.ndarray:
        """``(len(datas), 3, H, W)`` uint8 frames, one per state."""
        if len(datas) > self.tiles:
            raise ValueError(f"{len(datas)} states for {self.tiles} tiles")
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        for i, data in enumerate(datas):
            mujoco.mjv_updateScene(
                self.model, data, self._option, self._perturb, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
            )
            mujoco.mjr_render(self._tile(i), self._scene, self._con)
        mujoco.mjr_readPixels(self._buffer, None, self._full, self._con)
        upright = self._buffer[::-1]  # GL's origin is bottom-left; after the flip tile 0 is top-left
        h, w = self.height, self.width
        out = np.empty((len(datas), 3, h, w), dtype=np.uint8)
        for i in range(len(datas)):
            row, col = divmod(i, self.cols)
            out[i] = upright[row * h : (row + 1) * h, col * w : (col + 1) * w].transpose(2, 0, 1)
        return out

    def close(self) -> None:
        self._gl.make_current()
        self._con.free()
        self._gl.free()


def _states(task: str, image_size: int, k: int, seed: int) -> tuple[gym.Env, list[mujoco.MjData]]:
    """``k`` states of the task's model after random actions from ``k`` seeds (one env kept for its model)."""
    env = gym.make(task, image_size=image_size, obs_mode="state", max_episode_steps=-1)
    base = env.unwrapped
    datas = []
    for i in range(k):
        env.reset(seed=seed + i)
        rng = np.random.default_rng(seed + i)
        for _ in range(10):
            env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        data = mujoco.MjData(base.model)
        data.qpos[:], data.qvel[:] = base.data.qpos, base.data.qvel
        if base.model.nmocap:
            data.mocap_pos[:], data.mocap_quat[:] = base.data.mocap_pos, base.data.mocap_quat
        mujoco.mj_forward(base.model, data)
        datas.append(data)
    return env, datas


def measure(task: str, image_size: int, k: int, frames: int, seed: int, barrier: Any = None) -> dict[str, float]:
    """Seconds of each renderer on the same ``k`` states in this process, and how far its frames are from single's.

    :param barrier: shared by processes measured together, so that all of them time the same renderer at once.
    """
    env, datas = _states(task, image_size, k, seed)
    base = env.unwrapped
    single = OffscreenRenderer(copy.deepcopy(base.model), image_size, image_size)
    tiled = TiledRenderer(copy.deepcopy(base.model), image_size, image_size, k)
    viewport = ViewportTiles(copy.deepcopy(base.model), image_size, image_size, k)
    scenes = [(base.model, d, base.camera_id) for d in datas]
    out = [np.empty((3, image_size, image_size), np.uint8) for _ in datas]
    renderers = {
        "single": lambda: np.stack([single.render_chw(d, base.camera_id) for d in datas]),
        "tiled": lambda: tiled.render_into(scenes, out) or np.stack(out),
        "viewport": lambda: viewport.render_chw(datas, base.camera_id),
    }
    rounds = max(frames // k, 1)
    result: dict[str, float] = {"frames": rounds * k}
    try:
        reference = renderers["single"]()
        for name in ("tiled", "viewport"):
            diff = np.abs(renderers[name]().astype(np.int16) - reference.astype(np.int16))
            result[f"{name}_max_abs_diff"], result[f"{name}_diff_fraction"] = int(diff.max()), float((diff > 0).mean())
        for name, render in renderers.items():
            if barrier is not None:
                barrier.wait()
            start = time.perf_counter()
            for _ in range(rounds):
                render()
            result[name] = time.perf_counter() - start
    finally:
        for renderer in (single, tiled, viewport):
            renderer.close()
        env.close()
    return result


def _worker(args: tuple, barrier: Any, results: Any) -> None:
    import hindex_sb3  # noqa: F401  (registers the envs in the spawned process)

    results.put(measure(*args, barrier=barrier))


def measure_processes(task: str, image_size: int, k: int, frames: int, processes: int, seed: int) -> dict[str, Any]:
    """The measurement in ``processes`` processes at once (1: this one): aggregate frames/s of each renderer, i.e.
    all processes' frames over the slowest process's time."""
    if processes == 1:
        runs = [measure(task, image_size, k, frames, seed)]
    else:
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(processes), ctx.Queue()
        workers = [
            ctx.Process(target=_worker, args=((task, image_size, k, frames, seed + 1000 * i), barrier, results))
            for i in range(processes)
        ]
        for w in workers:
            w.start()
        runs = [results.get(timeout=600) for _ in workers]
        for w in workers:
            w.join()
    total = sum(r["frames"] for r in runs)
    out: dict[str, Any] = {"processes": processes, "frames": total}
    for name in RENDERERS:
        out[name] = total / max(r[name] for r in runs)
    for key in ("tiled_max_abs_diff", "tiled_diff_fraction", "viewport_max_abs_diff", "viewport_diff_fraction"):
        out[key] = max(r[key] for r in runs)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| processes | tiles | single frames/s | tiled frames/s (/ single) | viewport frames/s (/ single) "
        "| tiled: values differing | viewport: values differing (max diff) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['processes']} | {r['tiles']} | {r['single']:,.0f} "
            f"| {r['tiled']:,.0f} ({r['tiled'] / r['single']:.2f}) "
            f"| {r['viewport']:,.0f} ({r['viewport'] / r['single']:.2f}) "
            f"| {r['tiled_diff_fraction']:.1e} | {r['viewport_diff_fraction']:.1e} ({r['viewport_max_abs_diff']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="HInDex/Door-v0")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--processes", type=int, nargs="+", default=[1])
    p.add_argument("--frames", type=int, default=400, help="frames per renderer and measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="64 px, tiles 1 4, 40 frames")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.tiles, args.frames = 64, [1, 4], 40
    validate_image_size(args.image_size)
    for name, hi in (("tiles", 64), ("processes", 256), ("frames", 10**6)):
        values = getattr(args, name) if isinstance(getattr(args, name), list) else [getattr(args, name)]
        if any(not 1 <= v <= hi for v in values):
            raise SystemExit(f"--{name} must be in [1, {hi}], got {getattr(args, name)}")
    rows = []
    for procs in args.processes:
        for k in args.tiles:
            row = {"tiles": k, **measure_processes(args.task, args.image_size, k, args.frames, procs, args.seed)}
            rows.append(row)
            print(
                f"  P={procs} k={k}: single {row['single']:,.0f} tiled {row['tiled']:,.0f} viewport "
                f"{row['viewport']:,.0f} frames/s, tiled max diff {row['tiled_max_abs_diff']}",
                file=sys.stderr,
                flush=True,
            )
    doc = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "task": args.task,
            "image_size": args.image_size,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "mujoco": mujoco.__version__,
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "hindex_sb3": hindex_sb3.__version__,
            "loadavg": list(os.getloadavg()),
        },
        "rows": rows,
    }
    if args.json:
        write_json(args.json, doc)
    print(to_json_text(doc))
    print(markdown(rows))
    return doc


if __name__ == "__main__":
    main()
