"""Pixel RL throughput: env frames/s of each part of a pixel DAPG rollout alone, of the whole, and their ratio.

    python benchmarks/pixel_throughput.py --tasks Door --n-envs 2 --vec-env dummy subproc   # CPU, realistic
    python benchmarks/pixel_throughput.py --quick                                            # CI-sized, ~1 min
    python benchmarks/pixel_throughput.py --preset gpu --json gpu.json                       # GPU, a few minutes

Every rate is in env frames per second (a frame is one env step; at 224 px each step renders one image). Measured
side by side in one process: every round runs the components, the wholes, then the components again (a part's rate
in a round is the harmonic mean of its two runs: its mean time, bracketing the wholes), round 0 warms up and is not
counted, and the median over rounds is reported, so that drift on a shared machine hits all of them alike.

Components (``n`` = ``--n-envs``, the rollout batch size):

* ``physics@1`` - ``env.step`` with ``obs_mode="state"`` (nothing rendered) in one process; ``physics@n`` - the
  same loop in ``n`` worker processes at once, rate = ``n * steps / (slowest worker's time)``.
* ``render@1`` / ``render@n`` - the offscreen renderer alone (fast quality, ``--image-size``) on a fixed scene,
  one process / ``n`` workers at once as above.
* ``physics@n[k=K]`` / ``render@n[k=K]`` - for a VecEnv kind ``shm*K`` (``K`` envs per worker process, their frames
  drawn in one tiled pass): the same in ``ceil(n / K)`` workers, each stepping ``K`` envs one after another /
  drawing ``K`` different states of the task into one :class:`~hindex_sb3.envs.rendering.TiledRenderer` per round.
  ``physics@n[k=K,t=T]`` - for ``shm*K/T`` (each worker steps its ``K`` envs in ``T`` threads): the same, each
  worker stepping ``K`` physics-only envs through the worker's own threaded loop.
* ``worker@n[k=K]`` / ``worker@n[k=K,t=T]`` - the env side of those workers whole: each steps ``K`` pixel envs
  (in ``T`` threads) and draws their frames in its tiled pass, through the worker's own code, without its pipe.
  ``worker_over_serial`` (per row) is its rate over that of physics and drawing one after the other: above 1 the
  worker draws some frames while its threads still step (``T`` > 1 pipelines them).
* ``transport[V]`` - observations of the pixel env's shape (a constant uint8 frame + proprio) stepped through
  DAPG's own per-env sampler (:class:`~hindex_sb3.dapg.rollout.EpisodeRunner`) over a VecEnv of kind ``V`` whose
  envs do nothing else: what it costs to bring ``n`` frames to the trainer (for ``dummy``: Python overhead only).
* ``encoder`` - the DAPG policy's feature extractor on a batch of ``n`` real frames + proprio, exactly as a
  rollout step calls it (numpy -> tensor, the run's settings: channels-last, CUDA graphs on a GPU, and an EMA-BN
  per-frame update armed before each call when the momentum is > 0), in the run's ``--precision`` (fp32 default).
* ``policy`` - DAPG's action sampling on those features alone (``DAPG._sample_actions`` with the encoder replaced
  by the cached features: on the CPU the head runs row by row, as DAPG does, plus per-episode noise).
* ``trainer`` (not a part: it contains ``transport[dummy]`` and ``policy``) - DAPG's own lockstep rollout loop
  (``collect_rollouts``: batching the observations, action sampling, recording the paths, callbacks) over ``n``
  envs in this process that return a constant frame, with the encoder's output cached: the most frames/s this
  process's own per-step work lets through, whatever the envs and the encoder. Where it is below the slowest part,
  the trainer's Python is the limit.

Wholes (per VecEnv kind ``V``, a model built by :mod:`hindex_sb3.runs` as ``hindex train`` builds it, random
encoder weights, ``--demos`` with ``--num-demos``; BC runs once before the rounds):

* ``rollout[V]`` - frames of one ``collect_rollouts`` (``--trajectories`` whole episodes) / DAPG's own
  ``last_timings["rollout"]`` (the stepping loop after the episodes' first resets);
* ``iteration[V]`` - the same frames / wall clock of ``learn(n_iterations=1)`` (resets, rollout, update, logging).
* ``act_in_rollout[V]`` (not a component, a diagnosis) - the same frames / DAPG's ``last_timings["policy_forward"]``:
  encoder + policy as they ran inside the rollout. Slower than ``encoder`` and ``policy`` alone means the rollout's
  other work (renderer threads, env workers) slows the encoder down, rather than adding time beside it.
  ``act_share_of_rollout`` = ``rollout / act_in_rollout``, the share of the rollout's time spent acting, is timed in
  the same window as the rollout: on a machine shared with other jobs it is the steadier estimate of
  ``whole / encoder`` (where the encoder is the slowest part).

``slowest[V]`` = min over the components that run in that configuration: ``physics`` and ``render`` at ``@1`` for
``dummy`` (the envs step one after another in the trainer process), at ``@n`` for one env per worker and at
``@n[k=K]`` for ``shm*K`` (physics at ``@n[k=K,t=T]`` for ``shm*K/T``),
``transport[V]``, ``encoder`` and ``policy``. The goal is the ratio ``whole / slowest``: 1 means the rollout runs at
the speed of its slowest part. It is computed from the medians, and also within each round
(``<whole>_over_slowest_paired``: the median of the rounds' own ratios, robust to load that changes between rounds;
the bracketing also cancels drift within a round that is linear in time). ``serial`` = ``1 / sum(1 / rate)`` over
the same components is what the whole would be if nothing overlapped (the dummy case); ``<whole>_beyond_serial_ms``
= ``1000 * (1 / whole - 1 / serial)`` is the time per frame spent outside every measured part (Python bookkeeping,
copies, resets; negative when parts overlap, as env workers and the encoder can). Absolute numbers only hold on the
machine that measured them.

On a GPU, rendering (the workers' EGL contexts) and encoding (this process's CUDA context) run on the same chip, and
a GPU time-slices the contexts of different processes rather than running them side by side (NVIDIA's MPS shares a
GPU between CUDA processes only, not OpenGL ones), so those two parts add up even when the rollout overlaps them.
Rows measured on CUDA therefore also give ``render_plus_encoder`` = ``1 / (1 / render + 1 / encoder)``, the rate
of that shared GPU when both are its work, and ``<whole>_over_render_plus_encoder``.

Prints progress to stderr, one JSON document (also written atomically to ``--json`` after each task) and a
markdown table.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import partial
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import hindex_sb3
from hindex_sb3._io import to_json_text, write_json
from hindex_sb3.dapg.rollout import EpisodeRunner, noise_generator
from hindex_sb3.demonstrators import available_demonstrators
from hindex_sb3.ema_bn import set_ema_momentum
from hindex_sb3.encoders import RandomWeightsWarning
from hindex_sb3.envs.rendering import TiledRenderer
from hindex_sb3.extractor import HIndexExtractor
from hindex_sb3.runs.build import build_model, make_env_kwargs, make_venv, policy_setup
from hindex_sb3.runs.config import TrainConfig, TrainingError, resolve_task
from hindex_sb3.runs.demos import load_demos
from hindex_sb3.runs.paper import resolve_settings
from hindex_sb3.vec_env import SharedMemoryVecEnv
from hindex_sb3.vec_env.shm import _Worker

# workers of SubprocVecEnv unpickle the probe env; this file is not an importable module there
cloudpickle.register_pickle_by_value(sys.modules[__name__])

COMPONENTS = ("physics", "render", "transport", "encoder", "policy")
WHOLES = ("rollout", "iteration")
#: a ``--vec-env`` kind with this suffix runs the wholes with DAPG's ``overlap`` (two env groups in flight)
OVERLAP = "+overlap"
#: ``shm*K``: SharedMemoryVecEnv with ``K`` envs per worker process (frames drawn in one tiled pass);
#: ``shm*K/T``: the same, each worker stepping its envs' physics in ``T`` threads
PER_WORKER = "*"
THREADS = "/"
#: VecEnv kinds whose probe (transport) env this script can build; any kind hindex_sb3.runs knows runs the wholes
PROBE_VEC_ENVS: dict[str, type[VecEnv]] = {
    "dummy": DummyVecEnv,
    "subproc": SubprocVecEnv,
    "shm": SharedMemoryVecEnv,
}

PRESETS: dict[str, dict[str, Any]] = {
    # the 2-core CPU machine's realistic setting (a few minutes)
    "cpu": dict(tasks=["Door"], n_envs=2, image_size=224, vec_env=["dummy", "subproc"], repeats=3),
    # CI-sized: small frames, short episodes, one counted round
    "quick": dict(tasks=["Door"], n_envs=2, image_size=64, horizon=16, steps=24, repeats=1, num_demos=1),
    # one GPU machine, door and a DexMV task at 224 px (H200, 16 cores: 2.6 min per task with --repeats 1)
    "gpu": dict(
        tasks=["Door", "Pour"],
        n_envs=32,
        image_size=224,
        vec_env=["shm", "shm+overlap", "subproc"],
        repeats=2,
        device="cuda",
    ),
}
DEFAULTS: dict[str, Any] = {
    "tasks": ["Door"],
    "n_envs": 2,
    "trajectories": None,  # = n_envs: one episode per env
    "image_size": 224,
    "horizon": None,  # the paper's per task
    "vec_env": ["dummy", "subproc"],
    "device": "cpu",
    "repeats": 3,
    "steps": 200,
    "encoder": "hindex",
    "demos": "scripted",
    "num_demos": 1,
    "ema_momentum": None,  # the paper's per task
    "precision": "fp32",
}


# ---------------------------------------------------------------------------------------------- worker-side probe
class ProbeEnv(gym.Env):
    """What a component measurement runs in a worker: constant observations of the pixel env's shape (transport)
    and timing loops over a physics-only and a pixel env of the task, built on first use."""

    def __init__(self, env_id: str, pixel_kwargs: dict, state_kwargs: dict, episode_steps: int | None = None) -> None:
        self.env_id, self.pixel_kwargs, self.state_kwargs = env_id, pixel_kwargs, state_kwargs
        self.episode_steps, self._t = episode_steps, 0  # the trainer probe's episodes end (transport's never do)
        self._pixel_env: gym.Env | None = None
        self._state_env: gym.Env | None = None
        self._tiled: Any = None
        self._threaded: _Worker | None = None
        self._worker: _Worker | None = None
        spec_env = gym.make(f"hindex_sb3:{env_id}", **pixel_kwargs)
        self.observation_space, self.action_space = spec_env.observation_space, spec_env.action_space
        spec_env.close()
        rng = np.random.default_rng(0)
        self._obs = {k: rng.integers(0, 255, s.shape).astype(s.dtype) for k, s in self.observation_space.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs, {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self._t += 1
        return self._obs, 0.0, False, self.episode_steps is not None and self._t >= self.episode_steps, {}

    def time_physics(self, n: int, seed: int) -> float:
        if self._state_env is None:
            self._state_env = gym.make(f"hindex_sb3:{self.env_id}", **self.state_kwargs)
        env = self._state_env
        env.reset(seed=seed)
        actions = np.random.default_rng(seed).uniform(-1, 1, (n, *env.action_space.shape)).astype(np.float32)
        start = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        return time.perf_counter() - start

    def time_physics_threaded(self, n: int, seed: int, k: int, t: int) -> float:
        """``n`` steps of ``k`` physics-only envs, shared out over ``t`` threads as a worker of ``shm*k/t`` does."""
        return self._time_worker(False, n, seed, k, t)

    def time_worker(self, n: int, seed: int, k: int, t: int) -> float:
        """``n`` steps of a worker of ``shm*k/t`` without its pipe: ``k`` pixel envs stepped (in ``t`` threads) and
        their frames drawn in its tiled pass, as the worker does (pipelined when ``t`` > 1)."""
        return self._time_worker(True, n, seed, k, t)

    def _time_worker(self, pixels: bool, n: int, seed: int, k: int, t: int) -> float:
        """``n`` steps of ``k`` envs through the worker's own code (built on first use, kept for the next round)."""
        attr = "_worker" if pixels else "_threaded"
        worker = getattr(self, attr)
        if worker is None or len(worker.envs) != k or worker.threads != t:
            if worker is not None:
                worker.close()
            kwargs = self.pixel_kwargs if pixels else self.state_kwargs
            envs = [gym.make(f"hindex_sb3:{self.env_id}", **kwargs) for _ in range(k)]
            worker = _Worker(envs, 0, tiled=pixels, threads=t)
            setattr(self, attr, worker)
        for i, env in enumerate(worker.envs):
            env.reset(seed=seed + i)
        worker._draw()  # the first frames (nothing to draw without pixels)
        rng = np.random.default_rng(seed)
        actions = rng.uniform(-1, 1, (n, k, *worker.envs[0].action_space.shape)).astype(np.float32)

        def step(i: int, env: gym.Env, a: np.ndarray) -> None:
            _, _, terminated, truncated, _ = env.step(a[i])
            if terminated or truncated:
                env.reset()

        start = time.perf_counter()
        for a in actions:
            worker._run(range(k), partial(step, a=a))
            worker._draw()
        return time.perf_counter() - start

    def time_render(self, n: int, seed: int) -> float:
        if self._pixel_env is None:
            self._pixel_env = gym.make(f"hindex_sb3:{self.env_id}", **self.pixel_kwargs)
        self._pixel_env.reset(seed=seed)
        base = self._pixel_env.unwrapped
        renderer = base._get_renderer()
        start = time.perf_counter()
        for _ in range(n):
            renderer.render_chw(base.data, base.camera_id)
        return time.perf_counter() - start

    def time_render_tiled(self, rounds: int, seed: int, k: int) -> float:
        """``rounds`` tiled passes over ``k`` different states of the task (what a worker of ``shm*k`` draws)."""
        if self._pixel_env is None:
            self._pixel_env = gym.make(f"hindex_sb3:{self.env_id}", **self.pixel_kwargs)
        env, base = self._pixel_env, self._pixel_env.unwrapped
        scenes = []
        for i in range(k):
            env.reset(seed=seed + i)
            rng = np.random.default_rng(seed + i)
            for _ in range(10):
                env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            scenes.append((copy.deepcopy(base.model), copy.deepcopy(base.data), base.camera_id))
        if self._tiled is None or self._tiled.tiles != k:
            if self._tiled is not None:
                self._tiled.close()
            size = (base.image_height, base.image_width)
            self._tiled = TiledRenderer(copy.deepcopy(base.model), *size, k)
        out = [np.empty((3, base.image_height, base.image_width), np.uint8) for _ in range(k)]
        start = time.perf_counter()
        for _ in range(rounds):
            self._tiled.render_into(scenes, out)
        return time.perf_counter() - start

    def close(self) -> None:
        if self._tiled is not None:
            self._tiled.close()
        for worker in (self._threaded, self._worker):
            if worker is not None:
                worker.close()
        for env in (self._pixel_env, self._state_env):
            if env is not None:
                env.close()


# ---------------------------------------------------------------------------------------------- setup
def _config(task: str, kind: str, opts: dict[str, Any]) -> tuple[TrainConfig, str]:
    """The run's settings as ``hindex train`` would resolve them (paper horizon, camera, momentum)."""
    env_id = resolve_task(task)
    demos = opts["demos"]
    if demos == "scripted" and env_id not in available_demonstrators():
        demos = "none"  # e.g. pour: no scripted demonstrator; the update then has no demo term
    cfg = TrainConfig(
        task=task,
        encoder=opts["encoder"],
        weights="random",
        demos=demos,
        num_demos=opts["num_demos"],
        trajectories=opts["trajectories"] or opts["n_envs"],
        n_envs=opts["n_envs"],
        **_venv_settings(_base(kind)),
        device=opts["device"],
        image_size=opts["image_size"],
        horizon=opts["horizon"],
        ema_momentum=opts["ema_momentum"],
        precision=opts["precision"],
        iterations=1,
        video=False,
        progress_bar=False,
    )
    return resolve_settings(cfg, env_id), env_id


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TaskBench:
    """Everything measured on one task: the probe VecEnvs, one model, the rollout VecEnvs."""

    def __init__(self, task: str, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.n = opts["n_envs"]
        self.steps = opts["steps"]
        self.cfg, self.env_id = _config(task, opts["vec_env"][0], opts)
        pixel_kwargs = make_env_kwargs(self.cfg)
        state_kwargs = make_env_kwargs(self.cfg, obs_mode="state")
        make_probe = partial(ProbeEnv, self.env_id, pixel_kwargs, state_kwargs)
        self.local_probe = make_probe()
        bases = [_base(v) for v in opts["vec_env"]]
        probe_kinds = list(dict.fromkeys(v for v in bases if _split_kind(v)[0] in PROBE_VEC_ENVS))
        one_env_workers = any(v != "dummy" and _split_kind(v)[1] == 1 for v in bases)
        if one_env_workers and "subproc" not in probe_kinds:  # (shm*K kinds have their own rates, below)
            probe_kinds.append("subproc")  # the @n (parallel) physics and render rates
        self.probes = {v: _probe_venv(v, [make_probe] * self.n) for v in probe_kinds}
        self.trainer_probe = DummyVecEnv([partial(make_probe, episode_steps=self.steps)] * self.n)
        per_worker = sorted({_split_kind(b)[1:] for b in bases if _split_kind(b)[1] > 1})
        # the grouped physics and render rates: one probe per worker of shm*k(/t), which runs k envs' worth of each
        self.group_probes = {kt: SubprocVecEnv([make_probe] * -(-self.n // kt[0])) for kt in per_worker}
        # one VecEnv per worker kind: shm and shm+overlap step the same envs (the rollout mode is DAPG's setting)
        by_base = {b: make_venv(self.cfg.replace(**_venv_settings(b)), self.env_id) for b in bases_of(opts["vec_env"])}
        self.venvs: dict[str, VecEnv] = {v: by_base[_base(v)] for v in opts["vec_env"]}
        self.model = self._model(self.venvs[opts["vec_env"][0]])
        self.obs_batch = self._real_frames(pixel_kwargs)
        self.features = self._encode()

    def _model(self, venv: VecEnv) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            demos = load_demos(self.cfg, self.env_id)
            model = build_model(self.cfg, venv, demos, policy_spec=policy_setup(self.cfg))
        model.set_logger(Logger(folder=None, output_formats=[]))
        if model.demos and model.bc_epochs > 0:
            model.pretrain_bc()
        self.extractors = [m for m in model.policy.modules() if isinstance(m, HIndexExtractor) and m.has_ema_bn]
        self.momentum = float(self.cfg.ema_momentum or 0.0)
        if self.momentum:
            for extractor in self.extractors:
                set_ema_momentum(extractor.encoder, self.momentum)
        return model

    def _callbacks(self) -> list:
        """The run's callbacks that touch the rollout (``hindex train`` adds EMA-BN when the momentum is > 0)."""
        if not (self.momentum and self.extractors):
            return []
        from hindex_sb3.callbacks import EMABatchNormCallback

        return [EMABatchNormCallback(self.momentum)]

    def _real_frames(self, pixel_kwargs: dict) -> dict[str, np.ndarray]:
        env = gym.make(self.env_id, **pixel_kwargs)
        try:
            frames = [env.reset(seed=i)[0] for i in range(self.n)]
        finally:
            env.close()
        return {k: np.stack([f[k] for f in frames]) for k in frames[0]}

    def close(self) -> None:
        venvs = [*self.probes.values(), self.trainer_probe, *self.group_probes.values(), *self.venvs.values()]
        for venv in {id(v): v for v in venvs}.values():
            venv.close()
        self.local_probe.close()

    # -------------------------------------------------------------------------------------- one measurement each
    def _encode(self) -> torch.Tensor:
        model = self.model
        if self.momentum:
            for extractor in self.extractors:
                extractor.arm_bn_update(self.obs_batch)
        with torch.no_grad():
            return model.policy.features(model._obs_to_tensor(self.obs_batch))

    def measure_components(self, seed: int) -> dict[str, float]:
        n, steps, rates = self.n, self.steps, {}
        rates["physics@1"] = 5 * steps / self.local_probe.time_physics(5 * steps, seed)
        rates["render@1"] = steps / self.local_probe.time_render(steps, seed)
        if "subproc" in self.probes:
            workers = self.probes["subproc"]
            rates["physics@n"] = n * 5 * steps / max(workers.env_method("time_physics", 5 * steps, seed))
            rates["render@n"] = n * steps / max(workers.env_method("time_render", steps, seed))
        for (k, t), workers in self.group_probes.items():
            frames = workers.num_envs * k * steps  # each worker runs k envs' worth
            if t == 1:
                times = workers.env_method("time_physics", 5 * steps * k, seed)
            else:
                times = workers.env_method("time_physics_threaded", 5 * steps, seed, k, t)
            rates[_at("physics", k, t)] = 5 * frames / max(times)
            if _at("render", k, t) not in rates:
                rates[_at("render", k, t)] = frames / max(workers.env_method("time_render_tiled", steps, seed, k))
            rates[_at("worker", k, t)] = frames / max(workers.env_method("time_worker", steps, seed, k, t))
        for kind, probe in self.probes.items():
            if kind in bases_of(self.opts["vec_env"]):
                rates[f"transport[{kind}]"] = self._transport(probe, steps)
        calls = max(steps // 10, 2)
        rates["encoder"] = n * calls / self._timed(self._encode, calls)
        rates["policy"] = n * calls / self._timed(self._policy_head, calls)
        rates["trainer"] = self._trainer()
        return rates

    def _timed(self, fn: Callable[[], Any], calls: int) -> float:
        self.model.policy.set_training_mode(False)
        device = self.model.device
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        return time.perf_counter() - start

    def _transport(self, probe: VecEnv, steps: int) -> float:
        runner = EpisodeRunner(probe)
        runner.reset({j: j for j in range(self.n)})
        action = np.zeros(probe.action_space.shape, np.float32)
        start = time.perf_counter()
        for _ in range(steps):
            runner.step(dict.fromkeys(range(self.n), action))
        return self.n * steps / (time.perf_counter() - start)

    def _trainer(self) -> float:
        """DAPG's lockstep rollout loop over envs that do nothing, with the encoder's output cached: the frames/s
        this process's own per-step work (batching, action sampling, bookkeeping, callbacks) allows."""
        model = self.model
        saved = model.n_trajectories, model.num_timesteps, model.overlap
        model.n_trajectories, model.overlap = self.n, False  # n episodes on n envs: every batch holds n frames
        if model.ep_info_buffer is None:  # learn() makes them; round 0's components run before the first learn
            model.ep_info_buffer = collections.deque(maxlen=model._stats_window_size)
            model.ep_success_buffer = collections.deque(maxlen=model._stats_window_size)
        callback = CallbackList([])
        callback.init_callback(model)
        try:
            with self._cached_features():
                model.collect_rollouts(self.trainer_probe, callback, None, 0)
        finally:
            model.n_trajectories, model.num_timesteps, model.overlap = saved
        _sync(model.device)
        return self.n * self.steps / model.last_timings["rollout"]

    def _policy_head(self) -> np.ndarray:
        with self._cached_features():
            episodes = [types.SimpleNamespace(noise=noise_generator(j)) for j in range(self.n)]
            return self.model._sample_actions(self.obs_batch, episodes)[0]  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _cached_features(self) -> Iterator[None]:
        """DAPG's action sampling with the encoder (and the numpy -> tensor step) replaced by stored features."""
        policy, model = self.model.policy, self.model
        policy.features = lambda obs: self.features  # type: ignore[method-assign]
        model._obs_to_tensor = lambda obs: obs  # type: ignore[method-assign]
        try:
            yield
        finally:
            del policy.features, model._obs_to_tensor

    def measure_round(self, seed: int) -> dict[str, float]:
        """The components just before and just after the wholes, each at the rate of the two runs' mean time: load
        that drifts within a round then affects the parts as it affected the wholes between them."""
        before = self.measure_components(seed)
        wholes = self.measure_wholes()
        after = self.measure_components(seed)
        return wholes | {k: 2.0 / (1.0 / before[k] + 1.0 / after[k]) for k in before}

    def measure_wholes(self) -> dict[str, float]:
        rates = {}
        for kind, venv in self.venvs.items():
            model = self.model
            model.set_env(venv, force_reset=False)
            model.overlap = kind.endswith(OVERLAP)
            before = model.num_timesteps
            start = time.perf_counter()
            model.learn(n_iterations=1, callback=self._callbacks() or None, reset_num_timesteps=False)
            _sync(model.device)
            wall = time.perf_counter() - start
            frames = model.num_timesteps - before
            rates[f"rollout[{kind}]"] = frames / model.last_timings["rollout"]
            rates[f"act_in_rollout[{kind}]"] = frames / model.last_timings["policy_forward"]
            rates[f"iteration[{kind}]"] = frames / wall
            print(f"    {kind}: {frames} frames, iteration {wall:.1f} s", file=sys.stderr, flush=True)
        return rates


def _base(kind: str) -> str:
    """``shm+overlap`` -> ``shm``: the VecEnv kind, without the rollout mode."""
    return kind.removesuffix(OVERLAP)


def _split_kind(base: str) -> tuple[str, int, int]:
    """``shm*16/4`` -> ``("shm", 16, 4)``; ``shm*4`` -> ``("shm", 4, 1)``; ``shm`` -> ``("shm", 1, 1)``."""
    name, _, grouping = base.partition(PER_WORKER)
    if not grouping:
        return name, 1, 1
    k, _, t = grouping.partition(THREADS)
    t = t or "1"
    if name != "shm" or not (k.isdigit() and t.isdigit()) or not 1 <= int(t) <= int(k):
        raise SystemExit(
            f"--vec-env {base!r}: envs per worker go with shm only, as shm*K or shm*K/T (T threads, 1 <= T <= K)"
        )
    return name, int(k), int(t)


def _at(part: str, k: int, t: int) -> str:
    """The component key of ``part`` (physics, render) in a worker of ``k`` envs stepped in ``t`` threads."""
    if k == 1:
        return f"{part}@n"
    return f"{part}@n[k={k},t={t}]" if part in ("physics", "worker") and t > 1 else f"{part}@n[k={k}]"


def _venv_settings(base: str) -> dict[str, Any]:
    """The TrainConfig fields that build the VecEnv of kind ``base``."""
    name, k, t = _split_kind(base)
    return {"vec_env": name, "envs_per_worker": k, "threads_per_worker": t}


def _probe_venv(base: str, env_fns: list) -> VecEnv:
    """The transport probe of kind ``base``: its envs do no physics, so a worker's threads would change nothing."""
    name, k, _ = _split_kind(base)
    return PROBE_VEC_ENVS[name](env_fns, envs_per_worker=k) if k > 1 else PROBE_VEC_ENVS[name](env_fns)


def bases_of(kinds: list[str]) -> set[str]:
    return {_base(k) for k in kinds}


# ---------------------------------------------------------------------------------------------- summary
def summarise(rates: dict[str, float], vec_envs: list[str], shared_gpu: bool = False) -> list[dict[str, Any]]:
    """One row per VecEnv kind: the components that run there, the wholes, the slowest part and the ratios.

    :param shared_gpu: render and encoder ran on one GPU (a CUDA run): also their combined rate and the ratios to it.
    """
    rows = []
    for kind in vec_envs:
        _, k, t = _split_kind(_base(kind))
        physics, render = ("physics@1", "render@1") if kind == "dummy" else (_at("physics", k, t), _at("render", k, t))
        parts = {"physics": rates[physics], "render": rates[render], "encoder": rates["encoder"]}
        parts["policy"] = rates["policy"]
        if f"transport[{_base(kind)}]" in rates:
            parts["transport"] = rates[f"transport[{_base(kind)}]"]
        slowest = min(parts, key=parts.__getitem__)
        row: dict[str, Any] = {"vec_env": kind, "components": parts, "slowest": slowest}
        row["slowest_rate"] = parts[slowest]
        row["serial"] = 1.0 / sum(1.0 / r for r in parts.values())
        row["act_in_rollout"] = rates.get(f"act_in_rollout[{kind}]")
        row["trainer"] = rates.get("trainer")  # not a part: it contains transport[dummy] and policy
        for whole in WHOLES:
            row[whole] = rates[f"{whole}[{kind}]"]
            row[f"{whole}_over_slowest"] = row[whole] / parts[slowest]
            row[f"{whole}_beyond_serial_ms"] = 1e3 * (1.0 / row[whole] - 1.0 / row["serial"])
        # the share of the rollout's own time spent in encoder + policy: timed in the same window as the rollout,
        # so, unlike the ratios above, load that comes and goes on a shared machine does not move it
        row["act_share_of_rollout"] = row["rollout"] / row["act_in_rollout"] if row["act_in_rollout"] else None
        if _at("worker", k, t) in rates and k > 1:  # one worker's env side against its physics and drawing in turn
            row["worker"] = rates[_at("worker", k, t)]
            row["worker_over_serial"] = row["worker"] * (1.0 / parts["physics"] + 1.0 / parts["render"])
        if shared_gpu:
            row["render_plus_encoder"] = 1.0 / (1.0 / parts["render"] + 1.0 / parts["encoder"])
            for whole in WHOLES:
                row[f"{whole}_over_render_plus_encoder"] = row[whole] / row["render_plus_encoder"]
        rows.append(row)
    return rows


def bench_task(task: str, opts: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    bench = TaskBench(task, opts)
    samples: dict[str, list[float]] = {}
    try:
        for rnd in range(opts["repeats"] + 1):  # round 0 warms up (encoder, renderers, graphs) and is dropped
            rates = bench.measure_round(seed=rnd)
            print(
                f"  {task} round {rnd}: " + ", ".join(f"{k} {v:,.1f}" for k, v in rates.items()),
                file=sys.stderr,
                flush=True,
            )
            if rnd:
                for key, value in rates.items():
                    samples.setdefault(key, []).append(value)
    finally:
        bench.close()
    medians = {key: statistics.median(values) for key, values in samples.items()}
    shared_gpu = torch.device(opts["device"]).type == "cuda"
    rows = summarise(medians, opts["vec_env"], shared_gpu)
    per_round = [
        summarise({k: v[i] for k, v in samples.items()}, opts["vec_env"], shared_gpu) for i in range(opts["repeats"])
    ]
    for i, row in enumerate(rows):  # ratios within each round: load that drifts between rounds cancels out
        for whole in WHOLES:
            row[f"{whole}_over_slowest_paired"] = statistics.median(r[i][f"{whole}_over_slowest"] for r in per_round)
    cfg = bench.cfg
    return {
        "env_id": bench.env_id,
        "settings": {
            "horizon": cfg.horizon,
            "trajectories": cfg.trajectories,
            "camera": cfg.camera,
            "ema_momentum": cfg.ema_momentum,
            "demos": cfg.demos,
            "num_demos": cfg.num_demos if cfg.demos != "none" else 0,
            "frames_per_iteration": cfg.horizon * cfg.trajectories,
        },
        "rates": medians,
        "samples": samples,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _row_cells(row: dict[str, Any]) -> list[str]:
    cells = [f"{row['components'][c]:,.1f}" if c in row["components"] else "-" for c in COMPONENTS]
    cells += [f"{row['rollout']:,.1f}", f"{row['iteration']:,.1f}", row["slowest"]]
    cells += [f"{row[f'{w}_over_slowest']:.2f} ({row[f'{w}_over_slowest_paired']:.2f})" for w in WHOLES]
    cells += [f"{row['serial']:,.1f}", f"{row['rollout_beyond_serial_ms']:.1f}"]
    act = f"{row['act_in_rollout']:,.1f} ({row['act_share_of_rollout']:.2f})" if row["act_in_rollout"] else "-"
    return [*cells, act, f"{row['trainer']:,.1f}" if row.get("trainer") else "-"]


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    head = (
        f"{meta['device']}, {meta['cpu_count']} CPUs, torch threads {meta['torch_threads']}, n_envs {meta['n_envs']}, "
        f"{meta['image_size']} px, encoder {meta['encoder']}, {meta['repeats']} rounds (medians)"
    )
    columns = ["task", "vec env", *COMPONENTS, "rollout", "iteration", "slowest", "rollout / slowest (paired)"]
    columns += ["iteration / slowest (paired)", "serial", "rollout beyond serial, ms/frame"]
    columns += ["encoder + policy in the rollout (share of rollout time)", "trainer (its own loop alone)"]
    lines = [head, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for task in doc["tasks"].values():
        name = task["env_id"].split("/")[-1].removesuffix("-v0")
        for row in task["rows"]:
            lines.append(f"| {name} | {row['vec_env']} | " + " | ".join(_row_cells(row)) + " |")
    parts = ("physics@", "render@", "worker@")
    alone = sorted({k for t in doc["tasks"].values() for k in t["rates"] if k.startswith(parts)})
    alone.sort(key=lambda k: ([k.startswith(p) for p in parts].index(True), len(k), k))  # @1, @n, @n[k]
    lines += ["", "| task | " + " | ".join(alone) + " |", "|---" * (len(alone) + 1) + "|"]
    for task in doc["tasks"].values():
        r = task["rates"]
        cells = [f"{r[k]:,.1f}" if k in r else "-" for k in alone]
        lines.append(f"| {task['env_id'].split('/')[-1].removesuffix('-v0')} | " + " | ".join(cells) + " |")
    gpu_rows = [(t, r) for t in doc["tasks"].values() for r in t["rows"] if "render_plus_encoder" in r]
    if gpu_rows:
        lines += ["", "| task | vec env | render + encoder on one GPU | rollout / it | iteration / it |"]
        lines.append("|---|---|---|---|---|")
        for task, row in gpu_rows:
            name = task["env_id"].split("/")[-1].removesuffix("-v0")
            lines.append(
                f"| {name} | {row['vec_env']} | {row['render_plus_encoder']:,.1f} | "
                f"{row['rollout_over_render_plus_encoder']:.2f} | {row['iteration_over_render_plus_encoder']:.2f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="settings below unless given")
    p.add_argument("--quick", action="store_true", help="the CI-sized preset (same as --preset quick)")
    p.add_argument("--tasks", nargs="+", default=None, help="e.g. Door Pour (any name `hindex envs` lists)")
    p.add_argument("--n-envs", type=int, default=None, help="envs stepped in lockstep = encoder batch size")
    p.add_argument("--trajectories", type=int, default=None, help="episodes per DAPG iteration (default n-envs)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--horizon", type=int, default=None, help="episode length (default: the paper's)")
    p.add_argument(
        "--vec-env",
        nargs="+",
        default=None,
        help="dummy, subproc, shm, shm*K (K envs per worker, frames drawn tiled), shm*K/T (their physics in T "
        "threads); a worker kind + '+overlap' "
        "(shm+overlap, shm*4+overlap) runs DAPG with overlap=True",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1")
    p.add_argument("--repeats", type=int, default=None, help="counted rounds (one more warms up)")
    p.add_argument("--steps", type=int, default=None, help="steps per component measurement (encoder: steps/10)")
    p.add_argument("--encoder", default=None, help="a registered encoder (random weights)")
    p.add_argument("--demos", default=None, help="scripted (none where a task has no demonstrator) or none")
    p.add_argument("--num-demos", type=int, default=None)
    p.add_argument("--ema-momentum", type=float, default=None, help="EMA-BN momentum (default: the paper's)")
    p.add_argument("--precision", default=None, help="encoder precision: fp32 (default) or bf16")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="also write the JSON document here (after each task)")
    return p


def options(argv: list[str] | None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Given flags, else the preset's value, else the default; checked before any work."""
    args = _parser().parse_args(argv)
    preset = PRESETS["quick" if args.quick else args.preset] if (args.quick or args.preset) else {}
    opts = {k: v if (v := getattr(args, k)) is not None else preset.get(k, d) for k, d in DEFAULTS.items()}
    for name in ("n_envs", "image_size", "repeats", "steps", "num_demos"):
        if not isinstance(opts[name], int) or opts[name] < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be a positive integer, got {opts[name]!r}")
    if opts["steps"] < 10:
        raise SystemExit(f"--steps must be at least 10, got {opts['steps']}")
    if opts["precision"] not in ("fp32", "bf16"):
        raise SystemExit(f"--precision must be fp32 or bf16, got {opts['precision']!r}")
    if opts["demos"] not in ("scripted", "none"):
        raise SystemExit(f"--demos must be scripted or none, got {opts['demos']!r}")
    if opts["device"].startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {opts['device']}: no CUDA device here")
    try:
        for task in opts["tasks"]:
            for kind in opts["vec_env"]:
                _config(task, kind, opts)
    except TrainingError as err:
        raise SystemExit(f"pixel_throughput: {err}") from None
    return opts, args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts, args = options(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(opts["device"])
    doc: dict[str, Any] = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "hindex_sb3": hindex_sb3.__version__,
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "argv": list(sys.argv[1:] if argv is None else argv),
            "loadavg_before": list(os.getloadavg()),
            **{k: opts[k] for k in ("n_envs", "image_size", "encoder", "precision", "repeats", "steps", "vec_env")},
        },
        "tasks": {},
    }
    for task in opts["tasks"]:
        result = bench_task(task, opts)
        doc["tasks"][result["env_id"]] = result
        doc["meta"]["loadavg_after"] = list(os.getloadavg())
        if args.json:
            write_json(args.json, doc)
    check_finite(doc)
    print(to_json_text(doc))
    print(markdown(doc))
    return doc


def check_finite(doc: dict[str, Any]) -> None:
    """Every rate must be a positive finite number: a zero-time measurement would be a broken benchmark."""
    for task in doc["tasks"].values():
        for key, value in task["rates"].items():
            if not (math.isfinite(value) and value > 0):
                raise RuntimeError(f"{task['env_id']}: rate {key} = {value}")


if __name__ == "__main__":
    main()
