"""Drive a WSGI app in-process, the way a threaded WSGI server would, without blocking
the test's event loop.

The app runs in a worker thread (``asyncio.to_thread``) through werkzeug's test
machinery (``werkzeug.test.run_wsgi_app``, what ``werkzeug.test.Client`` uses), the
response iterable is consumed to its end and then closed, as servers do. An async
iterator body becomes a chunked body without ``Content-Length``
(``wsgi.input_terminated``), pulled chunk by chunk from the test's loop as the app reads.
Exceptions escaping the app become a bare 500, as a WSGI server renders them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from werkzeug.test import EnvironBuilder, run_wsgi_app

from chatkit_adapters import _bridge

from .base import HttpClient, Response

logger = logging.getLogger("tests.wsgi")

# The real-server tests under gunicorn's gthread worker live in tests/test_wsgi_servers.py:
# tests.realserver takes a server as ready once it accepts TCP connections, but a gunicorn
# master accepts them before its worker has imported the app (4 s of chatkit imports), so
# the shared suite's first test would time the worker's boot. The shared tests run there,
# unchanged, against a server that answered HTTP first.
REAL_SERVERS = ("gunicorn-gthread", "werkzeug", "waitress", "gunicorn-preload", "granian-wsgi")


def prepare_process() -> None:
    """Test hooks for server subprocesses, set through the environment.

    ``CHATKIT_TEST_WARM_BRIDGE=1`` starts the background loop while the app is built (in
    the gunicorn master under ``--preload``), so the workers inherit a loop across fork.
    """
    if os.environ.get("CHATKIT_TEST_WARM_BRIDGE"):
        _bridge.get_loop()


class AsyncBodyReader:
    """A ``wsgi.input`` whose bytes come from an async iterator on another thread's loop."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = aiter(chunks)
        self._loop = loop
        self._buffer = b""
        self._eof = False

    async def _next(self) -> bytes | None:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    def _pull(self) -> None:
        chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result(30)
        if chunk is None:
            self._eof = True
        else:
            self._buffer += chunk

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while not self._eof:
                self._pull()
            data, self._buffer = self._buffer, b""
            return data
        while not self._buffer and not self._eof:
            self._pull()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - not used by adapters
        return self.read(size)


class WsgiHttpClient(HttpClient):
    """A client for adapters that produce a WSGI app."""

    async_context = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self.build_app()

    async def request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> Response:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(
            self._request, method, body, dict(headers or {}), loop, path or self.path
        )

    def _environ(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes],
        headers: dict[str, str],
        loop: asyncio.AbstractEventLoop,
        path: str | None = None,
    ) -> dict[str, Any]:
        lower = {k.lower(): v for k, v in headers.items()}
        plain = {k: v for k, v in headers.items() if k.lower() not in ("content-length",)}
        streamed = not isinstance(body, bytes)
        builder = EnvironBuilder(
            path=path or self.path,
            method=method,
            headers=plain,
            data=None if streamed else body,
            content_type=lower.get("content-type"),
        )
        environ = builder.get_environ()
        builder.close()
        if "content-type" in lower:  # as given (werkzeug makes up a multipart boundary)
            environ["CONTENT_TYPE"] = lower["content-type"]
        if streamed:
            assert not isinstance(body, bytes)
            environ["wsgi.input"] = AsyncBodyReader(body, loop)
            environ.pop("CONTENT_LENGTH", None)
            environ["wsgi.input_terminated"] = True
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        elif "content-length" in lower:  # sent as given, even when it is wrong
            environ["CONTENT_LENGTH"] = lower["content-length"]
        elif not body:
            environ.pop("CONTENT_LENGTH", None)
        return environ

    def _request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes],
        headers: dict[str, str],
        loop: asyncio.AbstractEventLoop,
        path: str | None = None,
    ) -> Response:
        environ = self._environ(method, body, headers, loop, path)
        try:
            app_iter, status, response_headers = run_wsgi_app(self.app, environ)
        except Exception:
            logger.exception("the WSGI app raised")
            return Response(500, {"content-type": "text/plain"}, b"Internal Server Error")
        chunks: list[bytes] = []
        try:
            for chunk in app_iter:
                chunks.append(chunk)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        return Response(
            int(status.split()[0]),
            {k.lower(): v for k, v in response_headers.items()},
            b"".join(chunks),
        )
