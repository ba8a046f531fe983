"""App factories for real-server tests: the server subprocess builds its app from env vars.

- ``CHATKIT_TEST_ADAPTER``: a client name of ``tests.http_clients.CLIENTS``;
- ``CHATKIT_TEST_VARIANT``: that client's variant (default ``view``);
- ``CHATKIT_TEST_OPTIONS``: the adapter options as JSON (e.g. ``{"heartbeat": 0.2}``);
- ``CHATKIT_TEST_JOURNAL`` / ``CHATKIT_TEST_WRITE_DELAY``: see ``tests.chatkit_app``.

``uvicorn --factory tests.apps:app``, ``gunicorn 'tests.apps:app()'``,
``waitress-serve --call tests.apps:app``, ``daphne tests.apps:asgi_app`` (no factories).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

from tests.chatkit_app import ScriptedServer, make_server, user_text
from tests.http_clients import CLIENTS


class GatedServer(ScriptedServer):
    """``gate=NAME/N`` in a message: its answer starts only once N answers of gate NAME
    (this one included) have started in this process, so N streams provably ran at the same
    time. A gate not reached within 30 s fails the answer (the stream ends with ChatKit's
    error event)."""

    started: dict[str, int] = {}
    lock = threading.Lock()

    async def respond(
        self, thread: Any, input_user_message: Any, context: Any
    ) -> AsyncIterator[Any]:
        gate = re.search(r"gate=(\w+)/(\d+)", user_text(input_user_message))
        if gate:
            name, count = gate.group(1), int(gate.group(2))
            with GatedServer.lock:
                GatedServer.started[name] = GatedServer.started.get(name, 0) + 1
            for _ in range(3000):  # 30 s
                if GatedServer.started[name] >= count:
                    break
                await asyncio.sleep(0.01)
            else:
                raise RuntimeError(f"gate {name}/{count} not reached: streams serialised")
        async for event in super().respond(thread, input_user_message, context):
            yield event


def app() -> Any:
    name = os.environ["CHATKIT_TEST_ADAPTER"]
    module_name, _, attr = CLIENTS[name].partition(":")
    client_class = getattr(importlib.import_module(module_name), attr)
    options = json.loads(os.environ.get("CHATKIT_TEST_OPTIONS") or "{}")
    variant = os.environ.get("CHATKIT_TEST_VARIANT", "view")
    if variant == "routes":  # chatkit_routes with an Attachments store (CHATKIT_TEST_ATTACHMENTS)
        from chatkit_adapters.attachments import Attachments

        server = make_server()
        server.attachment_store = Attachments(
            os.environ["CHATKIT_TEST_ATTACHMENTS"],
            max_upload_size=int(os.environ.get("CHATKIT_TEST_MAX_UPLOAD", 1 << 30)),
            secret="test",
        )
        return client_class.make_routes_app(server, None, **options)
    server = GatedServer(make_server().journal_store)
    return client_class.make_app(server, None, variant, **options)


def aiohttp_app(argv: list[str] | None = None) -> Any:
    """For ``python -m aiohttp.web tests.apps:aiohttp_app``."""
    return app()


def __getattr__(name: str) -> Any:
    """``asgi_app``: the app built on first access, for servers that take no factory."""
    if name == "asgi_app":
        globals()[name] = built = app()
        return built
    raise AttributeError(name)


# -- debug counts (real-server reliability tests) ----------------------------------------
#
# With ``CHATKIT_TEST_DEBUG=1`` the app is wrapped so that ``GET /_debug/counts`` answers
# JSON ``{"tasks", "threads", "fds", "live_streams"}`` measured inside the server process:
# the tests compare them before and after a load to find leaked tasks, threads or sockets.

WSGI_ADAPTERS = ("wsgi", "flask", "django_wsgi", "falcon_wsgi")
NATIVE_SERVERS = ("aiohttp", "sanic")  # apps served by their own server, not ASGI/WSGI
DEBUG_PATH = "/_debug/counts"


def _counts(tasks: int) -> dict[str, int]:
    import threading

    from chatkit_adapters import live_streams

    return {
        "tasks": tasks,
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "live_streams": live_streams(),
    }


def debug_asgi(inner: Any) -> Any:
    import asyncio

    async def debug_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == DEBUG_PATH:
            tasks = len(asyncio.all_tasks() - {asyncio.current_task()})
            body = json.dumps(_counts(tasks)).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    return debug_app


def debug_aiohttp(app: Any) -> Any:
    """The same route on an aiohttp ``Application`` (a route of its own router)."""
    import asyncio

    from aiohttp import web

    async def counts(request: web.Request) -> web.Response:
        tasks = len(asyncio.all_tasks() - {asyncio.current_task()})
        return web.json_response(_counts(tasks))

    app.router.add_route("*", DEBUG_PATH, counts)  # any method, like the other debug routes
    return app


def debug_wsgi(inner: Any) -> Any:
    def debug_app(environ: Any, start_response: Any) -> Any:
        if environ.get("PATH_INFO") == DEBUG_PATH:
            body = json.dumps(_counts(_bridge_tasks())).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return inner(environ, start_response)

    return debug_app


def _bridge_tasks() -> int:
    """Tasks on the background loop of the sync adapters (0 when it is not running)."""
    try:
        from chatkit_adapters import _bridge
    except ImportError:
        return 0
    loop = _bridge.current_loop()
    if loop is None:
        return 0

    async def others() -> int:
        import asyncio

        return len(asyncio.all_tasks() - {asyncio.current_task()})

    return int(_bridge.call(others(), 5))


def debug_sanic(app: Any) -> Any:
    """The debug route on a Sanic app (served by Sanic's own server, not as ASGI)."""
    import asyncio

    from sanic.response import json as json_response

    async def debug_counts(request: Any) -> Any:
        return json_response(_counts(len(asyncio.all_tasks() - {asyncio.current_task()})))

    app.add_route(debug_counts, DEBUG_PATH, methods=["GET", "POST"], name="debug_counts")
    return app


_plain_app = app


def drain_on_lifespan_shutdown(inner: Any) -> Any:
    """What the README's lifespan recipe does for a framework app (Starlette, FastAPI,
    Litestar): ``await chatkit_adapters.drain()`` when the server announces shutdown, so
    cancel cleanups finish before the server exits (``CHATKIT_TEST_DRAIN=1``)."""
    from chatkit_adapters import drain

    async def draining_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await inner(scope, receive, send)
            return

        async def receive_draining() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await drain()
            return message

        await inner(scope, receive_draining, send)

    return draining_app


def app() -> Any:  # type: ignore[no-redef]
    built = _plain_app()
    name = os.environ["CHATKIT_TEST_ADAPTER"]
    if os.environ.get("CHATKIT_TEST_DRAIN") and name not in (*WSGI_ADAPTERS, *NATIVE_SERVERS):
        built = drain_on_lifespan_shutdown(built)
    if not os.environ.get("CHATKIT_TEST_DEBUG"):
        return built
    if name in WSGI_ADAPTERS:
        return debug_wsgi(built)
    if name == "sanic":
        return debug_sanic(built)
    if name == "aiohttp":
        return debug_aiohttp(built)
    if name in NATIVE_SERVERS:
        return built
    return debug_asgi(built)
