"""benchmarks/render_batching.py: tiles hold the right envs' frames, and the quick run reports both renderers."""

from __future__ import annotations

import math

import pytest
from bench_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("render_batching")


def test_quick_run_tiles_match_the_single_renderer_and_rates_are_positive(bench, tmp_path):
    out = tmp_path / "render.json"
    doc = bench.main(["--quick", "--json", str(out)])
    assert [(r["processes"], r["tiles"]) for r in doc["rows"]] == [(1, 1), (1, 4)]
    for row in doc["rows"]:
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("single", "tiled", "viewport"))
        assert row["tiled_max_abs_diff"] == 0, row  # the package's tiles are the single renderer's frames exactly
        # a tile showing another env's state, or an upside-down atlas, differs almost everywhere
        assert row["viewport_diff_fraction"] < 1e-3, row
    assert doc["rows"][0]["viewport_max_abs_diff"] == 0  # one tile is the single renderer's framebuffer
    assert out.exists()


def test_bad_counts_are_refused_by_name(bench):
    with pytest.raises(SystemExit, match="--tiles"):
        bench.main(["--tiles", "0"])
    with pytest.raises(SystemExit, match="--processes"):
        bench.main(["--processes", "1000"])
    with pytest.raises(ValueError, match="image_size"):
        bench.main(["--image-size", "4"])
