"""The background loop of sync frameworks and the sync face of the pump, without a server.

- the bridge: one loop per process, results and errors across threads, timeouts on every
  wait, a restart when the loop died, a fresh loop after ``fork`` (also when the lock was
  held during the fork) that leaves the parent's loop working, the exit hook;
- :class:`SyncEventStream`: chunks in order, heartbeats, a disconnect probe that cancels
  the generator *at an await* so its cleanup (ChatKit's ``handle_stream_cancelled``)
  completes before ``close()`` returns, and a ``close()`` bounded by ``cleanup_timeout``;
- the socket probe on real sockets.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatkit_adapters import _bridge, live_streams
from chatkit_adapters._core import StreamReply
from chatkit_adapters._pump import HEARTBEAT, EventStream
from chatkit_adapters._sync import SyncEventStream, disconnect_probe, peer_closed

ROOT = Path(__file__).resolve().parent.parent


async def _value(value: object, delay: float = 0.0) -> object:
    await asyncio.sleep(delay)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("boom")


def _block_loop(seconds: float) -> None:
    async def block() -> None:
        time.sleep(seconds)  # noqa: ASYNC251 - a coroutine blocking the loop (a user bug)

    _bridge.submit(block())


# -- the bridge -------------------------------------------------------------------------


def test_one_loop_in_a_daemon_thread() -> None:
    loop = _bridge.get_loop()
    assert _bridge.get_loop() is loop
    assert _bridge.current_loop() is loop
    threads = [t for t in threading.enumerate() if t.name == "chatkit-adapters-loop"]
    assert len(threads) == 1 and threads[0].daemon


def test_results_and_errors_cross_threads() -> None:
    assert _bridge.call(_value(42), 5) == 42
    with pytest.raises(KeyError, match="boom"):
        _bridge.call(_fail(), 5)


def test_result_wait_is_bounded_even_when_the_loop_is_stuck() -> None:
    _block_loop(0.6)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        _bridge.call(_value(1), 0.1)
    assert time.monotonic() - started < 0.4
    time.sleep(0.6)
    assert _bridge.call(_value(2), 5) == 2  # the loop recovered


def test_wait_ticks_and_can_be_interrupted() -> None:
    call = _bridge.submit(_value("late", delay=5))
    ticks = 0

    class Stop(Exception):
        pass

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            raise Stop

    started = time.monotonic()
    with pytest.raises(Stop):
        call.wait(0.05, tick)
    assert time.monotonic() - started < 1.0
    call.cancel()
    with pytest.raises(Exception) as info:
        call.result(5)
    assert type(info.value).__name__ == "CancelledError"


def test_cancel_after_completion_keeps_the_result() -> None:
    call = _bridge.submit(_value("kept"))
    assert call.result(5) == "kept"
    call.cancel()
    assert call.result(5) == "kept"


def test_context_vars_follow_the_request_thread() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="loop")

    async def read() -> str:
        return var.get()

    token = var.set("request")
    try:
        assert _bridge.call(read(), 5) == "request"
    finally:
        var.reset(token)
    assert _bridge.call(read(), 5) == "loop"  # a copy: nothing leaks between requests


def test_a_dead_loop_is_noticed_and_replaced() -> None:
    old = _bridge.get_loop()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(30)

    waiting = _bridge.submit(forever())
    assert started.wait(5)
    old.call_soon_threadsafe(old.stop)
    with pytest.raises(RuntimeError, match="died"):
        waiting.wait(0.05)
    assert not _bridge.is_alive(old)
    with pytest.raises(RuntimeError):
        _bridge.submit(_value(1), loop=old)  # a stream's loop is never silently swapped
    new = _bridge.get_loop()
    assert new is not old
    assert _bridge.call(_value("again"), 5) == "again"


def _in_child(body: Callable[[], object]) -> tuple[int, bytes]:
    """Run *body* in a forked child; its exit status and what it wrote back."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, repr(body()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while data := os.read(read_fd, 4096):
        chunks.append(data)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_gets_a_fresh_loop_and_the_parent_keeps_its_own() -> None:
    parent_loop = _bridge.get_loop()
    parent_thread = next(t for t in threading.enumerate() if t.name == "chatkit-adapters-loop")

    def child() -> object:
        assert _bridge.current_loop() is None  # the inherited loop was dropped
        loop = _bridge.get_loop()
        assert loop is not parent_loop
        return (_bridge.call(_value("child"), 5), id(loop) != id(parent_loop))

    code, out = _in_child(child)
    assert code == 0 and out == b"('child', True)"
    # the child neither closed nor stopped the shared loop: the parent's still works
    assert _bridge.get_loop() is parent_loop and parent_thread.is_alive()
    assert _bridge.call(_value("parent"), 5) == "parent"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_the_start_lock_is_held() -> None:
    _bridge.get_loop()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with _bridge._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        code, out = _in_child(lambda: _bridge.call(_value("ok"), 5))
    finally:
        release.set()
        holder.join(5)
    assert code == 0 and out == b"'ok'"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_with_a_live_stream_in_the_parent() -> None:
    reply = _prime(endless())
    stream = SyncEventStream(reply, _bridge.get_loop(), cleanup_timeout=5)
    assert next(stream).startswith(b"data: 0")
    try:
        code, out = _in_child(lambda: (_bridge.call(_value("fine"), 5), live_streams() >= 1))
        assert code == 0 and out == b"('fine', True)"
        assert next(stream).startswith(b"data: ")  # the parent's stream is untouched
    finally:
        stream.close()


EXIT_SCRIPT = """
import asyncio, sys, threading, time
from chatkit_adapters import _bridge
from chatkit_adapters._core import StreamReply
from chatkit_adapters._pump import EventStream
from chatkit_adapters._sync import SyncEventStream

async def gen():
    try:
        i = 0
        while True:
            await asyncio.sleep(0.01)
            yield b"data: %d\\n\\n" % i
            i += 1
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)  # a store write
        print("cleanup done", flush=True)
        raise

async def prime():
    stream = EventStream(gen(), cleanup_timeout=5)
    await stream.prime()
    return StreamReply(stream)

def serve():  # a non-daemon request thread, like a server's worker pool
    stream = SyncEventStream(_bridge.call(prime(), 5), _bridge.get_loop(), cleanup_timeout=5)
    try:
        for chunk in stream:
            time.sleep(0.01)
    finally:
        stream.close()
    print("request thread done", flush=True)

threading.Thread(target=serve).start()
time.sleep(0.3)
print("main exits", flush=True)
"""


def test_exit_cancels_live_streams_and_awaits_their_cleanup() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT)],
        env=env,
        capture_output=True,
        timeout=30,
        text=True,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert "main exits" in result.stdout
    assert "cleanup done" in result.stdout, result.stdout + result.stderr
    assert "request thread done" in result.stdout
    assert lines.index("cleanup") < lines.index("request"), result.stdout
    assert elapsed < 20


# -- the sync face of the pump ----------------------------------------------------------

journal: list[str] = []


async def endless(delay: float = 0.01, idle_after: int | None = None) -> AsyncIterator[bytes]:
    """Like ChatKit's generator: its cancel handler awaits a store write."""
    index = 0
    try:
        while True:
            await asyncio.sleep(30 if idle_after is not None and index >= idle_after else delay)
            yield f"data: {index}\n\n".encode()
            index += 1
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)
        journal.append(f"cleanup after {index}")
        raise


async def slow_cleanup() -> AsyncIterator[bytes]:
    try:
        while True:
            await asyncio.sleep(0.01)
            yield b"data: x\n\n"
    except asyncio.CancelledError:
        await asyncio.sleep(30)
        raise


def _prime(gen: AsyncIterator[bytes], **options: object) -> StreamReply:
    async def prime() -> StreamReply:
        stream = EventStream(gen, **options)  # type: ignore[arg-type]
        await stream.prime()
        return StreamReply(stream)

    return _bridge.call(prime(), 5)


async def finite(count: int) -> AsyncIterator[bytes]:
    for index in range(count):
        await asyncio.sleep(0.001)
        yield f"data: {index}\n\n".encode()


def test_sync_stream_yields_everything_in_order() -> None:
    stream = SyncEventStream(_prime(finite(50)), _bridge.get_loop(), cleanup_timeout=5)
    body = b"".join(stream)
    stream.close()
    assert body == b"".join(f"data: {i}\n\n".encode() for i in range(50))
    assert stream.status == 200 and ("content-type", "text/event-stream") in stream.headers


def test_sync_stream_heartbeats_while_idle() -> None:
    reply = _prime(endless(idle_after=1), heartbeat=0.05)
    stream = SyncEventStream(reply, _bridge.get_loop(), cleanup_timeout=5)
    chunks = [next(stream) for _ in range(5)]
    stream.close()
    assert chunks[0] == b"data: 0\n\n"
    assert chunks[1:] == [HEARTBEAT] * 4


@pytest.mark.parametrize("idle", [False, True], ids=["streaming", "idle"])
def test_probe_cancels_at_an_await_and_close_waits_for_cleanup(idle: bool) -> None:
    journal.clear()
    gone = threading.Event()
    reply = _prime(endless(idle_after=3 if idle else None))
    stream = SyncEventStream(
        reply, _bridge.get_loop(), disconnected=gone.is_set, cleanup_timeout=5, poll=0.05
    )
    received = [next(stream) for _ in range(3)]
    assert received[0] == b"data: 0\n\n"
    gone.set()
    started = time.monotonic()
    rest = list(stream)  # ends at the next chunk or poll tick
    assert time.monotonic() - started < 0.5
    assert journal == []  # cancelled, cleanup still running: close() must wait for it
    stream.close()
    assert len(journal) == 1 and journal[0].startswith("cleanup after"), journal
    assert len(received) + len(rest) <= 4


def test_close_of_an_unfinished_stream_cancels_once_and_waits() -> None:
    journal.clear()
    stream = SyncEventStream(_prime(endless()), _bridge.get_loop(), cleanup_timeout=5)
    next(stream)
    stream.close()  # what a server does when a write failed
    assert len(journal) == 1
    stream.close()  # idempotent (werkzeug may call it twice)
    assert len(journal) == 1
    with pytest.raises(StopIteration):
        next(stream)


def test_close_is_bounded_by_cleanup_timeout(caplog: pytest.LogCaptureFixture) -> None:
    stream = SyncEventStream(
        _prime(slow_cleanup(), cleanup_timeout=0.3), _bridge.get_loop(), cleanup_timeout=0.3
    )
    next(stream)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="chatkit_adapters"):
        stream.close()
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 0.3 + _bridge.MARGIN
    assert any("cleanup_timeout" in r.getMessage() for r in caplog.records)


def test_next_survives_a_stuck_loop_without_losing_a_chunk() -> None:
    stream = SyncEventStream(_prime(finite(5)), _bridge.get_loop(), cleanup_timeout=5, poll=0.05)
    assert next(stream) == b"data: 0\n\n"
    _block_loop(2.5)  # longer than poll + MARGIN: __next__ times out once, then resumes
    body = b"".join(stream)
    stream.close()
    assert body == b"".join(f"data: {i}\n\n".encode() for i in range(1, 5))


# -- disconnect probes ------------------------------------------------------------------


def test_peer_closed_on_real_sockets() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        try:
            assert not peer_closed(server)  # alive, nothing to read: never blocks
            client.sendall(b"x")
            time.sleep(0.05)
            assert not peer_closed(server)  # data is peeked, not consumed
            assert server.recv(1) == b"x"
            client.close()
            time.sleep(0.05)
            assert peer_closed(server)  # FIN
        finally:
            server.close()
        assert peer_closed(server)  # a closed socket


def test_peer_closed_on_reset() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        time.sleep(0.05)
        try:
            assert peer_closed(server)
        finally:
            server.close()


def test_disconnect_probe_prefers_waitress_then_sockets() -> None:
    left = [False]
    probe = disconnect_probe({"waitress.client_disconnected": lambda: left[0]})
    assert not probe()
    left[0] = True
    assert probe()
    a, b = socket.socketpair()
    try:
        for key in ("gunicorn.socket", "werkzeug.socket"):
            assert not disconnect_probe({key: a})()
        b.close()
        assert disconnect_probe({"gunicorn.socket": a})()
    finally:
        a.close()
    assert not disconnect_probe({})()  # nothing to ask: only a failed write will tell


# -- a client that leaves before the first event ----------------------------------------


def test_client_leaving_during_process_gets_nothing_and_leaves_nothing() -> None:
    from chatkit_adapters._core import Options
    from chatkit_adapters._sync import CLIENT_CLOSED, EnvironHeaders, handle
    from tests.chatkit_app import create_thread, make_server

    server = make_server(write_delay=0.5, journal="")  # the first event needs a slow write
    body = create_thread("deltas=3")
    asked = 0

    def disconnected() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 2  # gone at the second probe

    started = time.monotonic()
    reply = handle(
        server,
        method="POST",
        headers=EnvironHeaders(
            {"CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json"}
        ),
        read=_reader(body),
        until_eof=False,
        context=dict,
        options=Options(cleanup_timeout=5),
        disconnected=disconnected,
    )
    assert time.monotonic() - started < 1.0
    assert getattr(reply, "status", None) == CLIENT_CLOSED
    deadline = time.monotonic() + 5
    while live_streams() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_streams() == 0


def _reader(data: bytes) -> Callable[[int], bytes]:
    view = memoryview(data)
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        chunk = bytes(view[position : position + size])
        position += len(chunk)
        return chunk

    return read
