"""Serve an OpenAI ChatKit server from any Python web framework.

Each framework module (``chatkit_adapters.starlette``, ``.fastapi``, ``.flask``,
``.django``, ``.aiohttp``, ``.litestar``) exposes ``chatkit_view(server, context=None,
**options)`` and ``chatkit_response(server, request, context, **options)``; the raw apps
are ``chatkit_adapters.asgi.ChatKitASGIApp`` and ``chatkit_adapters.wsgi.ChatKitWSGIApp``.

Usage::

    from chatkit_adapters.starlette import chatkit_view
    Route("/chatkit", chatkit_view(server), methods=["POST"])

This package imports no web framework.
"""

from ._core import SSE_HEADERS, ChatKitHTTPError, Options, OptionsKwargs
from ._pump import drain, live_streams

__all__ = [
    "SSE_HEADERS",
    "ChatKitHTTPError",
    "Options",
    "OptionsKwargs",
    "__version__",
    "drain",
    "live_streams",
]

__version__ = "0.1.0"
