from __future__ import annotations

from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from chatkit_adapters import ChatKitHTTPError
from chatkit_adapters.wsgi import ChatKitWSGIApp

from .wsgi_base import REAL_SERVERS, WsgiHttpClient, prepare_process


class WsgiClient(WsgiHttpClient):
    """The raw WSGI app, standalone or mounted under werkzeug's ``DispatcherMiddleware``."""

    name = "wsgi"
    variants = ("view", "mounted")
    real_server_variants = ("view",)  # no middleware of its own: the frameworks' stacks run
    real_servers = REAL_SERVERS

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        prepare_process()
        app = ChatKitWSGIApp(server, context=context, **options)
        if variant == "mounted":
            return DispatcherMiddleware(NotFound(), {"/chatkit": app})
        return app

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        prepare_process()
        app = ChatKitWSGIApp(server, context=context, **options)
        return DispatcherMiddleware(NotFound(), {"/chatkit": app})  # routes on PATH_INFO

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = native_request.get(key)
        return None if value is None else str(value)

    @staticmethod
    def unauthorized() -> BaseException:
        return ChatKitHTTPError(401, "no credentials")
