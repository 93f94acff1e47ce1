"""The bench folder: its plan and the one-driver lock (written atomically: a killed driver leaves no half file)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from hindex_sb3._io import read_json, to_json_text, write_json
from hindex_sb3.bench.plan import BenchError, Plan

logger = logging.getLogger(__name__)

#: differences listed in a refused ``--resume`` before "... and N more"
_MAX_LISTED = 8


def _read_json(path: Path, what: str) -> Any:
    """``path`` as JSON, or a :class:`BenchError` naming the file and what is wrong with it."""
    try:
        return read_json(path)
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(f"{path}: cannot read {what} ({err})") from None
    except ValueError as err:  # json.JSONDecodeError, NaN / Infinity
        raise BenchError(f"{path} is damaged: not valid JSON ({err})") from None


def load_plan(out: Path) -> Plan:
    """The bench's ``plan.json``; a damaged one is one :class:`BenchError` naming the file and the entry."""
    path = Path(out) / "plan.json"
    if not path.is_file():
        raise BenchError(f"{out} holds no bench (no plan.json)")
    try:
        return Plan.from_json(_read_json(path, "the bench plan"))
    except BenchError as err:
        if str(err).startswith(str(path)):
            raise
        raise BenchError(f"{path} is damaged: {err}") from None


def check_plan(out: Path, plan: Plan, *, resume: bool) -> Plan | None:
    """The saved plan ``plan`` continues (``resume``), or None for a new bench; refuses to start over an existing
    bench, to resume a different one (naming every changed setting), or to resume nothing. Writes nothing."""
    path = Path(out) / "plan.json"
    if path.is_file():
        if not resume:
            raise BenchError(f"{out} already holds a bench: pass --resume to continue it, or choose another --out")
        saved = load_plan(out)
        if saved.to_json() != plan.to_json():
            changes = plan_differences(saved, plan)
            more = f"; and {len(changes) - _MAX_LISTED} more" if len(changes) > _MAX_LISTED else ""
            raise BenchError(
                f"--resume: the requested plan differs from {path}: {'; '.join(changes[:_MAX_LISTED])}{more}. "
                "A resumed bench keeps its plan: resume with the same settings, or start a new --out"
            )
        return saved
    if resume:
        raise BenchError(f"--resume: {out} holds no bench to continue")
    return None


def save_plan(out: Path, plan: Plan, *, resume: bool) -> Plan:
    """Write ``plan.json`` (see :func:`check_plan` for what is refused); returns the plan the bench runs."""
    saved = check_plan(out, plan, resume=resume)
    if saved is not None:
        return saved
    write_json(Path(out) / "plan.json", plan.to_json())
    return plan


_UNSET = object()


def _show(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)


def _effective(task: str, settings: dict[str, Any], key: str) -> Any:
    """The value ``hindex train`` gives ``key`` when the run's settings leave it out (the paper's per-task one)."""
    from hindex_sb3.bench import _runs

    try:
        cfg = _runs._config(_runs.canonical_task(task), {**settings, "weights": "random"})
        return getattr(cfg, key)
    except (BenchError, AttributeError, TypeError, ValueError):
        return _UNSET


def plan_differences(saved: Plan, requested: Plan) -> list[str]:
    """What ``requested`` changes in ``saved``: ``"gamma (plan: 0.995, now: 0.9) in 2 runs"`` and the like, each
    change once however many runs it touches (what ``hindex train --resume`` says of a changed run)."""
    changes: dict[str, int] = {}

    def note(name: str, old: Any, new: Any) -> None:
        text = f"{name} (plan: {_show(old)}, now: {_show(new)})"
        changes[text] = changes.get(text, 0) + 1

    for key in ("suite", "profile", "tasks", "methods", "seeds", "random_weights"):
        if getattr(saved, key) != getattr(requested, key):
            note(key, getattr(saved, key), getattr(requested, key))
    old_runs, new_runs = {r.run_id: r for r in saved.runs}, {r.run_id: r for r in requested.runs}
    for label, ids in (("runs only in the plan", old_runs.keys() - new_runs), ("new runs", new_runs.keys() - old_runs)):
        if ids:
            listed = sorted(ids)
            changes[f"{label}: {', '.join(listed[:4])}{' ...' if len(listed) > 4 else ''}"] = 0
    for run_id in old_runs.keys() & new_runs.keys():
        old, new = old_runs[run_id], new_runs[run_id]
        for key in sorted(old.settings.keys() | new.settings.keys()):
            a, b = old.settings.get(key, _UNSET), new.settings.get(key, _UNSET)
            if a != b:
                a = _effective(old.task, old.settings, key) if a is _UNSET else a
                b = _effective(new.task, new.settings, key) if b is _UNSET else b
                note(key, a, b)
        for key in ("adapt", "eval_backgrounds", "train_frames", "eval_frames"):
            if getattr(old, key) != getattr(new, key):
                note(key, getattr(old, key), getattr(new, key))
    old_jobs, new_jobs = {j.key: j for j in saved.adapt_jobs}, {j.key: j for j in requested.adapt_jobs}
    for key in old_jobs.keys() ^ new_jobs.keys():
        changes[f"Stage-2 job {key} {'only in the plan' if key in old_jobs else 'new'}"] = 0
    for key in old_jobs.keys() & new_jobs.keys():
        old, new = old_jobs[key], new_jobs[key]
        for name in sorted(old.settings.keys() | new.settings.keys()):
            if old.settings.get(name, _UNSET) != new.settings.get(name, _UNSET):
                note(f"Stage 2 {name}", old.settings.get(name, _UNSET), new.settings.get(name, _UNSET))
        for name in ("supplied", "torch_threads"):
            if getattr(old, name) != getattr(new, name):
                note(f"Stage 2 {name}", getattr(old, name), getattr(new, name))
    if not changes:  # e.g. the same runs in another order
        changes["the order of runs or Stage-2 jobs"] = 0
    return [text if n <= 1 else f"{text} in {n} runs" for text, n in changes.items()]


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux's /proc), to tell it from a later process that
    reuses its pid; None where that cannot be read (another OS, no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name (field 2) may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None  # field 22: starttime


class DriverLock:
    """One driver per bench folder: a second ``hindex bench`` on the same folder would run every run twice.

    The lock file is created whole and atomically (written to a temporary file, then hard-linked to
    ``driver.lock``, which fails if the lock exists, also on NFS), so two drivers starting together cannot both take
    it. A lock left by a driver that died is taken over only when that is certain: same host, and its process is gone
    (or its pid now belongs to a process that started later). A lock from another host cannot be checked from here
    and is refused, naming the host; the message says how to remove it.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "driver.lock"
        self._text = ""

    def __enter__(self) -> DriverLock:
        pid = os.getpid()
        info = {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid)}
        self._text = to_json_text(info)
        if self._create():
            return self
        stale = self._holder()
        self._take_over(stale)
        if not self._create():  # another driver took the stale lock first
            self._holder()
            raise BenchError(f"another hindex bench took {self.path} just now")
        return self

    def _create(self) -> bool:
        """Make the lock file with our text if none exists; False if one does."""
        tmp = self.path.with_name(f".driver.lock.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(self._text)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: O_EXCL (a reader may see the file before its text)
            return self._create_exclusive()
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._text)
        return True

    def _remove_hint(self) -> str:
        return f"if no hindex bench is running on this folder any more, delete {self.path} and start again"

    def _holder(self) -> str:
        """The existing lock's text when it is stale (safe to take over); otherwise a :class:`BenchError`."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return ""  # released meanwhile
        except OSError as err:
            raise BenchError(f"{self.path}: cannot read the driver lock ({err}); {self._remove_hint()}") from None
        try:
            info = json.loads(text)
            pid, host = int(info["pid"]), str(info["host"])
        except (ValueError, TypeError, KeyError):
            raise BenchError(
                f"{self.path} is damaged (not a driver lock: {text[:80]!r}); {self._remove_hint()}"
            ) from None
        here = socket.gethostname()
        if host != here:
            raise BenchError(
                f"{self.path} is held by a hindex bench on host {host!r} (pid {pid}), which this host ({here!r}) "
                f"cannot check; {self._remove_hint()}"
            )
        if _alive(pid):
            started = info.get("process_start")
            now = _process_start(pid)
            if started is None or now is None or started == now:
                raise BenchError(
                    f"another hindex bench (pid {pid}) is running on {self.path.parent}; {self._remove_hint()}"
                )
        logger.warning("taking over the stale driver lock %s (pid %d on %s is gone)", self.path, pid, host)
        return text

    def _take_over(self, stale: str) -> None:
        """Remove the stale lock, unless another driver replaced it meanwhile (then it is given back)."""
        if not stale:
            return
        grave = self.path.with_name(f".driver.lock.stale.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        moved = grave.read_text()
        if moved != stale:  # a fresh lock of another driver: put it back
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass  # a third driver holds it now
            finally:
                grave.unlink(missing_ok=True)
            raise BenchError(f"another hindex bench took {self.path} just now")
        grave.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.path.read_text() == self._text:  # never remove a lock that another driver took over
                self.path.unlink()
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True
