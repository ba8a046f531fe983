"""The sync (WSGI) face of the core, shared by the raw WSGI app, Flask and Django under WSGI.

In the request thread: the checks of :mod:`chatkit_adapters._core`, the body read under
``max_body_size``, and the context factory (so ``flask.request``, ``g`` and Django's
``request.user`` work). Then ``server.process`` and the whole stream run on the process's
background loop (:mod:`chatkit_adapters._bridge`), and a stream comes back as a
:class:`SyncEventStream`: a plain iterator with ``close()``, which is what every WSGI server
drives.

- ``__next__`` takes what the pump has ready (its bounded buffer is the hand-over between
  the threads, so a slow client holds the producer back) and wakes every
  :data:`POLL_INTERVAL` seconds while the stream is idle to look for a client that left.
  The same probe runs before each chunk is handed to the server.
- A client that left is noticed by the probe (``waitress.client_disconnected`` and a
  non-blocking peek on waitress's channel socket, ``gunicorn.socket`` or
  ``werkzeug.socket``), or by the server when a write fails; then ``close()``, which every
  WSGI server calls, cancels the stream once and waits for ChatKit's cancel cleanup,
  bounded by ``cleanup_timeout``. Where no probe exists, only a failed write reveals the
  disconnect, so an idle stream needs ``heartbeat`` to notice it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import select
import socket
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any, Final

from chatkit.server import ChatKitServer

from . import _bridge
from ._core import (
    CLIENT_CLOSED,
    ChatKitHTTPError,
    ClientDisconnected,
    ExceptionTypes,
    Headers,
    JSONReply,
    Options,
    StreamReply,
    check_request,
    client_closed,
    error_reply,
    process,
    read_body_sync,
)
from ._pump import EventStream

logger = logging.getLogger("chatkit_adapters")

POLL_INTERVAL: Final = 0.25
"""Seconds between disconnect probes while a stream (or ``server.process``) is idle."""

READ_SIZE: Final = 64 * 1024

_MSG_DONTWAIT: Final[int] = getattr(socket, "MSG_DONTWAIT", 0)

Probe = Callable[[], bool]


# -- disconnect probes ------------------------------------------------------------------


def peer_closed(sock: socket.socket) -> bool:
    """True if the peer of *sock* closed or reset the connection; never blocks.

    A zero-timeout poll, then a one-byte ``MSG_PEEK`` (nothing is consumed): ``b""`` is
    the peer's FIN, an error is a reset or a closed socket, data or nothing means alive.
    TLS sockets are peeked below the TLS layer (a FIN is still an empty read).
    """
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & select.POLLNVAL:
                return True
        else:  # pragma: no cover - Windows
            readable, _, _ = select.select([fd], [], [], 0)
            if not readable:
                return False
        data = socket.socket.recv(sock, 1, socket.MSG_PEEK | _MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True
    return data == b""


def _never() -> bool:
    return False


class EnvironHeaders:
    """The request headers of a WSGI ``environ``, read case-insensitively.

    ``EnvironHeaders(environ).get("content-type")``
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def get(self, key: str, /) -> str | None:
        name = key.upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = "HTTP_" + name
        value = self._environ.get(name)
        return value if isinstance(value, str) else None


def disconnect_probe(environ: Mapping[str, Any]) -> Probe:
    """The best way this WSGI server offers to ask "did the client leave?" without writing."""
    check = environ.get("waitress.client_disconnected")
    if callable(check):
        # It only knows once waitress read the FIN (channel_request_lookahead >= 1) or a
        # write failed; peeking the channel's socket also works with the default of 0.
        sock = getattr(getattr(check, "__self__", None), "socket", None)
        if isinstance(sock, socket.socket):
            peek = partial(peer_closed, sock)
            return lambda: bool(check()) or peek()
        return lambda: bool(check())
    for key in ("gunicorn.socket", "werkzeug.socket"):
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return partial(peer_closed, sock)
    return _never


# -- the request ------------------------------------------------------------------------


def read_chunks(
    read: Callable[[int], bytes], declared: int | None, until_eof: bool
) -> Iterator[bytes]:
    """The request body from a file-like ``read(n)``.

    *until_eof*: the stream ends itself (a dechunked body, ``wsgi.input_terminated``, or a
    framework stream already limited to ``Content-Length``). Otherwise exactly *declared*
    bytes are read (PEP 3333), none without a ``Content-Length``.
    """
    if until_eof:
        while chunk := read(READ_SIZE):
            yield chunk
        return
    remaining = declared or 0
    while remaining > 0:
        chunk = read(min(remaining, READ_SIZE))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def handle(
    server: ChatKitServer[Any],
    *,
    method: str,
    headers: Headers,
    read: Callable[[int], bytes],
    until_eof: bool,
    context: Callable[[], Any],
    options: Options,
    disconnected: Probe = _never,
    disconnects: ExceptionTypes = (),
) -> JSONReply | SyncEventStream:
    """The whole request for sync frameworks, steps 1-8 of :mod:`chatkit_adapters._core`.

    Runs in the request thread; *context* is called there after the body was read (its
    framework exceptions propagate). ``server.process`` runs on the background loop
    while this thread polls *disconnected*; unexpected exceptions of a non-streaming
    request propagate here, to the framework. *disconnects*: the framework's exceptions
    for a client that left while sending the body.
    """
    try:
        declared = check_request(method, headers, options)
        body = read_body_sync(read_chunks(read, declared, until_eof), options, disconnects)
        ctx = context()
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    except ClientDisconnected:
        return client_closed()

    call = _bridge.submit(process(server, body, ctx, options))

    def check() -> None:
        if disconnected():
            raise ClientDisconnected()

    try:
        reply = call.wait(POLL_INTERVAL, check)
    except ClientDisconnected:
        _cancel_process(call, options)
        return client_closed()
    if isinstance(reply, JSONReply):
        return reply
    return SyncEventStream(
        reply, call.loop, disconnected=disconnected, cleanup_timeout=options.cleanup_timeout
    )


def _cancel_process(call: _bridge.Call[JSONReply | StreamReply], options: Options) -> None:
    """The client left while ``server.process`` ran: cancel it once, close what it made."""
    call.cancel()
    try:
        reply = call.result(options.cleanup_timeout + _bridge.MARGIN)
    except (concurrent.futures.CancelledError, TimeoutError):
        return  # a primed stream cancels its own pump when its priming is cancelled
    if isinstance(reply, StreamReply):  # it finished first: the stream must still be closed
        SyncEventStream(reply, call.loop, cleanup_timeout=options.cleanup_timeout).close()


def status_line(status: int) -> str:
    """A WSGI status line (``"200 OK"``) for *status*."""
    if status == CLIENT_CLOSED:
        return f"{status} Client Closed Request"
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


# -- the stream -------------------------------------------------------------------------


class SyncEventStream:
    """A primed ChatKit stream as a WSGI iterable: iterate it, and always ``close()`` it.

    ``status`` and ``headers`` are the response's; each item is one ready batch of SSE
    bytes (or a heartbeat comment). Iteration ends when the stream ends or the client is
    found gone; ``close()`` cancels an unfinished stream once and blocks until ChatKit's
    cancel cleanup finished, at most ``cleanup_timeout`` (plus a small margin).
    """

    def __init__(
        self,
        reply: StreamReply,
        loop: asyncio.AbstractEventLoop,
        *,
        disconnected: Probe = _never,
        cleanup_timeout: float,
        poll: float = POLL_INTERVAL,
    ) -> None:
        self.status = reply.status
        self.headers = reply.headers
        self._stream: EventStream = reply.stream
        self._loop = loop
        self._disconnected = disconnected
        self._cleanup_timeout = cleanup_timeout
        self._poll = poll
        self._pending: _bridge.Call[bytes | None] | None = None
        self._ended = False
        self._closed = False
        self._on_close: list[Callable[[], object]] = []

    def call_on_close(self, func: Callable[[], object]) -> None:
        """Call *func* at the end of :meth:`close`, after the stream's cleanup."""
        self._on_close.append(func)

    def __iter__(self) -> SyncEventStream:
        return self

    def __next__(self) -> bytes:
        while not self._ended:
            pending = self._pending
            if pending is None:
                pending = self._pending = _bridge.submit(
                    self._stream.next_chunk(self._poll), loop=self._loop
                )
            try:
                # A pending call is never cancelled (its chunk would be lost): if the loop
                # is slow, the next round waits for the same call again.
                chunk = pending.result(self._poll + _bridge.MARGIN)
            except TimeoutError:
                if not _bridge.is_alive(self._loop):
                    self._ended = True
                    raise RuntimeError("chatkit-adapters: the background loop died") from None
                chunk = b""
            else:
                self._pending = None
            if chunk is None:
                self._ended = True
            elif self._client_left():
                self._ended = True
                self._loop.call_soon_threadsafe(self._stream.cancel)  # now; close() waits
            elif chunk:
                return chunk
        raise StopIteration

    def _client_left(self) -> bool:
        try:
            return self._disconnected()
        except Exception:
            _probe_failed()
            return False

    def close(self) -> None:
        """Finish the stream: cancel it if unfinished, wait for the cleanup (bounded)."""
        if self._closed:
            return
        self._closed = self._ended = True
        timeout = self._cleanup_timeout
        try:
            _bridge.submit(self._stream.aclose(), loop=self._loop).result(timeout + _bridge.MARGIN)
        except TimeoutError:
            logger.warning(
                "ChatKit stream did not finish closing within cleanup_timeout=%ss", timeout
            )
        except RuntimeError:
            if _bridge.is_alive(self._loop):
                logger.warning("closing a ChatKit stream failed", exc_info=True)
            else:
                logger.warning("ChatKit stream could not be closed: the background loop is gone")
        for func in self._on_close:
            func()


_probe_warned = False


def _probe_failed() -> None:
    """A disconnect probe raised: warn once per process (with the traceback), then only at
    DEBUG. Streams go on, and notice a client that left when a write fails."""
    global _probe_warned
    if _probe_warned:
        logger.debug("disconnect probe failed", exc_info=True)
        return
    _probe_warned = True
    logger.warning(
        "chatkit-adapters: the disconnect probe of this WSGI server failed; a client that"
        " leaves is noticed only when a write fails (set heartbeat)",
        exc_info=True,
    )
