"""``python -m tests.aiohttp_server HOST PORT``: tests.apps:app under aiohttp with
``handler_cancellation=True`` (aiohttp cancels the handler once when the client leaves)."""

from __future__ import annotations

import sys

from aiohttp import web

from tests.apps import app

if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    web.run_app(app(), host=host, port=port, handler_cancellation=True, print=None)
