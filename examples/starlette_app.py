"""Starlette: one Route line.  Run: ``uvicorn examples.starlette_app:app``"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Route

from chatkit_adapters.starlette import chatkit_view
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db


def context(request: Request) -> DemoContext:
    return DemoContext(user_id=user_id(request.headers, request.cookies))


app = Starlette(
    routes=[Route("/chatkit", chatkit_view(server, context=context), methods=["POST"])],
    # Only needed when the ChatKit front end is served from another origin:
    middleware=[
        Middleware(
            CORSMiddleware,
            allow_origins=["http://localhost:5173"],
            allow_methods=["POST"],
            allow_headers=CORS_HEADERS,
        )
    ],
)
