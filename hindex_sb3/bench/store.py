"""The bench folder: plan, lock and atomic writes (a killed driver never leaves a half-written file)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from hindex_sb3.bench.plan import BenchError, Plan


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def load_plan(out: Path) -> Plan:
    path = Path(out) / "plan.json"
    if not path.is_file():
        raise BenchError(f"{out} holds no bench (no plan.json)")
    return Plan.from_json(json.loads(path.read_text()))


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
    write_json_atomic(path, plan.to_json())
    return plan


class DriverLock:
    """One driver per bench folder: a second ``hindex bench`` on the same folder would run every run twice."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "driver.lock"

    def __enter__(self) -> DriverLock:
        if self.path.is_file():
            info = json.loads(self.path.read_text() or "{}")
            if info.get("host") == socket.gethostname() and _alive(int(info.get("pid", -1))):
                raise BenchError(f"another hindex bench (pid {info['pid']}) is running on {self.path.parent}")
        write_json_atomic(self.path, {"pid": os.getpid(), "host": socket.gethostname()})
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
