"""FastAPI adapter: the Starlette adapter under FastAPI's names and idioms.

One line::

    from chatkit_adapters.fastapi import chatkit_view

    app.add_api_route("/chatkit", chatkit_view(server, context=make_context), methods=["POST"])
    # or on an APIRouter: router.add_api_route(...); app.include_router(router)

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

import fastapi  # noqa: F401  (this module is for FastAPI apps: fail early without it)

from .starlette import ChatKitStreamingResponse, chatkit_response, chatkit_view

__all__ = ["ChatKitStreamingResponse", "chatkit_response", "chatkit_view"]
