"""Sync adapters (raw WSGI, Flask) behind real WSGI servers: what the shared suite can't show.

- The shared real-server tests of ``tests/test_real_server.py``, unchanged, under
  gunicorn's gthread worker (32 threads). They run here because the shared harness takes a
  server as ready when it accepts TCP connections, and a gunicorn master accepts them
  before its worker imported the app; this module waits for an HTTP answer first.
- 32 concurrent Flask streams under gthread (32 threads): all complete, concurrently (each
  answer starts only once all 32 have started: ``gate=NAME/32``, tests.apps), and afterwards
  no thread, task or pump is left behind (a debug route reports the server's threads, the
  background loop's tasks and the live pumps), also after disconnects.
- An idle stream notices a client that left without writing anything where the server
  can be asked (gthread, werkzeug, waitress, also with its default
  ``channel_request_lookahead=0``, granian): ``heartbeat=30`` there, longer than the test
  waits; and where only a failed heartbeat write tells (the stdlib's wsgiref server
  exposes no socket), through its heartbeats.
- gunicorn ``--preload`` with the background loop started in the master before the fork:
  each worker runs its own loop, streams and cancellation work.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.chatkit_app import create_thread, read_journal
from tests.conftest import MEASUREMENTS, load_client
from tests.rawhttp import open_stream
from tests.realserver import SERVERS, RunningServer, start_server
from tests.test_real_server import deltas, report, stream_until, thread_of, wait_for_cancel_records

pytestmark = pytest.mark.realserver


def get_json(running: RunningServer, path: str) -> Any:
    connection = http.client.HTTPConnection(*running.address, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.read()[:300]
        return json.loads(response.read())
    finally:
        connection.close()


# -- 32 concurrent Flask streams under gthread ------------------------------------------


@pytest.fixture
def debug_flask(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    load_client("flask")
    monkeypatch.setenv("CHATKIT_TEST_DEBUG", "1")
    running = start_server("flask", "gunicorn-gthread", tmp_path_factory.mktemp("debug"))
    try:
        yield running
    finally:
        running.stop()


def settled_state(running: RunningServer, timeout: float = 15.0) -> dict[str, Any]:
    """The server's state once no pump and no task remains (or the last one seen)."""
    deadline = time.monotonic() + timeout
    while True:
        state = get_json(running, "/_debug/state")
        if (state["live_streams"] == 0 and state["bridge_tasks"] == 0) or (
            time.monotonic() > deadline
        ):
            return state  # type: ignore[no-any-return]
        time.sleep(0.1)


def run_streams(
    running: RunningServer, count: int, leave_after: set[int], gate: str = ""
) -> list[Any]:
    """*count* concurrent streams; those in *leave_after* disconnect after 3 deltas. With
    a *gate* name, each answer starts only once all *count* have started."""
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        barrier.wait(10)
        body = create_thread(
            f"deltas=20 delay=0.05 gate={gate}/{count}" if gate else "deltas=20 delay=0.05"
        )
        stream = open_stream(running.address, body)
        stream.read_head()
        assert stream.status == 200
        if index in leave_after:
            seen = stream_until(stream, lambda events: len(deltas(events)) >= 3)
            stream.close()
            results[index] = ("left", thread_of(seen))
        else:
            events = stream.read_all()
            stream.close()
            results[index] = ("done", events)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(result is not None for result in results), results
    return results


@pytest.mark.flask
def test_32_concurrent_flask_streams_leave_nothing_behind(debug_flask: RunningServer) -> None:
    running = debug_flask
    started = time.monotonic()
    # all 32 at once: each answer waits until the 32 have started (a serialising server
    # would fail every stream with ChatKit's error event after 30 s)
    first = run_streams(running, 32, leave_after=set(), gate="first")
    elapsed = time.monotonic() - started
    for kind, events in first:
        assert kind == "done"
        assert len(deltas(events)) == 20
        assert events[-1].data["type"] == "thread.item.done"
    after_first = settled_state(running)
    assert after_first["live_streams"] == 0 and after_first["bridge_tasks"] == 0, after_first
    assert after_first["threads"].count("chatkit-adapters-loop") == 1

    # again, with a quarter of the clients leaving mid-stream
    leave = set(range(0, 32, 4))
    second = run_streams(running, 32, leave_after=leave)
    for index, (kind, value) in enumerate(second):
        if index in leave:
            assert kind == "left"
            wait_for_cancel_records(running.journal, value)
        else:
            assert kind == "done" and len(deltas(value)) == 20
    after_second = settled_state(running)
    assert after_second["live_streams"] == 0 and after_second["bridge_tasks"] == 0, after_second
    # no thread per request or per stream: the same threads as after the first round
    assert after_second["threads"] == after_first["threads"], (after_first, after_second)
    MEASUREMENTS.append(
        f"32 concurrent Flask streams of 1 s under gunicorn gthread: {elapsed:.2f} s; "
        f"{len(after_second['threads'])} threads in the worker afterwards, 0 tasks, 0 pumps"
    )


# -- idle disconnects and heartbeats ----------------------------------------------------


WSGIREF = """
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, make_server
from tests.apps import app

class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

make_server("127.0.0.1", {port}, app(), server_class=Server).serve_forever()
"""

EXTRA_SERVERS: dict[str, Callable[[int], list[str]]] = {
    # waitress's default channel_request_lookahead=0: waitress itself cannot tell
    "waitress-no-lookahead": lambda port: [
        arg
        for arg in SERVERS["waitress"](port)
        if not arg.startswith("--channel-request-lookahead")
    ],
    # the stdlib server puts no socket in environ: only a failed write tells
    "wsgiref": lambda port: [sys.executable, "-c", WSGIREF.format(port=port)],
}


# (server, heartbeat): where the server can be asked whether the client is still there,
# heartbeat=30 s, longer than the test waits, so only the adapter's probe can notice; where
# only a failed write tells (no socket in the environ), heartbeats every 0.5 s
PROBED_HEARTBEAT = 30.0
IDLE_SERVERS = [
    pytest.param(("gunicorn-gthread", PROBED_HEARTBEAT), id="gunicorn-gthread"),
    pytest.param(("werkzeug", PROBED_HEARTBEAT), id="werkzeug"),
    pytest.param(("waitress", PROBED_HEARTBEAT), id="waitress"),
    pytest.param(("waitress-no-lookahead", PROBED_HEARTBEAT), id="waitress-no-lookahead"),
    pytest.param(("wsgiref", 0.5), id="wsgiref-heartbeat-only"),
    pytest.param(("granian-wsgi", 0.5), id="granian-wsgi-heartbeat-only"),
]


@pytest.fixture(params=IDLE_SERVERS)
def idle_server(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, float]]:
    """A Flask app under *server* with its heartbeat (see ``IDLE_SERVERS``)."""
    load_client("flask")
    server, heartbeat = request.param
    if server in EXTRA_SERVERS:
        monkeypatch.setitem(SERVERS, server, EXTRA_SERVERS[server])
    running = start_server(
        "flask", server, tmp_path_factory.mktemp("idle"), {"heartbeat": heartbeat}
    )
    try:
        yield running, heartbeat
    finally:
        running.stop()


@pytest.mark.flask
def test_idle_client_that_left_is_noticed(
    idle_server: tuple[RunningServer, float], request: pytest.FixtureRequest
) -> None:
    """The stream sleeps 30 s after its second delta; the client leaves then. Where the
    server can be asked, the cancel is persisted before any heartbeat could have been
    written (the wait for it is shorter than the heartbeat): the probe noticed. Elsewhere
    a heartbeat write fails and tells."""
    running, heartbeat = idle_server
    latencies = []
    for _ in range(3):
        stream = open_stream(running.address, create_thread("deltas=4 idle=30 idle_after=2"))
        stream.read_head()
        # the second delta is the last for 30 s: from here on the stream is idle
        seen = stream_until(stream, lambda events: len(deltas(events)) >= 2)
        assert not any(e.data is None for e in seen) or heartbeat < PROBED_HEARTBEAT
        closed_at = stream.close()
        assistant, hidden = wait_for_cancel_records(
            running.journal, thread_of(seen), timeout=min(10.0, PROBED_HEARTBEAT - 5)
        )
        assert assistant["item"]["content"][0]["text"] == "w0 w1 "
        latencies.append(hidden["t"] - closed_at)
    report(
        f"idle client left -> cancel persisted, heartbeat={heartbeat:g}s, flask"
        f" [{request.node.callspec.id}]",
        [latency * 1000 for latency in latencies],
    )


# -- gunicorn --preload with a loop started before the fork -----------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs fork")
@pytest.mark.parametrize(
    "adapter",
    [pytest.param("wsgi", marks=pytest.mark.wsgi), pytest.param("flask", marks=pytest.mark.flask)],
)
def test_preload_with_the_loop_started_in_the_master(
    adapter: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    load_client(adapter)
    monkeypatch.setenv("CHATKIT_TEST_WARM_BRIDGE", "1")
    running = start_server(adapter, "gunicorn-preload", tmp_path_factory.mktemp("preload"))
    try:
        for _ in range(6):  # two workers: both serve some of these
            stream = open_stream(running.address, create_thread("deltas=3"))
            stream.read_head()
            assert stream.status == 200
            events = stream.read_all(timeout=15)
            stream.close()
            assert len(deltas(events)) == 3
        stream = open_stream(running.address, create_thread("deltas=1000 delay=0.01"))
        stream.read_head()
        seen = stream_until(stream, lambda events: len(deltas(events)) >= 3)
        stream.close()
        wait_for_cancel_records(running.journal, thread_of(seen))
    finally:
        running.stop()
    assert "Traceback" not in running.output(), running.output()
    assert read_journal(running.journal)


# -- interpreter exit with a live stream ------------------------------------------------


@pytest.mark.flask
@pytest.mark.parametrize("server", ["werkzeug", "waitress"])
def test_ctrl_c_cancels_live_streams_and_persists_their_cleanup(
    server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The exit hook: the server stops (Ctrl-C) while a stream runs; ChatKit's cleanup
    is not lost, and the process exits."""
    load_client("flask")
    running = start_server("flask", server, tmp_path_factory.mktemp("exit"))
    try:
        stream = open_stream(running.address, create_thread("deltas=100000 delay=0.01"))
        stream.read_head()
        seen = stream_until(stream, lambda events: len(deltas(events)) >= 3)
        code = running.stop(signal.SIGINT, timeout=20)
    finally:
        running.stop(signal.SIGKILL)
    assert code == 0, running.output()
    assistant, hidden = wait_for_cancel_records(running.journal, thread_of(seen), timeout=1)
    assert assistant["item"]["content"][0]["text"].startswith("w0 w1 w2 ")
    assert "cancelled" in hidden["item"]["content"]
