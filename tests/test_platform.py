"""The Mesa-GL / triton segfault must be impossible, whichever comes first: our import, a render, an optimizer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

RENDER = """
import mujoco
m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
r = mujoco.Renderer(m, 32, 32); r.update_scene(mujoco.MjData(m)); r.render()
"""
OPTIMIZER = """
import torch
torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
"""
HINDEX_RENDER = """
import gymnasium as gym
env = gym.make("HInDex/Door-v0", image_size=32); env.reset(seed=0); env.close()
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "order",
    [
        ["import hindex_sb3", HINDEX_RENDER, OPTIMIZER],
        ["import hindex_sb3", RENDER, OPTIMIZER],
        # the user renders before importing us: triton is blocked (with a warning) instead of crashing later
        ["import os; os.environ['MUJOCO_GL'] = 'egl'", RENDER, "import hindex_sb3", OPTIMIZER, HINDEX_RENDER],
        [OPTIMIZER, "import hindex_sb3", HINDEX_RENDER, OPTIMIZER],
    ],
    ids=["import-render-optim", "import-mjrender-optim", "render-import-optim", "optim-import-render"],
)
def test_no_segfault_in_any_order(order):
    result = _run("\n".join(order) + "\nprint('survived')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "survived" in result.stdout


def test_headless_defaults_to_egl():
    result = _run("import hindex_sb3, os; print(os.environ['MUJOCO_GL'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "egl"


def test_user_backend_choice_is_kept():
    result = _run("import os; os.environ['MUJOCO_GL'] = 'glfw'; import hindex_sb3; print(os.environ['MUJOCO_GL'])")
    assert result.stdout.strip() == "glfw"


def test_control_without_guard_crashes():
    """Keeps the guard honest: the crash it prevents is real on software GL (skipped where it is not)."""
    result = _run("import os; os.environ['MUJOCO_GL'] = 'egl'\n" + RENDER + OPTIMIZER + "print('survived')")
    if result.returncode == 0:
        pytest.skip("this GL stack does not crash without the guard (hardware GL or no Mesa LLVM)")
    assert result.returncode < 0  # killed by a signal (SIGSEGV)
