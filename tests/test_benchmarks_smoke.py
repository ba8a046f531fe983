"""The benchmark harness still runs end to end (one adapter, --quick, tiny sizes).

Not a performance test: nothing about speed is asserted, only that ``python -m benchmarks``
measures every figure and writes the results document with the keys the README describes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realserver import ROOT

pytestmark = pytest.mark.benchmarks

ROW_FIGURES = (
    "stream",
    "request",
    "ttfe",
    "cancel_active",
    "cancel_idle",
    "memory",
    "backpressure",
)
RATIOS = (
    "stream_vs_in_process",
    "stream_vs_documented",
    "stream_vs_hand_written",
    "request_vs_hand_written",
    "ttfe_delta_vs_hand_written_ms",
    "ttfe_delta_vs_documented_ms",
    "memory_overhead_kib",
)


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    if importlib.util.find_spec("uvicorn") is None:
        pytest.skip("uvicorn is not installed")
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--only",
        "asgi@uvicorn",
        "--deltas",
        "300",
        "--duration",
        "1",
        "--repeats",
        "2",
        "--streams",
        "5",
        "--out",
        str(tmp_path),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    document = json.loads((tmp_path / "results.json").read_text())

    assert {"meta", "in_process", "reference", "rows", "skipped", "targets", "plot"} <= set(
        document
    )
    assert document["meta"]["loadgen"] in ("wrk", "python-asyncio")
    assert document["in_process"]["events_per_s"] > 0
    [row] = document["rows"]
    assert row["label"] == "asgi@uvicorn"
    assert "error" not in row, row["error"]
    for figure in ROW_FIGURES:
        assert "error" not in row[figure], (figure, row[figure])
    assert row["stream"]["events_per_s"] > 0
    assert row["request"]["rps"] > 0
    assert row["ttfe"]["median_ms"] > 0
    assert row["cancel_active"]["persisted"] == row["cancel_active"]["repeats"] == 2
    assert row["memory"]["streams"] == 5
    assert "produced_kib" in row["backpressure"]
    assert set(RATIOS) <= set(row["ratios"])
    assert row["hand_written"]["request"]["rps"] > 0
    assert row["hand_written"]["memory"]["streams"] == 5
    assert "memory overhead < 64 KiB per open stream (vs hand-written route)" in {
        t["target"] for t in document["targets"]
    }

    if document["reference"] is not None:  # fastapi installed
        reference = document["reference"]
        assert reference["cancel_active"]["repeats"] == 2
        assert row["ratios"]["stream_vs_documented"] is not None
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "throughput.png").stat().st_size > 0
    assert "asgi@uvicorn" in run.stdout  # the table
