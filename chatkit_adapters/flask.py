"""Flask adapter: one ``add_url_rule`` line serves a streaming ChatKit endpoint.

Usage::

    from flask import Flask, abort, g
    from chatkit_adapters.flask import chatkit_view

    def make_context(request):
        if "authorization" not in request.headers:
            abort(401)                      # rendered by Flask as usual
        return MyContext(user=g.user)

    app = Flask(__name__)
    app.add_url_rule("/chatkit", view_func=chatkit_view(server, context=make_context),
                     methods=["POST"])

Your own route::

    @app.post("/chatkit")
    def chatkit():
        return chatkit_response(server, request, MyContext(user=current_user()))

The context factory runs in the request thread (``flask.request`` and ``flask.g`` work);
``server.process`` and the stream run on a background event loop. Streams are written
incrementally (never buffered by Flask: the response is in ``direct_passthrough`` mode,
so an ``after_request`` hook may set headers but cannot read the body;
``response.call_on_close`` works) and cancelled with ChatKit's cleanup intact when the
client leaves. Serve with gunicorn ``-k gthread``
(never the sync worker) or waitress with ``--channel-request-lookahead=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
from chatkit.server import ChatKitServer
from flask import Request, Response
from typing_extensions import Unpack
from werkzeug.exceptions import ClientDisconnected

from . import _core, _sync
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs

__all__ = ["chatkit_response", "chatkit_view"]


def _respond(
    server: ChatKitServer[Any], request: Request, context: Callable[[], Any], options: Options
) -> Response:
    reply = _sync.handle(
        server,
        method=request.method,
        headers=request.headers,
        read=request.stream.read,
        until_eof=True,  # werkzeug's request.stream ends at Content-Length or the last chunk
        context=context,
        options=options,
        disconnected=_sync.disconnect_probe(request.environ),
        disconnects=(ClientDisconnected,),
    )
    if isinstance(reply, JSONReply):
        return Response(reply.body, reply.status, reply.all_headers)
    return _StreamResponse(reply, reply.status, list(reply.headers), direct_passthrough=True)


class _StreamResponse(Response):
    """A stream as a Flask response. ``direct_passthrough``: werkzeug hands the stream to
    the server as is, and a hook that reads ``response.data`` fails loudly instead of
    buffering the stream. The server then closes the stream, not the response, so the
    stream runs the ``call_on_close`` functions; it holds no reference to the response,
    and a response a hook replaced is freed (and its stream cancelled) at once."""

    def call_on_close(self, func: Callable[[], Any]) -> Callable[[], Any]:
        self.response.call_on_close(func)  # type: ignore[union-attr]
        return func


def chatkit_view(
    server: ChatKitServer[Any],
    context: ContextFactory | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[], Response]:
    """A Flask view function serving *server* (its ``__name__`` is ``"chatkit"``).

    ``app.add_url_rule("/chatkit", view_func=chatkit_view(server, make_context),
    methods=["POST"])``

    *context* gets ``flask.request`` (in the request thread, ``flask.g`` available) and
    returns the ChatKit context; ``abort(401)`` and other Flask/werkzeug exceptions
    propagate to Flask, :class:`chatkit_adapters.ChatKitHTTPError` becomes the JSON error.
    """
    opts = Options(**options)

    def chatkit() -> Response:
        request = flask.request
        return _respond(server, request, lambda: _core.build_context_sync(context, request), opts)

    return chatkit


def chatkit_response(
    server: ChatKitServer[Any],
    request: Request,
    context: Any,
    **options: Unpack[OptionsKwargs],
) -> Response:
    """Handle one request with a ready *context* in your own view.

    ``return chatkit_response(server, flask.request, MyContext(user=g.user))``
    """
    return _respond(server, request, lambda: context, Options(**options))
