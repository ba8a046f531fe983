"""The memory bound of uploads under real servers: a 200 MiB upload through
``chatkit_routes`` raises the server process's RSS by less than 8 MiB, on every adapter.

Before it, a client leaves mid-upload: nothing may be left in the store (a real
disconnect, which only a real server shows). One upload per adapter, under its first real
server (a subprocess); the RSS is read from ``/proc`` (the worker's, under gunicorn) while
the client streams the body from a reused 1 MiB buffer. A memory bound, not a timing one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MEASUREMENTS
from tests.realserver import real_server_params, start_server
from tests.uploads import MIB, Sampler, abandon, files_left, rss, serving_pid, upload

UPLOAD = 200 * MIB
BOUND = 8 * MIB

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


@pytest.mark.realserver
@pytest.mark.parametrize("target", real_server_params(first_only=True))
def test_200_mib_upload_rss_growth(target: tuple[str, str], tmp_path: Path) -> None:
    adapter, server = target
    files = tmp_path / "files"
    env = {"CHATKIT_TEST_ATTACHMENTS": str(files)}
    running = start_server(adapter, server, tmp_path, variant="routes", env=env)
    try:
        path = "/chatkit/attachments" + ("/" if adapter.startswith("django") else "")
        # a client leaving mid-upload leaves nothing behind (obstore's staging file too)
        abandon(running.address, path, 32 * MIB, sent=8 * MIB)
        assert files_left(files, timeout=20) == []
        status, body = upload(running.address, path, MIB)  # warm-up: imports, first buffers
        assert status == 200, body[:300]
        pid = serving_pid(running.process.pid)
        before, hwm_before = rss(pid), rss(pid, "VmHWM")
        sampler = Sampler(pid)
        sampler.start()
        status, body = upload(running.address, path, UPLOAD)
        sampler.done.set()
        sampler.join()
        hwm_after = rss(pid, "VmHWM")
        assert status == 200, body[:300]
        peak = max(sampler.peak, hwm_after if hwm_after > hwm_before else 0)
        growth = peak - before
        MEASUREMENTS.append(
            f"attachments RSS {adapter}/{server}: +{growth / MIB:.1f} MiB for a 200 MiB upload"
        )
        stored = sorted(files.glob("*/meta.json"))
        assert len(stored) == 2
        sizes = sorted(json.loads(p.read_text())["size"] for p in stored)
        assert sizes == [MIB, UPLOAD]
        assert growth < BOUND, f"RSS grew by {growth / MIB:.1f} MiB"
    finally:
        running.stop()
