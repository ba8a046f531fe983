"""The measuring client: raw sockets on 127.0.0.1, one figure per function.

Everything here runs in the harness process, apart from the server (a subprocess) and
the request-throughput load generator (``benchmarks.loadgen``, another subprocess).
Times are ``time.perf_counter()`` within this process; disconnect latencies compare this
process's ``time.time()`` at ``close()`` with the server's journal timestamps (same
machine, same clock).
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.servers import cpu_seconds, rss_kib
from tests.chatkit_app import create_thread, read_journal
from tests.rawhttp import Event, RawStream, open_stream
from tests.realserver import RunningServer

PATH = "/chatkit"


def request_bytes(address: tuple[str, int], body: bytes, close: bool = True) -> bytes:
    head = [
        f"POST {PATH} HTTP/1.1",
        f"Host: {address[0]}:{address[1]}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _connect(address: tuple[str, int], timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def dechunk(data: bytes) -> bytes:
    out = []
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            break
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            break
        start = line_end + 2
        out.append(data[start : start + size])
        position = start + size + 2
    return b"".join(out)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        rest = dechunk(rest)
    return status, headers, rest


def count_events(body: bytes) -> int:
    # JSON has no raw newlines, so every event is one "data: ...\n\n" block
    return body.count(b"\n\ndata: ") + (1 if body.startswith(b"data: ") else 0)


def _read_to_end(sock: socket.socket, deadline: float) -> tuple[list[bytes], float | None]:
    """Receive until EOF (or the chunked terminator); returns chunks and first-byte time."""
    chunks: list[bytes] = []
    first: float | None = None
    tail = b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except (TimeoutError, ConnectionError):
            break
        if not data:
            break
        if first is None:
            first = time.perf_counter()
        chunks.append(data)
        tail = (tail + data)[-7:]
        if tail.endswith(b"\r\n0\r\n\r\n"):
            break
    return chunks, first


def stream_throughput(
    address: tuple[str, int], deltas: int, pid: int | None = None, timeout: float = 120.0
) -> dict:
    """Events/s of one ``deltas``-long stream, first byte to last byte.

    With the server's *pid*, also the server's CPU time per event (user+system of its
    process tree, request to end of stream): a figure the machine's other load barely
    moves, unlike events/s.
    """
    sock = _connect(address)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    try:
        sock.sendall(request_bytes(address, create_thread(f"deltas={deltas}")))
        chunks, first = _read_to_end(sock, time.monotonic() + timeout)
        end = time.perf_counter()
        cpu = cpu_seconds(pid) - cpu_before if pid else None
    finally:
        sock.close()
    status, _, body = split_response(b"".join(chunks))
    events = count_events(body)
    seconds = end - first if first is not None else float("nan")
    expected = deltas + 5  # thread.created, user item added/done, assistant added, done
    return {
        "status": status,
        "events": events,
        "complete": events >= expected,
        "bytes": len(body),
        "seconds": seconds,
        "events_per_s": events / seconds if seconds > 0 else 0.0,
        "cpu_us_per_event": cpu / events * 1e6 if cpu is not None and events else None,
    }


def time_to_first_event(address: tuple[str, int], repeats: int) -> dict:
    """Milliseconds from sending a ``threads.create`` to its first complete SSE event."""
    samples = []
    failures = 0
    request = request_bytes(address, create_thread("deltas=1"))
    for _ in range(repeats):
        sock = _connect(address)
        try:
            started = time.perf_counter()
            sock.sendall(request)
            buffer = b""
            arrived: float | None = None
            while arrived is None:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                body = buffer[head_end + 4 :]
                start = body.find(b"data: ")
                if start >= 0 and body.find(b"\n\n", start) >= 0:
                    arrived = time.perf_counter()
            _read_to_end(sock, time.monotonic() + 10)  # let the short stream finish
        finally:
            sock.close()
        if arrived is None or not buffer.startswith(b"HTTP/1.1 200"):
            failures += 1
            continue
        samples.append((arrived - started) * 1000)
    return {"samples_ms": samples, "failures": failures, **summary(samples)}


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "median_ms": statistics.median(values),
        "max_ms": max(values),
    }


# -- disconnect -> cancel cleanup persisted ------------------------------------------------


def _deltas(events: list[Event]) -> int:
    return sum(1 for e in events if e.data and e.data.get("type") == "thread.item.updated")


def _read_until(stream: RawStream, deltas: int, timeout: float = 15.0) -> list[Event]:
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while _deltas(seen) < deltas:
        if time.monotonic() > deadline or stream.ended:
            raise RuntimeError(f"stream stalled after {[e.data for e in seen][:4]}")
        seen += stream.events(1.0)
    return seen


def _thread_id(events: list[Event]) -> str:
    first = events[0].data
    if not first or first.get("type") != "thread.created":
        raise RuntimeError(f"unexpected first event {first}")
    return str(first["thread"]["id"])


def _cancel_records(journal: Path, thread_id: str) -> tuple[list[dict], list[dict]]:
    records = [
        r
        for r in read_journal(journal)
        if r["op"] == "add_thread_item" and r.get("thread_id") == thread_id
    ]
    assistant = [r for r in records if r["item_type"] == "assistant_message"]
    hidden = [r for r in records if r["item_type"] == "sdk_hidden_context"]
    return assistant, hidden


def disconnect_to_cancel(
    running: RunningServer,
    *,
    idle: bool,
    repeats: int,
    wait: float,
    sweep: float = 0.0,
) -> dict:
    """Close the socket mid-stream; time until ChatKit's cancel cleanup was persisted.

    Active: a stream producing every 10 ms, closed after 3 deltas. Idle: a stream that
    pauses 30 s after 2 deltas, closed 0.2-0.7 s into the pause (at random, seeded: a
    fixed delay could fall in step with an adapter's periodic check and flatter or
    penalise it every time). Waits up to *wait* seconds
    per repeat for the partial assistant message and the hidden cancel marker; with
    ``wait=0`` (references, which persist nothing), one final *sweep* looks for all.
    """
    text = "deltas=4 idle=30 idle_after=2" if idle else "deltas=1000 delay=0.01"
    need = 2 if idle else 3
    closed: list[tuple[str, float]] = []
    latencies: list[float] = []
    pause = random.Random(7)
    persisted_any = 0
    errors: list[str] = []

    def look(thread_id: str, closed_at: float, until: float) -> bool:
        while True:
            assistant, hidden = _cancel_records(running.journal, thread_id)
            if assistant and hidden:
                done = max(r["t"] for r in assistant + hidden)
                latencies.append((done - closed_at) * 1000)
                return True
            if time.monotonic() >= until:
                return bool(assistant or hidden)
            time.sleep(0.005)

    for _ in range(repeats):
        try:
            stream = open_stream(running.address, create_thread(text))
            stream.read_head()
            seen = _read_until(stream, need)
        except (OSError, RuntimeError, AssertionError) as exc:
            errors.append(str(exc)[:200])
            continue
        if idle:
            time.sleep(0.2 + pause.uniform(0.0, 0.5))
        closed_at = stream.close()
        thread_id = _thread_id(seen)
        if wait > 0:
            persisted_any += look(thread_id, closed_at, time.monotonic() + wait)
        else:
            closed.append((thread_id, closed_at))
    if closed:
        time.sleep(sweep)
        for thread_id, closed_at in closed:
            persisted_any += look(thread_id, closed_at, time.monotonic())
    return {
        "repeats": repeats,
        "persisted": len(latencies),
        "persisted_anything": persisted_any,
        "errors": errors,
        "samples_ms": latencies,
        **summary(latencies),
    }


# -- memory and backpressure ---------------------------------------------------------------


def memory_per_stream(running: RunningServer, streams: int, warmup: int = 8) -> dict:
    """Server RSS growth while *streams* idle streams are open at once."""
    body = create_thread("deltas=2 idle=120 idle_after=1")

    def open_many(count: int, opened: list[RawStream]) -> None:
        for _ in range(count):
            opened.append(open_stream(running.address, body))
        # all requests are in flight: a slow server (Django with its middleware on a busy
        # machine) may need a while to answer the last of them
        deadline = time.monotonic() + 120
        for stream in opened:
            stream.read_head(timeout=max(1.0, deadline - time.monotonic()))
            _read_until(stream, 1, timeout=max(1.0, deadline - time.monotonic()))

    def close_all(opened: list[RawStream]) -> None:
        for stream in opened:
            stream.close()

    pid = running.process.pid
    warm: list[RawStream] = []
    try:  # code paths and lazy imports loaded, then closed
        open_many(warmup, warm)
    finally:
        close_all(warm)
    time.sleep(1.0)
    base = rss_kib(pid)
    opened: list[RawStream] = []
    try:
        open_many(streams, opened)
        time.sleep(0.5)
        loaded = rss_kib(pid)
    finally:
        close_all(opened)
    growth = loaded - base
    return {
        "streams": streams,
        "rss_base_kib": base,
        "rss_open_kib": loaded,
        "growth_kib": growth,
        "per_stream_kib": growth / streams,
    }


def backpressure(running: RunningServer, wait: float, rcvbuf: int = 64 * 1024) -> dict:
    """Bytes the server produced for a client that reads nothing (1 KiB deltas)."""
    deltas = 20000
    stream = open_stream(
        running.address, create_thread(f"deltas={deltas} size=1024"), rcvbuf=rcvbuf
    )
    try:
        stream.read_head()
        seen = _read_until(stream, 1)
        event_size = len(next(e.raw for e in seen if e.data and "update" in e.data)) + 2
        thread_id = _thread_id(seen)
        time.sleep(wait)  # read nothing
        notes = [
            r["produced"]
            for r in read_journal(running.journal)
            if r["op"] == "progress" and r.get("thread_id") == thread_id
        ]
        actual_rcvbuf = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        stream.close()
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    produced = max(notes, default=0) * event_size
    kernel = actual_rcvbuf + wmem_max
    return {
        "produced_kib": produced / 1024,
        "kernel_buffers_kib": kernel / 1024,
        "excess_kib": (produced - kernel) / 1024,
        "resolution_kib": 50 * event_size / 1024,  # progress is journaled every 50 deltas
        "stream_total_kib": deltas * event_size / 1024,
        "thread_id": thread_id,
    }


def wait_for_cleanup(running: RunningServer, thread_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assistant, hidden = _cancel_records(running.journal, thread_id)
        if assistant and hidden:
            return True
        time.sleep(0.02)
    return False


def warm_up(address: tuple[str, int], count: int = 3) -> str:
    """A few complete short streams; returns a thread id for ``threads.get_by_id``."""
    thread_id = ""
    for _ in range(count):
        sock = _connect(address)
        try:
            sock.sendall(request_bytes(address, create_thread("deltas=3")))
            chunks, _ = _read_to_end(sock, time.monotonic() + 30)
        finally:
            sock.close()
        status, _, body = split_response(b"".join(chunks))
        if status != 200:
            raise RuntimeError(f"warm-up request answered {status}: {body[:200]!r}")
        marker = b'"thread":{"id":"'
        start = body.find(marker)
        if start < 0:
            raise RuntimeError(f"no thread id in {body[:200]!r}")
        start += len(marker)
        thread_id = body[start : body.find(b'"', start)].decode()
    return thread_id


def check_json(address: tuple[str, int], body: bytes) -> dict[str, Any]:
    """One non-streaming request: status and size (the load generator's request)."""
    sock = _connect(address)
    try:
        sock.sendall(request_bytes(address, body))
        chunks, _ = _read_to_end(sock, time.monotonic() + 30)
    finally:
        sock.close()
    status, headers, data = split_response(b"".join(chunks))
    return {"status": status, "content_type": headers.get("content-type", ""), "bytes": len(data)}


# -- paced streams: many at once, at a token rate ------------------------------------------


def paced_streams(
    running: RunningServer, streams: int, rate: float, seconds: float, stagger: float = 1.0
) -> dict:
    """*streams* concurrent streams of *rate* events/s for *seconds* each (started evenly
    over *stagger* s): the server's CPU time (user+system, process tree) per stream, from
    the first request to the last stream's end. The cost of serving a typical chat load,
    which a busy machine barely moves, unlike a rate."""
    deltas = max(1, round(rate * seconds))
    body = create_thread(f"deltas={deltas} delay={1 / rate:.6f}")
    expected = deltas + 5
    pid = running.process.pid
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    outcomes = asyncio.run(_paced(running.address, body, streams, stagger, seconds + 60))
    wall = time.perf_counter() - started
    time.sleep(0.1)  # the last stream's final store write
    cpu = cpu_seconds(pid) - cpu_before
    complete = [o for o in outcomes if o["status"] == 200 and o["events"] >= expected]
    failed = [o for o in outcomes if o not in complete]
    if failed:
        raise RuntimeError(f"{len(failed)}/{streams} paced streams incomplete: {failed[:3]}")
    events = sum(o["events"] for o in complete)
    durations = [o["seconds"] for o in complete]
    return {
        "streams": streams,
        "rate": rate,
        "seconds_per_stream": seconds,
        "events": events,
        "wall_seconds": wall,
        "stream_seconds_median": statistics.median(durations),
        "stream_seconds_max": max(durations),
        "cpu_seconds": cpu,
        "cpu_ms_per_stream": cpu / streams * 1000,
        "cpu_us_per_event": cpu / events * 1e6,
    }


async def _paced(
    address: tuple[str, int], body: bytes, streams: int, stagger: float, timeout: float
) -> list[dict]:
    request = request_bytes(address, body)

    async def one(index: int) -> dict:
        await asyncio.sleep(stagger * index / streams)
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(*address)
        chunks: list[bytes] = []
        tail = b""
        try:
            writer.write(request)
            async with asyncio.timeout(timeout):
                while data := await reader.read(1 << 16):
                    chunks.append(data)
                    tail = (tail + data)[-7:]
                    if tail.endswith(b"\r\n0\r\n\r\n"):
                        break
        except (OSError, TimeoutError) as exc:
            return {"status": 0, "events": 0, "seconds": 0.0, "error": repr(exc)[:200]}
        finally:
            writer.close()
        status, _, data = split_response(b"".join(chunks))
        events = count_events(data)
        return {"status": status, "events": events, "seconds": time.perf_counter() - started}

    return list(await asyncio.gather(*(one(i) for i in range(streams))))
