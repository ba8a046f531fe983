"""Litestar: one router (endpoint and attachments), and a user-written handler with a guard.

Run: ``uvicorn examples.litestar_app:app``
"""

from litestar import Litestar, Request, post
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp

from chatkit_adapters.litestar import chatkit_response, chatkit_routes
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())


def context(request: Request) -> DemoContext:
    return DemoContext(user_id=user_id(request.headers, request.cookies))


def signed_in(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Your authentication goes here; the demo only wants some user id."""
    if not user_id(connection.headers, connection.cookies):
        raise NotAuthorizedException()


@post("/api/chatkit", guards=[signed_in])
async def guarded_chatkit(request: Request) -> ASGIApp:
    return await chatkit_response(server, request, context(request))


app = Litestar(
    # POST /chatkit, uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
    # (the endpoint alone: chatkit_view(server, context=context, path="/chatkit"))
    route_handlers=[chatkit_routes(server, context=context, path="/chatkit"), guarded_chatkit],
    cors_config=CORSConfig(
        allow_origins=["http://localhost:5173"],
        allow_methods=["GET", "POST", "PUT"],
        allow_headers=CORS_HEADERS,
    ),
)
