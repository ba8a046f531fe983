"""What the examples share besides the ChatKit server: who the user is, and the demo page.

``user_id(headers, cookies)`` reads the ``X-User-Id`` header or the ``chatkit_user``
cookie (the demo page sets one per browser), so threads are per user. In a real app, use
your authentication instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()

CORS_HEADERS = ["Content-Type", "Authorization", "chatkit-frame-instance-id", "Accept-Language"]
"""Request headers a ChatKit front end on another origin sends (allow them in CORS)."""


def user_id(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
    return headers.get("x-user-id") or cookies.get("chatkit_user") or "demo"


def with_page_asgi(app: Any) -> Any:
    """An ASGI app serving the demo page at ``/`` and *app* everywhere else."""

    async def page_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "GET":
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": PAGE})
            return
        await app(scope, receive, send)

    return page_app


def with_page_wsgi(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving the demo page at ``/`` and *app* everywhere else."""

    def page_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in ("", "/") and environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [PAGE]
        return app(environ, start_response)

    return page_app
