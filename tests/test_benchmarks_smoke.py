"""The benchmark harness still runs end to end (one row, --quick, tiny sizes).

Not a performance test: nothing about speed is asserted, only that ``python -m benchmarks``
measures every figure of the row it runs (raw ASGI on uvicorn with uvloop+httptools; the
documented wiring runs on uvicorn with h11, so both server paths run), of the row's
references (the hand-written route and its cached-validator variant, the
documented wiring, the in-process limit), and writes the results document with the keys
the README describes. A row or reference that cannot run fails the test: the harness
exits 1 and lists it, and every figure is checked here as well.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.realserver import ROOT

pytestmark = pytest.mark.benchmarks

ROWS = ("asgi@uvicorn-uvloop",)
ROW_FIGURES = (
    "stream",
    "request",
    "ttfe",
    "paced",
    "cancel_active",
    "cancel_idle",
    "memory",
    "backpressure",
)
REFERENCE_FIGURES = ("stream", "request", "ttfe", "paced")
RATIOS = (
    "stream_vs_in_process",
    "stream_vs_documented",
    "stream_vs_hand_written",
    "stream_vs_hand_cached",
    "request_vs_hand_written",
    "request_vs_hand_cached",
    "paced_cpu_vs_hand_written",
    "paced_cpu_vs_hand_cached",
    "ttfe_delta_vs_hand_written_ms",
    "ttfe_delta_vs_documented_ms",
    "memory_overhead_kib",
)
REPEATS = 2
PACED = 10


def _no_error(figure: Any, where: str) -> None:
    assert isinstance(figure, dict), (where, figure)
    assert "error" not in figure, (where, figure["error"])


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    missing = [
        package
        for package in ("uvicorn", "fastapi", "uvloop", "httptools")
        if importlib.util.find_spec(package) is None
    ]
    if missing:
        message = f"{', '.join(missing)} not installed (tox env benchmarks installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    command = [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)]
    for row in ROWS:
        command += ["--only", row]
    command += ["--deltas", "300", "--duration", "1", "--repeats", str(REPEATS)]
    command += ["--streams", "5", "--paced-streams", str(PACED), "--paced-seconds", "0.5"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    document = json.loads((tmp_path / "results.json").read_text())

    assert {"meta", "in_process", "reference", "rows", "skipped", "targets", "plot"} <= set(
        document
    )
    assert document["failures"] == []
    # other frameworks' clients may be missing in this env; nothing the run needs may be
    assert [s for s in document["skipped"] if s["row"] in ROWS or "documented" in s["row"]] == []
    assert document["meta"]["loadgen"] in ("wrk", "python-asyncio")
    assert document["in_process"]["events_per_s"] > 0
    reference = document["reference"]
    assert reference["cancel_active"]["repeats"] == REPEATS
    assert reference["stream"]["events_per_s"] > 0
    assert [row["label"] for row in document["rows"]] == list(ROWS)
    for row in document["rows"]:
        label = row["label"]
        assert "error" not in row, (label, row["error"])
        for figure in ROW_FIGURES:
            _no_error(row[figure], f"{label}: {figure}")
        assert row["stream"]["events_per_s"] > 0
        assert row["request"]["rps"] > 0
        assert row["ttfe"]["median_ms"] > 0
        assert row["cancel_active"]["persisted"] == row["cancel_active"]["repeats"] == REPEATS
        assert row["memory"]["streams"] == 5
        assert "produced_kib" in row["backpressure"]
        assert row["paced"]["streams"] == PACED
        assert row["paced"]["cpu_ms_per_stream"] > 0
        for name in ("hand_written", "hand_cached"):
            reference_route = row[name]
            _no_error(reference_route, f"{label}: {name}")
            for figure in REFERENCE_FIGURES:
                _no_error(reference_route[figure], f"{label}: {name}.{figure}")
            # every reference streams as many rounds as the adapter (paired ratios)
            assert len(reference_route["stream"]["runs"]) == len(row["stream"]["runs"]) == 1
            assert reference_route["request"]["rps"] > 0
            assert reference_route["paced"]["streams"] == PACED
        assert row["hand_cached"]["name"] == row["hand_written"]["name"] + "-cached"
        assert row["hand_written"]["memory"]["streams"] == 5
        for ratio in RATIOS:
            assert isinstance(row["ratios"][ratio], float), (label, ratio, row["ratios"])
    assert "memory overhead < 64 KiB per open stream (vs hand-written route)" in {
        t["target"] for t in document["targets"]
    }
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "throughput.png").stat().st_size > 0
    for row in ROWS:
        assert row in run.stdout  # the table
