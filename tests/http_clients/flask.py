from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import flask
from werkzeug.exceptions import Unauthorized

from chatkit_adapters import _bridge, live_streams
from chatkit_adapters.flask import chatkit_response, chatkit_routes, chatkit_view

from .wsgi_base import REAL_SERVERS, WsgiHttpClient, prepare_process


async def _other_tasks() -> int:
    return len(asyncio.all_tasks() - {asyncio.current_task()})


def debug_state() -> dict[str, Any]:
    """What is running in this process: threads, tasks on the background loop, pumps."""
    loop = _bridge.current_loop()
    return {
        "pid": os.getpid(),
        "threads": sorted(t.name for t in threading.enumerate()),
        "bridge_tasks": 0 if loop is None else _bridge.call(_other_tasks(), 5),
        "live_streams": live_streams(),
    }


class FlaskClient(WsgiHttpClient):
    """Flask: the one-line view, a user-written route, an app with request hooks."""

    name = "flask"
    real_servers = REAL_SERVERS

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        prepare_process()
        app = flask.Flask(__name__)
        if os.environ.get("CHATKIT_TEST_DEBUG"):
            app.add_url_rule("/_debug/state", view_func=lambda: flask.jsonify(debug_state()))
        if variant == "response":

            @app.post("/chatkit")
            def chatkit() -> Any:
                ctx = {} if context is None else context(flask.request)
                return chatkit_response(server, flask.request, ctx, **options)

            return app
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]  # the view answers 405 itself
        view = chatkit_view(server, context, **options)
        app.add_url_rule("/chatkit", view_func=view, methods=methods)  # no endpoint= needed
        if variant == "middleware":

            @app.before_request
            def remember() -> None:
                flask.g.hooked = True

            @app.after_request
            def mark(response: flask.Response) -> flask.Response:
                response.headers["x-passed"] = "1" if flask.g.get("hooked") else "0"
                return response

        return app

    routes_path = "/chatkit"

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        prepare_process()
        app = flask.Flask(__name__)
        app.register_blueprint(chatkit_routes(server, context, **options), url_prefix="/chatkit")
        return app

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)  # type: ignore[no-any-return]

    @staticmethod
    def unauthorized() -> BaseException:
        return Unauthorized("no credentials")
