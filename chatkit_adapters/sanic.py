"""Sanic adapter: one ``add_route`` line serves a streaming ChatKit endpoint.

Usage::

    from sanic import Sanic
    from sanic.exceptions import Unauthorized
    from chatkit_adapters.sanic import chatkit_view

    async def make_context(request):
        if "authorization" not in request.headers:
            raise Unauthorized("log in first")       # rendered by Sanic as usual
        return MyContext(user=request.ctx.user)

    app = Sanic("MyApp")
    app.add_route(chatkit_view(server, context=make_context), "/chatkit", methods=["POST"])
    # with attachments: app.blueprint(chatkit_routes(server, make_context), url_prefix="/chatkit")

Your own handler (return what ``chatkit_response`` returns: a JSON ``HTTPResponse``, or
``None`` once a stream was sent through ``request.respond()``)::

    @app.post("/chatkit", stream=True)
    async def chatkit(request):
        return await chatkit_response(server, request, MyContext(user=request.ctx.user))

The view is a streaming-body handler (``is_stream``): Sanic hands it the request before
reading the body, so ``max_body_size`` decides (413 from ``Content-Length`` before a byte is
read) instead of ``REQUEST_MAX_SIZE``. A route without ``stream=True`` has its body read by
Sanic first, under ``REQUEST_MAX_SIZE``.

What Sanic's own server does when a client leaves (measured with a stand-in, a handler
sending a nested async generator's events, the client closing after 2 events):
``connection_lost`` cancels the connection's task once, and that task runs the handler:
``CancelledError`` reached the generator 0-5 ms after the close, and a 50 ms await in its
cleanup completed (3 of 3); a write to a closing transport raises ``RequestCancelled``
instead. The handler streams
with ``request.respond()`` and ``response.send()`` and, in ``finally``, awaits the core's
``EventStream.aclose()``: ChatKit's generator is cancelled once at an await, and the wait
for its cleanup goes on through that one cancel (``tests/test_real_server.py::
test_disconnect_mid_stream_persists_partial_message_and_marker[sanic-sanic]``, 20 of 20).
Sanic also cancels a connection that sent nothing for ``RESPONSE_TIMEOUT`` (60 s by default)
while it handles a request; a model may think silently for longer, so while a stream is
open its connection has no response timeout (``protocol.response_timeout``, restored
after; ``tests/test_frameworks.py``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from chatkit.server import ChatKitServer
from sanic import Blueprint, HTTPResponse, Request
from sanic.exceptions import BadRequest
from typing_extensions import Unpack

from . import _attachments, _core
from ._attachments import FileReply
from ._core import ChatKitHTTPError, ContextFactory, JSONReply, Options, OptionsKwargs, StreamReply

__all__ = ["chatkit_response", "chatkit_routes", "chatkit_view"]


async def _body(request: Request) -> AsyncIterator[bytes]:
    if request.body:  # read by Sanic already (a route without stream=True)
        yield request.body
    body: Any = request.stream  # typed as the bare Stream base class
    if body is None:
        return
    try:  # a streaming-body handler: read it now
        async for chunk in body:
            yield chunk
    except BadRequest as exc:  # Sanic's parser refusing the body's framing
        raise ChatKitHTTPError(400, "Could not read the request body") from exc


async def _stream(request: Request, reply: StreamReply) -> None:
    stream = reply.stream
    protocol = request.protocol
    timeout = getattr(protocol, "response_timeout", None)
    if timeout is not None:  # Sanic's own server: no response timeout while streaming
        protocol.response_timeout = math.inf  # type: ignore[attr-defined]
    try:
        response = await request.respond(status=reply.status, headers=dict(reply.headers))
        async for data in stream:
            await response.send(data)  # waits while the transport is paused
        if stream.cancelled_at is None:
            await response.eof()
    finally:
        await stream.aclose()  # waits through Sanic's one cancel of this task
        if timeout is not None:
            protocol.response_timeout = timeout  # type: ignore[attr-defined]


async def _file(request: Request, reply: FileReply) -> None:
    try:
        response = await request.respond(status=reply.status, headers=dict(reply.headers))
        async for chunk in reply.body or _core.aiterate(()):
            await response.send(chunk)
        await response.eof()
    finally:  # also when Sanic cancels the task of a client that left
        await reply.aclose()


async def _respond(
    server: ChatKitServer[Any],
    request: Request,
    context: Callable[[], Awaitable[Any]],
    options: Options,
    rest: str = "",
) -> HTTPResponse | None:
    reply = await _attachments.dispatch(
        server,
        rest=rest,
        url=request.url,
        query=request.query_string,
        method=request.method,
        headers=request.headers,
        body=lambda: _body(request),
        context=context,
        options=options,
    )
    if isinstance(reply, JSONReply):
        return HTTPResponse(reply.body, reply.status, dict(reply.all_headers))
    await (_file(request, reply) if isinstance(reply, FileReply) else _stream(request, reply))
    return None  # sent through request.respond()


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[Request], Coroutine[Any, Any, HTTPResponse | None]]:
    """A Sanic handler serving *server* (a streaming-body handler named ``chatkit``).

    ``app.add_route(chatkit_view(server, context=make_context), "/chatkit",
    methods=["POST"])``

    *context* gets the Sanic ``Request`` and returns the ChatKit context (or an awaitable
    of it); ``sanic.exceptions.Unauthorized`` and friends propagate to Sanic, and
    :class:`chatkit_adapters.ChatKitHTTPError` is rendered as the JSON error. Registered
    for every method, it answers anything but POST with a JSON 405 itself.
    """
    opts = Options(**options)

    async def chatkit(request: Request) -> HTTPResponse | None:
        return await _respond(server, request, _core.factory_context(context, request), opts)

    chatkit.is_stream = True  # type: ignore[attr-defined]  # Sanic's mark: body not read
    return chatkit


async def chatkit_response(
    server: ChatKitServer[Any],
    request: Request,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> HTTPResponse | None:
    """Handle one request with a ready *context* in your own handler.

    ``return await chatkit_response(server, request, MyContext(user=request.ctx.user))``

    Returns the JSON ``HTTPResponse``, or ``None`` when a stream was sent (to its end or
    to the client's disconnect) through ``request.respond()``.
    """
    return await _respond(server, request, _core.ready_context(context), Options(**options))


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    *,
    name: str = "chatkit",
    **options: Unpack[OptionsKwargs],
) -> Blueprint:
    """The endpoint and the attachment routes as a ``Blueprint`` named *name*.

    ``app.blueprint(chatkit_routes(server, make_context), url_prefix="/chatkit")``: the
    endpoint is ``POST /chatkit``, attachments under ``/chatkit/attachments`` (streaming-body
    routes: uploads are read as they arrive, bounded by ``max_upload_size``).
    """
    opts = Options(**options)

    async def chatkit(request: Request, rest: str = "") -> HTTPResponse | None:
        return await _respond(server, request, _core.factory_context(context, request), opts, rest)

    blueprint = Blueprint(name)
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    blueprint.add_route(chatkit, "", methods=methods, stream=True, name="chatkit")
    blueprint.add_route(chatkit, "/<rest:path>", methods=methods, stream=True, name="rest")
    return blueprint
