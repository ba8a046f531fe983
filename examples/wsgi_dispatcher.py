"""The raw WSGI app under werkzeug's DispatcherMiddleware, beside another WSGI app.

Run: ``gunicorn -k gthread --threads 32 examples.wsgi_dispatcher:app`` (ChatKit at
``/chatkit``, attachments under ``/chatkit/attachments``: the app routes on ``PATH_INFO``).
The factory gets the WSGI ``environ``; reject with ``ChatKitHTTPError``.
"""

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response

from chatkit_adapters import ChatKitHTTPError
from chatkit_adapters.wsgi import ChatKitWSGIApp
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store

server = DemoServer(open_store())


def context(environ: dict) -> DemoContext:
    user = environ.get("HTTP_X_USER_ID", "demo")
    if not user:
        raise ChatKitHTTPError(401, "Empty user id")
    return DemoContext(user_id=user)


main_app = Response("the rest of your site")
app = DispatcherMiddleware(main_app, {"/chatkit": ChatKitWSGIApp(server, context=context)})
