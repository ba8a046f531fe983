"""Starlette adapter: one ``Route`` line serves a streaming ChatKit endpoint.

Usage::

    from starlette.applications import Starlette
    from starlette.routing import Route
    from chatkit_adapters.starlette import chatkit_view

    app = Starlette(routes=[
        Route("/chatkit", chatkit_view(server, context=lambda request: {}), methods=["POST"]),
    ])
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatkit.server import ChatKitServer
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from typing_extensions import Unpack

from . import _core
from ._asgi import raw_headers, send_stream
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs, Reply, StreamReply

__all__ = ["ChatKitStreamingResponse", "chatkit_response", "chatkit_view"]


class ChatKitStreamingResponse(Response):
    """The response of a ChatKit stream (never Starlette's ``StreamingResponse``, whose
    anyio cancel scope cancels ChatKit's cancel cleanup a second time)."""

    def __init__(self, reply: StreamReply, background: BackgroundTask | None = None) -> None:
        self.reply = reply
        self.status_code = reply.status
        self.background = background
        self.raw_headers = raw_headers(reply.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_stream(self.reply, receive, send)
        if self.background is not None:
            await self.background()


def _render(reply: Reply) -> Response:
    if isinstance(reply, JSONReply):
        return Response(reply.body, reply.status, dict(reply.headers), _core.JSON_CONTENT_TYPE)
    return ChatKitStreamingResponse(reply)


async def _respond(
    server: ChatKitServer[Any],
    request: Request,
    context: Callable[[], Awaitable[Any]],
    options: Options,
) -> Response:
    reply = await _core.handle(
        server,
        method=request.method,
        headers=request.headers,
        body=request.stream,
        context=context,
        options=options,
        disconnects=(ClientDisconnect,),
    )
    return _render(reply)


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving *server*.

    ``Route("/chatkit", chatkit_view(server, context=make_context), methods=["POST"])``

    *context* gets the ``Request`` and returns the ChatKit context (or an awaitable of
    it); ``HTTPException`` and :class:`chatkit_adapters.ChatKitHTTPError` reject a request.
    """
    opts = Options(**options)

    async def chatkit_endpoint(request: Request) -> Response:
        return await _respond(server, request, _core.factory_context(context, request), opts)

    return chatkit_endpoint


async def chatkit_response(
    server: ChatKitServer[Any],
    request: Request,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> Response:
    """Handle one request with a ready *context* in your own endpoint.

    ``return await chatkit_response(server, request, MyContext(user=request.user))``
    """
    return await _respond(server, request, _core.ready_context(context), Options(**options))
