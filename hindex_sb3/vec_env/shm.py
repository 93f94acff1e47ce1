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

Besides the ``VecEnv`` API, :meth:`SharedMemoryVecEnv.reset_envs` and :meth:`SharedMemoryVecEnv.step_envs` drive
chosen envs in gymnasium's API without auto-reset, for DAPG's exact-episode sampler
(:class:`~hindex_sb3.dapg.rollout.EpisodeRunner`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import traceback
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
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

__all__ = ["DEFAULT_MAX_SHARED_BYTES", "FrameSlot", "SharedMemoryVecEnv", "frame_slots"]

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
    """The worker's side: writes its env's frames into its row of the shared buffer, returns the rest of the obs."""

    def __init__(self, space: spaces.Space, name: str | None, slots: list[FrameSlot], n_envs: int, row: int) -> None:
        self.space, self.slots, self.row = space, slots, row
        self.shm = shared_memory.SharedMemory(name=name) if name is not None else None
        self.views = {s.key: s.view(self.shm.buf, n_envs)[row] for s in slots} if self.shm is not None else {}

    def put(self, obs: Any) -> Any:
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

    def close(self) -> None:
        self.views = {}
        if self.shm is not None:
            self.shm.close()


class _Worker:
    """One env in its own process, answering ``(command, data)`` messages with ``("ok", reply)`` or ``("error", tb)``.

    SB3's auto-reset semantics (``step``) are those of ``SubprocVecEnv``'s worker; ``step_env`` is gymnasium's step.
    """

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.frames: _FrameWriter | None = None
        self.reset_info: dict[str, Any] = {}

    def attach(self, data: tuple) -> None:
        name, slots, n_envs, row = data
        self.frames = _FrameWriter(self.env.observation_space, name, slots, n_envs, row)

    def _put(self, obs: Any) -> Any:
        assert self.frames is not None, "attach first"
        return self.frames.put(obs)

    def step(self, action: Any) -> tuple:
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        if done:
            info["terminal_observation"] = obs  # pickled with the reply: a copy, not the buffer the next frame fills
            obs, self.reset_info = self.env.reset()
        return self._put(obs), reward, done, info, self.reset_info

    def reset(self, data: tuple) -> tuple:
        seed, options = data
        obs, self.reset_info = self.env.reset(seed=seed, **({"options": options} if options else {}))
        return self._put(obs), self.reset_info

    def step_env(self, action: Any) -> tuple:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._put(obs), reward, terminated, truncated, info

    def reset_env(self, seed: int | None) -> tuple:
        obs, info = self.env.reset(seed=seed)
        return self._put(obs), info

    def render(self, _: Any) -> Any:
        return self.env.render()

    def get_spaces(self, _: Any) -> tuple:
        return self.env.observation_space, self.env.action_space

    def env_method(self, data: tuple) -> Any:
        name, args, kwargs = data
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def set_attr(self, data: tuple) -> None:
        setattr(self.env, data[0], data[1])

    def is_wrapped(self, wrapper_class: type) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def close(self) -> None:
        self.env.close()
        if self.frames is not None:
            self.frames.close()


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


def _worker(remote: Any, parent_remote: Any, env_fn_wrapper: CloudpickleWrapper) -> None:
    parent_remote.close()
    worker = _Worker(_patch_env(env_fn_wrapper.var()))
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
            reply = ("error", traceback.format_exc())
        remote.send(reply)


def _release(shm: shared_memory.SharedMemory | None) -> None:
    """Unlink the segment (so nothing leaks even if ``close`` is never called), then unmap it if nothing uses it."""
    if shm is None:
        return
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()
    with contextlib.suppress(BufferError):  # arrays over it are still alive; the mapping goes with them
        shm.close()


class SharedMemoryVecEnv(VecEnv):
    """One worker process per env, like ``SubprocVecEnv``, with image observations passed through shared memory.

    :param env_fns: functions that build the envs (pickled with cloudpickle into the workers)
    :param start_method: multiprocessing start method; as ``SubprocVecEnv``, ``forkserver`` where available, else
        ``spawn`` (both safe with threads; wrap scripts in ``if __name__ == "__main__":``)
    :param max_shared_bytes: the largest shared buffer to allocate (it is also never larger than the free space of
        /dev/shm, where an oversized segment would crash the workers with SIGBUS on their first write)
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        start_method: str | None = None,
        max_shared_bytes: int = DEFAULT_MAX_SHARED_BYTES,
    ) -> None:
        max_shared_bytes = check_int("max_shared_bytes", max_shared_bytes, minimum=1)
        if not env_fns:
            raise ValueError("env_fns must hold at least one env function")
        self.waiting, self.closed = False, False
        self._shm: shared_memory.SharedMemory | None = None
        self._views: dict[str | None, np.ndarray] = {}
        self._start_workers(env_fns, start_method)
        try:
            observation_space, action_space = self._request([0], "get_spaces", None)[0]
            self._attach(observation_space, len(env_fns), max_shared_bytes)
            super().__init__(len(env_fns), observation_space, action_space)  # asks the workers for render_mode
        except BaseException:  # no worker and no segment outlives a failed construction
            self._shutdown()
            raise

    # ------------------------------------------------------------------ processes and the shared buffer
    def _start_workers(self, env_fns: list[Callable[[], gym.Env]], start_method: str | None) -> None:
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(start_method)
        remotes, self.processes = [], []
        for env_fn in env_fns:  # one pipe at a time: even a forked worker then holds no other worker's end
            remote, work_remote = ctx.Pipe()
            args = (work_remote, remote, CloudpickleWrapper(env_fn))
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
        for j in range(n_envs):
            self._send(j, ("attach", (name, self._slots, n_envs, j)))
        self._gather(range(n_envs))

    @property
    def shared_memory_name(self) -> str | None:
        """Name of the shared segment (``None`` when no part of the observation is a frame)."""
        return self._shm.name if self._shm is not None else None

    def _dead(self, j: int) -> RuntimeError:
        process = self.processes[j]
        process.join(timeout=1.0)
        return RuntimeError(
            f"SharedMemoryVecEnv: the worker process of env {j} (pid {process.pid}) died (exit code "
            f"{process.exitcode}); close() this VecEnv and build a new one"
        )

    def _send(self, j: int, message: tuple) -> None:
        try:
            self.remotes[j].send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError) as err:
            raise self._dead(j) from err

    def _recv(self, j: int) -> Any:
        # A blocking recv, not a poll loop (poll costs ~100 us a reply, more than the frame saves): a dead worker
        # still ends it with EOF, since no other process holds the worker's end of the pipe (see _start_workers).
        try:
            status, payload = self.remotes[j].recv()
        except (EOFError, ConnectionResetError) as err:
            raise self._dead(j) from err
        if status == "error":
            raise RuntimeError(f"env {j} raised in its worker process:\n{payload}")
        return payload

    def _gather(self, indices: Sequence[int] | range) -> list[Any]:
        """Every reply of ``indices`` (all are read, so the pipes stay in step, before the first error is raised)."""
        replies, error = [], None
        for j in indices:
            try:
                replies.append(self._recv(j))
            except RuntimeError as err:
                error = error or err
        if error is not None:
            raise error
        return replies

    def _request(self, indices: Sequence[int] | range, cmd: str, data: Any) -> list[Any]:
        for j in indices:
            self._send(j, (cmd, data))
        return self._gather(indices)

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
        for j, action in enumerate(actions):
            self._send(j, ("step", action))
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        try:
            replies = self._gather(range(self.num_envs))
        finally:
            self.waiting = False
        rests, rewards, dones, infos, reset_infos = zip(*replies, strict=True)
        self.reset_infos = list(reset_infos)
        return self._batch_obs(rests), np.stack(rewards), np.stack(dones), list(infos)

    def reset(self) -> VecEnvObs:
        for j in range(self.num_envs):
            self._send(j, ("reset", (self._seeds[j], self._options[j])))
        replies = self._gather(range(self.num_envs))
        rests, reset_infos = zip(*replies, strict=True)
        self.reset_infos = list(reset_infos)
        self._reset_seeds()
        self._reset_options()
        return self._batch_obs(rests)

    def reset_envs(self, seeds: dict[int, int | None]) -> dict[int, tuple[Any, dict]]:
        """Reset env ``j`` with ``seeds[j]`` for each key (in parallel); gymnasium's ``(obs, info)`` per env."""
        indices = self._check_indices(seeds)
        for j in indices:
            self._send(j, ("reset_env", seeds[j]))
        replies = self._gather(indices)
        return {j: (self._env_obs(j, rest), info) for j, (rest, info) in zip(indices, replies, strict=True)}

    def step_envs(self, actions: dict[int, np.ndarray]) -> dict[int, tuple[Any, Any, bool, bool, dict]]:
        """Step env ``j`` with ``actions[j]`` for each key, no other env, and no auto-reset (gymnasium's 5-tuple)."""
        self.step_envs_send(actions)
        return self.step_envs_recv(list(actions))

    def step_envs_send(self, actions: dict[int, np.ndarray]) -> None:
        """The first half of :meth:`step_envs`: the chosen envs start stepping; this process is free meanwhile."""
        for j in self._check_indices(actions):
            self._send(j, ("step_env", actions[j]))

    def step_envs_recv(self, indices: Sequence[int]) -> dict[int, tuple[Any, Any, bool, bool, dict]]:
        """The second half of :meth:`step_envs`: wait for the steps sent to ``indices`` and return them."""
        replies = self._gather(indices)
        return {j: (self._env_obs(j, r[0]), *r[1:]) for j, r in zip(indices, replies, strict=True)}

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
        """Stop every worker (ending those that do not stop) and unlink the shared buffer, even after a failure."""
        if self.waiting:
            for remote in self.remotes:
                with contextlib.suppress(EOFError, ConnectionResetError):
                    remote.recv()
            self.waiting = False
        for remote in self.remotes:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):
                remote.send(("close", None))
        for process in self.processes:
            process.join(timeout=_JOIN_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
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
            return [None for _ in self.remotes]
        return self._request(range(self.num_envs), "render", None)

    def has_attr(self, attr_name: str) -> bool:
        return all(self._request(range(self.num_envs), "has_attr", attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._request(list(self._get_indices(indices)), "get_attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._request(list(self._get_indices(indices)), "set_attr", (attr_name, value))

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._request(list(self._get_indices(indices)), "env_method", (method_name, method_args, method_kwargs))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._request(list(self._get_indices(indices)), "is_wrapped", wrapper_class)
