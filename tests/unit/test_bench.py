"""The benchmark suite stays runnable (its figures live in docs/performance.md, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.footprint import wire

ROOT = Path(__file__).resolve().parents[2]


def test_bench_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


def test_wire_cost_of_an_update() -> None:
    figures = wire()
    assert figures["full_bytes"] == 10
    assert figures["single_bytes"] == 7
    assert round(figures["full_us"]) == 868
