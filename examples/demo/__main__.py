"""The one-command demo: ``python -m examples.demo [--framework NAME] [--port 8000]``.

Serves the demo page at ``/`` and the ChatKit endpoint at ``/chatkit`` on the embedded
SQLite store (``DATABASE_URL`` picks another, e.g. ``postgresql://...``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from .store import DEFAULT_DATABASE_URL
from .web import with_page_asgi, with_page_wsgi

# framework -> (example app "module:attr", how it is served)
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "starlette": ("examples.starlette_app:app", "asgi"),
    "fastapi": ("examples.fastapi_app:app", "asgi"),
    "asgi": ("examples.demo.__main__:raw_asgi_app", "asgi"),
    "litestar": ("examples.litestar_app:app", "asgi"),
    "aiohttp": ("examples.aiohttp_app:app", "aiohttp"),
    "quart": ("examples.quart_app:app", "asgi"),
    "falcon": ("examples.falcon_app:app", "asgi"),
    "falcon_wsgi": ("examples.falcon_app:wsgi_app", "wsgi"),
    "sanic": ("examples.sanic_app:app", "sanic"),
    "flask": ("examples.flask_app:app", "wsgi"),
    "wsgi": ("examples.wsgi_dispatcher:app", "wsgi"),
}


def raw_asgi_app() -> Any:
    from chatkit_adapters.asgi import ChatKitASGIApp

    from .context import DemoContext
    from .server import DemoServer
    from .store import open_store

    def context(scope: dict[str, Any]) -> DemoContext:
        cookies = dict(
            part.strip().split("=", 1)
            for key, value in scope["headers"]
            if key == b"cookie"
            for part in value.decode("latin-1").split(";")
            if "=" in part
        )
        return DemoContext(user_id=cookies.get("chatkit_user", "demo"))

    app = ChatKitASGIApp(DemoServer(open_store()), context=context)

    async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # what Starlette's Mount("/chatkit", app) does, without its redirect of /chatkit:
        # the raw app routes on the path under root_path (attachments under /chatkit/)
        if scope["type"] == "http" and scope["path"].startswith("/chatkit"):
            scope = {**scope, "root_path": scope.get("root_path", "") + "/chatkit"}
        await app(scope, receive, send)

    return mounted


def load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    return value() if attr == "raw_asgi_app" else value


def serve(framework: str, host: str, port: int) -> None:
    spec, kind = FRAMEWORKS[framework]
    try:
        app = load(spec)
    except ImportError as exc:
        sys.exit(f"{framework} is not installed ({exc}); run: pip install -e '.[demo]'")
    store = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    print(f"chatkit-adapters demo ({framework}, store {store.split('@')[-1]})", flush=True)
    print(f"Open http://{host}:{port}/  (ChatKit endpoint: /chatkit)", flush=True)
    if kind == "asgi":
        import uvicorn

        uvicorn.run(with_page_asgi(app), host=host, port=port, log_level="warning")
    elif kind == "wsgi":
        import waitress

        waitress.serve(
            with_page_wsgi(app),
            host=host,
            port=port,
            threads=16,
            channel_request_lookahead=1,  # lets waitress notice a client that left
            outbuf_high_watermark=256 * 1024,  # so a slow client holds the stream back
        )
    elif kind == "aiohttp":
        from aiohttp import web

        from .web import PAGE

        async def page(request: web.Request) -> web.Response:
            return web.Response(body=PAGE, content_type="text/html")

        app.router.add_get("/", page)
        web.run_app(app, host=host, port=port, print=None)
    elif kind == "sanic":
        from sanic import Request
        from sanic.response import html

        from .web import PAGE

        async def sanic_page(request: Request) -> Any:
            return html(PAGE)

        app.add_route(sanic_page, "/", methods=["GET"])
        app.config.MOTD = False
        app.run(host=host, port=port, single_process=True, access_log=False)
    else:  # pragma: no cover
        raise ValueError(kind)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), default="starlette")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    serve(args.framework, args.host, args.port)


if __name__ == "__main__":
    main()
