"""Many concurrent streams on one real server worker: all complete, in order, nothing leaks.

The server runs with ``CHATKIT_TEST_DEBUG=1`` (see ``tests.apps``), so ``GET /_debug/counts``
reports its asyncio tasks, threads, open file descriptors and live pumps; they must be back
to their baseline once the load is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chatkit_app import create_thread, read_journal
from tests.conftest import MEASUREMENTS, load_client
from tests.rawhttp import parse_response
from tests.realserver import RunningServer, shared_server, start_server

pytestmark = [pytest.mark.reliability, pytest.mark.realserver]

DELTAS = 20
SCRIPT = f"deltas={DELTAS} delay=0.05"
EXPECTED_TEXT = "".join(f"w{i} " for i in range(DELTAS))


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    """500 client sockets here, 500 in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for this load")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- a minimal asyncio HTTP/1.1 client -------------------------------------------------


async def http(
    address: tuple[str, int], method: str, path: str, body: bytes = b"", timeout: float = 60
) -> tuple[int, bytes]:
    """One request with ``Connection: close``; the status and the de-chunked body."""

    async def run() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(*address)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            data = await reader.read()  # until the server closes
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return parse_response(data)

    return await asyncio.wait_for(run(), timeout)


def events_of(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(b"\n\n"), body[-200:]
    return [json.loads(block[6:]) for block in body.split(b"\n\n") if block.startswith(b"data: ")]


def check_stream(status: int, body: bytes) -> str:
    """Every event delivered, in order; returns the thread id."""
    assert status == 200, body[:300]
    events = events_of(body)
    assert events[0]["type"] == "thread.created"
    deltas = [e["update"]["delta"] for e in events if e["type"] == "thread.item.updated"]
    assert deltas == [f"w{i} " for i in range(DELTAS)], deltas
    done = [e for e in events if e["type"] == "thread.item.done"]
    assert done[-1]["item"]["content"][0]["text"] == EXPECTED_TEXT
    assert events[-1] is done[-1]
    return str(events[0]["thread"]["id"])


async def counts(running: RunningServer) -> dict[str, int]:
    status, body = await http(running.address, "GET", "/_debug/counts", timeout=20)
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


async def settled(running: RunningServer, baseline: dict[str, int]) -> dict[str, int]:
    """The counts once they are back to *baseline* (or the last seen after 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        now = await counts(running)
        if (
            now["live_streams"] == 0
            and now["tasks"] <= baseline["tasks"]
            and now["threads"] <= baseline["threads"]
            and now["fds"] <= baseline["fds"]
        ) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.2)


def persisted_complete(journal: Path, thread_ids: set[str]) -> int:
    """How many of *thread_ids* have their one complete assistant message in the journal."""
    found: dict[str, list[str]] = {}
    for record in read_journal(journal):
        if record["op"] == "add_thread_item" and record["item_type"] == "assistant_message":
            text = record["item"]["content"][0]["text"]
            found.setdefault(record["thread_id"], []).append(text)
    for thread_id in thread_ids:
        assert found.get(thread_id) == [EXPECTED_TEXT], (thread_id, found.get(thread_id))
    return len(thread_ids)


async def run_load(running: RunningServer, streams: int, label: str) -> None:
    # warm up: the sync adapters start their background loop on the first stream, and a
    # threaded server grows its pool to its size (threads it keeps: not leaks)
    warm = await asyncio.gather(
        *(
            http(running.address, "POST", "/chatkit", create_thread(SCRIPT))
            for _ in range(min(streams, 32))
        )
    )
    for status, data in warm:
        check_stream(status, data)
    baseline = await settled(running, await counts(running))
    peak = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                peak = max(peak, (await counts(running))["live_streams"])
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch()) if streams > 64 else None
    # the server may be shared with the fault suites, whose injected failures are logged:
    # only what this load run logs counts
    log_start = len(running.output())
    started = time.monotonic()
    body = create_thread(SCRIPT)
    results = await asyncio.gather(
        *(http(running.address, "POST", "/chatkit", body, timeout=120) for _ in range(streams))
    )
    elapsed = time.monotonic() - started
    stop.set()
    if watcher is not None:
        await watcher
    thread_ids = {check_stream(status, data) for status, data in results}
    assert len(thread_ids) == streams
    after = await settled(running, baseline)
    assert after["live_streams"] == 0, (baseline, after)
    assert after["tasks"] <= baseline["tasks"], (baseline, after)
    assert after["threads"] <= baseline["threads"], (baseline, after)
    assert after["fds"] <= baseline["fds"], (baseline, after)
    # the store saw every complete answer exactly once
    await asyncio.sleep(0.1)
    persisted = persisted_complete(running.journal, thread_ids)
    logged = running.output()[log_start:]
    assert "Traceback" not in logged, logged[-3000:]
    MEASUREMENTS.append(
        f"load [{label}]: {streams} concurrent streams x {DELTAS} deltas, all complete and in"
        f" order in {elapsed:.1f} s (peak live pumps {peak if watcher else 'n/a'});"
        f" {persisted} answers persisted; counts before {baseline}, after {after}"
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize(
    "adapter",
    [
        pytest.param("asgi", marks=pytest.mark.asgi),
        pytest.param("starlette", marks=pytest.mark.starlette),
        # aiohttp's own server, one process: its debug route is an aiohttp route
        pytest.param("aiohttp", marks=pytest.mark.aiohttp),
    ],
)
async def test_500_concurrent_streams_on_one_worker(
    adapter: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    load_client(adapter)
    server = "aiohttp" if adapter == "aiohttp" else "uvicorn"
    # the shared server (tests.realserver.shared_server): one worker, debug route
    running = shared_server(adapter, server, tmp_path_factory.getbasetemp())
    await run_load(running, 500, f"{adapter}-{server}")


@pytest.mark.flask
async def test_32_concurrent_streams_on_gunicorn_gthread_flask(workdir: Path) -> None:
    load_client("flask")  # skips, with the reason, until the Flask adapter exists
    running = start_server("flask", "gunicorn-gthread", workdir, env={"CHATKIT_TEST_DEBUG": "1"})
    try:
        await run_load(running, 32, "flask-gunicorn-gthread")
    finally:
        running.stop()
