"""What only a real server shows, for every adapter under every server it supports.

Each server runs in a subprocess on 127.0.0.1 (a free port, stopped by its PID) and
serves ``tests.apps:app``; its store really awaits on every write and journals what it
persisted, which is how these tests see the outcome of a disconnect.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chatkit_app import create_thread, read_journal
from tests.conftest import MEASUREMENTS
from tests.rawhttp import Event, RawStream, open_stream, request
from tests.realserver import RunningServer, real_server_params, start_server

pytestmark = pytest.mark.realserver

DISCONNECT_RUNS = 20


StartServer = Callable[..., RunningServer]


@pytest.fixture(scope="module")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Any, RunningServer]]:
    pool: dict[Any, RunningServer] = {}
    yield pool
    for running in pool.values():
        running.stop()


@pytest.fixture(params=real_server_params())
def serve(
    request: pytest.FixtureRequest,
    server_pool: dict[Any, RunningServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> StartServer:
    adapter, server = request.param

    def start(**options: Any) -> RunningServer:
        key = (adapter, server, tuple(sorted(options.items())))
        if key not in server_pool:
            workdir = tmp_path_factory.mktemp(f"{adapter}-{server}")
            server_pool[key] = start_server(adapter, server, workdir, options)
        return server_pool[key]

    return start


def thread_of(events: list[Event]) -> str:
    first = events[0].data
    assert first is not None and first["type"] == "thread.created", first
    return str(first["thread"]["id"])


def deltas(events: list[Event]) -> list[Event]:
    return [e for e in events if e.data and e.data["type"] == "thread.item.updated"]


def wait_for_cancel_records(
    journal: Path, thread_id: str, timeout: float = 10.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The persisted partial assistant message and hidden cancel marker of *thread_id*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [
            r
            for r in read_journal(journal)
            if r["op"] == "add_thread_item" and r["thread_id"] == thread_id
        ]
        assistant = [r for r in records if r["item_type"] == "assistant_message"]
        hidden = [r for r in records if r["item_type"] == "sdk_hidden_context"]
        if assistant and hidden:
            assert len(assistant) == 1 and len(hidden) == 1, records
            return assistant[0], hidden[0]
        time.sleep(0.01)
    raise AssertionError(f"cancel cleanup of {thread_id} not persisted: {records}")


def stream_until(stream: RawStream, predicate: Callable[[list[Event]], bool]) -> list[Event]:
    seen: list[Event] = []
    deadline = time.monotonic() + 15
    while not predicate(seen):
        assert time.monotonic() < deadline, f"timed out; saw {[e.data for e in seen][:5]}"
        assert not stream.ended, f"stream ended early: {[e.data for e in seen]}"
        seen += stream.events(1.0)
    return seen


def report(name: str, values: list[float], unit: str = "ms") -> None:
    values = sorted(values)
    MEASUREMENTS.append(
        f"{name}: median {statistics.median(values):.1f} {unit}, "
        f"max {values[-1]:.1f} {unit} (n={len(values)})"
    )


def test_streams_incrementally(serve: StartServer, request: pytest.FixtureRequest) -> None:
    running = serve()
    started = time.time()
    stream = open_stream(running.address, create_thread("deltas=6 delay=0.25"))
    stream.read_head()
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = stream.read_all()
    stream.close()
    updates = deltas(events)
    assert len(updates) == 6
    # the first delta arrived long before the stream ended, and they arrived spread out
    assert events[-1].at - updates[0].at >= 1.0
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert sum(gap >= 0.1 for gap in gaps) >= 4, gaps
    assert updates[0].at - started < 2.0


def test_disconnect_mid_stream_persists_partial_message_and_marker(
    serve: StartServer, request: pytest.FixtureRequest
) -> None:
    running = serve()
    latencies = []
    for _ in range(DISCONNECT_RUNS):
        stream = open_stream(running.address, create_thread("deltas=1000 delay=0.01"))
        stream.read_head()
        assert stream.status == 200
        seen = stream_until(stream, lambda events: len(deltas(events)) >= 3)
        closed_at = stream.close()
        thread_id = thread_of(seen)
        assistant, hidden = wait_for_cancel_records(running.journal, thread_id)
        text = assistant["item"]["content"][0]["text"]
        seen_text = "".join(e.data["update"]["delta"] for e in deltas(seen))  # type: ignore[index]
        assert text.startswith(seen_text), (text[:80], seen_text)
        assert len(text) < len("".join(f"w{i} " for i in range(1000)))  # partial, not complete
        assert "cancelled" in hidden["item"]["content"]
        latencies.append((hidden["t"] - closed_at) * 1000)
    report(f"disconnect->cancel persisted, streaming [{request.node.callspec.id}]", latencies)


def test_disconnect_while_idle_persists(serve: StartServer, request: pytest.FixtureRequest) -> None:
    running = serve(heartbeat=1.0)
    latencies = []
    for _ in range(5):
        stream = open_stream(running.address, create_thread("deltas=4 idle=30 idle_after=2"))
        stream.read_head()
        seen = stream_until(stream, lambda events: len(deltas(events)) >= 2)
        time.sleep(0.2)  # the stream is idle now
        closed_at = stream.close()
        assistant, hidden = wait_for_cancel_records(running.journal, thread_of(seen))
        assert assistant["item"]["content"][0]["text"] == "w0 w1 "
        latencies.append((hidden["t"] - closed_at) * 1000)
    report(
        f"disconnect->cancel persisted, idle, heartbeat=1s [{request.node.callspec.id}]", latencies
    )


def test_slow_reader_bounds_what_the_server_produces(
    serve: StartServer, request: pytest.FixtureRequest
) -> None:
    running = serve()
    rcvbuf = 64 * 1024
    stream = open_stream(running.address, create_thread("deltas=20000 size=1024"), rcvbuf=rcvbuf)
    stream.read_head()
    seen = stream_until(stream, lambda events: len(deltas(events)) >= 1)
    event_size = len(deltas(seen)[0].raw) + 2
    thread_id = thread_of(seen)
    time.sleep(2.0)  # read nothing

    def produced() -> int:
        notes = [
            r["produced"]
            for r in read_journal(running.journal)
            if r["op"] == "progress" and r["thread_id"] == thread_id
        ]
        return max(notes, default=0)

    time.sleep(1.0)  # kernel buffer autotuning may still be growing: look again later
    produced_events = produced()
    actual_rcvbuf = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    produced_bytes = produced_events * event_size
    bound = actual_rcvbuf + wmem_max + 256 * 1024 + 50 * event_size
    kernel = (actual_rcvbuf + wmem_max) / 1024
    MEASUREMENTS.append(
        f"bytes produced for a client reading nothing [{request.node.callspec.id}]: "
        f"{produced_bytes / 1024:.0f} KiB (kernel buffers up to {kernel:.0f} KiB;"
        f" stream total {20000 * event_size / 1024 / 1024:.1f} MiB)"
    )
    assert 20000 * event_size > 4 * bound  # an unbounded server would fail this test
    assert produced_bytes <= bound, (produced_bytes, bound)
    stream.close()
    wait_for_cancel_records(running.journal, thread_id)


def test_heartbeats_arrive_while_idle(serve: StartServer) -> None:
    running = serve(heartbeat=0.2)
    stream = open_stream(running.address, create_thread("deltas=3 idle=1.5 idle_after=1"))
    stream.read_head()
    events = stream.read_all()
    stream.close()
    kinds = ["ping" if e.data is None else e.data["type"] for e in events]
    first, second = [i for i, k in enumerate(kinds) if k == "thread.item.updated"][:2]
    pings = kinds[first:second].count("ping")
    assert pings >= 5, kinds
    assert kinds[-1] == "thread.item.done"


def test_concurrent_streams_do_not_serialise(serve: StartServer) -> None:
    running = serve()
    body = create_thread("deltas=10 delay=0.1")

    def one() -> float:
        started = time.monotonic()
        stream = request(running.address, body)
        assert stream.status == 200
        return time.monotonic() - started

    single = one()
    results: list[float] = []
    threads = [threading.Thread(target=lambda: results.append(one())) for _ in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert len(results) == 10
    assert elapsed < 0.5 * 10 * single, (elapsed, single)
