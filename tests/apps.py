"""App factories for real-server tests: the server subprocess builds its app from env vars.

- ``CHATKIT_TEST_ADAPTER``: a client name of ``tests.http_clients.CLIENTS``;
- ``CHATKIT_TEST_VARIANT``: that client's variant (default ``view``);
- ``CHATKIT_TEST_OPTIONS``: the adapter options as JSON (e.g. ``{"heartbeat": 0.2}``);
- ``CHATKIT_TEST_JOURNAL`` / ``CHATKIT_TEST_WRITE_DELAY``: see ``tests.chatkit_app``.

``uvicorn --factory tests.apps:app``, ``gunicorn 'tests.apps:app()'``,
``waitress-serve --call tests.apps:app``, ``daphne tests.apps:asgi_app`` (no factories).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

from tests.chatkit_app import make_server
from tests.http_clients import CLIENTS


def app() -> Any:
    name = os.environ["CHATKIT_TEST_ADAPTER"]
    module_name, _, attr = CLIENTS[name].partition(":")
    client_class = getattr(importlib.import_module(module_name), attr)
    options = json.loads(os.environ.get("CHATKIT_TEST_OPTIONS") or "{}")
    variant = os.environ.get("CHATKIT_TEST_VARIANT", "view")
    return client_class.make_app(make_server(), None, variant, **options)


def aiohttp_app(argv: list[str] | None = None) -> Any:
    """For ``python -m aiohttp.web tests.apps:aiohttp_app``."""
    return app()


def __getattr__(name: str) -> Any:
    """``asgi_app``: the app built on first access, for servers that take no factory."""
    if name == "asgi_app":
        globals()[name] = built = app()
        return built
    raise AttributeError(name)
