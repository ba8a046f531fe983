"""aiohttp adapter: one ``add_post`` line serves a streaming ChatKit endpoint.

Usage::

    from aiohttp import web
    from chatkit_adapters.aiohttp import chatkit_view

    app = web.Application()
    app.router.add_post("/chatkit", chatkit_view(server, context=lambda request: {}))

aiohttp cancels no handler on a disconnect by default (``handler_cancellation=False``)
and has no disconnect event, so one watcher task per event loop looks at the transports of
all open streams every ``WATCH_INTERVAL`` seconds: a closed transport or a failed write
cancels ChatKit's stream once, and its cancel cleanup is awaited before the handler
returns. The same holds with ``handler_cancellation=True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _core
from ._core import ClientDisconnected, ContextFactory, Options, OptionsKwargs, StreamReply
from ._pump import EventStream

__all__ = ["chatkit_response", "chatkit_view"]

WATCH_INTERVAL: Final = 0.01
"""Seconds between two looks at the open streams' transports (one watcher per loop)."""

_Streams = dict[EventStream, web.Request]
_watched: dict[asyncio.AbstractEventLoop, _Streams] = {}  # the streams each loop's watcher sees
_watchers: set[asyncio.Task[None]] = set()  # strong references to the running watchers


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except OSError as exc:  # aiohttp fails the payload with the connection's error
        raise ClientDisconnected() from exc


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _watch(stream: EventStream, request: web.Request) -> None:
    loop = asyncio.get_running_loop()
    streams = _watched.get(loop)
    if streams is None:
        streams = _watched[loop] = {}  # the first stream on this loop starts its watcher
        watcher = loop.create_task(_watcher(loop, streams))
        _watchers.add(watcher)
        watcher.add_done_callback(_watchers.discard)
    streams[stream] = request


def _unwatch(stream: EventStream) -> None:
    streams = _watched.get(asyncio.get_running_loop())
    if streams is not None:
        streams.pop(stream, None)


async def _watcher(loop: asyncio.AbstractEventLoop, streams: _Streams) -> None:
    """Cancel the streams whose client left; ends when no stream is left to watch."""
    try:
        while streams:
            await asyncio.sleep(WATCH_INTERVAL)
            for stream, request in list(streams.items()):
                if _gone(request):
                    stream.cancel()  # idempotent; the handler's loop ends and unwatches it
    finally:
        if _watched.get(loop) is streams:
            del _watched[loop]


async def _stream(request: web.Request, reply: StreamReply) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    stream = reply.stream
    try:
        await response.prepare(request)
        _watch(stream, request)
        async for data in stream:
            if _gone(request):
                stream.cancel()
            else:
                await response.write(data)  # drains when the transport is paused
        if stream.cancelled_at is None:
            await response.write_eof()
    except ConnectionError:  # ClientConnectionResetError: written after the client left
        stream.cancel()
    finally:
        _unwatch(stream)
        await stream.aclose()  # also waits through handler_cancellation's cancel
    return response


async def _respond(
    server: ChatKitServer[Any],
    request: web.Request,
    context: Callable[[], Awaitable[Any]],
    options: Options,
) -> web.StreamResponse:
    reply = await _core.handle(
        server,
        method=request.method,
        headers=request.headers,
        body=lambda: _body(request),
        context=context,
        options=options,
    )
    if isinstance(reply, _core.JSONReply):
        return web.Response(body=reply.body, status=reply.status, headers=reply.all_headers)
    return await _stream(request, reply)


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler serving *server*.

    ``app.router.add_post("/chatkit", chatkit_view(server, context=make_context))``

    *context* gets the ``web.Request`` and returns the ChatKit context (or an awaitable
    of it); ``web.HTTPUnauthorized`` and friends propagate to aiohttp, and
    :class:`chatkit_adapters.ChatKitHTTPError` is rendered as the JSON error. Registered
    with ``add_route("*", ...)``, it answers anything but POST with a JSON 405 itself.
    """
    opts = Options(**options)

    async def chatkit_handler(request: web.Request) -> web.StreamResponse:
        return await _respond(server, request, _core.factory_context(context, request), opts)

    return chatkit_handler


async def chatkit_response(
    server: ChatKitServer[Any],
    request: web.Request,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> web.StreamResponse:
    """Handle one request with a ready *context* in your own handler.

    ``return await chatkit_response(server, request, MyContext(user=request["user"]))``

    Returns a ``web.Response`` (JSON) or a ``web.StreamResponse`` that has already been
    streamed to the end (or to the client's disconnect) when this returns.
    """
    return await _respond(server, request, _core.ready_context(context), Options(**options))
