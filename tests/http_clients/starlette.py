from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, _StreamingResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import StreamingResponse
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

# Before Starlette rewrote it, BaseHTTPMiddleware sent the app's response as a
# StreamingResponse, whose disconnect listener reads receive() until the end: after the
# adapter answered (413 after 11 chunks), the middleware drains the rest of the body.
MIDDLEWARE_DRAINS_BODY = issubclass(_StreamingResponse, StreamingResponse)


def reads_body_on_demand(variant: str) -> bool:
    """Whether the client's transport hands the body over only as the adapter reads it."""
    return not (variant == "middleware" and MIDDLEWARE_DRAINS_BODY)


class StarletteClient(AsgiHttpClient):
    name = "starlette"
    real_servers = ("uvicorn", "uvicorn-uvloop", "hypercorn", "granian-asgi")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_read_on_demand = reads_body_on_demand(self.variant)  # type: ignore[misc]

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
