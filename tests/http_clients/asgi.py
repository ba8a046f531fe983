from __future__ import annotations

from typing import Any

from chatkit_adapters import ChatKitHTTPError
from chatkit_adapters.asgi import ChatKitASGIApp

from .base import AsgiHttpClient


class AsgiClient(AsgiHttpClient):
    """The raw ASGI app, standalone or mounted under Starlette (``middleware`` variant)."""

    name = "asgi"
    variants = ("view", "mounted")
    real_server_variants = ("view",)  # no middleware of its own: the frameworks' stacks run
    real_servers = ("uvicorn", "uvicorn-uvloop", "hypercorn", "granian-asgi", "daphne")

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        app = ChatKitASGIApp(server, context=context, **options)
        if variant == "mounted":
            from starlette.applications import Starlette
            from starlette.routing import Mount

            return Starlette(routes=[Mount("/chatkit", app)])
        return app

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Mount

        app = ChatKitASGIApp(server, context=context, **options)
        return Starlette(routes=[Mount("/chatkit", app)])  # routes relative to root_path

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        for key, value in native_request["headers"]:
            if key.decode("latin-1").lower() == name.lower():
                return value.decode("latin-1")
        return None

    @staticmethod
    def unauthorized() -> BaseException:
        return ChatKitHTTPError(401, "no credentials")
