"""Shared fixtures. Reference data lives in ``../shared/data`` beside the checkout (or ``$HINDEX_SHARED_DATA``);
tests that need it skip cleanly when it is absent, since a pip user or a fork has no such folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hindex_sb3  # noqa: F401  (registers the environments, prepares headless GL)

SHARED_DATA = Path(os.environ.get("HINDEX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set HINDEX_SHARED_DATA)")
    return SHARED_DATA
