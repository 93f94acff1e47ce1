"""The bench folder: its plan and the one-driver lock (written atomically: a killed driver leaves no half file)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hindex_sb3._io import read_json, write_json
from hindex_sb3.bench.plan import BenchError, Plan


def load_plan(out: Path) -> Plan:
    path = Path(out) / "plan.json"
    if not path.is_file():
        raise BenchError(f"{out} holds no bench (no plan.json)")
    return Plan.from_json(read_json(path))


def save_plan(out: Path, plan: Plan, *, resume: bool) -> Plan:
    """Write ``plan.json``; refuse to start over an existing bench, or to resume a different one."""
    path = Path(out) / "plan.json"
    if path.is_file():
        if not resume:
            raise BenchError(f"{out} already holds a bench: pass --resume to continue it, or choose another --out")
        saved = load_plan(out)
        if saved.to_json() != plan.to_json():
            diff = [k for k in plan.to_json() if plan.to_json()[k] != saved.to_json().get(k)]
            raise BenchError(f"--resume: the requested plan differs from {path} in {', '.join(diff)}")
        return saved
    if resume:
        raise BenchError(f"--resume: {out} holds no bench to continue")
    write_json(path, plan.to_json())
    return plan


class DriverLock:
    """One driver per bench folder: a second ``hindex bench`` on the same folder would run every run twice."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "driver.lock"

    def __enter__(self) -> DriverLock:
        if self.path.is_file():
            info = read_json(self.path)
            if info.get("host") == socket.gethostname() and _alive(int(info.get("pid", -1))):
                raise BenchError(f"another hindex bench (pid {info['pid']}) is running on {self.path.parent}")
        write_json(self.path, {"pid": os.getpid(), "host": socket.gethostname()})
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
