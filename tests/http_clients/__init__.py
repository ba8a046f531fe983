"""One client per adapter; the conformance suite runs every test against each of them.

A client builds a real app of its framework around the adapter under test (in one of its
``variants``: the one-line ``chatkit_view``, a user-written route calling
``chatkit_response``, or the view behind a common middleware stack) and drives it with
the framework's own in-process transport. Capabilities are class attributes, so tests
never test ``isinstance``. Adding a framework means adding one module here and its name
to ``CLIENTS`` (and to ``FRAMEWORKS`` when its framework's top-level package is not
named like the client; ``framework_of`` tells). The conftest skips a client whose framework
package is not installed, and fails the run when it is installed but the client (the
adapter) does not import.

The interface (``base.HttpClient``): ``make_app(server, context, variant, **options)``
builds the app (real servers build theirs with it too, ``tests.apps``); ``request`` /
``post`` return a normalized ``Response``; class attributes declare ``variants``,
``own_405_variants``, ``async_context``, ``real_servers`` (names in
``tests.realserver.SERVERS``) and ``real_server_variants`` (the variants the real-server
disconnect and backpressure tests run: the bare view and the middleware stack).
"""

CLIENTS = {
    "asgi": "tests.http_clients.asgi:AsgiClient",
    "starlette": "tests.http_clients.starlette:StarletteClient",
    "fastapi": "tests.http_clients.fastapi:FastAPIClient",
    "wsgi": "tests.http_clients.wsgi:WsgiClient",
    "flask": "tests.http_clients.flask:FlaskClient",
    "aiohttp": "tests.http_clients.aiohttp:AiohttpClient",
    "litestar": "tests.http_clients.litestar:LitestarClient",
    "django": "tests.http_clients.django:DjangoClient",
    "django_wsgi": "tests.http_clients.django:DjangoWSGIClient",
    "quart": "tests.http_clients.quart:QuartClient",
    "falcon": "tests.http_clients.falcon:FalconClient",
    "falcon_wsgi": "tests.http_clients.falcon:FalconWSGIClient",
    "sanic": "tests.http_clients.sanic:SanicClient",
}

# client name -> the top-level package whose absence skips it (default: the client name up
# to its first "_")
FRAMEWORKS = {"asgi": "httpx", "wsgi": "werkzeug"}


def framework_of(name: str) -> str:
    """The top-level package client *name* needs (checked with ``importlib.util.find_spec``)."""
    return FRAMEWORKS.get(name, name.split("_")[0])
