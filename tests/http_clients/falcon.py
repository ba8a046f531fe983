"""Falcon: one resource in ``falcon.asgi.App`` (driven by httpx in-process) and in
``falcon.App`` (driven like a threaded WSGI server)."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from chatkit_adapters.falcon import chatkit_response, chatkit_routes, chatkit_view

from .base import AsgiHttpClient, call_factory
from .wsgi_base import WsgiHttpClient, prepare_process


class MarkResponses:
    """A middleware that marks every response, with a request hook before it."""

    def process_request(self, req: Any, resp: Any) -> None:
        req.context.hooked = True

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:
        resp.set_header("x-passed", "1" if req.context.get("hooked") else "0")


class AsyncMarkResponses:
    async def process_request(self, req: Any, resp: Any) -> None:
        req.context.hooked = True

    async def process_response(
        self, req: Any, resp: Any, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_header("x-passed", "1" if req.context.get("hooked") else "0")


def build(asgi: bool, server: Any, context: Any, variant: str, options: dict[str, Any]) -> Any:
    if variant == "middleware":  # CORS, a request/response middleware, chatkit_routes
        middleware = AsyncMarkResponses() if asgi else MarkResponses()
        kind = falcon.asgi.App if asgi else falcon.App
        app = kind(middleware=[middleware], cors_enable=True)
        chatkit_routes(server, context, **options).add_to(app, "/chatkit")
        return app
    app = falcon.asgi.App() if asgi else falcon.App()
    if variant == "response":
        app.add_route(
            "/chatkit",
            AsyncOwnResource(server, context, options)
            if asgi
            else OwnResource(server, context, options),
        )
        return app
    app.add_route("/chatkit", chatkit_view(server, context, **options))
    return app


def build_routes(asgi: bool, server: Any, context: Any, options: dict[str, Any]) -> Any:
    app = falcon.asgi.App() if asgi else falcon.App()
    chatkit_routes(server, context, **options).add_to(app, "/chatkit")
    return app


class OwnResource:
    def __init__(self, server: Any, context: Any, options: dict[str, Any]) -> None:
        self.server, self.context, self.options = server, context, options

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = {} if self.context is None else self.context(req)
        chatkit_response(self.server, req, resp, ctx, **self.options)


class AsyncOwnResource(OwnResource):
    async def on_post(  # type: ignore[override]
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response
    ) -> None:
        ctx = await call_factory(self.context, req)
        await chatkit_response(self.server, req, resp, ctx, **self.options)


class FalconClient(AsgiHttpClient):
    """``falcon.asgi.App``."""

    name = "falcon"
    real_servers = ("uvicorn",)
    own_405_variants = ()  # a resource with on_post only: Falcon's own 405 (Allow: POST)

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        return build(True, server, context, variant, options)

    routes_path = "/chatkit"

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        return build_routes(True, server, context, options)

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.get_header(name)  # type: ignore[no-any-return]

    @staticmethod
    def unauthorized() -> BaseException:
        return falcon.HTTPUnauthorized(description="no credentials")


class FalconWSGIClient(WsgiHttpClient):
    """``falcon.App``."""

    name = "falcon_wsgi"
    real_servers = ("gunicorn-gthread",)
    own_405_variants = ()

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        prepare_process()
        return build(False, server, context, variant, options)

    routes_path = "/chatkit"

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        prepare_process()
        return build_routes(False, server, context, options)

    header = FalconClient.header
    unauthorized = FalconClient.unauthorized
