"""One client per adapter; the conformance suite runs every test against each of them.

A client builds a real app of its framework around the adapter under test (in one of its
``variants``: the one-line ``chatkit_view``, a user-written route calling
``chatkit_response``, or the view behind a common middleware stack) and drives it with
the framework's own in-process transport. Capabilities are class attributes, so tests
never test ``isinstance``. Adding a framework means adding one module here and its name
to ``CLIENTS``.
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
