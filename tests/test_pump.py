"""Unit tests of the shared pump: cancellation exactly once at an await, cleanup completes,
backpressure, coalescing, heartbeats, errors, shutdown drain."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import anyio
import pytest

from chatkit_adapters import _core, _pump, drain, live_streams
from chatkit_adapters._pump import ERROR_EVENT, HEARTBEAT, EventStream
from tests.chatkit_app import create_thread, make_server


class Recorder:
    """A generator shaped like ChatKit's: nested, cleanup awaited in ``except CancelledError``."""

    def __init__(self, count: int = 1000, delay: float = 0.001, cleanup: float = 0.05) -> None:
        self.count, self.delay, self.cleanup = count, delay, cleanup
        self.produced = 0
        self.cancels = 0
        self.cleaned = False

    async def _inner(self) -> AsyncIterator[bytes]:
        for index in range(self.count):
            await asyncio.sleep(self.delay)
            self.produced += 1
            yield f"data: {index}\n\n".encode()

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner():
                yield chunk
        except asyncio.CancelledError:
            self.cancels += 1
            await asyncio.sleep(self.cleanup)  # the store writes of handle_stream_cancelled
            await asyncio.sleep(self.cleanup)
            self.cleaned = True
            raise

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()


def numbers(data: bytes) -> list[int]:
    return [int(block[6:]) for block in data.split(b"\n\n") if block.startswith(b"data: ")]


async def test_cancel_while_in_generator_runs_cleanup_once() -> None:
    source = Recorder(delay=0.01)
    stream = EventStream(source, cleanup_timeout=5)
    await stream.prime()
    assert numbers(await stream.__anext__()) == [0]
    stream.cancel()
    stream.cancel()  # idempotent
    await stream.aclose()
    assert source.cancels == 1 and source.cleaned
    assert await stream.next_chunk() is None
    assert live_streams() == 0


async def test_cancel_while_parked_at_yield_resumes_and_cancels_at_next_await() -> None:
    source = Recorder(delay=0.0)
    stream = EventStream(source, cleanup_timeout=5, max_events=4)
    await stream.prime()
    await asyncio.sleep(0.05)  # the consumer reads nothing: the pump parks at a yield
    assert source.produced == 4
    await stream.aclose()
    assert source.cancels == 1 and source.cleaned
    assert source.produced <= 5


@pytest.mark.parametrize("parked", [False, True])
async def test_stream_dropped_unclosed_is_cancelled_once_and_cleaned_up(parked: bool) -> None:
    """A primed stream nobody will read (a middleware replaced the response): dropping it
    is a disconnect, whether the pump waits in the generator or is parked at a yield."""
    source = Recorder(delay=0.0 if parked else 0.01)
    stream = EventStream(source, cleanup_timeout=5, max_events=4)
    await stream.prime()
    await asyncio.sleep(0.05)
    assert live_streams() == 1
    del stream
    gc.collect()
    for _ in range(100):
        if live_streams() == 0:
            break
        await asyncio.sleep(0.01)
    assert source.cancels == 1 and source.cleaned
    assert live_streams() == 0


async def test_stream_dropped_after_its_end_or_close_does_nothing() -> None:
    finished = EventStream(Recorder(count=2, delay=0.0), cleanup_timeout=5)
    await finished.prime()
    assert [n async for chunk in finished for n in numbers(chunk)] == [0, 1]
    source = Recorder(delay=0.01)
    closed = EventStream(source, cleanup_timeout=5)
    await closed.prime()
    await closed.aclose()
    del finished, closed
    gc.collect()
    await asyncio.sleep(0.05)
    assert source.cancels == 1 and live_streams() == 0


async def test_cleanup_survives_a_level_triggered_cancel_scope() -> None:
    """Starlette/FastAPI/Litestar cancel the request through an anyio scope, which
    re-cancels every await inside it: the cleanup must run outside of it anyway."""
    source = Recorder(delay=0.01)
    stream = EventStream(source, cleanup_timeout=5)
    await stream.prime()
    with anyio.CancelScope() as scope:
        try:
            async for _ in stream:
                scope.cancel()  # the client left; every await below is now cancelled
                await asyncio.sleep(1)
        finally:
            await stream.aclose()
    assert source.cancels == 1 and source.cleaned


async def test_generator_yielding_without_suspending_is_cancelled_at_its_next_await() -> None:
    cleaned: list[str] = []

    async def bursty() -> AsyncIterator[bytes]:
        try:
            for index in range(100):
                if index % 20 == 19:
                    await asyncio.sleep(0.01)  # suspends only every 20 events
                yield f"data: {index}\n\n".encode()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
            cleaned.append("done")
            raise

    stream = EventStream(bursty(), cleanup_timeout=5, max_events=2)
    await stream.prime()
    await asyncio.sleep(0.01)
    await stream.aclose()
    assert cleaned == ["done"]


async def test_cleanup_longer_than_timeout_is_abandoned_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Recorder(delay=0.01, cleanup=10)
    stream = EventStream(source, cleanup_timeout=0.2)
    await stream.prime()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, "chatkit_adapters"):
        await stream.aclose()
    assert 0.15 < loop.time() - started < 2
    assert "cleanup_timeout" in caplog.text
    await asyncio.sleep(0.05)
    assert not source.cleaned
    assert live_streams() == 0  # abandoned, not leaked


async def test_error_after_first_event_ends_with_error_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"data: 0\n\n"
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    stream = EventStream(failing())
    await stream.prime()
    chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == b"data: 0\n\n" + ERROR_EVENT
    assert "boom" in caplog.text


async def test_error_before_first_event_raises_from_prime() -> None:
    async def failing() -> AsyncIterator[bytes]:
        await asyncio.sleep(0)
        raise LookupError("nothing")
        yield b""  # pragma: no cover

    stream = EventStream(failing())
    with pytest.raises(LookupError):
        await stream.prime()
    assert await stream.next_chunk() is None


async def test_ready_events_are_coalesced_in_order() -> None:
    source = Recorder(count=200, delay=0)
    stream = EventStream(source, max_events=8)
    await stream.prime()
    batches = []
    async for chunk in stream:
        batches.append(numbers(chunk))
        await asyncio.sleep(0.001)  # a consumer slower than the producer
    assert [n for batch in batches for n in batch] == list(range(200))
    assert max(len(batch) for batch in batches) > 1
    assert max(len(batch) for batch in batches) <= 8


async def test_backpressure_bounds_read_ahead() -> None:
    source = Recorder(count=10_000, delay=0)
    stream = EventStream(source, max_events=8)
    await stream.prime()
    await asyncio.sleep(0.2)
    assert source.produced <= 9
    await stream.aclose()


async def test_heartbeats_only_while_idle() -> None:
    async def idle() -> AsyncIterator[bytes]:
        yield b"data: 0\n\n"
        await asyncio.sleep(0.35)
        yield b"data: 1\n\n"

    stream = EventStream(idle(), heartbeat=0.1)
    await stream.prime()
    chunks = [chunk async for chunk in stream]
    assert chunks[0] == b"data: 0\n\n" and chunks[-1] == b"data: 1\n\n"
    assert 2 <= chunks.count(HEARTBEAT) <= 4


async def test_poll_returns_empty_bytes_when_nothing_is_due() -> None:
    source = Recorder(count=2, delay=0.3)
    stream = EventStream(source)
    await stream.prime()
    assert numbers(await stream.next_chunk(poll=0.05) or b"") == [0]
    assert await stream.next_chunk(poll=0.05) == b""
    await stream.aclose()


async def test_drain_cancels_live_streams_and_awaits_their_cleanup() -> None:
    sources = [Recorder(delay=0.01) for _ in range(5)]
    streams = [EventStream(source, cleanup_timeout=5) for source in sources]
    for stream in streams:
        await stream.prime()
    assert live_streams() == 5
    await drain()
    assert all(source.cleaned and source.cancels == 1 for source in sources)
    assert live_streams() == 0


@pytest.mark.parametrize("read", [1, 3, 10, 25])
async def test_real_chatkit_cancel_persists_partial_message_and_marker(read: int) -> None:
    server = make_server(write_delay=0.02, journal="")
    result = await server.process(create_thread("deltas=100 delay=0.005"), {})
    stream = EventStream(result, cleanup_timeout=5)  # type: ignore[arg-type]
    await stream.prime()
    received = b""
    with anyio.CancelScope() as scope:
        try:
            async for chunk in stream:
                received += chunk
                if received.count(b"thread.item.updated") >= read:
                    scope.cancel()
                    await asyncio.sleep(1)
        finally:
            await stream.aclose()
    (thread_id,) = server.journal_store.threads
    kinds = [item.type for item in server.journal_store.items[thread_id]]
    assert kinds == ["user_message", "assistant_message", "sdk_hidden_context"]
    text = server.journal_store.items[thread_id][1].content[0].text  # type: ignore[union-attr]
    assert len(text.split()) >= read


async def test_response_replaced_before_it_is_sent_still_persists_the_cancel() -> None:
    """A hook swapped ChatKit's streaming response for another one: the reply is dropped
    unread, and ChatKit's cancel cleanup saves the partial message and the marker."""
    server = make_server(write_delay=0.02, journal="")
    reply = await _core.process(
        server, create_thread("deltas=100 delay=0.005"), {}, _core.Options(cleanup_timeout=5)
    )
    assert isinstance(reply, _core.StreamReply)
    await asyncio.sleep(0.1)  # the pump runs ahead into the answer, up to its buffer
    del reply
    gc.collect()
    (thread_id,) = server.journal_store.threads
    for _ in range(200):
        if live_streams() == 0:
            break
        await asyncio.sleep(0.01)
    kinds = [item.type for item in server.journal_store.items[thread_id]]
    assert kinds == ["user_message", "assistant_message", "sdk_hidden_context"]
    assert live_streams() == 0


def test_module_keeps_no_stream_after_tests() -> None:
    assert _pump.live_streams() == 0
