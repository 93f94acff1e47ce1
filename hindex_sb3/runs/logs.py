"""SB3 logger outputs that a resumed run continues instead of restarting.

SB3's CSV output opens ``progress.csv`` with ``"w+"`` (earlier rows are lost on resume) and its TensorBoard output
starts a new event file beside the old one (iterations logged after the last checkpoint then appear twice). Here the
CSV keeps the rows up to the checkpoint and appends, and TensorBoard's ``purge_step`` hides the events the killed
run wrote after the checkpoint.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HumanOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
)

from hindex_sb3._io import atomic_write_text

__all__ = ["ITERATION_KEY", "ResumableCSVOutputFormat", "make_run_logger"]

#: the progress.csv column that numbers the rows (DAPG iterations completed)
ITERATION_KEY = "time/iterations"


class ResumableCSVOutputFormat(CSVOutputFormat):
    """``progress.csv`` that keeps the rows of iterations ``<= keep_through`` and appends after them.

    New columns are added by rewriting the file atomically; rows are appended and flushed one at a time.
    """

    def __init__(self, filename: str | os.PathLike, keep_through: int | None = None) -> None:
        self.path = Path(filename)
        self.separator, self.quotechar = ",", '"'
        self.keys: list[str] = []
        rows: list[list[str]] = []
        if keep_through is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                table = list(csv.reader(f))
            if table:
                self.keys = table[0]
                col = self.keys.index(ITERATION_KEY) if ITERATION_KEY in self.keys else None
                rows = [r for r in table[1:] if col is not None and r[col] and int(float(r[col])) <= keep_through]
        self._rewrite(rows)

    def _rewrite(self, rows: list[list[str]]) -> None:
        buf = io.StringIO()
        if self.keys:
            buf.write(",".join(self.keys) + "\n")
            writer = csv.writer(buf, lineterminator="\n")
            for row in rows:
                writer.writerow(row + [""] * (len(self.keys) - len(row)))
        atomic_write_text(self.path, buf.getvalue())
        self.file = open(self.path, "a+")  # noqa: SIM115 - kept open for the run, closed by close()

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        extra = sorted(k for k in key_values if k not in self.keys and "csv" not in (key_excluded.get(k) or ()))
        if extra:
            self.file.close()
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))[1:]
            self.keys.extend(extra)
            self._rewrite(rows)
            self.file.seek(0, os.SEEK_END)
        super().write(key_values, key_excluded, step)

    def close(self) -> None:
        self.file.close()


class _PurgingTensorBoardOutputFormat(TensorBoardOutputFormat):
    """TensorBoard events that hide what an interrupted run logged at steps ``>= purge_step``."""

    def __init__(self, folder: str, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def make_run_logger(folder: str | os.PathLike, *, resume_iteration: int | None = None,
                    resume_step: int | None = None, stdout: bool = False) -> Logger:  # fmt: skip
    """The run's logger: ``progress.csv`` + TensorBoard (+ stdout); continuing a run when resuming from a checkpoint
    taken after ``resume_iteration`` iterations and ``resume_step`` env steps."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    outputs: list[KVWriter] = [
        ResumableCSVOutputFormat(folder / "progress.csv", keep_through=resume_iteration),
        _PurgingTensorBoardOutputFormat(str(folder), None if resume_step is None else resume_step + 1),
    ]
    if stdout:
        import sys

        outputs.append(HumanOutputFormat(sys.stdout))
    return Logger(str(folder), outputs)
