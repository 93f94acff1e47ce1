"""Process-level set-up that must run before MuJoCo renders or torch builds an optimizer.

Two hazards on headless Linux machines motivate this module:

1. MuJoCo chooses its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported; the default (GLFW) needs a
   display, so a user on a server would get an obscure GLFW error. When no display is present and the user has not
   chosen a backend we select EGL, which works headless both on Mesa (CPU) and on NVIDIA drivers.

2. Once Mesa's llvmpipe has loaded its LLVM into the process (i.e. after the first software GL context), a first
   ``import triton`` segfaults the process (two LLVM copies clash). torch imports triton lazily, e.g. when the first
   optimizer is created, so ``PPO(...)`` after a render would crash. We therefore import triton *before* any renderer
   exists. If a GL context already exists when we are imported (the user rendered first), importing triton would
   itself crash, so we block it instead: torch treats triton as absent and only loses ``torch.compile``'s GPU backend.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings

_PREPARED = False


def _display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def choose_gl_backend() -> str | None:
    """Default ``MUJOCO_GL`` to EGL on headless machines; never override an explicit user choice."""
    if "MUJOCO_GL" not in os.environ and sys.platform.startswith("linux") and not _display_available():
        os.environ["MUJOCO_GL"] = "egl"
    backend = os.environ.get("MUJOCO_GL")
    if backend in ("egl", "osmesa") and "PYOPENGL_PLATFORM" not in os.environ:
        os.environ["PYOPENGL_PLATFORM"] = backend
    return backend


def _software_gl_loaded() -> bool:
    """True when Mesa's LLVM is already mapped into this process (a software GL context was created)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return "libLLVM" in maps or "libgallium" in maps


def guard_triton() -> str:
    """Make ``import triton`` safe for the rest of the process. Returns what was done (for diagnostics)."""
    if "triton" in sys.modules:
        return "already-imported"
    if importlib.util.find_spec("triton") is None:
        return "not-installed"
    if _software_gl_loaded():
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError
        warnings.warn(
            "hindex_sb3 was imported after a software OpenGL context was created; importing triton now would "
            "segfault (Mesa/LLVM clash), so triton is disabled for this process. Import hindex_sb3 first to keep it.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "blocked"
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton install must not break us; torch copes with its absence
        sys.modules["triton"] = None  # type: ignore[assignment]
        return "broken"
    return "imported"


def prepare_process() -> None:
    """Idempotent: select the GL backend and neutralise the triton/Mesa crash."""
    global _PREPARED
    if _PREPARED:
        return
    choose_gl_backend()
    guard_triton()
    _PREPARED = True
