"""aiohttp adapter: one ``add_post`` line serves a streaming ChatKit endpoint.

Usage::

    from aiohttp import web
    from chatkit_adapters.aiohttp import chatkit_view

    app = web.Application()
    app.router.add_post("/chatkit", chatkit_view(server, context=lambda request: {}))

aiohttp cancels no handler on a disconnect by default (``handler_cancellation=False``),
so the stream watches its transport itself: a closed transport or a failed write cancels
ChatKit's stream once, and its cancel cleanup is awaited before the handler returns. The
same holds with ``handler_cancellation=True``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _core
from ._core import ClientDisconnected, ContextFactory, Options, OptionsKwargs, StreamReply

__all__ = ["chatkit_response", "chatkit_view"]

DISCONNECT_POLL: Final = 0.2
"""Seconds between checks of an idle stream's transport (aiohttp has no disconnect event)."""


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except OSError as exc:  # aiohttp fails the payload with the connection's error
        raise ClientDisconnected() from exc


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _stream(request: web.Request, reply: StreamReply) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    stream = reply.stream
    try:
        await response.prepare(request)
        while (data := await stream.next_chunk(poll=DISCONNECT_POLL)) is not None:
            if _gone(request):
                stream.cancel()
            elif data:
                await response.write(data)  # drains when the transport is paused
        if stream.cancelled_at is None:
            await response.write_eof()
    except ConnectionError:  # ClientConnectionResetError: written after the client left
        stream.cancel()
    finally:
        await stream.aclose()  # also waits through handler_cancellation's cancel
    return response


async def _respond(
    server: ChatKitServer[Any],
    request: web.Request,
    context: Callable[[], Awaitable[Any]],
    options: Options,
) -> web.StreamResponse:
    try:
        reply = await _core.handle(
            server,
            method=request.method,
            content_length=request.headers.get("Content-Length"),
            content_type=request.headers.get("Content-Type"),
            body=lambda: _body(request),
            context=context,
            options=options,
        )
    except ClientDisconnected:
        return web.Response(status=499, reason="Client Closed Request")  # never sent
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
