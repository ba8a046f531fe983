"""One background event loop per process, for sync frameworks (Flask, Django under WSGI).

``server.process`` and every stream of a sync adapter run on this loop; the request
threads hand work over with :func:`submit` and wait for it with timeouts, so a stuck or
dead loop is noticed instead of hanging a worker thread forever.

- The loop runs in a daemon thread, started lazily (first request) under a lock.
- It belongs to the process that started it: the owner pid is checked on every use, and
  ``os.register_at_fork`` drops the inherited loop in a child (gunicorn ``--preload``)
  *without closing it*, because its epoll and self-pipe file descriptors are shared with
  the parent, and recreates the lock, which may have been held during the fork.
- At interpreter exit, live ChatKit streams of the loop are cancelled once and their
  cancel cleanups awaited (bounded), before the server's worker threads are joined.

Neither asgiref's ``async_to_sync`` nor anyio's ``BlockingPortal`` is used: both lose
ChatKit's cancel cleanup (a fresh loop per call, resp. a cancel scope that cancels the
cleanup's awaits again).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from ._pump import drain, live_streams

logger = logging.getLogger("chatkit_adapters")

T = TypeVar("T")

START_TIMEOUT: Final = 10.0
"""Seconds to wait for a new loop thread to start running."""

SHUTDOWN_TIMEOUT: Final = 10.0
"""Upper bound of the wait for cancel cleanups at interpreter exit."""

MARGIN: Final = 2.0
"""Slack added to waits whose work is itself bounded on the loop."""


@dataclass(frozen=True)
class _Bridge:
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    pid: int

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive() and not self.loop.is_closed()


_lock = threading.Lock()
_bridge: _Bridge | None = None
# Loops inherited through fork: referenced forever so that garbage collection never
# closes them (closing would unregister the parent's fds from their shared epoll).
_orphans: list[asyncio.AbstractEventLoop] = []
_exit_hook_pid: int | None = None


def _after_fork_in_child() -> None:
    global _bridge, _lock
    if _bridge is not None:
        _orphans.append(_bridge.loop)
    _bridge = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        asyncio.set_event_loop(None)


def _current() -> _Bridge:
    bridge = _bridge
    if bridge is not None and bridge.alive():
        return bridge
    return _start()


def _start() -> _Bridge:
    global _bridge
    lock = _lock
    if not lock.acquire(timeout=START_TIMEOUT):
        raise RuntimeError("chatkit-adapters: timed out waiting to start the background loop")
    try:
        bridge = _bridge
        if bridge is not None and bridge.alive():
            return bridge
        if bridge is not None and bridge.pid != os.getpid():
            _orphans.append(bridge.loop)  # forked without the at-fork hook: never close it
        elif bridge is not None and not bridge.thread.is_alive() and not bridge.loop.is_closed():
            bridge.loop.close()  # ours, and its thread is gone: release its fds
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=_run, args=(loop, ready), name="chatkit-adapters-loop", daemon=True
        )
        thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("chatkit-adapters: the background loop did not start")
        _bridge = _Bridge(loop, thread, os.getpid())
        _register_exit_hook()
        return _bridge
    finally:
        lock.release()


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started (or restarted after a fork) on first use.

    Loop-bound resources a ChatKit store needs (a database pool, an HTTP client) must be
    created on this loop: create them lazily inside the store's coroutines, or with
    ``submit(make_pool()).result(timeout)``.
    """
    return _current().loop


def current_loop() -> asyncio.AbstractEventLoop | None:
    """This process's background loop if it is running, without starting one."""
    bridge = _bridge
    return bridge.loop if bridge is not None and bridge.alive() else None


def is_alive(loop: asyncio.AbstractEventLoop) -> bool:
    """True while *loop* is this process's running background loop."""
    bridge = _bridge
    return bridge is not None and bridge.loop is loop and bridge.alive()


class Call(Generic[T]):
    """A coroutine running as a plain task on the background loop, awaited from a thread.

    Unlike ``run_coroutine_threadsafe``, :meth:`cancel` cancels the *task* (once, at
    whatever it awaits) and never the result: if the coroutine finished first, its result
    is still delivered, so nothing it produced (a primed stream) can be orphaned.
    """

    def __init__(
        self,
        coro: Coroutine[Any, Any, T],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        try:
            if loop is None:
                loop = get_loop()
            elif not is_alive(loop):
                raise RuntimeError("chatkit-adapters: the background loop is gone")
        except BaseException:
            coro.close()  # never started: no "coroutine was never awaited" warning
            raise
        self.loop = loop
        self._future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._task: asyncio.Task[T] | None = None
        self._cancel_requested = False
        try:
            self.loop.call_soon_threadsafe(self._start, coro)
        except RuntimeError:  # the loop closed under us
            coro.close()
            raise

    def _start(self, coro: Coroutine[Any, Any, T]) -> None:
        # call_soon_threadsafe runs this in a copy of the calling thread's context, and a
        # task copies the context it is created in: contextvars (tracing, logging, the
        # request's framework context) follow the request onto the loop.
        task = self.loop.create_task(coro)
        self._task = task
        task.add_done_callback(self._finish)
        if self._cancel_requested:
            task.cancel()

    def _finish(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self._future.set_exception(concurrent.futures.CancelledError())
            return
        error = task.exception()
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(task.result())

    def _cancel(self) -> None:
        self._cancel_requested = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def cancel(self) -> None:
        """Cancel the task once, without waiting; the outcome is still reported."""
        with contextlib.suppress(RuntimeError):  # the loop is gone; so is the task
            self.loop.call_soon_threadsafe(self._cancel)

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float) -> T:
        """The coroutine's result; ``TimeoutError`` after *timeout* (the task goes on)."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no result within {timeout}s") from None

    def wait(self, poll: float, on_tick: Callable[[], None] | None = None) -> T:
        """Wait without a deadline but in *poll*-second ticks.

        Each tick checks that the loop is still alive (raising ``RuntimeError`` if it
        died) and calls *on_tick*, which may raise to stop waiting.
        """
        while True:
            try:
                return self._future.result(poll)
            except concurrent.futures.TimeoutError:
                if not is_alive(self.loop):
                    raise RuntimeError("chatkit-adapters: the background loop died") from None
                if on_tick is not None:
                    on_tick()


def submit(
    coro: Coroutine[Any, Any, T], *, loop: asyncio.AbstractEventLoop | None = None
) -> Call[T]:
    """Run *coro* on the background loop; wait with ``.result(timeout)`` or ``.wait(poll)``.

    The task runs in a copy of the calling thread's contextvars. *loop*: a loop obtained
    earlier (``RuntimeError`` if it is no longer the live one, e.g. after a fork).
    """
    return Call(coro, loop)


def call(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run *coro* on the background loop and return its result within *timeout* seconds."""
    return Call(coro).result(timeout)


def _shutdown() -> None:
    """Exit hook: cancel live streams on this process's loop and await their cleanups."""
    bridge = _bridge
    if bridge is None or not bridge.alive() or live_streams() == 0:
        return
    try:
        call(drain(SHUTDOWN_TIMEOUT), SHUTDOWN_TIMEOUT + MARGIN)
    except Exception:
        logger.warning("chatkit-adapters: cancelling live streams at exit failed", exc_info=True)


def _register_exit_hook() -> None:
    """Register :func:`_shutdown` once per process.

    ``threading._register_atexit`` hooks run before non-daemon threads are joined, in
    reverse order of registration: registered lazily (after the server created its
    thread pool), ours runs first, so request threads parked on a live stream are
    released instead of blocking the exit. A plain ``atexit`` hook (registered at import)
    runs afterwards and finds nothing left to do, unless the threading hook was missing.
    """
    global _exit_hook_pid
    if _exit_hook_pid == os.getpid():
        return
    _exit_hook_pid = os.getpid()
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # the interpreter is already shutting down
            register(_shutdown)


atexit.register(_shutdown)  # the last chance (and the only one without the threading hook)
