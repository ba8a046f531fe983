"""The raw ASGI app inside another ASGI app.

Run: ``uvicorn examples.asgi_mounted:app`` (ChatKit at ``/api/chatkit/``, attachments
under ``/api/chatkit/attachments``: the app routes on the path under its mount point). The
factory gets the ASGI scope; reject a request by raising ``ChatKitHTTPError``.
"""

from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_adapters import ChatKitHTTPError
from chatkit_adapters.asgi import ChatKitASGIApp
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store

server = DemoServer(open_store())


def context(scope: dict) -> DemoContext:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    if headers.get("x-user-id") == "":
        raise ChatKitHTTPError(401, "Empty user id")
    return DemoContext(user_id=headers.get("x-user-id", "demo"))


app = Starlette(routes=[Mount("/api/chatkit", ChatKitASGIApp(server, context=context))])
