"""Falcon adapter: one resource serves a streaming ChatKit endpoint in ``falcon.App`` (WSGI)
and ``falcon.asgi.App`` (ASGI) alike.

Usage::

    import falcon            # or falcon.asgi
    from chatkit_adapters.falcon import chatkit_view

    def make_context(req):
        if not req.get_header("authorization"):
            raise falcon.HTTPUnauthorized()    # rendered by Falcon as usual
        return MyContext(user=req.context.user)

    app = falcon.App()       # or falcon.asgi.App()
    app.add_route("/chatkit", chatkit_view(server, context=make_context))

Your own resource (Falcon responders fill ``resp`` and return nothing)::

    class ChatKitResource:
        def on_post(self, req, resp):                  # falcon.App
            chatkit_response(server, req, resp, MyContext(user=req.context.user))

        async def on_post(self, req, resp):            # falcon.asgi.App
            await chatkit_response(server, req, resp, MyContext(user=req.context.user))

The resource's ``on_post`` decides per request: a ``falcon.asgi.Request`` gets the async
path (the context factory may be async), any other request the sync path (the factory runs
in the request thread; ``server.process`` and the stream run on the background loop, as in
Flask). Other methods get Falcon's own 405.

What Falcon does when a client leaves (measured): ``falcon.asgi.App`` under uvicorn neither
cancels the responder nor raises (uvicorn's ``send`` is a no-op after a disconnect) and only
iterates ``resp.stream``, calling its ``close()`` at the end; so the stream it is given
watches ``receive()`` for ``http.disconnect`` itself and cancels ChatKit's generator once,
and its ``close()`` awaits the cleanup. ``falcon.App`` hands ``resp.stream`` to the WSGI
server as the response iterable; gunicorn's gthread worker calls its ``close()`` when the
client left (the core's socket probe notices it first, also while idle), which cancels
once and waits (``tests/test_real_server.py::
test_disconnect_mid_stream_persists_partial_message_and_marker[falcon-uvicorn]`` and
``[falcon_wsgi-gunicorn-gthread]``, 20 of 20).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast, overload

import falcon
import falcon.asgi
from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _core, _sync
from ._asgi import Receive, ScopeHeaders, _retrieve, _watch_disconnect
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs, Reply
from ._pump import EventStream

__all__ = ["ChatKitRoutes", "chatkit_response", "chatkit_routes", "chatkit_view"]


class _ASGIStream:
    """``resp.stream`` under ``falcon.asgi``: the ChatKit stream, a ``receive()`` watcher
    that cancels it once when the client leaves, and the ``close()`` Falcon awaits at the
    end (cleanup awaited, whether the iteration ended, failed or was cancelled)."""

    def __init__(self, stream: EventStream, receive: Receive) -> None:
        self._stream, self._receive = stream, receive
        self._watcher: asyncio.Task[None] | None = None

    def __aiter__(self) -> _ASGIStream:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(self._receive, self._stream)
            )
        return self

    async def __anext__(self) -> bytes:
        return await self._stream.__anext__()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher.add_done_callback(_retrieve)
        await self._stream.aclose()


def _render(reply: Reply | _sync.SyncEventStream, resp: falcon.Response) -> None:
    resp.status = reply.status
    if isinstance(reply, JSONReply):
        resp.set_headers(reply.all_headers)
        resp.data = reply.body
    else:
        resp.set_headers(list(reply.headers))


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

    reply = await _core.handle(
        server,
        method=req.method,
        headers=ScopeHeaders(req.scope),
        body=body,
        context=context,
        options=options,
    )
    _render(reply, resp)
    if isinstance(reply, _core.StreamReply):
        # falcon.asgi keeps the ASGI receive() on the request and offers no disconnect event
        resp.stream = _ASGIStream(reply.stream, cast(Receive, req._receive))


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


class _OnPost:
    """The resource's POST responder, for both app kinds. Not a Python function, so
    ``falcon.asgi.App`` takes it as is (and awaits what it returns for an ASGI request)
    and ``falcon.App`` calls it like any sync responder."""

    def __init__(self, server: ChatKitServer[Any], factory: ContextFactory | None, opts: Options):
        self._server, self._factory, self._opts = server, factory, opts

    def __call__(self, req: falcon.Request, resp: falcon.Response) -> Awaitable[None] | None:
        factory = self._factory
        if isinstance(req, falcon.asgi.Request):
            context = _core.factory_context(factory, req)
            return _respond_asgi(self._server, req, resp, context, self._opts)  # type: ignore[arg-type]
        _respond_wsgi(
            self._server, req, resp, lambda: _core.build_context_sync(factory, req), self._opts
        )
        return None


class ChatKitResource:
    """The Falcon resource of :func:`chatkit_view`: ``on_post`` serves the endpoint."""

    def __init__(
        self, server: ChatKitServer[Any], context: ContextFactory | None, opts: Options
    ) -> None:
        self.on_post = _OnPost(server, context, opts)


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
    """The routes of :func:`chatkit_routes`; ``add_to(app, prefix)`` registers them."""

    def __init__(self, resource: ChatKitResource) -> None:
        self.resource = resource

    def add_to(self, app: falcon.App[Any, Any], prefix: str = "/chatkit") -> None:
        """Add the routes to *app* (``falcon.App`` or ``falcon.asgi.App``) under *prefix*."""
        app.add_route(prefix.rstrip("/") or "/", self.resource)


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> ChatKitRoutes:
    """The ChatKit routes for a Falcon app, to add under one prefix.

    ``chatkit_routes(server, make_context).add_to(app, "/chatkit")``

    For now they are the ChatKit endpoint (POST at the prefix); the attachment routes of
    design.md join them when the attachments core lands.
    """
    return ChatKitRoutes(chatkit_view(server, context, **options))
