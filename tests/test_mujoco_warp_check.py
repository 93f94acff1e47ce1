"""``benchmarks/mujoco_warp_check.py`` without mujoco-warp: a one-line reason and a non-zero exit, no traceback.

mujoco-warp is not a dependency, so this is the path every checkout takes; the GPU measurements themselves need
the optional package and a CUDA device (docs/mujoco_warp.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mujoco_warp_check.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mujoco_warp") is not None, reason="mujoco_warp is installed here"
)


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_missing_mujoco_warp_exits_with_one_line():
    result = run_script("--stages", "models", "--device", "cpu")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "mujoco_warp not installed" in lines[0]
    assert "pip install mujoco-warp" in lines[0]


def test_script_imports_without_mujoco_warp():
    module = load_benchmark("mujoco_warp_check")
    assert "mujoco_warp" in module.missing_backend()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--nworld", "0"), "--nworld values must be >= 1"),
        (("--experts", "/no/such/folder"), "--experts must be a folder"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(args, message):
    result = run_script(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
