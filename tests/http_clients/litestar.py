from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, post
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from chatkit_adapters.litestar import chatkit_response, chatkit_routes, chatkit_view

from .base import AsgiHttpClient, call_factory

try:
    from litestar.di import NamedDependency

    Context = NamedDependency[Any]
except ImportError:  # Litestar < 2.23 infers dependencies without a marker
    Context = Any  # type: ignore[misc]


def deny_on_header(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.headers.get("x-deny"):
        raise NotAuthorizedException("denied by guard")


def passed_header(app: ASGIApp) -> ASGIApp:
    """A plain ASGI middleware that marks every response."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-passed", b"1")]
            await send(message)

        await app(scope, receive, send_marked)

    return middleware


class LitestarClient(AsgiHttpClient):
    name = "litestar"
    real_servers = ("uvicorn",)
    # the route handlers are POST-only: Litestar's router answers other methods with its
    # own 405 (with an Allow header naming POST)
    own_405_variants = ()

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        if variant == "response":

            async def make_context(request: Request[Any, Any, Any]) -> Any:
                return await call_factory(context, request)

            @post("/chatkit", dependencies={"ctx": Provide(make_context)})
            async def chatkit(request: Request[Any, Any, Any], ctx: Context) -> ASGIApp:
                return await chatkit_response(server, request, ctx, **options)

            return Litestar(route_handlers=[chatkit])
        view = chatkit_view(server, context=context, **options)
        if variant == "middleware":
            return Litestar(
                route_handlers=[view],
                cors_config=CORSConfig(allow_origins=["*"], allow_headers=["*"]),
                compression_config=CompressionConfig(backend="gzip", minimum_size=10),
                middleware=[passed_header],
                guards=[deny_on_header],
            )
        return Litestar(route_handlers=[view])

    routes_path = "/chatkit"

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        return Litestar(route_handlers=[chatkit_routes(server, context, **options)])

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)

    @staticmethod
    def unauthorized() -> BaseException:
        return NotAuthorizedException("no credentials")
