"""aiohttp: one add_post line for the endpoint, one add_subapp line for attachments.

Run: ``python -m aiohttp.web -H 127.0.0.1 -P 8000 examples.aiohttp_app:create_app``
"""

from aiohttp import web

import chatkit_adapters
from chatkit_adapters.aiohttp import chatkit_routes, chatkit_view
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import user_id

server = DemoServer(open_store())


def context(request: web.Request) -> DemoContext:
    return DemoContext(user_id=user_id(request.headers, request.cookies))


async def drain(app: web.Application) -> None:
    await chatkit_adapters.drain()  # let cancel cleanups of live streams finish at shutdown


def create_app(argv: list[str] | None = None) -> web.Application:
    app = web.Application()
    app.router.add_post("/chatkit", chatkit_view(server, context=context))
    # uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
    # (the sub-application alone serves the endpoint too, at /chatkit/)
    app.add_subapp("/chatkit", chatkit_routes(server, context=context))
    app.on_shutdown.append(drain)
    return app


app = create_app()
