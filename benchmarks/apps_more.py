"""Hand-written routes for Quart, Falcon and Sanic, to compare their adapters with.

ChatKit's documented wiring translated to each framework as its users would write it (no
chatkit_adapters code): the framework's own streaming of ``server.process()``'s result.
Falcon's WSGI route runs ``server.process`` with the naive bridge of
:func:`benchmarks.references.loop_process`, like the Flask one.

To wire them in (owned by the benchmarks): ``REFERENCES.update(MORE_REFERENCES)`` in
``benchmarks/references.py``, and ``server_kind()`` in ``benchmarks/servers.py`` answering
``"sanic"`` for the ``sanic`` server (its own server, neither ASGI nor WSGI), so that
``hand_written_name`` finds ``quart-asgi``, ``falcon-asgi``, ``falcon-wsgi`` and
``sanic-sanic``. The adapter rows themselves come from the test clients' ``real_servers``
(Quart: hypercorn, uvicorn; Falcon: uvicorn; Falcon WSGI: gunicorn-gthread; Sanic: sanic).
"""

# No ``from __future__ import annotations``, as in benchmarks.references.
import itertools
from collections.abc import Callable
from typing import Any

from chatkit.server import StreamingResult

from benchmarks.references import JSON, SSE, Process, loop_process

_names = itertools.count()


def quart_route(process: Process) -> Any:
    from quart import Quart, Response, request

    app = Quart("chatkit_benchmark_reference")

    @app.post("/chatkit")
    async def chatkit_endpoint() -> Response:
        result = await process(await request.get_data(), {})
        if isinstance(result, StreamingResult):
            return Response(result, mimetype=SSE)
        return Response(result.json, mimetype=JSON)

    return app


def falcon_asgi_route(process: Process) -> Any:
    import falcon.asgi

    class ChatKitResource:
        async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            result = await process(await req.stream.read(), {})
            if isinstance(result, StreamingResult):
                resp.content_type = SSE
                resp.stream = result
            else:
                resp.content_type = JSON
                resp.data = result.json

    app = falcon.asgi.App()
    app.add_route("/chatkit", ChatKitResource())
    return app


def falcon_wsgi_route(process: Process) -> Any:
    import falcon

    class ChatKitResource:
        def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
            out = loop_process(process, req.bounded_stream.read())
            if isinstance(out, bytes):
                resp.content_type = JSON
                resp.data = out
            else:
                resp.content_type = SSE
                resp.stream = out

    app = falcon.App()
    app.add_route("/chatkit", ChatKitResource())
    return app


def sanic_route(process: Process) -> Any:
    from sanic import HTTPResponse, Request, Sanic

    app = Sanic(f"chatkit_benchmark_reference_{next(_names)}")

    @app.post("/chatkit")
    async def chatkit_endpoint(request: Request) -> HTTPResponse | None:
        result = await process(request.body, {})
        if isinstance(result, StreamingResult):
            response = await request.respond(content_type=SSE)
            async for chunk in result:
                await response.send(chunk)
            await response.eof()
            return None
        return HTTPResponse(result.json, content_type=JSON)

    return app


MORE_REFERENCES: dict[str, Callable[[Process], Any]] = {
    "quart-asgi": quart_route,
    "falcon-asgi": falcon_asgi_route,
    "falcon-wsgi": falcon_wsgi_route,
    "sanic-sanic": sanic_route,
}
"""Reference name -> app factory, named ``FRAMEWORK-SERVERKIND`` like ``REFERENCES``."""
