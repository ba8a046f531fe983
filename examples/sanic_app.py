"""Sanic: one blueprint line (endpoint and attachments).

Run: ``sanic examples.sanic_app:app --host 127.0.0.1 --port 8000``
"""

from sanic import Request, Sanic
from sanic.exceptions import Unauthorized

from chatkit_adapters.sanic import chatkit_routes
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db
app = Sanic("chatkit_demo")


def context(request: Request) -> DemoContext:
    user = user_id(request.headers, request.cookies)
    if not user:
        raise Unauthorized("log in first")  # your authentication goes here
    return DemoContext(user_id=user)


# POST /chatkit, uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
# (the endpoint alone: app.add_route(chatkit_view(...), "/chatkit", methods=["POST"]))
app.blueprint(chatkit_routes(server, context=context), url_prefix="/chatkit")


@app.on_response
async def cors(request: Request, response: object) -> None:
    """Only needed when the ChatKit front end is served from another origin."""
    headers = response.headers  # type: ignore[attr-defined]
    headers["Access-Control-Allow-Origin"] = "http://localhost:5173"
    headers["Access-Control-Allow-Headers"] = ", ".join(CORS_HEADERS)
    headers["Access-Control-Allow-Methods"] = "GET, POST, PUT"
