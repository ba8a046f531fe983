"""Falcon adapter: one resource serves a streaming ChatKit endpoint in ``falcon.App`` (WSGI)
and ``falcon.asgi.App`` (ASGI) alike.

Usage::

    def make_context(req):
        if not req.get_header("authorization"):
            raise falcon.HTTPUnauthorized()    # rendered by Falcon as usual
        return MyContext(user=req.context.user)

    app = falcon.App()       # or falcon.asgi.App()
    app.add_route("/chatkit", chatkit_view(server, context=make_context))
    # with attachments: chatkit_routes(server, make_context).add_to(app, "/chatkit")

Your own responder: ``chatkit_response(server, req, resp, ctx)`` fills ``resp`` (await it in
``falcon.asgi.App``). A ``falcon.asgi.Request`` takes the async path (the factory may be
async), any other the sync one. Other methods get Falcon's own 405.

What Falcon does when a client leaves (measured with a stand-in, a nested async generator
as ``resp.stream``, the client closing after 2 events): ``falcon.asgi.App`` under uvicorn
neither cancels the responder nor raises; the generator ran to its end, 3 s after the
client left (3 of 3). So its ``resp.stream`` watches ``receive()`` (the core's
``WatchedBody``): one cancel on ``http.disconnect``, cleanup awaited in the ``close()``
Falcon awaits. ``falcon.App`` gives ``resp.stream`` to the WSGI server, which calls its
``close()`` (the core's socket probe notices first). Proof: ``tests/test_real_server.py``,
``test_disconnect_mid_stream_persists_partial_message_and_marker[falcon-uvicorn]`` and
``[falcon_wsgi-gunicorn-gthread]``: 20 of 20.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast, overload

import falcon
import falcon.asgi
from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _attachments, _attachments_sync, _core, _sync
from ._asgi import Receive, ScopeHeaders, WatchedBody
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs

__all__ = ["ChatKitRoutes", "chatkit_response", "chatkit_routes", "chatkit_view"]


def _render(reply: Any, resp: falcon.Response) -> None:
    resp.status = reply.status
    resp.set_headers(reply.all_headers if isinstance(reply, JSONReply) else list(reply.headers))
    if isinstance(reply, JSONReply):
        resp.data = reply.body


def _where(req: falcon.Request, rest: str, context: Any, options: Options) -> dict[str, Any]:
    where = {"rest": rest, "url": req.url, "query": req.query_string, "method": req.method}
    return {**where, "context": context, "options": options}  # rest: the path under the prefix


async def _respond_asgi(
    server: ChatKitServer[Any],
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    context: Callable[[], Awaitable[Any]],
    options: Options,
    rest: str = "",
) -> None:
    where, headers = _where(req, rest, context, options), ScopeHeaders(req.scope)
    reply = await _attachments.dispatch(server, **where, headers=headers, body=lambda: req.stream)
    _render(reply, resp)
    if isinstance(reply, _attachments.FileReply):
        resp.stream = _attachments.iterate(reply)
    elif isinstance(reply, _core.StreamReply):  # falcon.asgi has no disconnect event: watch
        resp.stream = WatchedBody(reply.stream, cast(Receive, req._receive))


def _respond_wsgi(
    server: ChatKitServer[Any],
    req: falcon.Request,
    resp: falcon.Response,
    context: Callable[[], Any],
    options: Options,
    rest: str = "",
) -> None:
    reply = _attachments_sync.dispatch(
        server,
        **_where(req, rest, context, options),
        headers=_sync.EnvironHeaders(req.env),
        read=_sync.input_reader(req.env, req.bounded_stream.read),
        until_eof=True,
        disconnected=_sync.disconnect_probe(req.env),
    )
    _render(reply, resp)
    if not isinstance(reply, JSONReply):
        resp.stream = reply  # the WSGI iterable; the server calls its close()


def _on_request(
    server: ChatKitServer[Any],
    factory: ContextFactory | None,
    opts: Options,
    base: str,
    req: falcon.Request,
    resp: falcon.Response,
    rest: str = "",
    ready: tuple[Any, ...] = (),  # chatkit_response: (the context,)
) -> Awaitable[None] | None:
    rest = f"{base}/{rest}" if rest else base
    if isinstance(req, falcon.asgi.Request):  # falcon.asgi.App awaits what this returns
        context = _core.ready_context(*ready) if ready else _core.factory_context(factory, req)
        return _respond_asgi(server, req, resp, context, opts, rest)  # type: ignore[arg-type]
    build = _core.build_context_sync
    _respond_wsgi(server, req, resp, lambda: ready[0] if ready else build(factory, req), opts, rest)
    return None


class ChatKitResource:
    """The resource of :func:`chatkit_view`. Its responders are ``partial`` objects, which
    ``falcon.asgi.App`` takes as is (and awaits) and ``falcon.App`` calls as sync ones."""

    def __init__(self, server: ChatKitServer[Any], context: Any, opts: Options) -> None:
        self.on_post = partial(_on_request, server, context, opts, "")


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
    return _on_request(server, None, Options(**options), "", req, resp, ready=(context,))


class ChatKitRoutes:
    """The routes of :func:`chatkit_routes`, for ``falcon.App`` and ``falcon.asgi.App``."""

    def __init__(self, server: ChatKitServer[Any], context: Any, opts: Options) -> None:
        self.resource = ChatKitResource(server, context, opts)
        attachments = partial(_on_request, server, context, opts, "attachments")
        for method in ("get", "head", "post", "put", "delete", "patch"):
            setattr(self.resource, f"on_{method}_attachments", attachments)

    def add_to(self, app: falcon.App[Any, Any], prefix: str = "/chatkit") -> None:
        """Add the endpoint (POST at *prefix*) and ``prefix/attachments...`` to *app*."""
        prefix = prefix.rstrip("/")
        app.add_route(prefix or "/", self.resource)
        for path in ("/attachments", "/attachments/{rest:path}"):
            app.add_route(prefix + path, self.resource, suffix="attachments")


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> ChatKitRoutes:
    """The endpoint and the attachment routes for a Falcon app, under one prefix.

    ``chatkit_routes(server, make_context).add_to(app, "/chatkit")``: the endpoint is
    ``POST /chatkit``, attachments under ``/chatkit/attachments`` (uploads are streamed).
    """
    return ChatKitRoutes(server, context, Options(**options))
