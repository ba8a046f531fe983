"""The examples behind a tag naming the worker process that answered (``X-Worker-Pid``),
for the multi-worker deployment test. ``uvicorn tests.multiworker_apps:asgi --workers 2``,
``gunicorn -w 2 -k gthread 'tests.multiworker_apps:wsgi()'``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from examples.starlette_app import app

    async def tagged(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            pid = str(os.getpid()).encode()
            message["headers"] = [*message.get("headers", []), (b"x-worker-pid", pid)]
        await send(message)

    await app(scope, receive, tagged)


def wsgi() -> Callable[..., Iterable[bytes]]:
    from examples.flask_app import app

    def tagged_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def tagged_start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            return start_response(status, [*headers, ("X-Worker-Pid", str(os.getpid()))], *exc)

        return app(environ, tagged_start)

    return tagged_app
