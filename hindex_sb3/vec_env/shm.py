"""``SharedMemoryVecEnv``: SB3's ``SubprocVecEnv`` with the camera frames passed through shared memory.

A ``SubprocVecEnv`` worker pickles every observation into its pipe and the main process unpickles it: for a
224x224x3 frame that is two copies and a pickle round trip per env step, paid while the encoder waits. Here each
worker writes its frame straight into one shared buffer of shape ``(n_envs, *frame_shape)`` per image key, allocated
once from the observation space, and the pipe carries only what is small: rewards, flags, infos and the non-image
parts of the observation (``proprio``). Frames are the observation parts that are ``uint8`` ``Box`` arrays of two or
more dimensions; anything else (float images included) travels through the pipe exactly as in ``SubprocVecEnv``, so
every observation space works, only the uint8 frames take the fast path.

What the caller receives is always a copy: SB3 keeps the observations of a step (``_last_obs``, rollout buffers)
while the workers already write the next step into the same buffer, so a view would be overwritten under it.
``info["terminal_observation"]`` is the pickled terminal observation (the buffer already holds the next episode's
first frame), as in ``SubprocVecEnv``. Rewards come back as ``SubprocVecEnv`` returns them (float64), so switching
between the two changes no number.

A worker may host several consecutive envs (``envs_per_worker``). With our pixel envs it then steps the physics of
all of them and draws all their frames in one :class:`~hindex_sb3.envs.rendering.TiledRenderer` pass with one
read-back, which on a GPU lifts the ~4,300 frames/s that one read-back per frame allows (the frames are the same,
bit for bit). The physics of those envs may run in ``threads_per_worker`` threads of the worker (MuJoCo's step
releases the GIL), so that few GL contexts with many scenes each do not also mean few cores stepping physics.

Besides the ``VecEnv`` API, :meth:`SharedMemoryVecEnv.reset_envs` and :meth:`SharedMemoryVecEnv.step_envs` drive
chosen envs in gymnasium's API without auto-reset, for DAPG's exact-episode sampler
(:class:`~hindex_sb3.dapg.rollout.EpisodeRunner`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import multiprocessing as mp
import operator
import os
import queue
import shutil
import time
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)
from stable_baselines3.common.vec_env.patch_gym import _patch_env
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

from hindex_sb3._validation import check_int

__all__ = [
    "DEFAULT_MAX_SHARED_BYTES",
    "FrameSlot",
    "SharedMemoryVecEnv",
    "frame_slots",
    "threading_problem",
    "tiling_problem",
]

#: Refuse shared buffers larger than this unless the caller raises it (32 GiB; 4096 envs of 224x224x3 need 0.6 GiB).
DEFAULT_MAX_SHARED_BYTES = 32 * 2**30

_SHM_DIR = "/dev/shm"  # POSIX shared memory lives in this tmpfs on Linux
_JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FrameSlot:
    """Where the frames of one observation key live in the shared buffer: ``(n_envs, *shape)`` at ``offset``.

    ``key`` is ``None`` when the whole observation (a ``Box`` space) is the frame.
    """

    key: str | None
    shape: tuple[int, ...]
    dtype: str
    offset: int

    def nbytes(self, n_envs: int) -> int:
        return n_envs * int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def view(self, buf: memoryview, n_envs: int) -> np.ndarray:
        return np.ndarray((n_envs, *self.shape), dtype=self.dtype, buffer=buf, offset=self.offset)


def _is_frame(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) >= 2


def frame_slots(space: spaces.Space, n_envs: int) -> list[FrameSlot]:
    """The parts of ``space`` that travel through shared memory, laid out one after the other (64-byte aligned)."""
    if _is_frame(space):
        candidates: list[tuple[str | None, spaces.Space]] = [(None, space)]
    elif isinstance(space, spaces.Dict):
        candidates = [(key, sub) for key, sub in space.spaces.items() if _is_frame(sub)]
    else:
        candidates = []
    slots, offset = [], 0
    for key, sub in candidates:
        slot = FrameSlot(key, tuple(int(d) for d in sub.shape), np.dtype(sub.dtype).str, offset)
        slots.append(slot)
        offset += -(-slot.nbytes(n_envs) // 64) * 64
    return slots


def _shared_size(slots: list[FrameSlot], n_envs: int) -> int:
    return slots[-1].offset + slots[-1].nbytes(n_envs) if slots else 0


def _check_size(size: int, max_bytes: int, space: spaces.Space, n_envs: int) -> None:
    """Refuse a buffer over the limit or over the free room of /dev/shm (there, writing would crash with SIGBUS)."""
    limit, where = max_bytes, "max_shared_bytes"
    if os.path.isdir(_SHM_DIR) and shutil.disk_usage(_SHM_DIR).free < limit:
        limit, where = shutil.disk_usage(_SHM_DIR).free, f"the free space of {_SHM_DIR}"
    if size > limit:
        raise ValueError(
            f"observation_space {space} needs {size:,} bytes of shared memory for {n_envs} envs, more than {where} "
            f"({limit:,} bytes): use fewer envs or smaller images (or raise max_shared_bytes)"
        )


class _FrameWriter:
    """The worker's side for one env: writes its frames into its row of the shared buffer, returns the rest."""

    def __init__(self, space: spaces.Space, shm: shared_memory.SharedMemory | None, slots: list[FrameSlot],
                 n_envs: int, row: int) -> None:  # fmt: skip
        self.space, self.slots = space, slots
        self.views = {s.key: s.view(shm.buf, n_envs)[row] for s in slots} if shm is not None else {}

    def put(self, obs: Any, drawn: np.ndarray | None = None) -> Any:
        """Write ``obs``'s frames; ``drawn`` is the buffer a tiled pass drew this env's frame into, if any."""
        if drawn is not None and not any((obs if s.key is None else obs[s.key]) is drawn for s in self.slots):
            raise RuntimeError(
                "a wrapper changed the pixel observation, so the frame drawn for this env in its worker's tiled "
                "pass would not be the one returned: build the SharedMemoryVecEnv with tiled_render=False (or "
                "apply that wrapper as a VecEnvWrapper)"
            )
        for slot in self.slots:
            frame = np.asarray(obs if slot.key is None else obs[slot.key])
            if frame.shape != slot.shape:
                where = "observation" if slot.key is None else f"observation[{slot.key!r}]"
                raise ValueError(f"the env returned an {where} of shape {frame.shape}; its space says {slot.shape}")
            self.views[slot.key][...] = frame
        if not self.slots:
            return obs
        if isinstance(self.space, spaces.Dict):
            return {key: obs[key] for key in self.space.spaces if key not in self.views}
        return None


def _ours(bases: Sequence[Any]) -> bool:
    """Whether these unwrapped envs are hindex_sb3's (which can defer their frames to a tiled pass)."""
    return all(callable(getattr(b, "defer_frames", None)) for b in bases)


def tiling_problem(envs: Sequence[gym.Env]) -> str | None:
    """Why the frames of ``envs`` cannot be drawn in one tiled pass (``None`` when they can).

    They can when each env defers its frames (our ``HInDex/*`` pixel envs do: ``defer_frames``), all render in fast
    quality (the default) and all show one task at one image size: the GL context holds the first env's meshes and
    textures.
    """
    bases = [env.unwrapped for env in envs]
    if not _ours(bases):
        return "its envs do not defer their frames (only hindex_sb3's pixel envs do)"
    if any(getattr(b, "obs_mode", None) == "state" for b in bases):
        return "its envs observe no pixels (obs_mode='state')"
    if any(b.render_quality != "fast" for b in bases):
        return "its envs render in paper quality (multisampled frames are drawn one by one)"

    def signature(b: Any) -> tuple:
        m = b.model
        assets = (m.nmesh, m.nmeshvert, m.nmeshface, m.ntex, m.ntexdata, m.nmat, m.ngeom, m.nskin)
        return type(b), b.image_height, b.image_width, assets

    if len({signature(b) for b in bases}) > 1:
        return "its envs differ in task, image size or scene assets"
    return None


def threading_problem(envs: Sequence[gym.Env], tiled: bool) -> str | None:
    """Why the envs of one worker cannot step in threads (``None`` when they can).

    Stepping in threads is safe where a step touches nothing but its own env and draws no frame: a GL context is
    current in one thread at a time, so an env that renders inside ``step`` must stay in the worker's main thread.
    Our envs qualify when their frames are drawn in the worker's tiled pass, or when they observe no pixels.
    """
    bases = [env.unwrapped for env in envs]
    if not _ours(bases):
        return "its envs are not hindex_sb3's (only their steps are known to be safe in threads)"
    if not tiled and any(getattr(b, "obs_mode", None) != "state" for b in bases):
        return (
            "its envs draw their frames inside their step (a GL context cannot move between threads): use "
            "envs_per_worker > 1 with tiled rendering, or obs_mode='state'"
        )
    return None


class _EnvError(Exception):
    """An env's exception raised in a stepping thread, with the local index of the env that raised it."""

    def __init__(self, local: int, error: BaseException) -> None:
        super().__init__(local)
        self.local, self.error = local, error


class _TiledFrames:
    """Draws the deferred frames of one worker's envs in :class:`~hindex_sb3.envs.rendering.TiledRenderer` passes."""

    def __init__(self, envs: Sequence[gym.Env]) -> None:
        from hindex_sb3.envs.rendering import TiledRenderer

        self.bases = [env.unwrapped for env in envs]
        for base in self.bases:
            base.defer_frames()
        self.drawn: list[np.ndarray | None] = [None] * len(envs)  # where each env's last frame was drawn
        self._drawing: dict[int, np.ndarray] = {}  # env -> its frame buffer, drawn but not read back yet
        self._seconds = 0.0  # spent drawing those
        first = self.bases[0]
        self.renderer = TiledRenderer(copy.deepcopy(first.model), first.image_height, first.image_width, len(envs))

    def draw_one(self, i: int) -> None:
        """Draw env ``i``'s pending frame into the next tile now; it is read back at the next :meth:`flush`."""
        frame = self.bases[i].pending_frame()
        if frame is None or self._drawing.get(i) is frame[3]:  # nothing to draw, or drawn already
            return
        start = time.perf_counter()
        self.renderer.draw(frame[:3], frame[3])
        self._seconds += time.perf_counter() - start
        self._drawing[i] = frame[3]

    def flush(self) -> None:
        """Read the tiles drawn since the last flush back into their envs' frame buffers."""
        if not self._drawing:
            return
        start = time.perf_counter()
        self.renderer.flush()
        share = (self._seconds + time.perf_counter() - start) / len(self._drawing)
        for i, buffer in self._drawing.items():
            self.drawn[i] = buffer
            self.bases[i].frame_drawn(share)
        self._drawing, self._seconds = {}, 0.0

    def draw(self) -> None:
        """Draw every pending frame (those not drawn yet) and read them all back."""
        for i in range(len(self.bases)):
            self.draw_one(i)
        self.flush()

    def close(self) -> None:
        self.renderer.close()


class _Worker:
    """The envs of one worker process, answering ``(command, data)`` with ``("ok", reply)`` or ``("error", ...)``.

    The worker hosts envs ``first .. first + len(envs) - 1`` of the VecEnv. With ``tiled`` it draws the frames of
    all envs stepped by one command into one tiled buffer read back once, which is what makes several envs per
    worker pay on a GPU. With ``threads`` > 1 the steps and resets of one command run in that many threads, each
    taking a contiguous share of the envs (every env steps exactly as alone: nothing is shared); with ``tiled``, this
    thread meanwhile draws each env's frame as soon as that env is done. SB3's auto-reset semantics (``step``) are
    those of ``SubprocVecEnv``'s worker; ``step_env`` is gymnasium's step.
    """

    def __init__(self, envs: list[gym.Env], first: int, tiled: bool | None, threads: int = 1) -> None:
        self.envs, self.first = envs, first
        self.current: int | None = None  # the env being worked on, named in an error's reply
        self.frames: list[_FrameWriter] = []
        self.shm: shared_memory.SharedMemory | None = None
        self.reset_infos: list[dict[str, Any]] = [{} for _ in envs]
        wanted = len(envs) > 1 if tiled is None else tiled  # one env alone has nothing to share a pass with
        problem = tiling_problem(envs) if wanted else None
        if tiled and problem is not None:
            raise ValueError(f"tiled_render=True, but {problem}")
        self.tiles = _TiledFrames(envs) if wanted and problem is None else None
        self.pool: ThreadPoolExecutor | None = None
        if threads > 1:
            problem = threading_problem(envs, self.tiles is not None)
            if problem is not None:
                raise ValueError(f"threads_per_worker={threads}, but {problem}")
            # tiled: T threads step while this one draws each frame as soon as its env is stepped; else this thread
            # steps a share too
            stepping = threads if self.tiles is not None else threads - 1
            self.pool = ThreadPoolExecutor(stepping, thread_name_prefix="hindex-env")
        self.threads = threads

    # ------------------------------------------------------------------ running the envs
    def _each(self, locals_: Iterable[int], fn: Callable[[int, gym.Env], Any]) -> list[Any]:
        """``fn(i, env_i)`` for each local index ``i``, remembering which env is at work for an error's reply."""
        out = []
        for i in locals_:
            self.current = self.first + i
            out.append(fn(i, self.envs[i]))
        self.current = None
        return out

    def _each_threaded(self, locals_: list[int], fn: Callable[[int, gym.Env], Any]) -> list[Any]:
        """:meth:`_each` with the envs shared out over the worker's threads (its own included) in contiguous runs,
        one task a thread: a task per env would cost more to hand out than a door step takes. An env's error is
        raised here, as :meth:`_each` raises it, naming the first env in order that failed. Kept apart from
        :meth:`_each_drawn`, which must wake for every env: with nothing to draw, waking per share while stepping a
        share itself was faster in every run on 2 cores (16 door envs, 2 threads: 7,200-8,100 steps/s against
        3,800-6,300 through the per-env queue)."""
        assert self.pool is not None

        def run(share: list[int]) -> list[Any]:
            out = []
            for i in share:
                try:
                    out.append(fn(i, self.envs[i]))
                except BaseException as err:  # even SystemExit: raised in this thread below, as _each would
                    raise _EnvError(i, err) from err
            return out

        def outcome(get: Callable[[], list[Any]]) -> tuple[list[Any], _EnvError | None]:
            try:
                return get(), None
            except _EnvError as err:
                return [], err

        shares = self._shares(locals_)
        futures = [self.pool.submit(run, share) for share in shares[1:]]
        # this thread takes the first share; then it waits for every other one, so that no thread still touches an
        # env when the reply goes out, even after an error
        outcomes = [outcome(partial(run, shares[0]))] + [outcome(future.result) for future in futures]
        results = [r for share_results, _ in outcomes for r in share_results]
        failed = next((err for _, err in outcomes if err is not None), None)
        if failed is not None:
            self.current = self.first + failed.local
            raise failed.error
        return results

    def _shares(self, locals_: list[int]) -> list[list[int]]:
        """``locals_`` cut into one contiguous run per thread (as even as they come)."""
        parts = min(self.threads, len(locals_))
        bounds = [len(locals_) * p // parts for p in range(parts + 1)]
        return [locals_[a:b] for a, b in itertools.pairwise(bounds)]

    def _run(self, locals_: Iterable[int], fn: Callable[[int, gym.Env], Any]) -> list[Any]:
        """``fn(i, env_i)`` for the envs of a command that steps or resets them: one after another, in the worker's
        threads, or in its threads with each frame drawn as soon as its env is done (see :meth:`_each_drawn`)."""
        locals_ = list(locals_)
        if self.pool is None or len(locals_) < 2:
            return self._each(locals_, fn)
        if self.tiles is not None:
            return self._each_drawn(locals_, fn)
        return self._each_threaded(locals_, fn)

    def _each_drawn(self, locals_: list[int], fn: Callable[[int, gym.Env], Any]) -> list[Any]:
        """The envs stepped in the worker's threads, each env's frame drawn by this thread as soon as that env is
        done, while the threads step the others (MuJoCo releases the GIL both when it steps and when it draws). The
        tiles are read back by the caller's :meth:`_draw`. Errors as in :meth:`_each_threaded`."""
        assert self.pool is not None and self.tiles is not None
        shares = self._shares(locals_)
        done: queue.SimpleQueue[tuple[int, Any, BaseException | None] | None] = queue.SimpleQueue()

        def run(share: list[int]) -> None:
            try:
                for i in share:
                    try:
                        done.put((i, fn(i, self.envs[i]), None))
                    except BaseException as err:  # this share stops at its first error, as _each stops
                        done.put((i, None, err))
                        break
            finally:
                done.put(None)  # this share is over

        for share in shares:
            self.pool.submit(run, share)
        results: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}
        finished = 0
        while finished < len(shares):  # every share is waited for: no thread still touches an env when the reply goes
            item = done.get()
            if item is None:
                finished += 1
                continue
            i, result, err = item
            if err is None and not errors:
                results[i] = result
                try:
                    self.tiles.draw_one(i)
                except Exception as draw_err:
                    err = draw_err
            if err is not None:
                errors[i] = err
        if errors:
            self.tiles.flush()  # what was drawn is read back: no tile is left waiting for a later command
            first = min(errors, key=locals_.index)
            self.current = self.first + first
            raise errors[first]
        return [results[i] for i in locals_]

    def _draw(self) -> None:
        if self.tiles is not None:
            self.tiles.draw()

    def _put(self, i: int, obs: Any) -> Any:
        self.current = self.first + i
        drawn = self.tiles.drawn[i] if self.tiles is not None else None
        rest = self.frames[i].put(obs, drawn)
        self.current = None
        return rest

    def attach(self, data: tuple) -> None:
        name, slots, n_envs = data
        self.shm = shared_memory.SharedMemory(name=name) if name is not None else None
        self.frames = [
            _FrameWriter(env.observation_space, self.shm, slots, n_envs, self.first + i)
            for i, env in enumerate(self.envs)
        ]

    def step(self, actions: Sequence[Any]) -> list[tuple]:
        everyone = range(len(self.envs))
        results = self._run(everyone, lambda i, env: list(env.step(actions[i])))
        self._draw()
        dones = []
        for i, result in enumerate(results):
            obs, _, terminated, truncated, info = result
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:  # a copy: the frame buffers are overwritten by the next episode's first frame
                info["terminal_observation"] = copy.deepcopy(obs)
                result[0], self.reset_infos[i] = self._each([i], lambda _, env: env.reset())[0]
            dones.append(done)
        self._draw()  # the first frames of the episodes just started
        return [
            (self._put(i, r[0]), r[1], done, r[4], self.reset_infos[i])
            for i, (r, done) in enumerate(zip(results, dones, strict=True))
        ]

    def reset(self, data: Sequence[tuple]) -> list[tuple]:
        def reset(i: int, env: gym.Env) -> tuple:
            seed, options = data[i]
            return env.reset(seed=seed, **({"options": options} if options else {}))

        results = self._run(range(len(self.envs)), reset)
        self._draw()
        self.reset_infos = [info for _, info in results]
        return [(self._put(i, obs), info) for i, (obs, info) in enumerate(results)]

    def step_env(self, actions: dict[int, Any]) -> dict[int, tuple]:
        results = self._run(list(actions), lambda i, env: env.step(actions[i]))
        self._draw()
        return {i: (self._put(i, r[0]), *r[1:]) for i, r in zip(actions, results, strict=True)}

    def reset_env(self, seeds: dict[int, int | None]) -> dict[int, tuple]:
        results = self._run(list(seeds), lambda i, env: env.reset(seed=seeds[i]))
        self._draw()
        return {i: (self._put(i, obs), info) for i, (obs, info) in zip(seeds, results, strict=True)}

    # ------------------------------------------------------------------ the rest of the VecEnv API
    def render(self, _: Any) -> list[Any]:
        return self._each(range(len(self.envs)), lambda _, env: env.render())

    def get_spaces(self, _: Any) -> tuple:
        return self.envs[0].observation_space, self.envs[0].action_space

    def env_method(self, data: tuple) -> list[Any]:
        locals_, (name, args, kwargs) = data
        out = self._each(locals_, lambda _, env: env.get_wrapper_attr(name)(*args, **kwargs))
        self._draw()  # a method that observes (reset, step) returns its env's frame buffer: draw it before sending
        return out

    def get_attr(self, data: tuple) -> list[Any]:
        locals_, name = data
        return self._each(locals_, lambda _, env: env.get_wrapper_attr(name))

    def has_attr(self, name: str) -> bool:
        def has(_: int, env: gym.Env) -> bool:
            try:
                env.get_wrapper_attr(name)
            except AttributeError:
                return False
            return True

        return all(self._each(range(len(self.envs)), has))

    def set_attr(self, data: tuple) -> list[None]:
        locals_, (name, value) = data
        return self._each(locals_, lambda _, env: setattr(env, name, value))

    def is_wrapped(self, data: tuple) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        locals_, wrapper_class = data
        return self._each(locals_, lambda _, env: is_wrapped(env, wrapper_class))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        try:
            self._each(range(len(self.envs)), lambda _, env: env.close())
            if self.tiles is not None:
                self.tiles.close()
        finally:
            self.frames = []
            if self.shm is not None:
                self.shm.close()


_COMMANDS = frozenset(
    [
        "attach",
        "step",
        "reset",
        "step_env",
        "reset_env",
        "render",
        "get_spaces",
        "env_method",
        "get_attr",
        "has_attr",
        "set_attr",
        "is_wrapped",
    ]
)


def _worker(remote: Any, parent_remote: Any, env_fns: CloudpickleWrapper, first: int, tiled: bool | None,
            threads: int) -> None:  # fmt: skip
    parent_remote.close()
    try:
        worker = _Worker([_patch_env(fn()) for fn in env_fns.var], first, tiled, threads)
    except Exception:  # e.g. envs that cannot be tiled: the first request raises it in the main process
        remote.send(("error", (None, traceback.format_exc())))
        remote.close()
        return
    remote.send(("ok", None))
    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, KeyboardInterrupt):  # the main process is gone (or interrupted): nothing left to serve
            break
        if cmd == "close":
            worker.close()
            remote.close()
            break
        try:
            if cmd not in _COMMANDS:
                raise NotImplementedError(f"`{cmd}` is not implemented in the worker")
            reply = ("ok", getattr(worker, cmd)(data))
        except Exception:  # the main process raises it, with this traceback, instead of losing the worker
            reply = ("error", (worker.current, traceback.format_exc()))
            worker.current = None
        if not _reply(remote, cmd, reply):
            break


def _reply(remote: Any, cmd: str, reply: tuple) -> bool:
    """Send ``reply``; one that cannot be pickled (an env's info holding a lambda) becomes an error reply instead of
    ending the worker, whose death would hide why. ``False`` when the main process is gone."""
    try:
        remote.send(reply)  # pickled whole before a byte is written: a failure leaves the pipe in step
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return False
    except Exception:
        remote.send(("error", (None, f"its reply to {cmd!r} could not be sent:\n{traceback.format_exc()}")))
    return True


def _release(shm: shared_memory.SharedMemory | None) -> None:
    """Unlink the segment (so nothing leaks even if ``close`` is never called), then unmap it if nothing uses it."""
    if shm is None:
        return
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()
    with contextlib.suppress(BufferError):  # arrays over it are still alive; the mapping goes with them
        shm.close()


class SharedMemoryVecEnv(VecEnv):
    """Worker processes like ``SubprocVecEnv``'s, with image observations passed through shared memory.

    :param env_fns: functions that build the envs (pickled with cloudpickle into the workers)
    :param start_method: multiprocessing start method; as ``SubprocVecEnv``, ``forkserver`` where available, else
        ``spawn`` (both safe with threads; wrap scripts in ``if __name__ == "__main__":``)
    :param max_shared_bytes: the largest shared buffer to allocate (it is also never larger than the free space of
        /dev/shm, where an oversized segment would crash the workers with SIGBUS on their first write)
    :param envs_per_worker: envs hosted by each worker process (consecutive envs; the last worker may hold fewer).
        1 is ``SubprocVecEnv``'s layout. More pays on a GPU with ``HInDex/*`` pixel envs: a worker steps the physics
        of all its envs, then draws all their frames in one tiled pass with one read-back (``tiled_render``).
    :param tiled_render: draw the frames of a worker's envs in one tiled pass. ``None`` (default): whenever a worker
        holds several envs that can be tiled (one task and image size, fast quality; see :func:`tiling_problem`);
        ``True``: always (an error where the envs cannot be); ``False``: never. Tiled frames are bit for bit the
        one-by-one frames (see :class:`~hindex_sb3.envs.rendering.TiledRenderer`), so the steps do not depend on
        ``envs_per_worker``.
    :param threads_per_worker: threads in which a worker steps (and resets) its envs, each taking a contiguous share
        of them, while the worker's own thread draws each env's frame into its tile as soon as that env is done
        (still one read-back). Lets a worker with many envs per GL context use several cores for physics (MuJoCo
        releases the GIL while it steps and while it draws). Our envs only, tiled or with ``obs_mode="state"`` (see
        :func:`threading_problem`); at most ``envs_per_worker``. The steps do not depend on it.
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        start_method: str | None = None,
        max_shared_bytes: int = DEFAULT_MAX_SHARED_BYTES,
        envs_per_worker: int = 1,
        tiled_render: bool | None = None,
        threads_per_worker: int = 1,
    ) -> None:
        max_shared_bytes = check_int("max_shared_bytes", max_shared_bytes, minimum=1)
        if not env_fns:
            raise ValueError("env_fns must hold at least one env function")
        envs_per_worker = check_int("envs_per_worker", envs_per_worker, minimum=1, maximum=len(env_fns))
        threads = check_int("threads_per_worker", threads_per_worker, minimum=1, maximum=envs_per_worker)
        if tiled_render is not None and not isinstance(tiled_render, bool):
            raise TypeError(f"tiled_render must be True, False or None, got {tiled_render!r}")
        self.waiting, self.closed = False, False
        self._threads = threads
        self._shm: shared_memory.SharedMemory | None = None
        self._views: dict[str | None, np.ndarray] = {}
        n = len(env_fns)
        self.groups = [range(i, min(i + envs_per_worker, n)) for i in range(0, n, envs_per_worker)]
        self._worker_of = [w for w, group in enumerate(self.groups) for _ in group]
        self._sent: list[deque[list[int]]] = [deque() for _ in self.groups]  # step_env batches not yet received
        self._stash: dict[int, tuple] = {}  # their replies, received while waiting for another batch
        # replies sent to us and not read yet, per worker (each worker first says whether it built its envs); those
        # beyond the step_env batches in flight were abandoned by an interrupted wait and are dropped before the next
        # command, so that no command reads an earlier one's reply
        self._unread = [1] * len(self.groups)
        self._start_workers(env_fns, start_method, tiled_render, threads)
        try:
            self._gather(range(len(self.groups)))  # each worker built its envs (or says why not)
            observation_space, action_space = self._request([0], "get_spaces", None)[0]
            self._attach(observation_space, len(env_fns), max_shared_bytes)
            super().__init__(len(env_fns), observation_space, action_space)  # asks the workers for render_mode
        except BaseException:  # no worker and no segment outlives a failed construction
            self._shutdown()
            raise

    # ------------------------------------------------------------------ processes and the shared buffer
    def _start_workers(self, env_fns: list[Callable[[], gym.Env]], start_method: str | None,
                       tiled: bool | None, threads: int) -> None:  # fmt: skip
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(start_method)
        # Forked workers inherit this process's resource tracker only if it runs already; else each starts its own,
        # which warns of a "leaked" segment at its exit and unlinks the buffer early if its worker dies.
        if os.name == "posix":  # (Windows has no resource tracker to share)
            resource_tracker.ensure_running()
        remotes, self.processes = [], []
        for group in self.groups:  # one pipe at a time: even a forked worker then holds no other worker's end
            remote, work_remote = ctx.Pipe()
            fns = CloudpickleWrapper([env_fns[j] for j in group])
            args = (work_remote, remote, fns, group.start, tiled, min(threads, len(group)))
            process = ctx.Process(target=_worker, args=args, daemon=True)  # type: ignore[attr-defined]
            process.start()
            remotes.append(remote)
            self.processes.append(process)
            work_remote.close()
        self.remotes = tuple(remotes)

    def _attach(self, space: spaces.Space, n_envs: int, max_bytes: int) -> None:
        self._slots = frame_slots(space, n_envs)
        size = _shared_size(self._slots, n_envs)
        _check_size(size, max_bytes, space, n_envs)
        if size:
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self._views = {s.key: s.view(self._shm.buf, n_envs) for s in self._slots}
        self._finalizer = weakref.finalize(self, _release, self._shm)
        name = self._shm.name if self._shm is not None else None
        self._request(range(len(self.groups)), "attach", (name, self._slots, n_envs))

    @property
    def envs_per_worker(self) -> int:
        """Envs hosted by each worker process (the last one may hold fewer)."""
        return len(self.groups[0])

    @property
    def threads_per_worker(self) -> int:
        """Threads in which each worker steps its envs."""
        return self._threads

    @property
    def shared_memory_name(self) -> str | None:
        """Name of the shared segment (``None`` when no part of the observation is a frame)."""
        return self._shm.name if self._shm is not None else None

    def _envs_of(self, w: int) -> str:
        group = self.groups[w]
        return f"env {group.start}" if len(group) == 1 else f"envs {group.start}-{group.stop - 1}"

    def _dead(self, w: int) -> RuntimeError:
        process = self.processes[w]
        process.join(timeout=1.0)
        return RuntimeError(
            f"SharedMemoryVecEnv: the worker process of {self._envs_of(w)} (pid {process.pid}) died (exit code "
            f"{process.exitcode}); close() this VecEnv and build a new one"
        )

    def _send(self, w: int, message: tuple) -> None:
        if self.closed:
            raise RuntimeError("SharedMemoryVecEnv: this VecEnv is closed; build a new one")
        try:
            self.remotes[w].send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError) as err:
            raise self._dead(w) from err
        self._unread[w] += 1

    def _recv(self, w: int) -> Any:
        # A blocking recv, not a poll loop (poll costs ~100 us a reply, more than the frame saves): a dead worker
        # still ends it with EOF, since no other process holds the worker's end of the pipe (see _start_workers).
        try:
            status, payload = self.remotes[w].recv()
        except (EOFError, ConnectionResetError) as err:
            raise self._dead(w) from err
        self._unread[w] -= 1
        if status == "error":
            env, tb = payload
            who = f"env {env}" if env is not None else self._envs_of(w)
            raise RuntimeError(f"{who} raised in its worker process:\n{tb}")
        return payload

    def _gather(self, workers: Iterable[int]) -> list[Any]:
        """Every reply of ``workers`` (all are read, so the pipes stay in step, before the first error is raised)."""
        replies, error = [], None
        for w in workers:
            try:
                replies.append(self._recv(w))
            except RuntimeError as err:
                error = error or err
        if error is not None:
            raise error
        return replies

    def _gather_envs(self) -> list[Any]:
        """The replies of every worker to a command about all its envs, one per env in env order."""
        return [reply for group in self._gather(range(len(self.groups))) for reply in group]

    def _request(self, workers: Iterable[int], cmd: str, data: Any) -> list[Any]:
        workers = list(workers)
        self._collect_sent()
        for w in workers:
            self._send(w, (cmd, data))
        return self._gather(workers)

    def _by_worker(self, indices: Iterable[int]) -> dict[int, list[int]]:
        """Env indices grouped by the worker that hosts them, as that worker's local indices."""
        out: dict[int, list[int]] = {}
        for j in indices:
            w = self._worker_of[j]
            out.setdefault(w, []).append(j - self.groups[w].start)
        return out

    def _per_env(self, indices: Sequence[int], cmd: str, data: Any) -> list[Any]:
        """``cmd`` for the envs ``indices``, one message per worker; the replies in the order of ``indices``."""
        by_worker = self._by_worker(indices)
        self._collect_sent()
        for w, locals_ in by_worker.items():
            self._send(w, (cmd, (locals_, data)))
        answers: dict[int, Any] = {}
        for (w, locals_), replies in zip(by_worker.items(), self._gather(by_worker), strict=True):
            answers.update({self.groups[w].start + i: r for i, r in zip(locals_, replies, strict=True)})
        return [answers[j] for j in indices]

    # ------------------------------------------------------------------ observations
    def _batch_obs(self, rests: Sequence[Any]) -> VecEnvObs:
        """The observations of every env: frames copied out of the buffer, the rest stacked from the pipe."""
        space = self.observation_space
        if not self._views:
            return _stack_obs(list(rests), space)
        if None in self._views:
            return self._views[None].copy()
        assert isinstance(space, spaces.Dict)
        return {
            key: self._views[key].copy() if key in self._views else np.stack([r[key] for r in rests])
            for key in space.spaces
        }

    def _env_obs(self, j: int, rest: Any) -> Any:
        """Env ``j``'s observation, a copy of its row of the buffer joined with the rest."""
        if not self._views:
            return rest
        if None in self._views:
            return self._views[None][j].copy()
        keys = self.observation_space.spaces  # type: ignore[attr-defined]
        return {key: self._views[key][j].copy() if key in self._views else rest[key] for key in keys}

    # ------------------------------------------------------------------ the VecEnv API
    def step_async(self, actions: np.ndarray) -> None:
        if len(actions) != self.num_envs:  # a worker would take a short slice, or the surplus would go unnoticed
            raise ValueError(f"actions holds {len(actions)} actions for {self.num_envs} envs")
        self._collect_sent()
        for w, group in enumerate(self.groups):
            self._send(w, ("step", actions[group.start : group.stop]))
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        if not self.waiting:  # no worker owes a step: the wait would block for ever
            raise RuntimeError(
                "SharedMemoryVecEnv: step_wait without a step_async before it (or after an interrupted step_wait, "
                "whose steps are dropped): call step_async first"
            )
        try:
            replies = self._gather_envs()
        finally:
            self.waiting = False
        rests, rewards, dones, infos, reset_infos = zip(*replies, strict=True)
        self.reset_infos = list(reset_infos)
        return self._batch_obs(rests), np.stack(rewards), np.stack(dones), list(infos)

    def reset(self) -> VecEnvObs:
        seeds = [[(self._seeds[j], self._options[j]) for j in group] for group in self.groups]
        self._collect_sent()
        for w, data in enumerate(seeds):
            self._send(w, ("reset", data))
        replies = self._gather_envs()
        rests, reset_infos = zip(*replies, strict=True)
        self.reset_infos = list(reset_infos)
        self._reset_seeds()
        self._reset_options()
        return self._batch_obs(rests)

    def reset_envs(self, seeds: dict[int, int | None]) -> dict[int, tuple[Any, dict]]:
        """Reset env ``j`` with ``seeds[j]`` for each key (in parallel); gymnasium's ``(obs, info)`` per env."""
        indices = self._check_indices(seeds)
        self._collect_sent()
        by_worker = self._by_worker(indices)
        for w, locals_ in by_worker.items():
            self._send(w, ("reset_env", {i: seeds[self.groups[w].start + i] for i in locals_}))
        out = {}
        for w, replies in zip(by_worker, self._gather(by_worker), strict=True):
            for i, (rest, info) in replies.items():
                j = self.groups[w].start + i
                out[j] = (self._env_obs(j, rest), info)
        return {j: out[j] for j in indices}

    def step_envs(self, actions: dict[int, np.ndarray]) -> dict[int, tuple[Any, Any, bool, bool, dict]]:
        """Step env ``j`` with ``actions[j]`` for each key, no other env, and no auto-reset (gymnasium's 5-tuple)."""
        self.step_envs_send(actions)
        return self.step_envs_recv(list(actions))

    def step_envs_send(self, actions: dict[int, np.ndarray]) -> None:
        """The first half of :meth:`step_envs`: the chosen envs start stepping; this process is free meanwhile.

        Several batches may be in flight at once (DAPG's overlap steps one half of the envs while it encodes the
        other's frames); each worker answers its batches in the order they were sent.
        """
        indices = self._check_indices(actions)
        self._drop_abandoned()
        if any(j in self._stash or any(j in b for b in self._sent[self._worker_of[j]]) for j in indices):
            raise RuntimeError("SharedMemoryVecEnv: step_envs_send for an env whose last step was not received")
        for w, locals_ in self._by_worker(indices).items():
            start = self.groups[w].start
            self._send(w, ("step_env", {i: actions[start + i] for i in locals_}))
            self._sent[w].append([start + i for i in locals_])

    def step_envs_recv(self, indices: Sequence[int]) -> dict[int, tuple[Any, Any, bool, bool, dict]]:
        """The second half of :meth:`step_envs`: wait for the steps sent to ``indices`` and return them."""
        self._drop_abandoned()
        for j in indices:
            w = self._worker_of[j]
            while j not in self._stash:
                if not self._sent[w]:
                    raise RuntimeError(f"SharedMemoryVecEnv: step_envs_recv for env {j}, which was not sent a step")
                self._receive_batch(w)
        out = {}
        for j in indices:
            rest, *result = self._stash.pop(j)
            out[j] = (self._env_obs(j, rest), *result)
        return out

    def _receive_batch(self, w: int) -> None:
        """Receive worker ``w``'s oldest outstanding ``step_env`` batch into the stash."""
        batch = self._sent[w].popleft()
        replies = self._recv(w)
        start = self.groups[w].start
        self._stash.update({start + i: r for i, r in replies.items()})
        assert sorted(self._stash.keys() & set(batch)) == sorted(batch)

    def _drop_abandoned(self) -> None:
        """Read and drop the replies that an interrupted wait (Ctrl-C in ``step_wait``) left in the pipes.

        A wait always reads a worker's oldest reply, so the abandoned ones come before any batch still in flight.
        """
        for w, remote in enumerate(self.remotes):
            while self._unread[w] > len(self._sent[w]):
                try:
                    remote.recv()
                except (EOFError, ConnectionResetError) as err:
                    raise self._dead(w) from err
                self._unread[w] -= 1

    def _collect_sent(self) -> None:
        """Receive the ``step_env`` batches still in flight before another command takes the pipes."""
        self._drop_abandoned()
        for w, sent in enumerate(self._sent):
            while sent:
                self._receive_batch(w)

    def _check_indices(self, keyed: dict[int, Any]) -> list[int]:
        if self.waiting:
            raise RuntimeError("SharedMemoryVecEnv: a step_async is still waiting for its step_wait")
        indices = list(keyed)
        for j in indices:
            check_int("env index", j, minimum=0, maximum=self.num_envs - 1)
        return indices

    def close(self) -> None:
        if self.closed:
            return
        self._shutdown()
        self.closed = True

    def _shutdown(self) -> None:
        """Stop every worker (ending those that do not stop) and unlink the shared buffer, even after a failure.

        The replies still due are awaited, and the workers joined, within one ``_JOIN_TIMEOUT_S`` each for all
        workers together: a worker stuck in a step (an env that never returns) is ended instead of holding ``close``
        forever, and many stuck workers do not add up their waits.
        """
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for w, remote in enumerate(self.remotes):
            with contextlib.suppress(EOFError, ConnectionResetError, OSError):
                while self._unread[w] > 0 and remote.poll(max(0.0, deadline - time.monotonic())):
                    remote.recv()
                    self._unread[w] -= 1
        self.waiting = False
        for remote in self.remotes:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError, OSError):
                remote.send(("close", None))
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=_JOIN_TIMEOUT_S)
            if process.is_alive():  # SIGTERM blocked or ignored
                process.kill()
                process.join()
        for remote in self.remotes:
            remote.close()
        self._views = {}
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
        else:
            _release(self._shm)

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images.",
                stacklevel=2,
            )
            return [None for _ in range(self.num_envs)]
        return [image for group in self._request(range(len(self.groups)), "render", None) for image in group]

    def has_attr(self, attr_name: str) -> bool:
        return all(self._request(range(len(self.groups)), "has_attr", attr_name))

    def _env_indices(self, indices: VecEnvIndices) -> list[int]:
        """``indices`` as env indices in ``0 .. num_envs - 1``; negative ones count from the end, as a list's do (and
        as ``DummyVecEnv``/``SubprocVecEnv`` take them)."""
        out = []
        for j in self._get_indices(indices):
            j = operator.index(j)
            if not -self.num_envs <= j < self.num_envs:
                raise IndexError(f"env index {j} out of range for {self.num_envs} envs")
            out.append(j % self.num_envs)
        return out

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._per_env(self._env_indices(indices), "get_attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._per_env(self._env_indices(indices), "set_attr", (attr_name, value))

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._per_env(self._env_indices(indices), "env_method", (method_name, method_args, method_kwargs))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._per_env(self._env_indices(indices), "is_wrapped", wrapper_class)
