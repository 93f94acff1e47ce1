"""The ``hindex`` command line."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from hindex_sb3.cli import main


def test_demo_writes_frames_and_summary(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--tasks", "Door", "Pen", "--image-size", "48", "--steps", "3"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["task"] for s in summary] == ["HInDex/Door-v0", "HInDex/Pen-v0"]
    assert summary[0]["camera"] == "top" and summary[1]["camera"] == "vil_camera"
    door = np.asarray(Image.open(tmp_path / "door.png"))
    assert door.shape == (48, 48, 3) and door.std() > 10
    assert np.asarray(Image.open(tmp_path / "all_tasks.png")).shape == (48, 96, 3)


def test_demo_rejects_unknown_task(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--tasks", "Laundry"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_envs_lists_ids(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "HInDex/Door-v0" in out and "horizon=100" in out
