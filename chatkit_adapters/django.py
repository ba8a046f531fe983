"""Django adapter: one ``path()`` line serves a streaming ChatKit endpoint, ASGI or WSGI.

Usage (``urls.py``)::

    from django.core.exceptions import PermissionDenied
    from chatkit_adapters.django import chatkit_view

    def make_context(request):
        if not request.user.is_authenticated:
            raise PermissionDenied              # rendered by Django as usual (403)
        return MyContext(user_id=request.user.pk)

    urlpatterns = [path("chatkit/", chatkit_view(server, context=make_context))]

The view is async. Under ASGI (uvicorn, daphne) it runs on the request's event loop
(concurrent streams never share a thread) and streams through an async iterator; under
WSGI (gunicorn ``-k gthread``, runserver) Django runs it once per request through
``async_to_sync``, the body and the context factory are handled in the request thread,
and the stream is a sync iterator fed by chatkit-adapters' background loop. A sync factory
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
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
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
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs
from ._pump import EventStream

__all__ = ["achatkit_response", "chatkit_response", "chatkit_view"]


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


class _ASGIStream:
    """A stream's content under ASGI: async iteration, and the sync ``close()`` Django calls
    from a thread after the response, also when a disconnect cancelled ``send`` and left the
    iteration parked: it cancels the pump on its loop and waits (bounded) for the cleanup."""

    def __init__(self, stream: EventStream, cleanup_timeout: float) -> None:
        self._stream, self._timeout = stream, cleanup_timeout + _bridge.MARGIN
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._stream:
                yield data
        finally:
            await self._stream.aclose()

    def close(self) -> None:
        if threading.get_ident() == self._thread:  # never block the loop itself
            self._stream.cancel()
        elif not self._loop.is_closed():  # the pump logs a cleanup that overruns
            done = asyncio.run_coroutine_threadsafe(self._stream.aclose(), self._loop)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                done.result(self._timeout)


def _render(
    reply: JSONReply | _sync.SyncEventStream | _core.StreamReply, opts: Options
) -> HttpResponseBase:
    response: HttpResponseBase
    if isinstance(reply, JSONReply):
        response = HttpResponse(reply.body, status=reply.status)
        headers = reply.all_headers
    else:
        content: Any = reply  # a SyncEventStream is already a sync iterator with close()
        if isinstance(reply, _core.StreamReply):
            content = _ASGIStream(reply.stream, opts.cleanup_timeout)
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
) -> HttpResponseBase:
    async def body() -> AsyncIterator[bytes]:  # Django has already received the whole body
        while chunk := request.read(_sync.READ_SIZE):
            yield chunk

    try:
        reply = await _core.handle(
            server,
            method=request.method or "",
            content_length=request.META.get("CONTENT_LENGTH"),
            content_type=request.META.get("CONTENT_TYPE"),
            body=body,
            context=context,
            options=opts,
        )
    except _Answer as answer:
        return answer.response
    return _render(reply, opts)


def _respond_wsgi(
    server: ChatKitServer[Any], request: HttpRequest, context: Callable[[], Any], opts: Options
) -> HttpResponseBase:
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    # Django reads nothing without a Content-Length; a server that dechunked the body says so
    terminated = not length and meta.get("wsgi.input_terminated")
    try:
        reply = _sync.handle(
            server,
            method=request.method or "",
            content_length=length,
            content_type=meta.get("CONTENT_TYPE"),
            read=meta["wsgi.input"].read if terminated else request.read,
            until_eof=True,  # Django's stream ends at Content-Length
            context=context,
            options=opts,
            disconnected=_sync.disconnect_probe(meta),
        )
    except _Answer as answer:
        return answer.response
    return _render(reply, opts)


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
    """A Django view serving *server* (CSRF-exempt; see the module docs).

    ``path("chatkit/", chatkit_view(server, context=lambda request: Ctx(request.user.pk)))``
    """
    opts = Options(**options)

    async def chatkit(request: HttpRequest) -> HttpResponseBase:
        if isinstance(request, ASGIRequest):
            return await _respond_asgi(
                server, request, lambda: _context_async(context, request), opts
            )
        respond = sync_to_async(_respond_wsgi, thread_sensitive=True)  # the request thread
        return await respond(server, request, lambda: _context_sync(context, request), opts)

    chatkit.csrf_exempt = True  # type: ignore[attr-defined]  # works for async views on 4.2
    return chatkit


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
    return await sync_to_async(_respond_wsgi, thread_sensitive=True)(
        server, request, lambda: context, opts
    )


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
