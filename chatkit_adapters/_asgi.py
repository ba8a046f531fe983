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


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header *name* (lower-case bytes) in an ASGI scope."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
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
