"""Django adapter: one ``path()`` line serves a streaming ChatKit endpoint, ASGI or WSGI.

Usage (``urls.py``)::

    from django.core.exceptions import PermissionDenied
    from chatkit_adapters.django import chatkit_view

    def make_context(request):
        if not request.user.is_authenticated:
            raise PermissionDenied              # rendered by Django as usual (403)
        return MyContext(user_id=request.user.pk)

    urlpatterns = [path("chatkit/", chatkit_view(server, context=make_context))]

The view is async under ASGI and sync under WSGI: Django asks whether it is a coroutine
function from the thread that will call it, and it answers yes only on an event loop.
Under ASGI (uvicorn, daphne) it runs on the request's event loop (concurrent streams never
share a thread) and streams through an async iterator; under WSGI (gunicorn ``-k
gthread``, runserver) it runs in the request thread like any sync view, and the stream is
a sync iterator fed by chatkit-adapters' background loop. A decorator applied at import
time (``login_required``) sees a sync view: under ASGI Django then runs it in a thread and
it hands the stream back to the request's loop (a thread hop per request). A sync factory
always runs in a sync thread (``request.user`` and the ORM work); an async one is awaited.
It may raise ``PermissionDenied``/``Http404`` or return an ``HttpResponse`` (a redirect to
the login page) and Django answers as it would for any view. Do not wrap the view in
``ATOMIC_REQUESTS``: a stream outlives any transaction.

Your own view: ``await achatkit_response(server, request, ctx)`` in an async view,
``chatkit_response(server, request, ctx)`` in a sync one (under ASGI prefer the async view);
decorate it with ``csrf_exempt`` for the reasons below.

CSRF: the view is ``csrf_exempt``. ChatKit's JS client sends JSON ``POST``s with its own
headers and no CSRF token. With token or header authentication there is nothing for CSRF
to protect. With *session-cookie* authentication, pass ``require_json=True``: any other
``Content-Type`` is refused (415), and a cross-site ``application/json`` POST needs a CORS
preflight your site does not grant, so a forged form or ``fetch`` cannot reach the view.
Or keep Django's check (``view.csrf_exempt = False``) and send ``X-CSRFToken`` from the page.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import (
    async_to_sync,
    iscoroutinefunction,
    markcoroutinefunction,
    sync_to_async,
)
from chatkit.server import ChatKitServer

# django-stubs are optional: without them these imports are untyped (Any)
from django.core.handlers.asgi import ASGIRequest  # type: ignore[import-untyped,unused-ignore]
from django.http import (  # type: ignore[import-untyped,unused-ignore]
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.urls import URLPattern, path, re_path  # type: ignore[import-untyped,unused-ignore]
from typing_extensions import Unpack

from . import _attachments, _attachments_sync, _bridge, _core, _sync
from ._asgi import AsyncBody
from ._attachments import FileReply
from ._attachments_sync import SyncFileReply
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs

__all__ = ["achatkit_response", "chatkit_response", "chatkit_routes", "chatkit_view"]


class _Answer(Exception):
    """The context factory returned a Django response: send it instead."""

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response


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
    response: HttpResponseBase
    if isinstance(reply, FileReply | SyncFileReply) and reply.status in (200, 206):
        body = _attachments.iterate(reply) if isinstance(reply, FileReply) else reply
        response = StreamingHttpResponse(body, status=reply.status)
        headers = reply.headers
    elif isinstance(reply, FileReply | SyncFileReply):  # HEAD, 304, 416: no body
        response, headers = HttpResponse(b"", status=reply.status), reply.headers
    elif isinstance(reply, JSONReply):
        response = HttpResponse(reply.body, status=reply.status)
        headers = reply.all_headers
    else:
        content: Any = reply  # a SyncEventStream is already a sync iterator with close()
        if isinstance(reply, _core.StreamReply):
            content = AsyncBody(reply.stream, wait=opts.cleanup_timeout + _bridge.MARGIN)
        response = StreamingHttpResponse(content, status=reply.status)
        headers = list(reply.headers)
    for name, value in headers:
        response[name] = value
    return response


async def _respond_asgi(
    server: ChatKitServer[Any],
    request: HttpRequest,
    context: Callable[[], Awaitable[Any]],
    opts: Options,
    rest: str = "",
) -> HttpResponseBase:
    async def body() -> AsyncIterator[bytes]:  # Django has already received the whole body
        while chunk := request.read(_sync.READ_SIZE):
            yield chunk

    try:
        reply = await _attachments.dispatch(
            server,
            **_where(request, rest),
            method=request.method or "",
            headers=request.headers,
            body=body,
            context=context,
            options=opts,
        )
    except _Answer as answer:
        return answer.response
    return _render(reply, opts)


def _where(request: HttpRequest, rest: str) -> dict[str, Any]:
    query = request.META.get("QUERY_STRING", "")
    url = lambda: request.build_absolute_uri(request.path)  # noqa: E731 (ALLOWED_HOSTS)
    return {"rest": rest, "url": url, "query": query, "slash": True}


def _respond_wsgi(
    server: ChatKitServer[Any],
    request: HttpRequest,
    context: Callable[[], Any],
    opts: Options,
    rest: str = "",
) -> HttpResponseBase:
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    # Django reads nothing without a Content-Length; a server that dechunked the body says so
    terminated = not length and meta.get("wsgi.input_terminated")
    try:
        reply = _attachments_sync.dispatch(
            server,
            **_where(request, rest),
            method=request.method or "",
            headers=request.headers,
            read=meta["wsgi.input"].read if terminated else request.read,
            until_eof=True,  # Django's stream ends at Content-Length
            context=context,
            options=opts,
            disconnected=_sync.disconnect_probe(meta),
        )
    except _Answer as answer:
        return answer.response
    return _render(reply, opts)


_respond_wsgi_async = sync_to_async(_respond_wsgi, thread_sensitive=True)  # in the request thread


# What marks a function as a coroutine function for this Python (asgiref's shim before 3.12)
_COROUTINE_MARKS: dict[str, Any] = vars(markcoroutinefunction(lambda: None))


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _ChatKitView:
    """The view: a coroutine function to whoever asks from an event loop (Django's ASGI
    handler awaits it on the request's loop), a plain function to a sync thread (Django's
    WSGI handler calls it in the request thread, with no ``async_to_sync`` per request)."""

    csrf_exempt = True  # works for async views on 4.2
    __name__ = __qualname__ = "chatkit"

    def __init__(self, server: ChatKitServer[Any], factory: ContextFactory | None, opts: Options):
        self._server, self._factory, self._opts = server, factory, opts

    def __getattr__(self, name: str) -> Any:
        if name in _COROUTINE_MARKS and _on_loop():  # asked by iscoroutinefunction()
            return _COROUTINE_MARKS[name]
        raise AttributeError(name)

    def __call__(self, request: HttpRequest, rest: str = "") -> Any:
        server, factory, opts, on_loop = self._server, self._factory, self._opts, _on_loop()
        if isinstance(request, ASGIRequest):  # sync only when a sync decorator wraps the view
            respond = _respond_asgi if on_loop else async_to_sync(_respond_asgi)
            return respond(server, request, lambda: _context_async(factory, request), opts, rest)
        response = _respond_wsgi_async if on_loop else _respond_wsgi
        return response(server, request, lambda: _context_sync(factory, request), opts, rest)


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase] | HttpResponseBase]:
    """A Django view serving *server* (CSRF-exempt; see the module docs).

    ``path("chatkit/", chatkit_view(server, context=lambda request: Ctx(request.user.pk)))``
    """
    return _ChatKitView(server, context, Options(**options))


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> list[URLPattern]:
    """The endpoint and the attachment routes, for ``include()`` (paths end in ``/``).

    ``path("chatkit/", include(chatkit_routes(server, make_context)))``
    """
    view = _ChatKitView(server, context, Options(**options))
    return [path("", view), re_path(r"^(?P<rest>attachments(/.*)?)$", view)]


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
