"""Quart adapter: one ``add_url_rule`` line serves a streaming ChatKit endpoint.

Usage::

    from quart import Quart, abort, g
    from chatkit_adapters.quart import chatkit_view

    async def make_context(request):
        if "authorization" not in request.headers:
            abort(401)                      # rendered by Quart as usual
        return MyContext(user=g.user)

    app = Quart(__name__)
    app.add_url_rule("/chatkit", view_func=chatkit_view(server, context=make_context),
                     methods=["POST"])

With attachments (``ChatKitServer(..., attachment_store=Attachments("./uploads"))``)::

    app.register_blueprint(chatkit_routes(server, make_context), url_prefix="/chatkit")

Your own route::

    @app.post("/chatkit")
    async def chatkit():
        return await chatkit_response(server, request, MyContext(user=current_user()))

The context factory gets ``quart.request`` (in the request context: ``quart.g`` works) and
may be async. Quart's ``MAX_CONTENT_LENGTH`` (16 MiB by default) applies as well as
``max_body_size``.

What Quart does when a client leaves (measured under hypercorn and uvicorn with a stand-in,
a nested async generator as a plain ``Response`` body, the client closing after 2 events):
its receiver task sees ``http.disconnect`` and cancels the handler task once
(``quart/asgi.py``, ``cancel_tasks``), also while the response body is being sent:
``CancelledError`` reached the generator 0-1 ms after the close, and a 50 ms await in its
cleanup completed (3 of 3, both servers). A cancel that hits while Quart awaits ``send``
leaves the generator at a ``yield`` instead, and Quart's ``aclose()`` then skips ChatKit's
handler, so the stream does not go through a plain body. The response body is the
core's ``EventStream``; Quart exits the body on the way out, which awaits the stream's
``aclose()``: ChatKit's generator is cancelled once at an await, and the wait goes on
through Quart's one cancel until the cleanup finished (``tests/test_real_server.py::
test_disconnect_mid_stream_persists_partial_message_and_marker[quart-*]``, 20 of 20).
Quart also cuts any response after ``RESPONSE_TIMEOUT`` (60 s by default, the whole
response): a stream's response has no timeout (``response.timeout = None``), since a model
may stream or think for longer (``tests/test_frameworks.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import quart
from chatkit.server import ChatKitServer
from quart import Blueprint, Request, Response
from quart.wrappers.response import ResponseBody
from typing_extensions import Unpack
from werkzeug.exceptions import RequestEntityTooLarge

from . import _attachments, _core
from ._attachments import FileReply
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs
from ._pump import EventStream

__all__ = ["chatkit_response", "chatkit_routes", "chatkit_view"]


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.body:
            yield chunk
    except RequestEntityTooLarge as exc:  # Quart's MAX_CONTENT_LENGTH, as the JSON error
        raise _core.too_large(request.max_content_length or 0) from exc


class _Body(ResponseBody):
    """A stream or a file as Quart's response body (every Quart iterates a ResponseBody;
    0.19 takes no other async iterable): on the way out (end, disconnect, cancel) Quart
    exits it, which awaits ``aclose()``: one cancel of ChatKit's generator, cleanup
    awaited; a file's store read closed."""

    def __init__(self, source: EventStream | FileReply) -> None:
        self._source = source

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._source.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._source.__aiter__()


async def _respond(
    server: ChatKitServer[Any],
    request: Request,
    context: Callable[[], Awaitable[Any]],
    options: Options,
    rest: str = "",
) -> Response:
    reply = await _attachments.dispatch(
        server,
        rest=rest,
        url=request.url,
        query=request.query_string.decode("latin-1"),
        method=request.method,
        headers=request.headers,
        body=lambda: _body(request),
        context=context,
        options=options,
    )
    if isinstance(reply, JSONReply):
        return Response(reply.body, reply.status, dict(reply.all_headers))
    body = _Body(reply if isinstance(reply, FileReply) else reply.stream)
    response = Response(body, reply.status, dict(reply.headers))
    response.timeout = None  # not cut after RESPONSE_TIMEOUT (a stream, a big file)
    return response


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[], Awaitable[Response]]:
    """A Quart view function serving *server* (its ``__name__`` is ``"chatkit"``).

    ``app.add_url_rule("/chatkit", view_func=chatkit_view(server, make_context),
    methods=["POST"])``

    *context* gets ``quart.request`` and returns the ChatKit context (or an awaitable of
    it); ``abort(401)`` and other Quart/werkzeug exceptions propagate to Quart,
    :class:`chatkit_adapters.ChatKitHTTPError` becomes the JSON error. Registered for
    every method, it answers anything but POST with a JSON 405 itself.
    """
    opts = Options(**options)

    async def chatkit() -> Response:
        request = quart.request
        return await _respond(server, request, _core.factory_context(context, request), opts)

    return chatkit


async def chatkit_response(
    server: ChatKitServer[Any],
    request: Request,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> Response:
    """Handle one request with a ready *context* in your own view.

    ``return await chatkit_response(server, quart.request, MyContext(user=g.user))``
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

    ``app.register_blueprint(chatkit_routes(server, make_context), url_prefix="/chatkit")``:
    the endpoint is ``POST /chatkit``, attachments under ``/chatkit/attachments``. Uploads
    stream through ``request.body``; Quart's ``MAX_CONTENT_LENGTH`` (16 MiB by default)
    applies to them too: raise it above ``max_upload_size`` for bigger files. Quart's
    receiver task appends the body without backpressure: what arrives faster than the store
    writes waits in Quart's buffer (a 200 MiB upload to a directory: no RSS growth).
    """
    opts = Options(**options)
    blueprint = Blueprint(name, __name__)

    async def chatkit(rest: str = "") -> Response:
        request = quart.request
        return await _respond(server, request, _core.factory_context(context, request), opts, rest)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    blueprint.add_url_rule("", view_func=chatkit, methods=methods)
    blueprint.add_url_rule("/<path:rest>", view_func=chatkit, methods=methods)
    return blueprint
