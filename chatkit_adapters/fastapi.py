"""FastAPI adapter: the Starlette adapter under FastAPI's names and idioms.

One line::

    from chatkit_adapters.fastapi import chatkit_view

    app.add_api_route("/chatkit", chatkit_view(server, context=make_context), methods=["POST"])
    # or on an APIRouter: router.add_api_route(...); app.include_router(router)

With attachments: ``app.include_router(chatkit_routes(server, make_context), prefix="/chatkit")``.

Your own route, with ``Depends`` for auth::

    from fastapi import Depends, Request
    from chatkit_adapters.fastapi import chatkit_response

    @app.post("/chatkit")
    async def chatkit(request: Request, user: User = Depends(current_user)):
        return await chatkit_response(server, request, MyContext(user_id=user.id))

FastAPI's ``HTTPException`` raised by a context factory or a dependency is rendered by
FastAPI as usual. Streams never go through ``StreamingResponse`` or
``EventSourceResponse`` (both cancel ChatKit's cancel cleanup a second time).
"""

from __future__ import annotations

from typing import Any

from chatkit.server import ChatKitServer
from fastapi import APIRouter
from typing_extensions import Unpack

from . import starlette as _starlette
from ._core import ContextFactory, Options, OptionsKwargs
from .starlette import ChatKitStreamingResponse, chatkit_response, chatkit_view

__all__ = ["ChatKitStreamingResponse", "chatkit_response", "chatkit_routes", "chatkit_view"]


def chatkit_routes(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> APIRouter:
    """The endpoint and the attachment routes as an ``APIRouter``.

    ``app.include_router(chatkit_routes(server, make_context), prefix="/chatkit")``: the
    endpoint is ``POST /chatkit/``, attachments under ``/chatkit/attachments``.
    """
    router = APIRouter()
    endpoint = _starlette.routes_endpoint(server, context, Options(**options))
    router.add_api_route(
        "/{rest:path}", endpoint, methods=_starlette.METHODS, include_in_schema=False
    )
    return router
