"""A raw WSGI app serving a ChatKit server: any WSGI server, no framework needed.

Usage::

    from chatkit_adapters.wsgi import ChatKitWSGIApp

    app = ChatKitWSGIApp(server, context=lambda environ: {"user": environ.get("REMOTE_USER")})
    # gunicorn -k gthread --threads 32 module:app      (never the sync worker)
    # waitress-serve --channel-request-lookahead=1 --outbuf-high-watermark=262144 module:app
    # werkzeug: DispatcherMiddleware(flask_app, {"/chatkit": app})

``server.process`` and the stream run on one background event loop per process (started on
the first request, restarted after ``fork``); streams are written incrementally and
cancelled with ChatKit's cleanup intact when the client leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from chatkit.server import ChatKitServer
from typing_extensions import Unpack

from . import _core, _sync
from ._core import ContextFactory, JSONReply, Options, OptionsKwargs

__all__ = ["ChatKitWSGIApp"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class ChatKitWSGIApp:
    """A WSGI application answering every request that reaches it as ChatKit's endpoint.

    ``ChatKitWSGIApp(server, context=None, **options)``: *context* is called with the WSGI
    ``environ`` in the request thread and may raise
    :class:`chatkit_adapters.ChatKitHTTPError` to reject a request (other exceptions go to
    the WSGI server). Options: ``max_body_size``, ``heartbeat``, ``cleanup_timeout``,
    ``require_json``, ``trusted_origins`` (see :class:`chatkit_adapters.Options`).
    Anything but POST gets 405.
    """

    def __init__(
        self,
        server: ChatKitServer[Any],
        context: ContextFactory | None = None,
        **options: Unpack[OptionsKwargs],
    ) -> None:
        self.server = server
        self.context = context
        self.options = Options(**options)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        reply = _sync.handle(
            self.server,
            method=environ["REQUEST_METHOD"],
            headers=_sync.EnvironHeaders(environ),
            read=environ["wsgi.input"].read,
            until_eof=bool(environ.get("wsgi.input_terminated")),
            context=lambda: _core.build_context_sync(self.context, environ),
            options=self.options,
            disconnected=_sync.disconnect_probe(environ),
        )
        if isinstance(reply, JSONReply):
            headers = [*reply.all_headers, ("content-length", str(len(reply.body)))]
            start_response(_sync.status_line(reply.status), headers)
            return [reply.body]
        start_response(_sync.status_line(reply.status), list(reply.headers))
        return reply
