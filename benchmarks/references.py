"""The reference apps the adapters are compared with: no chatkit_adapters code in here.

- ``fastapi-documented``: ChatKit's documented FastAPI wiring, verbatim (``process`` is
  ``server.process`` in every reference but the ``-cached`` ones)::

      result = await server.process(await request.body(), {})
      if isinstance(result, StreamingResult):
          return StreamingResponse(result, media_type="text/event-stream")
      return Response(content=result.json, media_type="application/json")

- one "hand-written route" per framework: that wiring translated to the framework as its
  users would write it. Sync frameworks (Flask, Django under WSGI, raw WSGI) run
  ``server.process`` on one event loop that lives in a thread of its own for the whole
  process (``asyncio.run_coroutine_threadsafe``); a stream is iterated by one task on that
  loop and handed to the request thread through a queue, one event per write: the
  bridge a user writes without this library.

- ``NAME-cached``: each of those (``fastapi-documented-cached`` too) with
  :func:`cached_process` in place of ``server.process``: ChatKit's ``process()`` line for
  line, with its ``TypeAdapter`` built once instead of per call (what a user who profiled
  it would write). The adapter against ``NAME`` shows what it buys in all; against
  ``NAME-cached``, what it buys besides parsing once (the pump, coalescing, ...).

Every app answers POST at ``/chatkit``. Build one with :func:`reference_app`.
"""

# No ``from __future__ import annotations``: FastAPI and Litestar read the handlers'
# annotations at runtime, and the framework names are imported inside the factories.
import asyncio
import os
import queue
import sys
import threading
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from functools import partial
from typing import Any

from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.server import logger as chatkit_logger
from chatkit.types import ChatKitReq, is_streaming_req
from pydantic import TypeAdapter

Server = ChatKitServer[Any]
Result = StreamingResult | NonStreamingResult
Process = Callable[[bytes, Any], Awaitable[Result]]
"""``server.process`` or :func:`cached_process` bound to a server: ``await process(body, {})``."""

_REQUEST = TypeAdapter(ChatKitReq)


async def cached_process(server: Server, body: bytes, context: Any) -> Result:
    """``ChatKitServer.process`` with its ``TypeAdapter`` built once (it builds one per call)."""
    request = _REQUEST.validate_json(body)
    chatkit_logger.info("Received request op: %s", request.type)
    if is_streaming_req(request):
        return StreamingResult(server._process_streaming(request, context))
    return NonStreamingResult(await server._process_non_streaming(request, context))


SSE = "text/event-stream"
JSON = "application/json"


def fastapi_documented(process: Process) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response, StreamingResponse

    app = FastAPI()

    @app.post("/chatkit")
    async def chatkit_endpoint(request: Request) -> Response:
        result = await process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type=SSE)
        return Response(content=result.json, media_type=JSON)

    return app


def starlette_route(process: Process) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def chatkit_endpoint(request: Request) -> Response:
        result = await process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type=SSE)
        return Response(content=result.json, media_type=JSON)

    return Starlette(routes=[Route("/chatkit", chatkit_endpoint, methods=["POST"])])


def litestar_route(process: Process) -> Any:
    from litestar import Litestar, Request, Response, post
    from litestar.response import Stream

    @post("/chatkit", status_code=200)
    async def chatkit_endpoint(request: Request[Any, Any, Any]) -> Response[Any]:
        result = await process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return Stream(result, media_type=SSE)
        return Response(content=result.json, media_type=JSON)

    return Litestar(route_handlers=[chatkit_endpoint])


def aiohttp_route(process: Process) -> Any:
    from aiohttp import web

    async def chatkit_endpoint(request: web.Request) -> web.StreamResponse:
        result = await process(await request.read(), {})
        if isinstance(result, StreamingResult):
            response = web.StreamResponse(headers={"Content-Type": SSE})
            await response.prepare(request)
            async for chunk in result:
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(body=result.json, content_type=JSON)

    app = web.Application()
    app.router.add_post("/chatkit", chatkit_endpoint)
    return app


def asgi_route(process: Process) -> Any:
    """A raw ASGI app, hand-written (what a user of plain uvicorn writes)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        result = await process(body, {})
        if isinstance(result, StreamingResult):
            headers = [(b"content-type", SSE.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for chunk in result:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-type", JSON.encode()),
            (b"content-length", str(len(result.json)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": result.json})

    return app


# -- sync frameworks: one event loop in a thread of its own ----------------------------


class _LoopThread:
    """One event loop running in a daemon thread, started on first use in each process
    (a server that forks its workers after importing the app gets one per worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True, name="loop").start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run *coroutine* on the loop; block this (request) thread for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop()).result()


LOOP = _LoopThread()
_END = object()


def loop_process(process: Process, body: bytes) -> bytes | Iterator[bytes]:
    """``process(body, {})`` on the shared loop. A stream is iterated there by one task
    (ChatKit's context variables need one task for its whole life) that hands each event
    to the request thread through a queue; the thread yields them one by one."""
    result = LOOP.run(_call(process, body))
    if isinstance(result, StreamingResult):
        return _drive(result)
    return bytes(result.json)


async def _call(process: Process, body: bytes) -> Result:
    return await process(body, {})


def _drive(result: StreamingResult) -> Iterator[bytes]:
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()

    async def produce() -> None:
        try:
            async for chunk in result:
                events.put(chunk)
        except Exception as exc:
            events.put(exc)
        finally:
            events.put(_END)

    task = asyncio.run_coroutine_threadsafe(produce(), LOOP.loop())
    try:
        while (item := events.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()  # the server closed the response early: cancel the stream's task


def wsgi_route(process: Process) -> Any:
    """A raw WSGI app, hand-written with the shared-loop bridge."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        out = loop_process(process, environ["wsgi.input"].read(length))
        if isinstance(out, bytes):
            start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(out)))])
            return [out]
        start_response("200 OK", [("Content-Type", SSE)])
        return out

    return app


def flask_route(process: Process) -> Any:
    from flask import Flask, Response, request

    app = Flask("chatkit_benchmark_reference")

    @app.post("/chatkit")
    def chatkit_endpoint() -> Response:
        out = loop_process(process, request.get_data())
        if isinstance(out, bytes):
            return Response(out, mimetype=JSON)
        return Response(out, mimetype=SSE)

    return app


def _django_app(view: Any, asgi: bool) -> Any:
    """*view* at ``/chatkit`` in the same Django setup as the adapter rows' apps.

    That is the tests' (``tests.http_clients.django``: Django's default middleware list),
    so the comparison is view against view; a minimal setup if those tests are absent.
    """
    try:
        from tests.http_clients import django as tests_django
    except ImportError:
        tests_django = None
    if tests_django is not None:
        handler = tests_django.ASGIApp if asgi else tests_django.WSGIApp
        return handler(tests_django.URLConf(view))

    import django
    from django.conf import settings
    from django.urls import path

    urls = types.ModuleType("benchmarks_django_urls")
    urls.urlpatterns = [path("chatkit", view)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    settings.configure(
        DEBUG=False, SECRET_KEY="benchmark-only", ALLOWED_HOSTS=["*"], ROOT_URLCONF=urls.__name__
    )
    django.setup()
    if asgi:
        from django.core.asgi import get_asgi_application

        return get_asgi_application()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def django_wsgi_route(process: Process) -> Any:
    from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def chatkit_endpoint(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        out = loop_process(process, request.body)
        if isinstance(out, bytes):
            return HttpResponse(out, content_type=JSON)
        return StreamingHttpResponse(out, content_type=SSE)

    return _django_app(chatkit_endpoint, asgi=False)


def django_asgi_route(process: Process) -> Any:
    from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    async def chatkit_endpoint(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        result = await process(request.body, {})
        if isinstance(result, StreamingResult):
            return StreamingHttpResponse(result, content_type=SSE)
        return HttpResponse(result.json, content_type=JSON)

    return _django_app(chatkit_endpoint, asgi=True)


REFERENCES: dict[str, Callable[[Process], Any]] = {
    "fastapi-documented": fastapi_documented,
    "starlette-asgi": starlette_route,
    "litestar-asgi": litestar_route,
    "asgi-asgi": asgi_route,
    "aiohttp-aiohttp": aiohttp_route,
    "flask-wsgi": flask_route,
    "wsgi-wsgi": wsgi_route,
    "django-wsgi": django_wsgi_route,
    "django-asgi": django_asgi_route,
}
"""Reference name -> app factory. Hand-written routes are named ``FRAMEWORK-SERVERKIND``;
each also exists as ``NAME-cached`` (see :func:`reference_app`)."""

CACHED = "-cached"


def hand_written_name(adapter: str, server_kind: str) -> str | None:
    """The hand-written route for an adapter client name under a kind of server, if any."""
    framework = adapter.split("_")[0].split("-")[0]
    if framework == "fastapi" and server_kind == "asgi":
        return "fastapi-documented"  # FastAPI's hand-written route IS the documented wiring
    name = f"{framework}-{server_kind}"
    return name if name in REFERENCES else None


def reference_app(name: str, server: Server) -> Any:
    """The app of reference *name*: with ``server.process``, or, for ``NAME-cached``, with
    :func:`cached_process` (the same route, its request validator built once)."""
    if name.endswith(CACHED):
        return REFERENCES[name.removesuffix(CACHED)](partial(cached_process, server))
    return REFERENCES[name](server.process)


# Quart, Falcon and Sanic: their hand-written routes live beside (they import this module)
from benchmarks.apps_more import MORE_REFERENCES  # noqa: E402

REFERENCES.update(MORE_REFERENCES)
