from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatkit_adapters.aiohttp import chatkit_response, chatkit_routes, chatkit_view

from .base import HttpClient, Response, call_factory


@web.middleware
async def pass_through(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    if not response.prepared:  # a stream's headers are already on the wire
        response.headers["x-passed"] = "1"
    return response


async def mark_prepared(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-prepared"] = "1"


class DefaultsTestServer(TestServer):
    """aiohttp's TestServer with the production default ``handler_cancellation=False``
    (TestServer turns it on); the real-server tests run both settings."""

    async def _make_runner(self, **kwargs: Any) -> Any:
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


class AiohttpClient(HttpClient):
    """aiohttp's own TestServer/TestClient on the test's running loop."""

    name = "aiohttp"
    real_servers = ("aiohttp", "aiohttp-cancel")
    # a real socket: aiohttp's client writes the whole (small) body into kernel buffers
    body_read_on_demand = False
    # aiohttp's HTTP parser: "400 Invalid character in Content-Length" before any handler
    server_refuses_bad_content_length = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self.build_app()
        self._client: TestClient[Any, Any] | None = None

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        if variant == "response":

            async def handler(request: web.Request) -> web.StreamResponse:
                ctx = await call_factory(context, request)
                return await chatkit_response(server, request, ctx, **options)

            app = web.Application()
            app.router.add_post("/chatkit", handler)
            return app
        middlewares = [pass_through] if variant == "middleware" else []
        app = web.Application(middlewares=middlewares)
        if variant == "middleware":
            app.on_response_prepare.append(mark_prepared)
        app.router.add_route("*", "/chatkit", chatkit_view(server, context=context, **options))
        return app

    async def request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> Response:
        if self._client is None:
            self._client = TestClient(DefaultsTestServer(self.app))
            await self._client.start_server()
        if not (headers or {}).get("content-length", "0").isdigit():
            return await self._raw_request(method, body, headers or {})
        async with self._client.request(
            method, path or self.path, data=body, headers=dict(headers or {})
        ) as response:
            data = await response.read()
            if self.variant == "middleware" and 200 <= response.status < 300:
                assert response.headers["x-prepared"] == "1"
            return Response(
                response.status, {k.lower(): v for k, v in response.headers.items()}, data
            )

    async def _raw_request(self, method: str, body: Any, headers: Mapping[str, str]) -> Response:
        """For what aiohttp's client refuses to send (a malformed Content-Length)."""
        assert self._client is not None and isinstance(body, bytes)
        server = self._client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        lines = [f"{method} {self.path} HTTP/1.1", f"Host: {server.host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        raw = await reader.read()
        writer.close()
        head, _, data = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = {k.lower(): v for k, _, v in (line.partition(": ") for line in header_lines)}
        return Response(int(status_line.split()[1]), parsed, data)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        app = web.Application()
        app.add_subapp("/chatkit", chatkit_routes(server, context=context, **options))
        return app

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)

    @staticmethod
    def unauthorized() -> BaseException:
        return web.HTTPUnauthorized(text="no credentials")
