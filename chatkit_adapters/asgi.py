"""A raw ASGI app serving a ChatKit server: mount it anywhere, no framework needed.

Usage::

    from chatkit_adapters.asgi import ChatKitASGIApp

    app = ChatKitASGIApp(server, context=lambda scope: {"user": "anonymous"})
    # uvicorn module:app            (standalone: lifespan is answered, shutdown drains)
    # Starlette/FastAPI:            app.mount("/chatkit", ChatKitASGIApp(server))
"""

from __future__ import annotations

from typing import Any

from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _core
from ._asgi import Receive, Scope, ScopeHeaders, Send, receive_body, send_reply
from ._core import ContextFactory, Options, OptionsKwargs
from ._pump import drain

__all__ = ["ChatKitASGIApp"]


class ChatKitASGIApp:
    """An ASGI application answering every HTTP request that reaches it as ChatKit's endpoint.

    ``ChatKitASGIApp(server, context=None, **options)``: *context* is called with the ASGI
    ``scope`` (it may be async) and may raise :class:`chatkit_adapters.ChatKitHTTPError`
    to reject a request. Options: ``max_body_size``, ``heartbeat``, ``cleanup_timeout``,
    ``require_json``, ``trusted_origins`` (see :class:`chatkit_adapters.Options`).
    Anything but POST gets 405;
    ``lifespan`` is answered (shutdown awaits in-flight cancel cleanups); websockets are
    refused.
    """

    def __init__(
        self,
        server: ChatKitServer[Any],
        context: ContextFactory | None = None,
        **options: Unpack[OptionsKwargs],
    ) -> None:
        self.server = server
        self.context = context
        self.options = Options(**options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            raise RuntimeError(f"ChatKitASGIApp cannot serve {kind!r} connections")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = await _core.handle(
            self.server,
            method=scope["method"],
            headers=ScopeHeaders(scope),
            body=lambda: receive_body(receive),
            context=_core.factory_context(self.context, scope),
            options=self.options,
        )
        await send_reply(reply, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await drain()
                await send({"type": "lifespan.shutdown.complete"})
                return
