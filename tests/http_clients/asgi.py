from __future__ import annotations

from typing import Any

from chatkit_adapters import ChatKitHTTPError
from chatkit_adapters.asgi import ChatKitASGIApp

from .base import AsgiHttpClient


class AsgiClient(AsgiHttpClient):
    """The raw ASGI app, standalone or mounted under Starlette (``middleware`` variant)."""

    name = "asgi"
    variants = ("view", "mounted")
    real_server_app = "asgi"

    def build_app(self) -> Any:
        app = ChatKitASGIApp(self.server, context=self.context, **self.options)
        if self.variant == "mounted":
            from starlette.applications import Starlette
            from starlette.routing import Mount

            self.path = "/chatkit/"
            return Starlette(routes=[Mount("/chatkit", app)])
        return app

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        for key, value in native_request["headers"]:
            if key.decode("latin-1").lower() == name.lower():
                return value.decode("latin-1")
        return None

    @staticmethod
    def unauthorized() -> BaseException:
        return ChatKitHTTPError(401, "no credentials")
