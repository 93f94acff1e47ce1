"""The tidy results table: one row per (run, evaluation), rebuilt from the runs' own curves.

Each run appends its evaluations to its own ``curve.json`` (which survives resume without losing or repeating an
iteration), so the table is a pure function of the run folders: rebuilding it as runs progress can neither lose
nor duplicate a row, whichever worker ran what and however often the driver restarted.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from hindex_sb3._io import read_json
from hindex_sb3.bench import _runs
from hindex_sb3.bench.plan import BenchError, Plan, RunSpec

logger = logging.getLogger(__name__)

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


def run_finished(out: Path, spec: RunSpec | str) -> bool:
    """Whether the run is done: its ``summary.json`` exists and, for a suite that evaluates on novel backgrounds
    (``spec.eval_backgrounds``; a bare run id cannot say), its ``backgrounds.json`` holds every one of them. A driver
    that died between the two files leaves a run that ``--resume`` must evaluate again (only that: see
    :func:`hindex_sb3.bench.scheduler._train_task`)."""
    run_id = spec if isinstance(spec, str) else spec.run_id
    outputs = _runs.run_outputs(run_dir(out, run_id))
    if outputs is None or not (outputs / "summary.json").is_file():
        return False
    backgrounds = () if isinstance(spec, str) else spec.eval_backgrounds
    if not backgrounds:
        return True
    try:
        done = read_json(outputs / "backgrounds.json")
    except (OSError, ValueError):
        return False
    return isinstance(done, dict) and all(name in done for name in backgrounds)


def _read_run_file(path: Path, run_id: str) -> Any:
    try:
        return read_json(path)
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(f"run {run_id}: cannot read {path} ({err})") from None
    except ValueError as err:
        raise BenchError(f"run {run_id}: {path} is damaged (not valid JSON: {err})") from None


def _rows_of_run(out: Path, spec: RunSpec, random_weights: bool) -> list[dict[str, Any]]:
    """The run's table rows from its own files; a damaged file is a :class:`BenchError` naming the run."""
    outputs = _runs.run_outputs(run_dir(out, spec.run_id))
    if outputs is None:
        return []
    curve_path = outputs / "curve.json"
    curve = _read_run_file(curve_path, spec.run_id)
    rows, wall = [], 0.0
    try:
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
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise BenchError(f"run {spec.run_id}: {curve_path} is damaged ({type(err).__name__}: {err})") from None
    backgrounds = outputs / "backgrounds.json"
    if backgrounds.is_file() and rows:
        last = rows[-1]
        try:
            for name, ev in _read_run_file(backgrounds, spec.run_id).items():
                rows.append(
                    last
                    | {
                        "background": name,
                        "eval_return": ev["mean_return"],
                        "eval_success": ev["success_rate"],
                    }
                )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise BenchError(f"run {spec.run_id}: {backgrounds} is damaged ({type(err).__name__}: {err})") from None
    return rows


def collect(out: Path, plan: Plan) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows of every run whose files are whole, ``results.csv`` rewritten atomically, and ``{run_id: what is
    wrong}`` for the runs left out: one damaged run must not stop the driver, nor the report of all the others (the
    report counts it as unfinished and names it)."""
    from hindex_sb3._io import atomic_write_text

    rows: list[dict[str, Any]] = []
    damaged: dict[str, str] = {}
    for spec in plan.runs:
        try:
            rows += _rows_of_run(out, spec, plan.random_weights)
        except BenchError as err:
            damaged[spec.run_id] = str(err)
            logger.warning("left out of results.csv: %s", err)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(out) / "results.csv", buffer.getvalue())
    return rows, damaged


def collect_results(out: str | Path, plan: Plan | None = None) -> list[dict[str, Any]]:
    """All rows of the bench in ``out`` (in plan order), and ``results.csv`` rewritten atomically; a run with a
    damaged ``curve.json`` / ``backgrounds.json`` is left out with a logged warning naming the run and the file."""
    from hindex_sb3.bench.store import load_plan

    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be the bench folder's path, got {type(out).__name__}")
    out = Path(out)
    return collect(out, plan or load_plan(out))[0]


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
