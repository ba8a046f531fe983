from __future__ import annotations

from typing import Any

import quart
from werkzeug.exceptions import Unauthorized

from chatkit_adapters.quart import chatkit_response, chatkit_routes, chatkit_view

from .base import AsgiHttpClient, call_factory


class QuartClient(AsgiHttpClient):
    """Quart: the one-line view, a user-written route, a blueprint with request hooks."""

    # Quart reads the request body as it arrives, without backpressure, ahead of the view
    body_read_on_demand = False

    name = "quart"
    real_servers = ("hypercorn", "uvicorn")
    own_405_variants = ("view", "middleware")  # the blueprint's endpoint answers 405 itself

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        app = quart.Quart(__name__)
        if variant == "response":

            @app.post("/chatkit")
            async def chatkit() -> Any:
                ctx = await call_factory(context, quart.request)
                return await chatkit_response(server, quart.request, ctx, **options)

            return app
        if variant == "middleware":  # the blueprint, behind request hooks
            routes = chatkit_routes(server, context, **options)

            @routes.before_request
            async def remember() -> None:
                quart.g.hooked = True

            @routes.after_request
            async def mark(response: quart.Response) -> quart.Response:
                response.headers["x-passed"] = "1" if quart.g.get("hooked") else "0"
                return response

            app.register_blueprint(routes, url_prefix="/chatkit")
            return app
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]  # the view answers 405 itself
        app.add_url_rule(
            "/chatkit", view_func=chatkit_view(server, context, **options), methods=methods
        )
        return app

    routes_path = "/chatkit"

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        app = quart.Quart(__name__)
        app.config["MAX_CONTENT_LENGTH"] = None  # uploads: max_upload_size decides
        app.register_blueprint(chatkit_routes(server, context, **options), url_prefix="/chatkit")
        return app

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)  # type: ignore[no-any-return]

    @staticmethod
    def unauthorized() -> BaseException:
        return Unauthorized("no credentials")
