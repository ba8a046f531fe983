"""Falcon adapter: one resource serves a streaming ChatKit endpoint in ``falcon.App`` (WSGI)
and ``falcon.asgi.App`` (ASGI) alike.

Usage::

    def make_context(req):
        if not req.get_header("authorization"):
            raise falcon.HTTPUnauthorized()    # rendered by Falcon as usual
        return MyContext(user=req.context.user)

    app = falcon.App()       # or falcon.asgi.App()
    app.add_route("/chatkit", chatkit_view(server, context=make_context))

Your own responder fills ``resp``: ``chatkit_response(server, req, resp, ctx)`` in
``falcon.App``, ``await chatkit_response(server, req, resp, ctx)`` in ``falcon.asgi.App``.

``on_post`` decides per request: a ``falcon.asgi.Request`` takes the async path (the factory
may be async), any other the sync one (as in Flask). Other methods get Falcon's own 405.

What Falcon does when a client leaves (measured with a stand-in, a nested async generator
as ``resp.stream``, the client closing after 2 events): ``falcon.asgi.App`` under uvicorn
neither cancels the responder nor raises; the generator ran to its end, 3 s after the
client left (3 of 3). So its ``resp.stream`` watches ``receive()`` itself (the core's
``WatchedBody``): one cancel on ``http.disconnect``, cleanup awaited in the ``close()``
Falcon awaits. ``falcon.App`` hands ``resp.stream`` to the WSGI server, which calls its
``close()`` (gunicorn gthread; the core's socket probe notices first, also while idle).
Proof: ``tests/test_real_server.py::test_disconnect_mid_stream_persists_partial_message_``
``and_marker[falcon-uvicorn]`` and ``[falcon_wsgi-gunicorn-gthread]``: 20 of 20.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, cast, overload

import falcon
import falcon.asgi
from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _core, _sync
from ._asgi import Receive, ScopeHeaders, WatchedBody
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs, Reply

__all__ = ["ChatKitRoutes", "chatkit_response", "chatkit_routes", "chatkit_view"]


def _render(reply: Reply | _sync.SyncEventStream, resp: falcon.Response) -> None:
    resp.status = reply.status
    resp.set_headers(reply.all_headers if isinstance(reply, JSONReply) else list(reply.headers))
    if isinstance(reply, JSONReply):
        resp.data = reply.body


async def _respond_asgi(
    server: ChatKitServer[Any],
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    context: Callable[[], Awaitable[Any]],
    options: Options,
) -> None:
    async def body() -> AsyncIterator[bytes]:
        async for chunk in req.stream:
            yield chunk

    headers = ScopeHeaders(req.scope)
    reply = await _core.handle(
        server, method=req.method, headers=headers, body=body, context=context, options=options
    )
    _render(reply, resp)
    if isinstance(reply, _core.StreamReply):
        # falcon.asgi keeps the ASGI receive() on the request and offers no disconnect event
        resp.stream = WatchedBody(reply.stream, cast(Receive, req._receive))


def _respond_wsgi(
    server: ChatKitServer[Any],
    req: falcon.Request,
    resp: falcon.Response,
    context: Callable[[], Any],
    options: Options,
) -> None:
    env = req.env
    # Falcon's bounded stream reads nothing without a Content-Length; a dechunked body ends
    terminated = not env.get("CONTENT_LENGTH") and env.get("wsgi.input_terminated")
    reply = _sync.handle(
        server,
        method=req.method,
        headers=_sync.EnvironHeaders(env),
        read=env["wsgi.input"].read if terminated else req.bounded_stream.read,
        until_eof=True,
        context=context,
        options=options,
        disconnected=_sync.disconnect_probe(env),
    )
    _render(reply, resp)
    if isinstance(reply, _sync.SyncEventStream):
        resp.stream = reply  # the WSGI iterable; the server calls its close()


def _on_post(
    server: ChatKitServer[Any],
    factory: ContextFactory | None,
    opts: Options,
    req: falcon.Request,
    resp: falcon.Response,
) -> Awaitable[None] | None:
    if isinstance(req, falcon.asgi.Request):  # falcon.asgi.App awaits what this returns
        context = _core.factory_context(factory, req)
        return _respond_asgi(server, req, resp, context, opts)  # type: ignore[arg-type]
    _respond_wsgi(server, req, resp, lambda: _core.build_context_sync(factory, req), opts)
    return None


class ChatKitResource:
    """The Falcon resource of :func:`chatkit_view`. Its ``on_post`` is a ``partial``, not a
    Python function: ``falcon.asgi.App`` takes it as is (and awaits what it returns for an
    ASGI request), ``falcon.App`` calls it like any sync responder."""

    def __init__(self, server: ChatKitServer[Any], context: Any, opts: Options) -> None:
        self.on_post = partial(_on_post, server, context, opts)


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> ChatKitResource:
    """A Falcon resource serving *server*, for ``falcon.App`` and ``falcon.asgi.App``.

    ``app.add_route("/chatkit", chatkit_view(server, context=make_context))``

    *context* gets the Falcon ``req`` and returns the ChatKit context (under
    ``falcon.asgi`` it may return an awaitable of it); ``falcon.HTTPError`` subclasses
    propagate to Falcon, :class:`chatkit_adapters.ChatKitHTTPError` becomes the JSON error.
    """
    return ChatKitResource(server, context, Options(**options))


@overload
def chatkit_response(
    server: ChatKitServer[Any],
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> Awaitable[None]: ...
@overload
def chatkit_response(
    server: ChatKitServer[Any],
    req: falcon.Request,
    resp: falcon.Response,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> None: ...
def chatkit_response(
    server: ChatKitServer[Any],
    req: falcon.Request,
    resp: falcon.Response,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> Awaitable[None] | None:
    """Handle one request with a ready *context* in your own responder: fills *resp*.

    ``await chatkit_response(server, req, resp, ctx)`` under ``falcon.asgi``;
    ``chatkit_response(server, req, resp, ctx)`` under ``falcon.App``.
    """
    opts = Options(**options)
    if isinstance(req, falcon.asgi.Request):
        ready = _core.ready_context(context)
        return _respond_asgi(server, req, resp, ready, opts)  # type: ignore[arg-type]
    _respond_wsgi(server, req, resp, lambda: context, opts)
    return None


class ChatKitRoutes:
    """The routes of :func:`chatkit_routes`: ``add_to(app, "/chatkit")`` adds them to a
    ``falcon.App`` or ``falcon.asgi.App`` under the prefix."""

    def __init__(self, resource: ChatKitResource) -> None:
        self.resource = resource

    def add_to(self, app: falcon.App[Any, Any], prefix: str = "/chatkit") -> None:
        app.add_route(prefix.rstrip("/") or "/", self.resource)


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> ChatKitRoutes:
    """The ChatKit routes for a Falcon app, under one prefix (for now the endpoint, POST at
    the prefix; the attachment routes join when the attachments core lands).

    ``chatkit_routes(server, make_context).add_to(app, "/chatkit")``
    """
    return ChatKitRoutes(chatkit_view(server, context, **options))
