"""Can the H-InDex scenes run on mujoco-warp (MuJoCo's Warp/GPU physics), and how fast? (issue #15)

Not a package backend: an experiment. mujoco-warp steps in float32 with its own collision and solver kernels, so the
first question is whether our 13 models load at all (``mujoco_warp.put_model`` refuses unsupported MJCF features with
``NotImplementedError``), the second whether their dynamics match C MuJoCo closely enough for the experts to keep
succeeding, and only then what batched stepping and rendering at 224 x 224 reach on a GPU. Stages:

* ``models``: ``put_model`` on every task's compiled model (or the ``--tasks`` given);
* ``dynamics``: from ``reset(seed)``, an expert (mean actions) drives C MuJoCo; its actions are replayed open loop on
  mujoco-warp (qpos divergence over time) and each C state is also stepped once on mujoco-warp (one-step error, which
  separates float32/solver differences from chaotic divergence);
* ``experts``: expert episodes whose physics is mujoco-warp (observations, rewards and the success rule are the env's
  own, read from the mujoco-warp state) against the same seeds in C MuJoCo;
* ``speed``: batched ``step`` for each ``--nworld`` and ``refit_bvh + render`` of the task camera at ``--size``
  (frames/s), CUDA-graph captured on CUDA;
* ``c-solver`` (C MuJoCo only, runs without mujoco-warp): expert success with each model's own solver against the
  ``--force-solver`` (DexMV uses PGS, which mujoco-warp lacks);
* ``images``: our OpenGL frame beside mujoco-warp's ray-traced frame of the same state, as PNGs in ``--images``.

Prints a JSON document, then markdown tables. mujoco-warp is not a dependency of hindex-sb3; install it in its own
environment next to hindex-sb3 (it needs the same ``mujoco`` version):

    pip install mujoco-warp
    python benchmarks/mujoco_warp_check.py --experts /path/to/data --device cuda:0
    python benchmarks/mujoco_warp_check.py --stages models dynamics --device cpu --tasks Door --steps 50

``--experts DIR`` holds ``<task>-expert-v0.npz`` (Adroit) and ``dexmv/<name>.npz`` (DexMV); without it the
``dynamics`` stage drives the hand with seeded uniform random actions and ``experts`` is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ADROIT_EXPERTS = {"Door": "door", "Hammer": "hammer", "Pen": "pen", "Relocate": "relocate"}
DEXMV_EXPERTS = {
    "Pour": "pour",
    "PlaceInside": "place_inside",
    "RelocateMug": "relocate-mug",
    "RelocateMustardBottle": "relocate-mustard_bottle",
    "RelocatePottedMeatCan": "relocate-potted_meat_can",
    "RelocateTomatoSoupCan": "relocate-tomato_soup_can",
    "RelocateSugarBox": "relocate-sugar_box",
    "RelocateLargeClamp": "relocate-large_clamp",
    "RelocateFoamBrick": "relocate-foam_brick",
}
# The mug of H-InDex's place-inside demonstrations. tests/test_dexmv_fidelity.py reads this table and the one above.
ENV_KWARGS = {"PlaceInside": {"mug_scale": 1.5}}
STAGES = ("models", "dynamics", "experts", "speed", "c-solver", "images")


def missing_backend() -> str | None:
    """The one-line reason this check cannot run, or None when warp and mujoco_warp are importable."""
    absent = [name for name in ("warp", "mujoco_warp") if importlib.util.find_spec(name) is None]
    if absent:
        return (
            f"mujoco_warp_check: {' and '.join(absent)} not installed; install mujoco-warp "
            "(`pip install mujoco-warp`, which brings warp-lang) in an environment with hindex-sb3"
        )
    return None


def init_backend(device: str):
    """Import warp and mujoco_warp (only here, so the script imports without them) and select ``device``."""
    with contextlib.redirect_stdout(sys.stderr):  # warp's start-up banner would break the JSON on stdout
        import warp as wp

        wp.config.quiet = True
        wp.config.log_level = wp.LOG_WARNING  # no per-kernel load messages on stdout either
        import mujoco_warp as mjw

        wp.init()
    wp.set_device(device)
    return wp, mjw


SOLVER = None  # set from --force-solver: a dynamics change, applied to the C and the mujoco-warp side alike


def make_env(task: str, horizon: int | None = None):
    import gymnasium as gym
    import mujoco

    import hindex_sb3  # noqa: F401  (registers the HInDex/* ids)

    kwargs: dict[str, Any] = {"obs_mode": "state", **ENV_KWARGS.get(task, {})}
    if horizon is not None:
        kwargs["max_episode_steps"] = horizon
    env = gym.make(f"HInDex/{task}-v0", **kwargs)
    if SOLVER is not None:
        env.unwrapped.model.opt.solver = getattr(mujoco.mjtSolver, f"mjSOL_{SOLVER.upper()}")
    return env


def load_expert(experts: Path | None, task: str):
    from hindex_sb3.experts import NpzMLPPolicy

    if experts is None:
        return None
    if task in ADROIT_EXPERTS:
        path = experts / f"{ADROIT_EXPERTS[task]}-expert-v0.npz"
    else:
        path = experts / "dexmv" / f"{DEXMV_EXPERTS[task]}.npz"
    return NpzMLPPolicy.load(path) if path.is_file() else None


class WarpTwin:
    """One env's model on mujoco-warp, kept in step with the env's host ``MjData`` on request."""

    def __init__(self, wp, mjw, env, nconmax: int, njmax: int):
        self.wp, self.mjw, self.env = wp, mjw, env.unwrapped
        self.nconmax, self.njmax = nconmax, njmax
        self.upload()

    def upload(self) -> None:
        """Model and data from the host; resets randomise model fields (object and target placement)."""
        mjm, mjd = self.env.model, self.env.data
        self.m = quiet_model(self.mjw.put_model(mjm))
        self.d = self.mjw.put_data(mjm, mjd, nconmax=self.nconmax, njmax=self.njmax)
        self.peak = {"ncollision": 0, "nacon": 0, "nefc": 0}

    def set_state(self, data) -> None:
        """Copy the integration state of a host ``MjData`` into the device data (no re-allocation)."""
        for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "mocap_pos", "mocap_quat"):
            getattr(self.d, name).assign(np.asarray(getattr(data, name), np.float32)[None])
        self.d.time.assign(np.array([data.time], np.float32))

    def step(self, ctrl: np.ndarray, nsub: int) -> None:
        self.d.ctrl.assign(np.asarray(ctrl, np.float32)[None])
        for _ in range(nsub):
            self.mjw.step(self.m, self.d)
            for name in self.peak:  # the sizes a batched run must allocate for
                self.peak[name] = max(self.peak[name], int(getattr(self.d, name).numpy().max()))

    def qpos(self) -> np.ndarray:
        return self.d.qpos.numpy()[0].astype(np.float64)

    def overflow(self) -> list[str]:
        return overflow_names(self.mjw, self.d)


def quiet_model(m):
    """Overflows are read from ``Data.overflow`` and reported; mujoco-warp's own printf would corrupt stdout's JSON."""
    m.opt.warn_overflow = 0
    return m


def overflow_names(mjw, d) -> list[str]:
    """Names of the overflow bits any world raised since its data was made (the bits are sticky)."""
    bits = int(np.bitwise_or.reduce(d.overflow.numpy()))
    return [flag.name for flag in mjw.OverflowType if flag.value and not flag.value & (flag.value - 1) and bits & flag]


def host_step(core, apply_action, action: np.ndarray) -> tuple[np.ndarray, int]:
    """Step C physics with the task's own ``_apply_action``; return the ctrl it applied and the substep count."""
    before = core.data.time
    apply_action(np.clip(np.asarray(action, np.float64), -1.0, 1.0))
    nsub = round((core.data.time - before) / core.model.opt.timestep)
    return core.data.ctrl.copy(), nsub


def warp_physics(env, twin: WarpTwin) -> None:
    """Make ``env.step`` advance mujoco-warp instead of C MuJoCo; observations and rewards come from its state.

    The env's own ``_apply_action`` still runs (it is where each task maps actions to ctrl) on a scratch step, then
    the mujoco-warp state, including positions, contacts and sensors, replaces the host data, as ``mj_step`` left it.
    """
    core = env.unwrapped
    own_apply = core._apply_action

    def apply(action: np.ndarray) -> None:
        ctrl, nsub = host_step(core, own_apply, action)
        twin.step(ctrl, nsub)
        twin.mjw.get_data_into(core.data, core.model, twin.d)

    core._apply_action = apply


def policy_action(policy, obs: np.ndarray, rng: np.random.Generator, nu: int) -> np.ndarray:
    return policy(obs) if policy is not None else rng.uniform(-1.0, 1.0, nu)


def stage_models(wp, mjw, tasks: list[str]) -> list[dict]:
    import mujoco

    rows = []
    for task in tasks:
        env = make_env(task)
        mjm = env.unwrapped.model
        row = {
            "task": task,
            "nq": mjm.nq,
            "nv": mjm.nv,
            "nu": mjm.nu,
            "ngeom": mjm.ngeom,
            "nmesh": mjm.nmesh,
            "geom_types": sorted({mujoco.mjtGeom(t).name.removeprefix("mjGEOM_") for t in mjm.geom_type}),
            "solver": mujoco.mjtSolver(mjm.opt.solver).name,
            "cone": mujoco.mjtCone(mjm.opt.cone).name,
            "integrator": mujoco.mjtIntegrator(mjm.opt.integrator).name,
            "timestep": float(mjm.opt.timestep),
        }
        start = time.perf_counter()
        try:
            mjw.put_model(mjm)
            row.update(put_model="ok", error=None)
        except Exception as err:  # record whatever put_model raises
            row.update(put_model="fails", error=f"{type(err).__name__}: {err}")
        row["seconds"] = round(time.perf_counter() - start, 3)
        rows.append(row)
        env.close()
    return rows


def stage_dynamics(wp, mjw, task: str, seed: int, steps: int, experts: Path | None, sizes: tuple[int, int]) -> dict:
    """Open-loop qpos divergence and one-step error of mujoco-warp against C MuJoCo along a C trajectory."""
    env, policy = make_env(task, horizon=steps), load_expert(experts, task)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    core = env.unwrapped
    open_loop, one_step = WarpTwin(wp, mjw, env, *sizes), WarpTwin(wp, mjw, env, *sizes)
    open_diff, step_diff, host_goal, start = [], [], 0, time.perf_counter()
    for _ in range(steps):
        one_step.set_state(core.data)
        obs, _, terminated, truncated, info = env.step(policy_action(policy, obs, rng, core.model.nu))
        host_goal += int(info["goal_achieved"])
        ctrl, nsub = core.data.ctrl.copy(), round(core.dt / core.model.opt.timestep)
        one_step.step(ctrl, nsub)
        open_loop.step(ctrl, nsub)
        step_diff.append(float(np.abs(one_step.qpos() - core.data.qpos).max()))
        open_diff.append(float(np.abs(open_loop.qpos() - core.data.qpos).max()))
        if terminated or truncated:
            break
    wall = time.perf_counter() - start
    env.close()
    n = len(open_diff)
    return {
        "task": task,
        "seed": seed,
        "driver": "expert mean" if policy is not None else "uniform random",
        "steps": n,
        "substeps": nsub,
        "one_step_max_qpos_err": max(step_diff),
        "one_step_median_qpos_err": float(np.median(step_diff)),
        "open_loop_max_qpos_diff": {str(t): max(open_diff[:t]) for t in (10, 50, 100, 200) if t <= n},
        "overflow": sorted(set(open_loop.overflow() + one_step.overflow())),
        "peak": {k: max(open_loop.peak[k], one_step.peak[k]) for k in open_loop.peak},
        "warp_physics_steps_per_s": round(2 * n * nsub / wall, 2),
    }


def run_episodes(env, policy, seeds: list[int], twin: WarpTwin | None) -> list[dict]:
    episodes = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        if twin is not None:
            twin.upload()
        done, total, info, start = False, 0.0, {}, time.perf_counter()
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += reward
            done = terminated or truncated
        episodes.append(
            {
                "seed": seed,
                "success": bool(info["is_success"]),
                "goal_steps": env.unwrapped.goal_steps,
                "return": float(total),
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    return episodes


def stage_experts(wp, mjw, task: str, seeds: list[int], experts: Path, sizes: tuple[int, int]) -> dict | None:
    """Expert success with C MuJoCo and with mujoco-warp physics, same seeds, same env code."""
    policy = load_expert(experts, task)
    if policy is None:
        return None
    host_env, warp_env = make_env(task), make_env(task)
    twin = WarpTwin(wp, mjw, warp_env, *sizes)
    warp_physics(warp_env, twin)
    host = run_episodes(host_env, policy, seeds, None)
    device = run_episodes(warp_env, policy, seeds, twin)
    host_env.close()
    warp_env.close()
    return {
        "task": task,
        "seeds": seeds,
        "success_c": sum(e["success"] for e in host),
        "success_warp": sum(e["success"] for e in device),
        "return_c": float(np.mean([e["return"] for e in host])),
        "return_warp": float(np.mean([e["return"] for e in device])),
        "episodes_c": host,
        "episodes_warp": device,
    }


def stage_solver(task: str, seeds: list[int], experts: Path, solver: str) -> dict | None:
    """C MuJoCo only: expert success with the model's own solver and with ``solver`` (what a port would change)."""
    global SOLVER
    policy = load_expert(experts, task)
    if policy is None:
        return None
    saved, row = SOLVER, {"task": task, "seeds": seeds, "solver": solver}
    try:
        for key, choice in (("own", None), ("forced", solver)):
            SOLVER = choice
            env = make_env(task)
            episodes = run_episodes(env, policy, seeds, None)
            env.close()
            row[f"success_{key}"] = sum(e["success"] for e in episodes)
            row[f"return_{key}"] = float(np.mean([e["return"] for e in episodes]))
    finally:
        SOLVER = saved
    return row


def _timed(wp, fn, repeats: int, capture: bool) -> float:
    """Seconds per call of ``fn`` (CUDA-graph captured on CUDA, so launch overhead is not what is measured)."""
    fn()  # compile
    wp.synchronize()
    if capture:
        with wp.ScopedCapture() as cap:
            fn()
        run = lambda: wp.capture_launch(cap.graph)  # noqa: E731
    else:
        run = fn
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    wp.synchronize()
    return (time.perf_counter() - start) / repeats


def stage_speed(wp, mjw, task: str, nworld: int, size: int, repeats: int, render: bool, sizes: tuple[int, int]) -> dict:
    env = make_env(task)
    env.reset(seed=0)
    core = env.unwrapped
    mjm, mjd = core.model, core.data
    m = quiet_model(mjw.put_model(mjm))
    d = mjw.put_data(mjm, mjd, nworld=nworld, nconmax=sizes[0], njmax=sizes[1])
    rng = np.random.default_rng(0)  # a different constant control per world, so worlds do not stay identical
    low, high = mjm.actuator_ctrlrange.T
    d.ctrl.assign(rng.uniform(low, high, (nworld, mjm.nu)).astype(np.float32))
    capture = wp.get_device().is_cuda
    step_s = _timed(wp, lambda: mjw.step(m, d), repeats, capture)
    row = {"task": task, "nworld": nworld, "physics_steps_per_s": round(nworld / step_s, 1)}
    row["env_steps_per_s"] = round(row["physics_steps_per_s"] * mjm.opt.timestep / core.dt, 1)
    row["overflow"] = overflow_names(mjw, d)
    if render:
        rc = mjw.create_render_context(
            mjm, nworld=nworld, cam_res=(size, size), render_rgb=True, render_depth=False, cam_active=[core.camera_id]
        )

        def frame() -> None:
            mjw.refit_bvh(m, d, rc)
            mjw.render(m, d, rc)

        render_s = _timed(wp, frame, repeats, capture)
        row["frames_per_s"] = round(nworld / render_s, 1)
        row["image_size"] = size
    env.close()
    return row


def warp_frame(wp, mjw, mjm, mjd, camera_id: int, size: int) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 frame of the mujoco-warp ray-traced renderer from a host state."""
    m, d = quiet_model(mjw.put_model(mjm)), mjw.put_data(mjm, mjd)
    rc = mjw.create_render_context(
        mjm, cam_res=(size, size), render_rgb=True, render_depth=False, cam_active=[camera_id]
    )
    mjw.refit_bvh(m, d, rc)
    mjw.render(m, d, rc)
    rgb = wp.zeros((1, size, size), dtype=wp.vec3)
    mjw.get_rgb(rc, 0, rgb)
    return (np.clip(rgb.numpy()[0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def stage_images(wp, mjw, task: str, size: int, folder: Path) -> dict:
    """Side by side after ``reset(seed=0)``: our OpenGL frame (fast quality) and mujoco-warp's ray-traced frame."""
    import io

    from PIL import Image

    from hindex_sb3._io import atomic_write_bytes

    env = make_env(task)
    env.reset(seed=0)
    core = env.unwrapped
    opengl = core._get_renderer().render(core.data, core.camera_id).copy()
    traced = warp_frame(wp, mjw, core.model, core.data, core.camera_id, size)
    env.close()
    opengl = np.asarray(Image.fromarray(opengl).resize((size, size)))
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([opengl, traced], axis=1)).save(buffer, format="PNG")
    path = atomic_write_bytes(folder / f"mujoco_warp_{task.lower()}.png", buffer.getvalue())
    diff = np.abs(opengl.astype(np.int16) - traced.astype(np.int16))
    return {"task": task, "path": str(path), "mean_abs_pixel_diff": float(diff.mean())}


def _row_models(r: dict) -> list:
    return [r["task"], r["nq"], r["nv"], r["ngeom"], r["nmesh"], r["put_model"], (r["error"] or "").replace("|", "/")]


def _row_dynamics(r: dict) -> list:
    opened = ", ".join(f"{t}: {v:.3g}" for t, v in r["open_loop_max_qpos_diff"].items())
    err = f"{r['one_step_max_qpos_err']:.2g} / {r['one_step_median_qpos_err']:.2g}"
    peak = "{ncollision} / {nacon} / {nefc}".format(**r["peak"])
    return [r["task"], r["driver"], r["steps"], err, opened, peak, ", ".join(r["overflow"]) or "none"]


def _row_experts(r: dict) -> list:
    n = len(r["seeds"])
    return [
        r["task"],
        n,
        f"{r['success_c']}/{n}",
        f"{r['success_warp']}/{n}",
        f"{r['return_c']:.1f}",
        f"{r['return_warp']:.1f}",
    ]


def _row_c_solver(r: dict) -> list:
    n = len(r["seeds"])
    forced = f"{r['success_forced']}/{n} ({r['solver']})"
    return [r["task"], n, f"{r['success_own']}/{n}", forced, f"{r['return_own']:.1f}", f"{r['return_forced']:.1f}"]


def _row_speed(r: dict) -> list:
    fps = r.get("frames_per_s", "-")
    overflow = ", ".join(r["overflow"]) or "none"
    return [r["task"], r["nworld"], r["physics_steps_per_s"], r["env_steps_per_s"], fps, overflow]


def _row_images(r: dict) -> list:
    return [r["task"], r["path"], f"{r['mean_abs_pixel_diff']:.1f}"]


TABLES = {
    "models": (("task", "nq", "nv", "geoms", "meshes", "put_model", "error"), _row_models),
    "dynamics": (
        (
            "task",
            "driver",
            "steps",
            "one-step max / median qpos err",
            "open-loop max qpos diff",
            "peak candidates / contacts / rows",
            "overflow",
        ),
        _row_dynamics,
    ),
    "experts": (("task", "episodes", "success C", "success warp", "return C", "return warp"), _row_experts),
    "c_solver": (
        ("task", "episodes", "C success, own solver", "C success, forced", "return own", "return forced"),
        _row_c_solver,
    ),
    "speed": (("task", "nworld", "physics steps/s", "env steps/s", "frames/s", "overflow"), _row_speed),
    "images": (("task", "image", "mean abs pixel diff"), _row_images),
}


def markdown(result: dict) -> str:
    """One markdown table per stage that ran."""
    lines = []
    for key, (header, row) in TABLES.items():
        if not result.get(key):
            continue
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(cell) for cell in row(r)) + " |" for r in result[key]]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES[:4]))
    parser.add_argument("--tasks", nargs="+", default=None, help="default: all 13 (models), Door (speed)")
    parser.add_argument("--device", default="cuda:0", help="warp device: cuda:0 or cpu")
    parser.add_argument("--experts", type=Path, default=None, help="folder with the expert .npz files")
    parser.add_argument("--steps", type=int, default=200, help="env steps for the dynamics stage")
    parser.add_argument("--episodes", type=int, default=20, help="expert episodes per task (seeds 0..n-1)")
    parser.add_argument("--nworld", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--size", type=int, default=224, help="rendered image side")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per speed measurement")
    parser.add_argument("--nconmax", type=int, default=512, help="contacts allocated per world")
    parser.add_argument("--njmax", type=int, default=1024, help="constraint rows allocated per world")
    parser.add_argument(
        "--force-solver",
        choices=("newton", "cg"),
        default=None,
        help="replace every model's solver (DexMV uses PGS, which mujoco-warp lacks); changes the dynamics",
    )
    parser.add_argument("--images", type=Path, default=Path("."), help="images stage: folder for the PNGs")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON document here")
    parser.add_argument("--no-render", action="store_true", help="speed stage: time stepping only")
    args = parser.parse_args(argv)
    if args.experts is not None and not args.experts.is_dir():
        parser.error(f"--experts must be a folder, got {args.experts}")
    for name in ("steps", "episodes", "size", "repeats", "nconmax", "njmax"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if min(args.nworld) < 1:
        parser.error(f"--nworld values must be >= 1, got {args.nworld}")
    return args


def run_stages(args: argparse.Namespace, wp, mjw, tasks: list[str]) -> dict[str, Any]:
    """Run the requested stages in a fixed order; a stage needing experts is skipped (with a note) without them."""
    result: dict[str, Any] = {}
    sizes = (args.nconmax, args.njmax)
    if "models" in args.stages:
        result["models"] = stage_models(wp, mjw, tasks)
    if "dynamics" in args.stages:
        result["dynamics"] = [stage_dynamics(wp, mjw, t, 0, args.steps, args.experts, sizes) for t in tasks]
    seeds = list(range(args.episodes))
    for stage in ("experts", "c-solver"):
        if stage in args.stages and args.experts is None:
            print(f"mujoco_warp_check: stage {stage} skipped, it needs --experts", file=sys.stderr)
    if "experts" in args.stages and args.experts is not None:
        found = [stage_experts(wp, mjw, t, seeds, args.experts, sizes) for t in tasks]
        result["experts"] = [r for r in found if r is not None]
    if "c-solver" in args.stages and args.experts is not None:
        found = [stage_solver(t, seeds, args.experts, args.force_solver or "newton") for t in tasks]
        result["c_solver"] = [r for r in found if r is not None]
    if "speed" in args.stages:
        result["speed"] = [
            stage_speed(wp, mjw, t, n, args.size, args.repeats, not args.no_render, sizes)
            for t in args.tasks or ["Door"]
            for n in args.nworld
        ]
    if "images" in args.stages:
        result["images"] = [stage_images(wp, mjw, t, args.size, args.images) for t in tasks]
    return result


def main(argv: list[str] | None = None) -> int:
    global SOLVER
    args = parse_args(argv)
    reason = missing_backend()
    if reason is not None and set(args.stages) != {"c-solver"}:
        print(reason, file=sys.stderr)
        return 2
    import mujoco

    from hindex_sb3.envs import ALL_TASKS

    tasks = args.tasks or list(ALL_TASKS)
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        print(f"mujoco_warp_check: unknown tasks {unknown}; known: {list(ALL_TASKS)}", file=sys.stderr)
        return 2
    SOLVER = args.force_solver
    result: dict[str, Any] = {
        "versions": {"mujoco": mujoco.__version__, "python": platform.python_version()},
        "force_solver": args.force_solver,
    }
    wp = mjw = None
    if reason is None:
        try:
            wp, mjw = init_backend(args.device)
        except ValueError as err:  # warp's answer to a device this machine lacks, e.g. cuda:0 without a GPU
            print(f"mujoco_warp_check: cannot use device {args.device!r}: {err}", file=sys.stderr)
            return 2
        result["versions"].update(warp=wp.__version__, mujoco_warp=mjw.__version__)
        result["device"] = str(wp.get_device())
    result.update(run_stages(args, wp, mjw, tasks))
    from hindex_sb3._io import atomic_write_text, to_json_text

    text = to_json_text(result)
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
