"""Starlette: a Route for the endpoint, a Mount for attachments.

Run: ``uvicorn examples.starlette_app:app``. ``Mount("/chatkit", routes=chatkit_routes(...))``
alone serves everything (the endpoint then is ``/chatkit/``).
"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Mount, Route

from chatkit_adapters.starlette import chatkit_routes, chatkit_view
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db


def context(request: Request) -> DemoContext:
    return DemoContext(user_id=user_id(request.headers, request.cookies))


app = Starlette(
    routes=[
        # the endpoint without a trailing slash (Mount's own is /chatkit/)
        Route("/chatkit", chatkit_view(server, context=context), methods=["POST"]),
        # uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
        Mount("/chatkit", routes=chatkit_routes(server, context=context)),
    ],
    # Only needed when the ChatKit front end is served from another origin:
    middleware=[
        Middleware(
            CORSMiddleware,
            allow_origins=["http://localhost:5173"],
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=CORS_HEADERS,
        )
    ],
)
