from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.routing import Mount, Route

from chatkit_adapters.starlette import chatkit_response, chatkit_routes, chatkit_view

from .base import AsgiHttpClient, call_factory


class PassThrough(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers["x-passed"] = "1"
        return response


MIDDLEWARE = [
    Middleware(CORSMiddleware, allow_origins=["*"], allow_headers=["*"]),
    Middleware(GZipMiddleware, minimum_size=10),
    Middleware(PassThrough),
]


class StarletteClient(AsgiHttpClient):
    name = "starlette"
    real_servers = ("uvicorn", "uvicorn-uvloop", "hypercorn", "granian-asgi")

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]  # the view answers 405 itself
        if variant == "response":

            async def endpoint(request: Request) -> Any:
                ctx = await call_factory(context, request)
                return await chatkit_response(server, request, ctx, **options)

            return Starlette(routes=[Route("/chatkit", endpoint, methods=["POST"])])
        view = chatkit_view(server, context=context, **options)
        middleware = MIDDLEWARE if variant == "middleware" else None
        return Starlette(routes=[Route("/chatkit", view, methods=methods)], middleware=middleware)

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        return Starlette(
            routes=[Mount("/chatkit", routes=chatkit_routes(server, context, **options))]
        )

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)

    @staticmethod
    def unauthorized() -> BaseException:
        return HTTPException(401, "no credentials")
