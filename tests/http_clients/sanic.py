"""Sanic on its own server, started in-process on the test's loop (a free port)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from sanic import Request, Sanic
from sanic.exceptions import Unauthorized

from chatkit_adapters.sanic import chatkit_response, chatkit_routes, chatkit_view

from .base import HttpClient, Response, call_factory, raw_request

Sanic.test_mode = True  # many apps in one process (the registry refuses that otherwise)
_names = itertools.count()


async def serve(app: Sanic) -> Any:
    """*app* served on a free port (Sanic takes ``port=0`` for its default 8000)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)


class SanicClient(HttpClient):
    """The one-line view, a user-written handler, a blueprint with middleware."""

    # a real Sanic server on a socket: the body goes into socket buffers, not on demand
    body_read_on_demand = False
    # Sanic's own HTTP parser answers a malformed Content-Length (plain-text 400) first
    server_refuses_bad_content_length = True

    name = "sanic"
    real_servers = ("sanic",)
    own_405_variants = ("view", "middleware")  # the blueprint's endpoint answers 405 itself
    routes_path = "/chatkit"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self.build_app()
        self._server: Any = None
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        app = Sanic(f"chatkit_test_{next(_names)}")
        app.config.MOTD = False
        if variant == "response":

            async def handler(request: Request) -> Any:
                ctx = await call_factory(context, request)
                return await chatkit_response(server, request, ctx, **options)

            app.add_route(handler, "/chatkit", methods=["POST"], stream=True)
            return app
        if variant == "middleware":
            routes = chatkit_routes(server, context, **options)

            @routes.on_request
            async def remember(request: Request) -> None:
                request.ctx.hooked = True

            @routes.on_response
            async def mark(request: Request, response: Any) -> None:
                response.headers["x-passed"] = "1" if getattr(request.ctx, "hooked", 0) else "0"

            app.blueprint(routes, url_prefix="/chatkit")
            return app
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]  # the view answers 405 itself
        app.add_route(chatkit_view(server, context, **options), "/chatkit", methods=methods)
        return app

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        app = Sanic(f"chatkit_test_{next(_names)}")
        app.config.MOTD = False
        app.blueprint(chatkit_routes(server, context, **options), url_prefix="/chatkit")
        return app

    async def _start(self) -> httpx.AsyncClient:
        if self._client is None:
            self._server = await serve(self.app)
            await self._server.startup()
            await self._server.before_start()
            await self._server.after_start()
            port = self._server.server.sockets[0].getsockname()[1]
            self._address = ("127.0.0.1", port)
            self._client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        return self._client

    async def request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> Response:
        client = await self._start()
        path = path or self.path
        if not (headers or {}).get("content-length", "0").isdigit():  # httpx refuses it
            assert isinstance(body, bytes)
            return await raw_request(self._address, method, path, body, headers or {})
        response = await client.request(method, path, content=body, headers=dict(headers or {}))
        return Response(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            await self._server.before_stop()
            await self._server.close()
            await self._server.after_stop()

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)  # type: ignore[no-any-return]

    @staticmethod
    def unauthorized() -> BaseException:
        return Unauthorized("no credentials")
