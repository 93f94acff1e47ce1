"""The tidy results table: one row per (run, evaluation), rebuilt from the runs' own curves.

Each run appends its evaluations to its own ``curve.json`` (which survives resume without losing or repeating an
iteration), so the table is a pure function of the run folders: rebuilding it as runs progress can neither lose
nor duplicate a row, whichever worker ran what and however often the driver restarted.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from hindex_sb3.bench import _runs
from hindex_sb3.bench.plan import Plan

COLUMNS = (
    "task",
    "method",
    "seed",
    "iteration",
    "env_frames",
    "eval_return",
    "eval_success",
    "wall_s",
    "background",
    "random_weights",
)


def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def run_finished(out: Path, run_id: str) -> bool:
    outputs = _runs.run_outputs(run_dir(out, run_id))
    return outputs is not None and (outputs / "summary.json").is_file()


def _rows_of_run(out: Path, spec, random_weights: bool) -> list[dict[str, Any]]:
    outputs = _runs.run_outputs(run_dir(out, spec.run_id))
    if outputs is None:
        return []
    curve = json.loads((outputs / "curve.json").read_text())
    rows, wall = [], 0.0
    for entry in curve:
        wall += float(entry.get("wall_s", 0.0))  # seconds of that iteration, evaluation included
        if "eval_return" not in entry:
            continue
        rows.append(
            {
                "task": spec.task,
                "method": spec.method,
                "seed": spec.seed,
                "iteration": entry["iteration"],
                "env_frames": entry.get("env_steps", 0),
                "eval_return": entry["eval_return"],
                "eval_success": entry["eval_success"],
                "wall_s": round(wall, 3),
                "background": "",
                "random_weights": random_weights,
            }
        )
    backgrounds = outputs / "backgrounds.json"
    if backgrounds.is_file() and rows:
        last = rows[-1]
        for name, ev in json.loads(backgrounds.read_text()).items():
            rows.append(
                last | {"background": name, "eval_return": ev["mean_return"], "eval_success": ev["success_rate"]}
            )
    return rows


def collect_results(out: str | Path, plan: Plan | None = None) -> list[dict[str, Any]]:
    """All rows of the bench in ``out`` (in plan order), and ``results.csv`` rewritten atomically."""
    from hindex_sb3._io import atomic_write_text
    from hindex_sb3.bench.store import load_plan

    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be the bench folder's path, got {type(out).__name__}")
    out = Path(out)
    plan = plan or load_plan(out)
    rows = [row for spec in plan.runs for row in _rows_of_run(out, spec, plan.random_weights)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    return rows


def read_results(out: str | Path) -> list[dict[str, Any]]:
    """``results.csv`` with typed values."""
    with open(Path(out) / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["seed"], row["iteration"], row["env_frames"] = (
            int(row["seed"]),
            int(row["iteration"]),
            int(row["env_frames"]),
        )
        row["eval_return"], row["eval_success"], row["wall_s"] = (
            float(row["eval_return"]),
            float(row["eval_success"]),
            float(row["wall_s"]),
        )
        row["random_weights"] = row["random_weights"] == "True"
    return rows
