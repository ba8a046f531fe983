"""Django adapter: one ``path()`` line serves a streaming ChatKit endpoint, ASGI or WSGI.

Usage (``urls.py``; ``from chatkit_adapters.django import chatkit_view``)::

    def make_context(request):
        if not request.user.is_authenticated:
            raise PermissionDenied              # Django answers 403 as usual
        return MyContext(user_id=request.user.pk)

    urlpatterns = [path("chatkit/", chatkit_view(server, context=make_context))]

Async under ASGI (streams on the request's loop), sync under WSGI (streams from the request
thread, fed by the background loop): the view says it is a coroutine function only on an
event loop. A decorator applied at import (``login_required``) sees a sync view: under ASGI
a thread hop per request. A sync context factory runs in a sync thread (``request.user``,
the ORM); it may raise ``PermissionDenied``/``Http404`` or return an ``HttpResponse``,
which is sent instead. No ``ATOMIC_REQUESTS``: a stream outlives any transaction. Your own
view: ``await achatkit_response(server, request, ctx)`` or ``chatkit_response(...)``.

CSRF: the view is ``csrf_exempt`` because the cross-origin protection of every adapter
replaces Django's token check (ChatKit's client sends no token): a cross-site form or
``fetch`` is refused (403) unless its origin is in ``trusted_origins``. Likewise your view.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from chatkit.server import ChatKitServer

# django-stubs are optional: without them these imports are untyped (Any)
from django.core.handlers.asgi import ASGIRequest  # type: ignore[import-untyped,unused-ignore]
from django.http import (  # type: ignore[import-untyped,unused-ignore]
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from typing_extensions import Unpack

from . import _bridge, _core, _sync
from ._asgi import AsyncBody
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs

__all__ = ["achatkit_response", "chatkit_response", "chatkit_view"]


class _Answer(Exception):
    """The context factory returned a Django response (``args[0]``): send it instead."""


def _checked(value: Any) -> Any:
    if isinstance(value, HttpResponseBase):
        raise _Answer(value)
    return value


async def _context_async(factory: ContextFactory | None, request: HttpRequest) -> Any:
    if factory is None or iscoroutinefunction(factory):
        return _checked(await _core.build_context(factory, request))
    value = await sync_to_async(factory, thread_sensitive=True)(request)  # ORM-safe
    return _checked(await value if inspect.isawaitable(value) else value)


def _context_sync(factory: ContextFactory | None, request: HttpRequest) -> Any:
    if factory is not None and iscoroutinefunction(factory):  # back on the view's loop
        return async_to_sync(_context_async)(factory, request)
    return _checked(_core.build_context_sync(factory, request))


def _render(reply: _core.Reply | _sync.SyncEventStream, opts: Options) -> HttpResponseBase:
    if isinstance(reply, JSONReply):
        return HttpResponse(reply.body, status=reply.status, headers=dict(reply.all_headers))
    content: Any = reply  # a SyncEventStream is already a sync iterator with close()
    if isinstance(reply, _core.StreamReply):
        content = AsyncBody(reply.stream, wait=opts.cleanup_timeout + _bridge.MARGIN)
    return StreamingHttpResponse(content, status=reply.status, headers=dict(reply.headers))


async def _respond_asgi(
    server: ChatKitServer[Any], request: HttpRequest, context: Callable[[], Any], opts: Options
) -> HttpResponseBase:
    chunks = _sync.read_chunks(request.read, None, until_eof=True)  # Django has read it all
    try:
        reply = await _core.handle(
            server,
            method=request.method or "",
            headers=request.headers,
            body=lambda: _core.aiterate(chunks),
            context=context,
            options=opts,
        )
    except _Answer as answer:
        return answer.args[0]
    return _render(reply, opts)


def _respond_wsgi(
    server: ChatKitServer[Any], request: HttpRequest, context: Callable[[], Any], opts: Options
) -> HttpResponseBase:
    meta = request.META  # Django reads no body without Content-Length: read a dechunked one
    terminated = not meta.get("CONTENT_LENGTH") and meta.get("wsgi.input_terminated")
    try:
        reply = _sync.handle(
            server,
            method=request.method or "",
            headers=request.headers,
            read=meta["wsgi.input"].read if terminated else request.read,
            until_eof=True,  # Django's stream ends at Content-Length
            context=context,
            options=opts,
            disconnected=_sync.disconnect_probe(meta),
        )
    except _Answer as answer:
        return answer.args[0]
    return _render(reply, opts)


_respond_wsgi_async = sync_to_async(_respond_wsgi, thread_sensitive=True)  # in the request thread


# What marks a function as a coroutine function for this Python (asgiref's shim before 3.12)
_COROUTINE_MARKS: dict[str, Any] = vars(markcoroutinefunction(lambda: None))


def _on_loop() -> bool:
    return asyncio._get_running_loop() is not None  # documented, public since Python 3.7


class _ChatKitView:
    """A coroutine function to whoever asks from an event loop (Django's ASGI handler), a
    plain function to a sync thread (its WSGI handler: no ``async_to_sync`` per request)."""

    csrf_exempt = True  # works for async views on 4.2
    __name__ = __qualname__ = "chatkit"

    def __init__(self, server: ChatKitServer[Any], factory: ContextFactory | None, opts: Options):
        self._server, self._factory, self._opts = server, factory, opts

    def __getattr__(self, name: str) -> Any:
        if name in _COROUTINE_MARKS and _on_loop():  # asked by iscoroutinefunction()
            return _COROUTINE_MARKS[name]
        raise AttributeError(name)

    def __call__(self, request: HttpRequest) -> Any:
        server, factory, opts, on_loop = self._server, self._factory, self._opts, _on_loop()
        if isinstance(request, ASGIRequest):  # sync only when a sync decorator wraps the view
            respond = _respond_asgi if on_loop else async_to_sync(_respond_asgi)
            return respond(server, request, lambda: _context_async(factory, request), opts)
        response = _respond_wsgi_async if on_loop else _respond_wsgi
        return response(server, request, lambda: _context_sync(factory, request), opts)


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase] | HttpResponseBase]:
    """A Django view serving *server* (CSRF-exempt: see the module docs).

    ``path("chatkit/", chatkit_view(server, context=lambda request: Ctx(request.user.pk)))``"""
    return _ChatKitView(server, context, Options(**options))


async def achatkit_response(
    server: ChatKitServer[Any],
    request: HttpRequest,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> HttpResponseBase:
    """Handle one request with a ready *context* in your own async view.

    ``return await achatkit_response(server, request, MyContext(user_id=user.pk))``
    """
    opts = Options(**options)
    if isinstance(request, ASGIRequest):
        return await _respond_asgi(server, request, _core.ready_context(context), opts)
    return await _respond_wsgi_async(server, request, lambda: context, opts)


def chatkit_response(
    server: ChatKitServer[Any],
    request: HttpRequest,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> HttpResponseBase:
    """Handle one request with a ready *context* in your own sync view.

    ``return chatkit_response(server, request, MyContext(user_id=request.user.pk))``
    """
    opts = Options(**options)
    if isinstance(request, ASGIRequest):  # a sync view under ASGI: stream on the request loop
        return async_to_sync(_respond_asgi)(server, request, _core.ready_context(context), opts)
    return _respond_wsgi(server, request, lambda: context, opts)
