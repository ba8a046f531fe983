"""The reference apps the adapters are compared with: no chatkit_adapters code in here.

- ``fastapi-documented``: ChatKit's documented FastAPI wiring, verbatim::

      result = await server.process(await request.body(), {})
      if isinstance(result, StreamingResult):
          return StreamingResponse(result, media_type="text/event-stream")
      return Response(content=result.json, media_type="application/json")

- one "hand-written route" per framework: that wiring translated to the framework as its
  users would write it. Sync frameworks (Flask, Django under WSGI, raw WSGI) run
  ``server.process`` on a fresh event loop per request, like ``asyncio.run`` (and a stream
  on that private loop, one ``run_until_complete`` per event): the naive bridge a user
  writes without this library.

Every app answers POST at ``/chatkit``. Build one with :func:`reference_app`.
"""

# No ``from __future__ import annotations``: FastAPI and Litestar read the handlers'
# annotations at runtime, and the framework names are imported inside the factories.
import asyncio
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from chatkit.server import ChatKitServer, StreamingResult

Server = ChatKitServer[Any]

SSE = "text/event-stream"
JSON = "application/json"


def fastapi_documented(server: Server) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response, StreamingResponse

    app = FastAPI()

    @app.post("/chatkit")
    async def chatkit_endpoint(request: Request) -> Response:
        result = await server.process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type=SSE)
        return Response(content=result.json, media_type=JSON)

    return app


def starlette_route(server: Server) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def chatkit_endpoint(request: Request) -> Response:
        result = await server.process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type=SSE)
        return Response(content=result.json, media_type=JSON)

    return Starlette(routes=[Route("/chatkit", chatkit_endpoint, methods=["POST"])])


def litestar_route(server: Server) -> Any:
    from litestar import Litestar, Request, Response, post
    from litestar.response import Stream

    @post("/chatkit", status_code=200)
    async def chatkit_endpoint(request: Request[Any, Any, Any]) -> Response[Any]:
        result = await server.process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return Stream(result, media_type=SSE)
        return Response(content=result.json, media_type=JSON)

    return Litestar(route_handlers=[chatkit_endpoint])


def aiohttp_route(server: Server) -> Any:
    from aiohttp import web

    async def chatkit_endpoint(request: web.Request) -> web.StreamResponse:
        result = await server.process(await request.read(), {})
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


def asgi_route(server: Server) -> Any:
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
        result = await server.process(body, {})
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


# -- sync frameworks: the naive per-request event loop -----------------------------------


def naive_process(server: Server, body: bytes) -> bytes | Iterator[bytes]:
    """``asyncio.run(server.process(body, {}))``, or a stream driven on that private loop."""
    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(server.process(body, {}))
    except BaseException:
        loop.close()
        raise
    if not isinstance(result, StreamingResult):
        loop.close()
        return result.json
    return _drive(loop, result)


def _drive(loop: asyncio.AbstractEventLoop, result: StreamingResult) -> Iterator[bytes]:
    iterator = aiter(result)
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(iterator))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def wsgi_route(server: Server) -> Any:
    """A raw WSGI app, hand-written with the naive bridge."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        out = naive_process(server, environ["wsgi.input"].read(length))
        if isinstance(out, bytes):
            start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(out)))])
            return [out]
        start_response("200 OK", [("Content-Type", SSE)])
        return out

    return app


def flask_route(server: Server) -> Any:
    from flask import Flask, Response, request

    app = Flask("chatkit_benchmark_reference")

    @app.post("/chatkit")
    def chatkit_endpoint() -> Response:
        out = naive_process(server, request.get_data())
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


def django_wsgi_route(server: Server) -> Any:
    from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def chatkit_endpoint(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        out = naive_process(server, request.body)
        if isinstance(out, bytes):
            return HttpResponse(out, content_type=JSON)
        return StreamingHttpResponse(out, content_type=SSE)

    return _django_app(chatkit_endpoint, asgi=False)


def django_asgi_route(server: Server) -> Any:
    from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    async def chatkit_endpoint(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        result = await server.process(request.body, {})
        if isinstance(result, StreamingResult):
            return StreamingHttpResponse(result, content_type=SSE)
        return HttpResponse(result.json, content_type=JSON)

    return _django_app(chatkit_endpoint, asgi=True)


REFERENCES: dict[str, Callable[[Server], Any]] = {
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
"""Reference name -> app factory. Hand-written routes are named ``FRAMEWORK-SERVERKIND``."""


def hand_written_name(adapter: str, server_kind: str) -> str | None:
    """The hand-written route for an adapter client name under a kind of server, if any."""
    framework = adapter.split("_")[0].split("-")[0]
    if framework == "fastapi" and server_kind == "asgi":
        return "fastapi-documented"  # FastAPI's hand-written route IS the documented wiring
    name = f"{framework}-{server_kind}"
    return name if name in REFERENCES else None


def reference_app(name: str, server: Server) -> Any:
    return REFERENCES[name](server)
