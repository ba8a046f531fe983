"""Fault injection: disconnects at random points, failing and slow stores, shutdown, and
context factories that refuse.

Real servers run in subprocesses (``tests.realserver``); their store journals every
completed write (``tests.chatkit_app.JournalStore``), which is how these tests check, from
outside, that nothing ChatKit had pending was lost or written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chatkit_adapters import ChatKitHTTPError, live_streams
from tests.chatkit_app import (
    JournalStore,
    create_thread,
    list_threads,
    read_journal,
    sse_events,
)
from tests.conftest import MEASUREMENTS, MakeClient, load_client
from tests.rawhttp import Event, RawStream, open_stream, request
from tests.realserver import (
    SHARED_OPTIONS,
    RunningServer,
    all_real_targets,
    prestart_shared,
    real_server_params,
    shared_server,
    start_server,
)

pytestmark = pytest.mark.reliability

DISCONNECTS_PER_TARGET = 100
PARALLEL_CLIENTS = 8
FAST_DELTAS = 6
FAST_SCRIPT = f"deltas={FAST_DELTAS} delay=0.01"
FAST_TEXT = "".join(f"w{i} " for i in range(FAST_DELTAS))
LONG_TEXT = "".join(f"w{i} " for i in range(1000))
CLEANUP_TIMEOUT = SHARED_OPTIONS["cleanup_timeout"]
ERROR_EVENT = {"type": "error", "code": "stream.error", "allow_retry": True}


@pytest.fixture(params=real_server_params(pytest.mark.realserver))
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    """One server per adapter x server, shared with the other reliability suites."""
    adapter, server = request.param
    root = tmp_path_factory.getbasetemp()
    prestart_shared(all_real_targets(), root)
    return shared_server(adapter, server, root)


def target_id(running: RunningServer) -> str:
    return f"{running.adapter}-{running.server}"


def data_events(events: list[Event]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.data is not None]


def streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["update"]["delta"] for e in events if e["type"] == "thread.item.updated")


def wait_quiet(journal: Path, quiet: float = 1.0, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The journal once no line was added for *quiet* seconds."""
    deadline = time.monotonic() + timeout
    last = -1
    since = time.monotonic()
    while time.monotonic() < deadline:
        records = read_journal(journal)
        if len(records) != last:
            last, since = len(records), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return records
        time.sleep(0.05)
    raise AssertionError("the server kept writing to its journal")


def debug_counts(running: RunningServer) -> dict[str, int]:
    """The server's ``/_debug/counts`` (see tests.apps; every adapter has it)."""
    stream = open_stream(running.address, b"", path="/_debug/counts")
    stream.read_head()
    body = b""
    deadline = time.monotonic() + 5
    while not stream._ended and time.monotonic() < deadline:
        if stream._recv(0.5):
            stream._decode()
    body = stream._body
    stream.close()
    assert stream.status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def wait_no_live_streams(running: RunningServer, timeout: float = 10.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = debug_counts(running)
        if counts["live_streams"] == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


class Journal:
    """What the server persisted, per thread."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.items = [r for r in records if r["op"] == "add_thread_item"]
        self.by_thread: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for record in self.items:
            kinds = self.by_thread.setdefault(record["thread_id"], {})
            kinds.setdefault(record["item_type"], []).append(record)
        self.threads = {r["thread_id"] for r in records if r["op"] == "save_thread"}
        self.responding = {r["thread_id"] for r in records if r["op"] == "respond_started"}

    def kinds(self, thread_id: str) -> dict[str, list[dict[str, Any]]]:
        return self.by_thread.get(thread_id, {})


def check_invariants(journal: Journal, full_text: str) -> dict[str, int]:
    """Nothing lost, nothing half-written or duplicated; returns outcome counts. Every
    persisted answer is a prefix of *full_text* (whole events only); a thread without a
    cancel marker whose answer is complete (*full_text*, or the shorter ``FAST_TEXT``
    that is a prefix of it) counts as completed."""
    item_ids = [r["item_id"] for r in journal.items]
    assert len(item_ids) == len(set(item_ids)), "an item was persisted twice"
    outcome = {"completed": 0, "cancelled": 0, "before_respond": 0, "lost": 0}
    # ChatKit persists nothing on a cancel that lands before respond() runs inside its try
    # block (e.g. at _process_events' first ``await asyncio.sleep(0)``, after the user
    # message was saved): that is ChatKit's design, not a loss. After it, the marker is due.
    for thread_id in journal.threads:
        kinds = journal.kinds(thread_id)
        users = kinds.get("user_message", [])
        assistants = kinds.get("assistant_message", [])
        hidden = kinds.get("sdk_hidden_context", [])
        assert len(users) <= 1 and len(assistants) <= 1 and len(hidden) <= 1, kinds
        texts = [a["item"]["content"][0]["text"] for a in assistants]
        for text in texts:
            assert full_text.startswith(text) and text.strip(), text  # never half an event
        if hidden:
            assert users, "a cancel marker without the user message it answers"
            assert "cancelled" in hidden[0]["item"]["content"]
            outcome["cancelled"] += 1
        elif users and texts and texts[0] in (full_text, FAST_TEXT):
            outcome["completed"] += 1
        elif thread_id in journal.responding:
            outcome["lost"] += 1  # ChatKit's cleanup did not persist (the bug we guard)
        else:
            assert not assistants
            outcome["before_respond"] += 1  # cancelled before respond() began
    return outcome


# -- (a) disconnects at random points ----------------------------------------------------


MID_SCRIPT = "deltas=1000 delay=0.01"  # 10 s: a disconnect after a few events is mid-stream
MIN_MID_CANCELS = 30  # a plan has about 45 "mid" runs; each must end in a cancel


def one_run(running: RunningServer, point: str, read_events: int) -> dict[str, Any]:
    script = MID_SCRIPT if point == "mid" else FAST_SCRIPT
    stream = open_stream(running.address, create_thread(script))
    seen: list[dict[str, Any]] = []
    try:
        if point == "before_head":
            return {"point": point, "seen": seen}
        stream.read_head()
        assert stream.status == 200
        if point == "after_head":
            return {"point": point, "seen": seen}
        deadline = time.monotonic() + 10
        while not stream.ended and time.monotonic() < deadline:
            seen += data_events(stream.events(0.5))
            if point != "complete" and len(seen) >= read_events:
                break
        if point == "complete":
            assert stream.ended
            stream.check_complete()
        if point == "mid":
            assert not stream.ended  # a 10 s stream: the client leaves in its middle
        return {"point": point, "seen": seen}
    finally:
        stream.close()


def test_random_disconnects_lose_and_duplicate_nothing(running: RunningServer) -> None:
    # the server is shared: judge only the threads this test creates
    journal_start = len(read_journal(running.journal))
    # one complete stream tells how many events a stream has, and where its deltas begin
    reference = one_run(running, "complete", 0)["seen"]
    total = len(reference)
    assert streamed_text(reference) == FAST_TEXT
    first_delta = [e["type"] for e in reference].index("thread.item.updated") + 1
    log_start = len(running.output())
    rng = random.Random(target_id(running))
    plan = []
    for index in range(DISCONNECTS_PER_TARGET):
        point = rng.choice(["before_head", "after_head", "mid", "mid", "mid", "at_last"])
        if index % 10 == 0:
            point = "complete"  # controls: nothing marked cancelled
        # "mid": a long stream, left after its first to fifth delta
        read = {"mid": rng.randint(first_delta, first_delta + 4), "at_last": total}.get(point, 0)
        plan.append((point, read))
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL_CLIENTS) as pool:
        runs = list(pool.map(lambda p: one_run(running, *p), plan))
    records = wait_quiet(running.journal)[journal_start:]
    journal = Journal(records)
    outcome = check_invariants(journal, LONG_TEXT)
    assert outcome["lost"] == 0, outcome
    injected = mid_cancelled = 0
    for run in runs:
        seen = run["seen"]
        if run["point"] != "complete":
            injected += 1
        if not seen:
            continue
        thread_id = seen[0]["thread"]["id"]
        kinds = journal.kinds(thread_id)
        text = streamed_text(seen)
        if run["point"] == "complete":
            assert "sdk_hidden_context" not in kinds, kinds
            assert [a["item"]["content"][0]["text"] for a in kinds["assistant_message"]] == [
                FAST_TEXT
            ]
        elif text:
            # the client saw part of the answer: it was persisted, at least that much
            persisted = kinds["assistant_message"][0]["item"]["content"][0]["text"]
            assert persisted.startswith(text), (persisted, text)
        if run["point"] == "mid":
            # left a 10 s stream after a few deltas: it was cancelled, its cleanup ran
            assert text, seen
            assert "sdk_hidden_context" in kinds, kinds
            assert kinds["assistant_message"][0]["item"]["content"][0]["text"] != LONG_TEXT
            mid_cancelled += 1
    planned = sum(point == "mid" for point, _ in plan)
    assert mid_cancelled == planned >= MIN_MID_CANCELS, (mid_cancelled, planned, outcome)
    assert outcome["cancelled"] >= mid_cancelled, outcome
    counts = wait_no_live_streams(running)
    assert counts["live_streams"] == 0, counts
    log = running.output()[log_start:]
    for marker in ("chatkit_adapters/", "Exception in ASGI application", "Internal Server"):
        assert marker not in log, log[-3000:]
    MEASUREMENTS.append(
        f"faults [{target_id(running)}]: {injected} disconnects injected + "
        f"{len(runs) - injected} complete, {time.monotonic() - started:.1f} s; persisted"
        f" outcomes {outcome} ({mid_cancelled} mid-stream cancels); items lost 0, duplicated 0"
    )


# -- (b) a store failing mid-stream ------------------------------------------------------


def test_store_failing_mid_stream_ends_with_error_event(running: RunningServer) -> None:
    stream = request(running.address, create_thread("deltas=3 delay=0.01 fail_assistant"))
    assert stream.status == 200
    events = sse_events(stream._body)
    assert stream.complete  # its last chunk arrived: a clean end, not a reset
    assert streamed_text(events) == "w0 w1 w2 "
    assert events[-1]["type"] == "error" and events[-1]["code"] == "stream.error", events[-1]
    # the server keeps serving
    ok = request(running.address, create_thread(FAST_SCRIPT))
    assert ok.status == 200
    assert streamed_text(sse_events(ok._body)) == FAST_TEXT


async def test_store_failing_mid_stream_in_process(
    make_client: MakeClient, store: JournalStore
) -> None:
    client = await make_client()
    response = await client.post(create_thread("deltas=3 fail_assistant"))
    assert response.status == 200
    assert response.body.endswith(b"\n\n")
    events = sse_events(response.body)
    assert streamed_text(events) == "w0 w1 w2 "
    assert events[-1]["type"] == "error" and events[-1]["code"] == "stream.error"
    assert (await client.post(list_threads())).status == 200
    again = await client.post(create_thread("deltas=2"))
    assert streamed_text(sse_events(again.body)) == "w0 w1 "
    for _ in range(100):  # the pump's task ends a loop iteration after the response
        if live_streams() == 0:
            break
        await asyncio.sleep(0.01)
    assert live_streams() == 0


# -- (c) a store whose cancel-time writes are slow ----------------------------------------


def test_slow_cancel_cleanup_is_bounded_logged_and_leaks_nothing(running: RunningServer) -> None:
    before = wait_no_live_streams(running)
    stream = open_stream(running.address, create_thread("deltas=1000 delay=0.01 slow_cancel=30"))
    stream.read_head()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len([e for e in seen if e["type"] == "thread.item.updated"]) < 3:
        assert time.monotonic() < deadline
        seen += data_events(stream.events(1.0))
    thread_id = seen[0]["thread"]["id"]
    closed_at = stream.close()
    # the slow write starts, and is abandoned after cleanup_timeout, with a warning: long
    # before the write itself (30 s) could have finished
    deadline = time.monotonic() + CLEANUP_TIMEOUT + 10
    while "did not finish within cleanup_timeout" not in running.output():
        assert time.monotonic() < deadline, running.output()[-3000:]
        time.sleep(0.05)
    logged_after = time.time() - closed_at
    records = read_journal(running.journal)
    started = [r for r in records if r["op"] == "slow_cancel_write_started"]
    assert [r["thread_id"] for r in started] == [thread_id]
    # no hang: the server still answers while the abandoned write sleeps on, and the
    # abandoned cleanup left nothing running (the server's own counts)
    assert request(running.address, list_threads()).status == 200
    after = wait_no_live_streams(running)
    assert after["live_streams"] == 0, after
    # tasks return to their level (the server may still be finishing the request that
    # carried the stream; threads are not compared: thread pools grow on first use)
    deadline = time.monotonic() + 10
    while after["tasks"] > before["tasks"] and time.monotonic() < deadline:
        time.sleep(0.1)
        after = debug_counts(running)
    assert after["tasks"] <= before["tasks"], (before, after)
    kinds = Journal(wait_quiet(running.journal, quiet=0.5)).kinds(thread_id)
    assert "sdk_hidden_context" not in kinds  # abandoned, as documented
    MEASUREMENTS.append(
        f"slow cancel cleanup [{target_id(running)}]: abandoned and logged"
        f" {logged_after:.2f} s after the disconnect (cleanup_timeout={CLEANUP_TIMEOUT})"
    )


# -- (d) server shutdown with live streams -----------------------------------------------


def _open_live_streams(running: RunningServer, count: int, script: str) -> list[RawStream]:
    streams = []
    for _ in range(count):
        stream = open_stream(running.address, create_thread(script))
        stream.read_head()
        assert stream.status == 200
        streams.append(stream)
    return streams


def _read_until_deltas(stream: RawStream, deltas: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len([e for e in seen if e["type"] == "thread.item.updated"]) < deltas:
        assert time.monotonic() < deadline and not stream.ended
        seen += data_events(stream.events(1.0))
    return seen


SHUTDOWN_CASES = [
    pytest.param("asgi", "uvicorn", id="asgi-uvicorn", marks=pytest.mark.asgi),
    pytest.param("starlette", "uvicorn", id="starlette-uvicorn", marks=pytest.mark.starlette),
    pytest.param("flask", "gunicorn-gthread", id="flask-gunicorn", marks=pytest.mark.flask),
]


@pytest.mark.realserver
@pytest.mark.parametrize(("adapter", "server"), SHUTDOWN_CASES)
def test_sigterm_lets_live_streams_finish_and_persist(
    adapter: str, server: str, tmp_path: Path
) -> None:
    """uvicorn and gunicorn wait for open responses on SIGTERM: every answer is persisted."""
    load_client(adapter)
    running = start_server(adapter, server, tmp_path, write_delay=0.005)
    try:
        script = "deltas=30 delay=0.05"
        streams = _open_live_streams(running, 5, script)
        seen = [_read_until_deltas(s, 2) for s in streams]
        running.process.send_signal(signal.SIGTERM)
        for stream, events in zip(streams, seen, strict=True):
            events += data_events(stream.read_all(timeout=20))
            stream.close()
        # uvicorn re-raises the signal it handled once its graceful shutdown is done
        assert running.process.wait(20) in (0, -signal.SIGTERM), running.output()[-3000:]
    finally:
        running.stop(signal.SIGKILL)
    full = "".join(f"w{i} " for i in range(30))
    journal = Journal(read_journal(running.journal))
    for events in seen:
        assert streamed_text(events) == full
        kinds = journal.kinds(events[0]["thread"]["id"])
        assert [a["item"]["content"][0]["text"] for a in kinds["assistant_message"]] == [full]
    MEASUREMENTS.append(f"SIGTERM [{adapter}-{server}]: 5 live streams finished and persisted")


@pytest.mark.realserver
@pytest.mark.parametrize(
    ("adapter", "env"),
    [
        # the raw app drains on lifespan.shutdown by itself
        pytest.param("asgi", {}, id="asgi", marks=pytest.mark.asgi),
        # a framework app needs the documented lifespan hook (``await drain()``)
        pytest.param(
            "starlette",
            {"CHATKIT_TEST_DRAIN": "1"},
            id="starlette-lifespan-drain",
            marks=pytest.mark.starlette,
        ),
    ],
)
def test_sigterm_with_graceful_timeout_persists_partial_answers(
    adapter: str, env: dict[str, str], tmp_path: Path
) -> None:
    """``uvicorn --timeout-graceful-shutdown 1`` cancels the requests still running, runs
    the lifespan shutdown, then re-raises SIGTERM (the process dies at once: no
    ``asyncio.run`` teardown). Cleanups must finish during lifespan shutdown: they do."""
    load_client(adapter)
    running = start_server(adapter, "uvicorn-graceful", tmp_path, write_delay=0.02, env=env)
    try:
        streams = _open_live_streams(running, 5, "deltas=1000 delay=0.01")
        seen = [_read_until_deltas(s, 3) for s in streams]
        signalled = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(20)
        exited = time.monotonic() - signalled
        for stream, events in zip(streams, seen, strict=True):
            with contextlib.suppress(AssertionError):  # the server died mid-stream
                events += data_events(stream.read_all(timeout=5))
            stream.close()
    finally:
        running.stop(signal.SIGKILL)
    journal = Journal(read_journal(running.journal))
    lost = 0
    for events in seen:
        kinds = journal.kinds(events[0]["thread"]["id"])
        assistants = kinds.get("assistant_message", [])
        if not (assistants and kinds.get("sdk_hidden_context")):
            lost += 1
            continue
        persisted = assistants[0]["item"]["content"][0]["text"]
        assert persisted.startswith(streamed_text(events[:3])) and persisted != LONG_TEXT
    assert lost == 0, running.output()[-3000:]
    assert exited < 10, exited
    MEASUREMENTS.append(
        f"SIGTERM + --timeout-graceful-shutdown 1 [{adapter}-uvicorn]: 5 partial answers and"
        f" cancel markers persisted; exited {exited:.1f} s after the signal"
    )


# -- (e) a context factory that refuses ---------------------------------------------------


def _raise(error: BaseException) -> Callable[[Any], Any]:
    def context(request: Any) -> Any:
        raise error

    return context


@pytest.mark.parametrize(
    ("status", "headers"),
    [(401, {"WWW-Authenticate": "Bearer"}), (403, {}), (429, {"Retry-After": "7"}), (503, {})],
)
async def test_context_factory_that_raises_reaches_the_client_and_processes_nothing(
    make_client: MakeClient, store: JournalStore, status: int, headers: dict[str, str]
) -> None:
    client = await make_client(context=_raise(ChatKitHTTPError(status, "nope", headers=headers)))
    if client.variant == "response":
        pytest.skip("a user-written route builds its context outside the adapter")
    for body in (create_thread("deltas=50 delay=0.01"), list_threads()):
        response = await client.post(body)
        assert response.status == status, response.body[:300]
        error = json.loads(response.body)["error"]
        assert error["message"] == "nope"
        for name, value in headers.items():
            assert response.headers[name.lower()] == value
    assert store.calls == []
    assert live_streams() == 0


async def test_async_context_factory_that_raises(
    make_client: MakeClient, store: JournalStore
) -> None:
    client = await make_client()
    if not client.async_context or client.variant == "response":
        pytest.skip("sync context factories only, or context built outside the adapter")

    async def context(request: Any) -> Any:
        raise ChatKitHTTPError(403, "async no")

    client = await make_client(context=context)
    response = await client.post(create_thread())
    assert response.status == 403
    assert json.loads(response.body)["error"] == {"type": "forbidden", "message": "async no"}
    assert store.calls == []


async def test_framework_exception_from_factory_processes_nothing(
    make_client: MakeClient, store: JournalStore
) -> None:
    holder: list[type[Any]] = []

    def context(request: Any) -> Any:
        raise holder[0].unauthorized()

    client = await make_client(context=context)
    holder.append(type(client))
    for body in (create_thread(), list_threads()):
        assert (await client.post(body)).status == 401
    assert store.calls == []
    assert live_streams() == 0
    assert threading.active_count() >= 1


# -- the loop's own teardown -------------------------------------------------------------


@pytest.mark.parametrize("state", ["cleanup_running", "parked_at_yield"])
def test_event_loop_teardown_does_not_interrupt_cancel_cleanup(state: str) -> None:
    """``asyncio.run`` cancels every task left at exit (aiohttp's ``run_app``, a server
    whose shutdown cancelled its handlers and returned). That cancel must not interrupt a
    cleanup already running (a second cancel) nor skip ChatKit's handler when the pump was
    parked at a ``yield`` by backpressure: it becomes the stream's one orderly cancel."""
    from chatkit_adapters._pump import EventStream
    from tests.chatkit_app import make_server

    server = make_server(write_delay=0.02, journal="")
    store = server.journal_store
    thread_ids: list[str] = []

    async def main() -> None:
        result = await server.process(create_thread("deltas=1000 delay=0.01"), {})
        stream = EventStream(result, cleanup_timeout=5, max_events=1)  # type: ignore[arg-type]
        await stream.prime()
        seen = b""
        while seen.count(b"thread.item.updated") < 3:
            seen += await stream.next_chunk() or b""
        thread_ids.append(sse_events(seen)[0]["thread"]["id"])
        if state == "cleanup_running":
            stream.cancel()  # the client left; the cleanup's store writes are under way
            await asyncio.sleep(0.005)
        else:
            await asyncio.sleep(0.1)  # nobody reads: the pump is parked at a yield
        # return: asyncio.run cancels every task still running

    asyncio.run(main())
    kinds = [item.type for item in store.items[thread_ids[0]]]
    assert kinds == ["user_message", "assistant_message", "sdk_hidden_context"], kinds
    assert live_streams() == 0
