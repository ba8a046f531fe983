"""Quart: one register_blueprint line (endpoint and attachments).

Run: ``hypercorn examples.quart_app:app`` or ``uvicorn examples.quart_app:app``
"""

from quart import Quart, Request, Response, abort

from chatkit_adapters.quart import chatkit_routes
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db
app = Quart(__name__)
# Quart's own body limit (16 MiB) would cut uploads: Attachments' max_upload_size decides them
# and the endpoint's max_body_size (16 MiB) its requests
app.config["MAX_CONTENT_LENGTH"] = None


async def context(req: Request) -> DemoContext:
    user = user_id(req.headers, req.cookies)
    if not user:
        abort(401)  # your authentication goes here; Quart renders it as usual
    return DemoContext(user_id=user)


# POST /chatkit, uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
# (the endpoint alone: app.add_url_rule("/chatkit", view_func=chatkit_view(...), methods=["POST"]))
app.register_blueprint(chatkit_routes(server, context=context), url_prefix="/chatkit")


@app.after_request
async def cors(response: Response) -> Response:
    """Only needed when the ChatKit front end is served from another origin."""
    response.headers["Access-Control-Allow-Origin"] = "http://localhost:5173"
    response.headers["Access-Control-Allow-Headers"] = ", ".join(CORS_HEADERS)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT"
    return response
