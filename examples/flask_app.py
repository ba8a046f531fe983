"""Flask: one register_blueprint line (endpoint and attachments), streaming from a sync view.

Run: ``gunicorn -k gthread --threads 32 examples.flask_app:app`` (never the sync worker for
streams) or ``waitress-serve --channel-request-lookahead=1 examples.flask_app:app``.
"""

from flask import Flask, Request, Response, abort

from chatkit_adapters.flask import chatkit_routes
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())
app = Flask(__name__)


def context(req: Request) -> DemoContext:
    user = user_id(req.headers, req.cookies)
    if not user:
        abort(401)  # your authentication goes here; Flask renders it as usual
    return DemoContext(user_id=user)


# POST /chatkit, uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
# (the endpoint alone: app.add_url_rule("/chatkit", view_func=chatkit_view(...), methods=["POST"]))
app.register_blueprint(chatkit_routes(server, context=context), url_prefix="/chatkit")


@app.after_request
def cors(response: Response) -> Response:
    """Only needed when the ChatKit front end is served from another origin."""
    response.headers["Access-Control-Allow-Origin"] = "http://localhost:5173"
    response.headers["Access-Control-Allow-Headers"] = ", ".join(CORS_HEADERS)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT"
    return response
