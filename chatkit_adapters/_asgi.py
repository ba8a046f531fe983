"""ASGI plumbing shared by the raw ASGI app and the ASGI-based framework adapters.

No framework imports: Starlette, FastAPI and Litestar responses delegate their
``__call__`` to :func:`send_reply`, so every ASGI adapter streams the same way:
headers, then batches from the :class:`~chatkit_adapters._pump.EventStream`, with a
``receive()`` watcher that turns ``http.disconnect`` into one cancellation (uvicorn
never raises on ``send`` after a disconnect), and ``OSError`` from ``send`` (servers on
ASGI spec 2.4) treated the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ._core import ClientDisconnected, JSONReply, Reply, StreamReply
from ._pump import EventStream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def raw_headers(
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...],
) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs from ``(name, value)`` strings."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class ScopeHeaders:
    """The request headers of an ASGI scope, read case-insensitively (first value wins).

    ``ScopeHeaders(scope).get("content-type")``
    """

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def get(self, key: str, /) -> str | None:
        name = key.lower().encode("latin-1")
        for raw, value in self._scope.get("headers", ()):
            if raw.lower() == name:
                return bytes(value).decode("latin-1")
        return None


async def receive_body(receive: Receive) -> AsyncIterator[bytes]:
    """Yield the request body chunks; raise :class:`ClientDisconnected` if the client left."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        elif kind == "http.disconnect":
            raise ClientDisconnected()


async def send_reply(reply: Reply, receive: Receive, send: Send) -> None:
    """Send a JSON reply or stream a stream reply over ASGI."""
    if isinstance(reply, JSONReply):
        await send_json(reply, send)
    else:
        await send_stream(reply, receive, send)


async def send_json(reply: JSONReply, send: Send) -> None:
    headers = raw_headers(reply.all_headers)
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def _watch_disconnect(receive: Receive, stream: EventStream) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.cancel()
            return


async def send_stream(reply: StreamReply, receive: Receive, send: Send) -> None:
    """Stream *reply*; whatever happens, the pump is closed (cleanup awaited) at the end."""
    stream = reply.stream
    watcher: asyncio.Task[None] | None = None
    try:
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": raw_headers(reply.headers),
            }
        )
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, stream))
        async for data in stream:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if stream.cancelled_at is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        stream.cancel()  # ASGI 2.4 servers report a dead client from send()
    finally:
        if watcher is not None:
            watcher.cancel()
            watcher.add_done_callback(_retrieve)
        await stream.aclose()


class AsyncBody:
    """An :class:`EventStream` as a response body iterated asynchronously, with the sync
    ``close()`` some frameworks (Django) call from another thread after the response, also
    when a disconnect left the iteration parked: it cancels the stream on its loop and
    waits, bounded, for the cleanup.

    ``StreamingHttpResponse(AsyncBody(stream, wait=cleanup_timeout + 1))``

    Not an ASGI app: a body for frameworks that iterate it themselves on the request's
    loop (Django's ASGI handler), with the same one cancel and awaited cleanup.
    """

    def __init__(self, stream: EventStream, wait: float) -> None:
        self._stream, self._wait = stream, wait
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._stream:
                yield data
        finally:
            await self._stream.aclose()

    def close(self) -> None:
        if threading.get_ident() == self._thread:  # never block the loop itself
            self._stream.cancel()
        elif not self._loop.is_closed():  # the pump logs a cleanup that overruns
            done = asyncio.run_coroutine_threadsafe(self._stream.aclose(), self._loop)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                done.result(self._wait)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a receive() that failed after the stream ended is not news


def reply_app(reply: Reply) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app sending *reply*, for frameworks whose handlers may return one (Litestar).

    ``return reply_app(await _core.handle(...))``
    """

    async def chatkit_reply(scope: Scope, receive: Receive, send: Send) -> None:
        await send_reply(reply, receive, send)

    return chatkit_reply
