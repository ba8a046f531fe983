"""The sync (WSGI) face of :mod:`chatkit_adapters._attachments`: Flask, Django under WSGI
and the raw WSGI app.

In the request thread: the route's checks and the context factory (``flask.request``,
``request.user`` work), and the reading of the request body. The route's work runs on the
background loop (:mod:`chatkit_adapters._bridge`); the body goes there through a bounded
hand-off (:class:`Handoff`: one chunk queued, one being read), so an upload is never buffered
whole. A file comes back as :class:`SyncFileReply`, a WSGI iterable pulling the stored
bytes chunk by chunk from the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

from chatkit.server import ChatKitServer

from . import _bridge, _sync
from ._attachments import (
    ENDPOINT,
    FileReply,
    Plan,
    attachments_of,
    current_site,
    not_found,
    prepare,
    route,
    run,
    site_for,
)
from ._core import (
    ChatKitHTTPError,
    ClientDisconnected,
    ExceptionTypes,
    Headers,
    JSONReply,
    Options,
    body_error,
    client_closed,
    error_reply,
)

POLL: Final = _sync.POLL_INTERVAL
READ_SIZE: Final = 256 * 1024
"""Bytes per read of an upload body (each read is one hand-off to the loop: 64 KiB reads
cost a quarter of the throughput)."""
_END: Final = object()


class Handoff:
    """Body chunks from the request thread to a coroutine on the loop, one at a time.

    The thread calls :meth:`feed` with its reads; the coroutine iterates :meth:`chunks`.
    A failed read is handed over as its meaning (400, or the client left), so the
    coroutine fails and stores nothing.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: Any, call: _bridge.Call[Any]) -> bool:
        """Hand *item* over; False once the coroutine finished (it wants no more)."""
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            try:
                future.result(POLL)
                return True
            except concurrent.futures.TimeoutError:
                if call.done() or not _bridge.is_alive(self._loop):
                    future.cancel()
                    return False

    def feed(
        self, chunks: Iterator[bytes], call: _bridge.Call[Any], disconnects: ExceptionTypes
    ) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk, call):
                    return
        except Exception as exc:
            error = body_error(exc, disconnects)
            self._put(error if error is not exc else ChatKitHTTPError(400, "Unreadable body"), call)
            if error is exc:
                raise
            return
        self._put(_END, call)


class SyncFileReply:
    """A :class:`FileReply` as a WSGI iterable: each item is pulled from the loop."""

    def __init__(self, reply: FileReply, loop: asyncio.AbstractEventLoop) -> None:
        self.status, self.headers = reply.status, reply.headers
        self._reply, self._loop = reply, loop

    def __iter__(self) -> SyncFileReply:
        return self

    def __next__(self) -> bytes:
        body = self._reply.body
        if body is None:
            raise StopIteration
        chunk = _bridge.submit(_next(body), loop=self._loop).result(60)
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        with contextlib.suppress(Exception):
            _bridge.submit(self._reply.aclose(), loop=self._loop).result(10)


async def _next(body: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(body)
    except StopAsyncIteration:
        return None


Reply = JSONReply | _sync.SyncEventStream | SyncFileReply


def _read_chunks(
    read: Callable[[int], bytes], declared: int | None, until_eof: bool
) -> Iterator[bytes]:
    """:func:`chatkit_adapters._sync.read_chunks` with :data:`READ_SIZE` reads."""
    remaining = -1 if until_eof else (declared or 0)
    while remaining != 0:
        chunk = read(READ_SIZE if remaining < 0 else min(remaining, READ_SIZE))
        if not chunk:
            return
        if remaining > 0:
            remaining -= len(chunk)
        yield chunk


def dispatch(
    server: ChatKitServer[Any],
    *,
    rest: str,
    url: str | Callable[[], str],
    query: str,
    method: str,
    headers: Headers,
    read: Callable[[int], bytes],
    until_eof: bool,
    context: Callable[[], Any],
    options: Options,
    disconnected: _sync.Probe = lambda: False,
    disconnects: ExceptionTypes = (),
    slash: bool = False,
    strict: bool = True,
) -> Reply:
    """One request to ``chatkit_routes`` for sync frameworks, in the request thread."""
    kind, attachment_id = route(rest, strict)
    if kind == ENDPOINT:
        site = None if attachments_of(server) is None else site_for(url, rest, slash)
        token = current_site.set(site)  # copied to the loop with the request's context
        try:
            return _sync.handle(
                server,
                method=method,
                headers=headers,
                read=read,
                until_eof=until_eof,
                context=context,
                options=options,
                disconnected=disconnected,
                disconnects=disconnects,
            )
        finally:
            current_site.reset(token)
    store = attachments_of(server)
    try:
        if store is None:
            raise not_found()
        plan: Plan = prepare(store, kind, attachment_id, method, headers, query, options)
        ctx = None if plan.signed else context()
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    loop = _bridge.get_loop()
    handoff = Handoff(loop)
    site = site_for(url, rest, slash)
    call = _bridge.submit(run(server, store, plan, ctx, handoff.chunks(), site), loop=loop)
    if plan.kind != "content":
        handoff.feed(_read_chunks(read, plan.declared, until_eof), call, disconnects)
    try:
        reply = call.wait(POLL, None)
    except ClientDisconnected:  # pragma: no cover - run() maps it
        return client_closed()
    if isinstance(reply, FileReply):
        return SyncFileReply(reply, loop)
    return reply
