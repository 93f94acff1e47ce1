"""The scripts in ``benchmarks/`` as modules, for the tests that check them or borrow their pieces.

A script is loaded from its file (``benchmarks/`` is not a package) and registered in ``sys.modules`` under
``benchmarks_<name>`` before it runs: pixel_throughput asks cloudpickle to pickle it by value for its worker processes,
which needs it registered.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """A fresh module of ``benchmarks/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
