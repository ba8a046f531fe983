"""Litestar adapter: one route handler serves a streaming ChatKit endpoint.

Usage::

    from litestar import Litestar
    from chatkit_adapters.litestar import chatkit_view

    app = Litestar(route_handlers=[chatkit_view(server, context=lambda request: {})])

Your own handler (dependency injection, guards) returns what ``chatkit_response`` gives,
annotated ``-> ASGIApp``::

    from litestar import Request, post
    from litestar.di import Provide
    from litestar.types import ASGIApp
    from chatkit_adapters.litestar import chatkit_response

    @post("/chatkit", dependencies={"user": Provide(current_user)}, guards=[logged_in])
    async def chatkit(request: Request, user: User) -> ASGIApp:
        return await chatkit_response(server, request, MyContext(user_id=user.id))

Streams never go through Litestar's ``Stream`` or ``ServerSentEvent`` (their anyio cancel
scope cancels ChatKit's cancel cleanup a second time): the handler returns a raw ASGI app
that streams with the shared ASGI code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from chatkit.server import ChatKitServer
from litestar import Request, post
from litestar.exceptions import InternalServerException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp
from typing_extensions import Unpack

from . import _core
from ._asgi import reply_app
from ._core import ContextFactory, Options, OptionsKwargs

__all__ = ["chatkit_response", "chatkit_view"]


async def _respond(
    server: ChatKitServer[Any],
    request: Request[Any, Any, Any],
    context: Callable[[], Awaitable[Any]],
    options: Options,
) -> ASGIApp:
    reply = await _core.handle(
        server,
        method=request.method,
        headers=request.headers,
        body=request.stream,  # also serves a body a guard or middleware already read
        context=context,
        options=options,
        disconnects=(InternalServerException,),  # its stream's "client disconnected"
    )
    return cast("ASGIApp", reply_app(reply))


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    path: str = "/chatkit",
    **options: Unpack[OptionsKwargs],
) -> HTTPRouteHandler:
    """A Litestar POST route handler at *path* serving *server*.

    ``Litestar(route_handlers=[chatkit_view(server, context=make_context)])``

    *context* gets the ``Request`` and returns the ChatKit context (or an awaitable of
    it); ``NotAuthorizedException`` (from the factory or a guard) and friends propagate to
    Litestar, and :class:`chatkit_adapters.ChatKitHTTPError` is rendered as the JSON
    error. Other methods get Litestar's own 405. ``max_body_size`` replaces Litestar's
    ``request_max_body_size`` on this route.
    """
    opts = Options(**options)

    async def chatkit_endpoint(request: Request[Any, Any, Any]) -> ASGIApp:
        return await _respond(server, request, _core.factory_context(context, request), opts)

    return post(path, status_code=200, request_max_body_size=None)(chatkit_endpoint)


async def chatkit_response(
    server: ChatKitServer[Any],
    request: Request[Any, Any, Any],
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> ASGIApp:
    """Handle one request with a ready *context* in your own handler (annotated ``-> ASGIApp``).

    ``return await chatkit_response(server, request, MyContext(user_id=user.id))``

    Litestar's ``request_max_body_size`` of your route applies as well as ``max_body_size``.
    """
    return await _respond(server, request, _core.ready_context(context), Options(**options))
