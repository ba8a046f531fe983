"""Falcon: one add_to line (endpoint and attachments), the same routes in an ASGI and a WSGI app.

Run: ``uvicorn examples.falcon_app:app`` (``falcon.asgi.App``) or
``gunicorn -k gthread --threads 32 examples.falcon_app:wsgi_app`` (``falcon.App``; never the
sync worker for streams).
"""

import falcon
import falcon.asgi

from chatkit_adapters.falcon import chatkit_routes
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db


def context(req: falcon.Request) -> DemoContext:
    user = user_id({"x-user-id": req.get_header("x-user-id") or ""}, req.cookies)
    if not user:
        raise falcon.HTTPUnauthorized()  # your authentication goes here
    return DemoContext(user_id=user)


# POST /chatkit, uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
# (the endpoint alone: app.add_route("/chatkit", chatkit_view(server, context=context)))
chatkit = chatkit_routes(server, context=context)
# Only needed when the ChatKit front end is served from another origin:
# (Falcon's CORS middleware allows the headers a preflight asks for, CORS_HEADERS included)
cors = falcon.CORSMiddleware(allow_origins="http://localhost:5173")

app = falcon.asgi.App(middleware=[cors])
chatkit.add_to(app, "/chatkit")

wsgi_app = falcon.App(middleware=[cors])
chatkit.add_to(wsgi_app, "/chatkit")
