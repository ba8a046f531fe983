"""Quart: one add_url_rule line.

Run: ``hypercorn examples.quart_app:app`` or ``uvicorn examples.quart_app:app``
"""

from quart import Quart, Request, Response, abort

from chatkit_adapters.quart import chatkit_view
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db
app = Quart(__name__)


async def context(req: Request) -> DemoContext:
    user = user_id(req.headers, req.cookies)
    if not user:
        abort(401)  # your authentication goes here; Quart renders it as usual
    return DemoContext(user_id=user)


app.add_url_rule("/chatkit", view_func=chatkit_view(server, context=context), methods=["POST"])


@app.after_request
async def cors(response: Response) -> Response:
    """Only needed when the ChatKit front end is served from another origin."""
    response.headers["Access-Control-Allow-Origin"] = "http://localhost:5173"
    response.headers["Access-Control-Allow-Headers"] = ", ".join(CORS_HEADERS)
    response.headers["Access-Control-Allow-Methods"] = "POST"
    return response
