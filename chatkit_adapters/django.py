"""Django adapter: one ``path()`` line serves a streaming ChatKit endpoint, ASGI or WSGI.

Usage (``urls.py``)::

    urlpatterns = [path("chatkit/", chatkit_view(server, context=make_context))]
    # with attachments: path("chatkit/", include(chatkit_routes(server, make_context)))

Async under ASGI, sync under WSGI (fed by the background loop): the view is a coroutine
function only to an event loop; a decorator applied at import sees a sync view (under ASGI,
a thread hop per request). A sync context factory runs in a sync thread (``request.user``,
the ORM); it may raise ``PermissionDenied`` or return an ``HttpResponse`` to send instead.
No ``ATOMIC_REQUESTS``: a stream outlives a transaction. CSRF: ``csrf_exempt``, because
the cross-origin protection of every adapter replaces Django's token check (ChatKit's
client sends none); likewise for your own views (``achatkit_response``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from chatkit.server import ChatKitServer
from django.core.handlers.asgi import ASGIRequest  # type: ignore[import-untyped,unused-ignore]
from django.http import (  # type: ignore[import-untyped,unused-ignore]
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.urls import URLPattern, path, re_path  # type: ignore[import-untyped,unused-ignore]
from typing_extensions import Unpack

from . import _asgi, _attachments, _attachments_sync, _bridge, _core, _sync
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs

__all__ = ["achatkit_response", "chatkit_response", "chatkit_routes", "chatkit_view"]


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


def _render(reply: Any, opts: Options) -> HttpResponseBase:
    if isinstance(reply, JSONReply):
        return HttpResponse(reply.body, status=reply.status, headers=dict(reply.all_headers))
    content: Any = reply  # Sync(EventStream|FileReply): sync iterators with close(); FileReply
    if isinstance(reply, _core.StreamReply):  # an async one (HEAD and 304: empty)
        content = _asgi.AsyncBody(reply.stream, wait=opts.cleanup_timeout + _bridge.MARGIN)
    return StreamingHttpResponse(content, status=reply.status, headers=dict(reply.headers))


async def _respond_asgi(
    server: ChatKitServer[Any], request: HttpRequest, context: Callable[[], Any], opts: Options
) -> HttpResponseBase:
    chunks = _sync.read_chunks(request.read, None, until_eof=True)  # Django has read it all
    try:
        reply = await _attachments.dispatch(
            server,
            **_where(request),
            method=request.method or "",
            headers=request.headers,
            body=lambda: _core.aiterate(chunks),
            context=context,
            options=opts,
        )
    except _Answer as answer:
        return answer.args[0]
    return _render(reply, opts)


def _where(request: HttpRequest) -> dict[str, Any]:  # rest: the path under chatkit_routes' P
    rest = getattr(request.resolver_match, "kwargs", {}).get("rest", "")
    query, url = request.META.get("QUERY_STRING", ""), request.build_absolute_uri  # ALLOWED_HOSTS
    return {"rest": rest, "url": lambda: url(request.path), "query": query, "slash": True}


def _respond_wsgi(
    server: ChatKitServer[Any], request: HttpRequest, context: Callable[[], Any], opts: Options
) -> HttpResponseBase:
    meta = request.META  # Django reads no body without Content-Length: read a dechunked one
    try:
        reply = _attachments_sync.dispatch(
            server,
            **_where(request),
            method=request.method or "",
            headers=request.headers,
            read=_sync.input_reader(meta, request.read),
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
    """A coroutine function to an event loop (ASGI), a plain one to a thread (WSGI)."""

    csrf_exempt = True  # works for async views on 4.2
    __name__ = __qualname__ = "chatkit"

    def __init__(self, server: ChatKitServer[Any], factory: ContextFactory | None, opts: Options):
        self._server, self._factory, self._opts = server, factory, opts
        self.__qualname__ = "chatkit"  # on the instance: a class body's sets the class's own

    def __getattr__(self, name: str) -> Any:
        if name in _COROUTINE_MARKS and _on_loop():  # asked by iscoroutinefunction()
            return _COROUTINE_MARKS[name]
        raise AttributeError(name)

    def __call__(self, request: HttpRequest, **path: str) -> Any:  # chatkit_routes: rest=
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


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> list[URLPattern]:
    """Endpoint and attachment routes: ``path("chatkit/", include(chatkit_routes(server)))``."""
    view = _ChatKitView(server, context, Options(**options))
    return [path("", view), re_path(r"^(?P<rest>attachments(/.*)?)$", view)]


async def achatkit_response(
    server: ChatKitServer[Any],
    request: HttpRequest,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> HttpResponseBase:
    """In your own async view: ``return await achatkit_response(server, request, ctx)``."""
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
    """In your own sync view: ``return chatkit_response(server, request, ctx)``."""
    opts = Options(**options)
    if isinstance(request, ASGIRequest):  # a sync view under ASGI: stream on the request loop
        return async_to_sync(_respond_asgi)(server, request, _core.ready_context(context), opts)
    return _respond_wsgi(server, request, lambda: context, opts)
