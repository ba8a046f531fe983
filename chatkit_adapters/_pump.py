"""The one shared streaming pump: a ChatKit stream driven from its own task.

Why a pump: ChatKit saves the partial assistant message and a hidden "cancelled" marker
only when ``asyncio.CancelledError`` is raised *inside* its generator at an ``await``
(``ChatKitServer._process_events``), and only if that cleanup is not cancelled again.
``aclose()``/``athrow()`` on the generator, a cancel that lands while the generator is
parked at a ``yield``, and an anyio cancel scope (Starlette, FastAPI, Litestar,
sse-starlette) all lose it. So:

- the generator runs in a detached task (never a child of the request task or of any
  task group), feeding a small bounded buffer (backpressure: it never runs more than a
  few events ahead of the client);
- on disconnect it is cancelled exactly once, at an ``await`` inside the generator: if it
  is parked at a ``yield`` because the buffer is full, it is resumed and the pending
  cancel is delivered at its next real suspension;
- the caller waits for the cleanup, bounded by ``cleanup_timeout``, shielded from the
  framework's cancel scope; the task is strongly referenced until it is done, and
  :func:`drain` cancels and awaits every live stream at application shutdown.

The consumer side hands out everything that is ready in one piece (coalescing several
events into one write when the client is behind), heartbeats while idle, and one
well-framed ChatKit error event if the stream fails after its first event.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from typing import Any, Final

import anyio
from chatkit.errors import ErrorCode
from chatkit.types import ErrorEvent

logger = logging.getLogger("chatkit_adapters")

HEARTBEAT: Final = b": ping\n\n"
"""An SSE comment line; EventSource-style parsers ignore it."""

ERROR_EVENT: Final = (
    b"data: "
    + ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True)
    .model_dump_json(by_alias=True, exclude_none=True)
    .encode()
    + b"\n\n"
)
"""The ChatKit error event that ends a stream which failed after its first event."""

MAX_BUFFERED_EVENTS: Final = 8
MAX_BUFFERED_BYTES: Final = 64 * 1024

# anyio imports its asyncio backend lazily, on the first shielded wait; importing it here
# keeps that import (tens of milliseconds) off the disconnect path. A private module: an
# anyio that moves it only loses the head start.
with contextlib.suppress(ImportError):
    importlib.import_module("anyio._backends._asyncio")

# The live pumps, one set per event loop: a set is only changed on its own loop's thread
# (a pump starts and ends on its loop); the dict of sets is changed under the lock.
_live: dict[asyncio.AbstractEventLoop, set[_Pump]] = {}
_live_lock = threading.Lock()


def _register(pump: _Pump, loop: asyncio.AbstractEventLoop) -> None:
    with _live_lock:
        pumps = _live.get(loop)
        if pumps is None:
            pumps = _live[loop] = set()
        pumps.add(pump)


def _unregister(pump: _Pump, loop: asyncio.AbstractEventLoop) -> None:
    with _live_lock:
        pumps = _live.get(loop)
        if pumps is not None:
            pumps.discard(pump)
            if not pumps:
                del _live[loop]


def _live_on(loop: asyncio.AbstractEventLoop) -> list[_Pump]:
    with _live_lock:
        return list(_live.get(loop, ()))


class EventStream:
    """A ChatKit ``StreamingResult`` pumped from a detached task.

    Usage (an adapter, after ``server.process`` returned a stream)::

        stream = EventStream(result, heartbeat=None, cleanup_timeout=10.0)
        await stream.prime()                # first event pulled: errors get a real status
        try:
            async for data in stream:       # batches of events, heartbeats, error event
                await write(data)
        finally:
            await stream.aclose()           # cancels once if unfinished, awaits cleanup

    On a disconnect noticed elsewhere (a ``receive()`` watcher), call :meth:`cancel`:
    the iteration ends and the pump's task runs ChatKit's cancel cleanup.
    All methods must be called on the loop the stream was primed on.

    Dropped unclosed (a middleware replaced the response, a server never iterated it), it
    cancels the pump once, as a disconnect would: nobody can read the stream any more.
    """

    __slots__ = ("__weakref__", "_pump")

    def __init__(
        self,
        result: AsyncIterable[bytes],
        *,
        heartbeat: float | None = None,
        cleanup_timeout: float = 10.0,
        max_events: int = MAX_BUFFERED_EVENTS,
        max_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self._pump = _Pump(
            result,
            heartbeat=heartbeat,
            cleanup_timeout=cleanup_timeout,
            max_events=max_events,
            max_bytes=max_bytes,
        )

    async def prime(self) -> None:
        """Start the pump and wait for the first event.

        Raises what the stream raised if it failed before producing anything (so the
        adapter can still answer with a real status). The first event stays buffered.
        """
        await self._pump.prime()

    def next_chunk(self, poll: float | None = None) -> Coroutine[Any, Any, bytes | None]:
        """The next bytes to write, or ``None`` when the stream is over.

        Returns every event that is ready as one ``bytes``, a heartbeat comment when the
        stream was idle for ``heartbeat`` seconds, or the ChatKit error event once if the
        stream failed. With *poll*, returns ``b""`` when nothing is due within *poll*
        seconds (sync callers use that to look for a disconnect).
        """
        return self._pump.next_chunk(poll)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._pump.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    @property
    def finished(self) -> bool:
        """True once the pump's generator is exhausted, failed or cancelled."""
        return self._pump.finished

    @property
    def cancelled_at(self) -> float | None:
        """``time.monotonic()`` when a disconnect cancelled this stream, else ``None``."""
        return self._pump.cancelled_at

    def cancel(self) -> None:
        """The client left: cancel the generator once, at an await; idempotent.

        Does not wait; :meth:`aclose` waits for the cleanup.
        """
        self._pump.cancel()

    async def aclose(self) -> None:
        """Finish the stream: cancel it if it is unfinished and await the cleanup.

        The wait is bounded by ``cleanup_timeout`` and shielded from anyio cancel scopes
        (Starlette, FastAPI, Litestar). A plain ``task.cancel()`` of the caller (aiohttp's
        ``handler_cancellation``, Django's ASGI handler, a server shutting down) is not
        stopped by that shield; it is delivered once, so the wait simply goes on after it
        and the cancellation is re-raised at the end. A second cancel of the caller (a
        server's shutdown, ``asyncio.run`` cancelling every task) stops the wait but not the
        cleanup. ``cleanup_timeout`` after the cancel the cleanup is abandoned (cancelled
        again) and logged, whether or not anyone still waits.
        """
        await self._pump.aclose()

    def __del__(self) -> None:
        pump = getattr(self, "_pump", None)
        if pump is None or pump.closing or pump.finished:
            return
        loop = pump.loop
        if loop is not None:  # started: cancel on its loop, from whatever thread GC runs in
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to save
                loop.call_soon_threadsafe(pump.cancel)


class _Pump:
    """The state of one :class:`EventStream`, referenced by its task and the live set."""

    def __init__(
        self,
        result: AsyncIterable[bytes],
        *,
        heartbeat: float | None = None,
        cleanup_timeout: float = 10.0,
        max_events: int = MAX_BUFFERED_EVENTS,
        max_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self._result = result
        self._heartbeat = heartbeat
        self._cleanup_timeout = cleanup_timeout
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._task: _PumpTask | None = None
        self._abandon_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._data_ready: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._in_generator = False
        self._closing = False
        self._cancel_sent = False
        self._finished = False
        self._error: BaseException | None = None
        self._error_sent = False
        self._primed = False
        self._last_output = 0.0
        self.cancelled_at: float | None = None

    # -- producer ------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._last_output = time.monotonic()
        # A plain task of the loop: no anyio task group or request task owns it, so no
        # framework cancel scope can reach the generator's cleanup.
        self._task = _PumpTask(self._produce(), loop=self._loop, stream=self)
        _register(self, self._loop)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        assert self._loop is not None
        _unregister(self, self._loop)
        if self._abandon_timer is not None:
            self._abandon_timer.cancel()

    async def _produce(self) -> None:
        iterator: AsyncIterator[bytes] = aiter(self._result)
        try:
            while True:
                if self._closing:
                    # The client left while the generator was parked at a yield. Resume
                    # it with a cancel armed for its first real suspension: the callback
                    # runs only once this task yields to the loop, i.e. while it waits at
                    # an await inside the generator (ChatKit's try block).
                    assert self._loop is not None
                    self._loop.call_soon(self._cancel_in_generator)
                self._in_generator = True
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    self._in_generator = False
                if self._closing:
                    # Produced without suspending: nobody will read it. Let the loop run
                    # (the armed callback sees we are not in the generator) and go again.
                    await asyncio.sleep(0)
                    continue
                self._buffer.append(chunk)
                self._buffered += len(chunk)
                self._wake_consumer()
                if len(self._buffer) >= self._max_events or self._buffered >= self._max_bytes:
                    assert self._loop is not None
                    self._space = self._loop.create_future()
                    try:
                        await self._space
                    finally:
                        self._space = None
        except asyncio.CancelledError as exc:
            if self._closing:
                return  # our own cancel (disconnect, drain, loop teardown): a silent end
            # Nobody cancelled this stream (every cancel of the task goes through
            # _PumpTask.cancel, which sets _closing): the generator raised CancelledError
            # by itself. The answer is cut short, so it ends like any other failure.
            self._fail(RuntimeError("the ChatKit stream raised CancelledError by itself"), exc)
        except Exception as exc:
            self._fail(exc, exc)
        finally:
            self._finished = True
            self._wake_consumer()

    def _fail(self, error: Exception, cause: BaseException) -> None:
        if error is not cause:
            error.__cause__ = cause
        self._error = error
        if self._buffer or self._primed:
            logger.error(
                "ChatKit stream failed after its first event; ending it with an error event",
                exc_info=error,
            )

    def _cancel_in_generator(self) -> None:
        """Deliver the one cancellation, if the pump task is suspended in the generator."""
        task = self._task
        if self._in_generator and not self._cancel_sent and task is not None:
            self._cancel_sent = True
            task.deliver_cancel()

    # -- consumer ------------------------------------------------------------------

    def _wake_consumer(self) -> None:
        waiter = self._data_ready
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> bytes:
        buffer = self._buffer
        data = buffer.popleft() if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self._buffered = 0
        space = self._space
        if space is not None and not space.done():
            space.set_result(None)
        return data

    async def _wait(self, timeout: float | None) -> None:
        assert self._loop is not None
        waiter = self._data_ready = self._loop.create_future()
        if timeout is None:
            await waiter
            return
        handle = self._loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()

    async def _coalesce(self) -> None:
        """Woken with data: while the producer keeps adding events without waiting on
        anything else, give it loop turns so ready events go out in one write, up to the
        buffer limits. Stops at the first turn that adds nothing (the producer awaits real
        I/O): a slow stream pays one loop turn per wake-up, never a timer."""
        while (
            self._buffer
            and not self._finished
            and not self._closing
            and len(self._buffer) < self._max_events
            and self._buffered < self._max_bytes
        ):
            before = len(self._buffer)
            await asyncio.sleep(0)
            if len(self._buffer) == before:
                return

    async def prime(self) -> None:
        """See :meth:`EventStream.prime`."""
        self._start()
        try:
            while not self._buffer and not self._finished:
                await self._wait(None)
        except BaseException:
            self.cancel()  # the request task was cancelled while waiting: the pump follows
            raise
        self._primed = True
        if not self._buffer and self._error is not None:
            self._error_sent = True
            raise self._error

    async def next_chunk(self, poll: float | None = None) -> bytes | None:
        """See :meth:`EventStream.next_chunk`."""
        self._start()
        while True:
            if self._buffer:
                self._last_output = time.monotonic()
                return self._take()
            if self._closing:
                return None
            if self._finished:
                if self._error is not None and not self._error_sent:
                    self._error_sent = True
                    return ERROR_EVENT
                return None
            timeout = poll
            if self._heartbeat is not None:
                due = self._last_output + self._heartbeat - time.monotonic()
                if due <= 0:
                    self._last_output = time.monotonic()
                    return HEARTBEAT
                timeout = due if timeout is None else min(timeout, due)
            started = time.monotonic()
            await self._wait(timeout)
            await self._coalesce()
            if (
                poll is not None
                and not self._buffer
                and not self._finished
                and not self._closing
                and time.monotonic() - started >= poll
            ):
                return b""

    # -- cancellation --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def cancel(self) -> None:
        """See :meth:`EventStream.cancel`."""
        if self._closing:
            return
        self._closing = True
        self.cancelled_at = time.monotonic()
        task = self._task
        if task is not None and not self._finished:
            # The bound on the cleanup holds whoever waits for it, or nobody does.
            assert self._loop is not None
            self._abandon_timer = self._loop.call_later(self._cleanup_timeout, self._abandon)
            if self._in_generator:
                self._cancel_in_generator()  # lands at the await it is suspended on
            else:
                space = self._space
                if space is not None and not space.done():
                    space.set_result(None)  # resume it; _produce arms the cancel
                # otherwise the task has not run yet or is about to resume; it checks
                # _closing before re-entering the generator.
        self._wake_consumer()

    async def aclose(self) -> None:
        """See :meth:`EventStream.aclose`."""
        if not self._finished:
            self.cancel()
        task = self._task
        if task is None or task.done():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cleanup_timeout
        try:
            with anyio.CancelScope(shield=True):
                await asyncio.wait({task}, timeout=self._cleanup_timeout)
        except asyncio.CancelledError:
            await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            raise
        finally:
            if not task.done() and loop.time() >= deadline:
                self._abandon()

    def _abandon(self, within: str | None = None) -> None:
        """Abandon the cancel cleanup: it did not finish *within* its bound (by default
        ``cleanup_timeout``); log it and cancel it for real. The one meaning of "abandon"
        in this package."""
        task = self._task
        if task is None or task.done() or task.abandoned:
            return
        logger.warning(
            "ChatKit cancel cleanup did not finish within %s; abandoning it",
            within or f"cleanup_timeout={self._cleanup_timeout}s",
        )
        task.abandon()


class _PumpTask(asyncio.Task[None]):
    """The pump's task: cancelled for real only by its :class:`EventStream`.

    A cancel from outside (``asyncio.run`` cancelling every task at exit, a server's
    shutdown cancelling what it finds) becomes the stream's one orderly cancel, delivered
    at an await inside the generator; while ChatKit's cleanup runs, further outside
    cancels are ignored (the cleanup is bounded by ``cleanup_timeout`` all the same).
    Without this, the second cancel would interrupt the cleanup's store writes.
    """

    def __init__(
        self,
        coro: Coroutine[Any, Any, None],
        *,
        loop: asyncio.AbstractEventLoop,
        stream: _Pump,
    ) -> None:
        super().__init__(coro, loop=loop)
        self._stream = stream
        self.abandoned = False

    def cancel(self, msg: Any | None = None) -> bool:
        if self.abandoned or self.done():
            return super().cancel(msg)
        self._stream.cancel()  # once, at an await in the generator; idempotent
        return True

    def deliver_cancel(self) -> None:
        """The stream's one cancel, landing at the await the generator is suspended on."""
        super().cancel()

    def abandon(self) -> None:
        """Cancel the cleanup itself (after ``cleanup_timeout``)."""
        self.abandoned = True
        super().cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def live_streams() -> int:
    """How many pumps are running (all loops); for tests and monitoring. Safe from any
    thread."""
    with _live_lock:
        return sum(len(pumps) for pumps in _live.values())


async def drain(timeout: float | None = None) -> None:
    """Cancel every live stream of the running loop once and await their cleanups.

    Call it at application shutdown (the raw ASGI app does on ``lifespan.shutdown``)::

        await chatkit_adapters.drain()

    *timeout* bounds the whole wait (default: each stream's own ``cleanup_timeout``).
    """
    streams = _live_on(asyncio.get_running_loop())
    if not streams:
        return
    for stream in streams:
        stream.cancel()
    tasks = {s._task for s in streams if s._task is not None}
    if timeout is None:
        timeout = max(s._cleanup_timeout for s in streams)
    with anyio.CancelScope(shield=True):
        _, pending = await asyncio.wait(tasks, timeout=timeout)
    for stream in streams:
        task = stream._task
        if task is not None and task in pending:
            stream._abandon(f"the shutdown wait of {timeout}s")
