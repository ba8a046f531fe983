"""The framework-neutral core: limits, context, ``server.process``, error mapping.

Every decision about a ChatKit request is made here, once. A framework module only
translates its native request into calls on this module and renders what comes back:
either a :class:`JSONReply` (status, headers, body bytes) or a :class:`StreamReply`
(headers and an :class:`~chatkit_adapters._pump.EventStream` already primed with its
first event).

Order of checks for every request (what a client sees first):

1. method other than POST -> 405 with ``Allow: POST``;
2. a cross-origin request a browser sends without a CORS preflight -> 403, unless its
   origin is in ``trusted_origins`` (:func:`check_origin`, every route of every adapter);
3. ``Content-Length`` larger than ``max_body_size`` -> 413 (before reading a byte),
   malformed ``Content-Length`` -> 400;
4. ``Content-Type`` not JSON when ``require_json=True`` -> 415;
5. the body, read under the limit -> 413 as soon as it grows past it; a body the server
   could not deliver (broken framing) -> 400; a client that left -> nothing is answered;
6. the context factory (it may reject the request with :class:`ChatKitHTTPError` or
   with the framework's own exceptions, which propagate untouched);
7. ``server.process``: a body that is not a ChatKit request -> 400, ``NotFoundError`` -> 404,
   anything else propagates to the framework. The body is parsed once: by a validator
   built once (ChatKit's ``process`` builds one per request) while ``process`` is
   ChatKit's own, unwrapped one, else by the server's ``process`` itself;
8. streams: the first event is pulled before headers are sent, so step 7's mapping
   also covers errors raised before it.

What this module does not decide: how a disconnect is noticed while streaming. That
lives in the faces that own a transport: :mod:`~chatkit_adapters._asgi` (``receive()``
watcher), :mod:`~chatkit_adapters._sync` (socket probes, WSGI ``close()``) and the aiohttp
adapter (transport watcher); all of them cancel through the one pump
(:mod:`~chatkit_adapters._pump`).
"""

from __future__ import annotations

import binascii
import inspect
import json
import logging
import os
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Protocol, TypedDict, TypeVar
from urllib.parse import urlsplit

from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import ChatKitReq, is_streaming_req
from pydantic import TypeAdapter, ValidationError

from ._pump import EventStream

logger = logging.getLogger("chatkit_adapters")
_chatkit_logger = logging.getLogger("chatkit")  # ChatKit's own (chatkit.logger.logger)

R = TypeVar("R")

DEFAULT_MAX_BODY_SIZE: Final = 16 * 1024 * 1024
DEFAULT_CLEANUP_TIMEOUT: Final = 10.0

SSE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)
"""Headers of every streamed response (``X-Accel-Buffering`` stops nginx buffering)."""

JSON_CONTENT_TYPE: Final = "application/json"
ALLOW_HEADER: Final = ("allow", "POST")

_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

_EXCERPT_LENGTH: Final = 80
_HTML_SAFE: Final = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


class ChatKitHTTPError(Exception):
    """An HTTP error the adapters render as the documented JSON error.

    Raise it from a context factory to reject a request in any adapter (it is the way to
    do so from the raw ASGI and WSGI apps)::

        def context(request):
            if "authorization" not in request.headers:
                raise ChatKitHTTPError(401, "Missing credentials")
            return {"user": ...}

    The body is ``{"error": {"type": ..., "message": ...}}`` where ``type`` is the
    status's documented short name (``invalid_request``, ``not_found``, ...) or, for any
    other status, its lower-cased HTTP phrase (``unauthorized``, ``forbidden``).
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        type: str | None = None,
    ) -> None:
        self.status = status
        self.message = message if message is not None else _phrase(status)
        self.headers = dict(headers or {})
        self.type = type or error_type(status)
        super().__init__(status, self.message)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_type(status: int) -> str:
    """The ``error.type`` string for *status*: documented names, else the HTTP phrase."""
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    return _phrase(status).lower().replace(" ", "_").replace("-", "_").replace("'", "")


def excerpt(data: bytes | str) -> str:
    """A short, printable excerpt of client-supplied text, safe to put in a message."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    # json.dumps escapes control characters, quotes and non-ASCII (up to 12 characters
    # each); strip its outer quotes. The bound is on the escaped length, not the input's.
    escaped = json.dumps(text[:_EXCERPT_LENGTH], ensure_ascii=True)[1:-1]
    if len(escaped) <= _EXCERPT_LENGTH:
        return escaped + ("..." if len(text) > _EXCERPT_LENGTH else "")
    pieces: list[str] = []
    size = 0
    for char in text:
        piece = json.dumps(char, ensure_ascii=True)[1:-1]
        if size + len(piece) > _EXCERPT_LENGTH:
            break
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces) + "..."


@dataclass(frozen=True)
class Options:
    """The shared options, validated once; same meaning in every module.

    - ``max_body_size``: largest accepted body in bytes (413 above it).
    - ``heartbeat``: seconds of stream idleness after which an SSE comment
      (``: ping``) is sent; ``None`` disables heartbeats.
    - ``cleanup_timeout``: seconds ChatKit's cancel cleanup may run after a disconnect
      before it is abandoned (cancelled a second time) and logged.
    - ``require_json``: answer 415 unless ``Content-Type`` is ``application/json``
      (forces a CORS preflight for cross-origin browsers; see the README's security notes).
    - ``trusted_origins``: origins (``"https://app.example.com"``) whose cross-origin
      requests are accepted although a browser sends them without a CORS preflight
      (see :func:`check_origin`). Empty by default: every such request is refused (403).
    """

    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    heartbeat: float | None = None
    cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT
    require_json: bool = False
    trusted_origins: Collection[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_body_size < 0:
            raise ValueError("max_body_size must be >= 0")
        if self.heartbeat is not None and self.heartbeat <= 0:
            raise ValueError("heartbeat must be a positive number of seconds or None")
        if self.cleanup_timeout <= 0:
            raise ValueError("cleanup_timeout must be a positive number of seconds")
        if isinstance(self.trusted_origins, str):
            raise TypeError("trusted_origins must be a collection of origins, not one string")
        origins = frozenset(_trusted_origin(origin) for origin in self.trusted_origins)
        object.__setattr__(self, "trusted_origins", origins)


class OptionsKwargs(TypedDict, total=False):
    """The keyword options every ``chatkit_view``/``chatkit_response``/raw app accepts."""

    max_body_size: int
    heartbeat: float | None
    cleanup_timeout: float
    require_json: bool
    trusted_origins: Collection[str]


class Headers(Protocol):
    """Case-insensitive read access to request headers: what every framework's
    ``request.headers`` offers (:class:`~chatkit_adapters._asgi.ScopeHeaders` and
    :class:`~chatkit_adapters._sync.EnvironHeaders` for the raw apps)."""

    def get(self, key: str, /) -> str | None: ...


class ClientDisconnected(Exception):
    """The client went away before the request body was read; nothing to answer."""


# -- cross-origin protection ------------------------------------------------------------

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _split_origin(origin: str) -> tuple[str, str] | None:
    """``(scheme, host[:port])`` of a serialized origin, lower-cased, default port dropped;
    ``None`` for anything that is not one (``"null"``, a path, a query, garbage)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port  # validates it
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    if port is not None and str(port) == _DEFAULT_PORTS.get(scheme):
        netloc = netloc.rsplit(":", 1)[0]
    return scheme, netloc


def _trusted_origin(origin: str) -> str:
    split = _split_origin(origin) if isinstance(origin, str) else None
    if split is None:
        raise ValueError(
            f"trusted_origins: {origin!r} is not an origin like 'https://app.example.com'"
        )
    return f"{split[0]}://{split[1]}"


def _is_preflighted(content_type: str | None) -> bool:
    """A JSON body: no browser sends it cross-origin without a CORS preflight, so the
    application's CORS policy already allowed it."""
    return (content_type or "").split(";", 1)[0].strip().lower() == JSON_CONTENT_TYPE


def check_origin(method: str, headers: Headers, options: Options) -> None:
    """Refuse (403) a cross-origin request a browser sends without a CORS preflight.

    ``check_origin(request.method, request.headers, options)`` before any work.

    Go 1.25's ``net/http.CrossOriginProtection``, plus the preflight exemption: safe
    methods pass; ``Sec-Fetch-Site: same-origin``/``none`` passes; without
    ``Sec-Fetch-Site``, no ``Origin`` (curl, server-to-server) or an ``Origin`` whose host
    is the request's ``Host`` passes. Anything else (``cross-site``, ``same-site``, an
    ``Origin`` of another host) passes only with a JSON ``Content-Type`` (a preflight was
    made) or an ``Origin`` listed in ``trusted_origins``.
    """
    if method.upper() in SAFE_METHODS:
        return
    site = (headers.get("sec-fetch-site") or "").strip().lower()
    if site in ("same-origin", "none"):
        return
    origin = headers.get("origin")
    if not site:
        if not origin:
            return  # no browser headers at all: not a browser, or a browser from before 2020
        split = _split_origin(origin)
        if split is not None and split[1] == _request_host(headers.get("host"), split[0]):
            return
    if _is_preflighted(headers.get("content-type")):
        return
    if origin:
        split = _split_origin(origin)
        if split is not None and f"{split[0]}://{split[1]}" in options.trusted_origins:
            return
    where = f" from {excerpt(origin)}" if origin else ""
    raise ChatKitHTTPError(
        403,
        f"Cross-origin request{where} refused; to accept it, add its origin to the "
        "trusted_origins option",
    )


def _request_host(host: str | None, scheme: str) -> str:
    """The request's own ``Host``, lower-cased, the origin scheme's default port dropped."""
    value = (host or "").strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and value.endswith(":" + default):
        value = value[: -len(default) - 1]
    return value


@dataclass
class JSONReply:
    """A complete JSON response: render it natively (status, headers, body bytes)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def all_headers(self) -> list[tuple[str, str]]:
        """``headers`` plus the JSON content type."""
        return [("content-type", JSON_CONTENT_TYPE), *self.headers]


@dataclass
class StreamReply:
    """A stream primed with its first event: send ``SSE_HEADERS`` then iterate ``stream``."""

    stream: EventStream
    status: int = 200
    headers: tuple[tuple[str, str], ...] = SSE_HEADERS


Reply = JSONReply | StreamReply


def error_reply(error: ChatKitHTTPError) -> JSONReply:
    """Render *error* as the documented JSON error."""
    text = json.dumps(
        {"error": {"type": error.type, "message": error.message}}, separators=(",", ":")
    )
    # Messages may quote the request: escape markup so no client-supplied "<script>"
    # appears verbatim in a response body (the JSON decodes to the same message).
    body = text.translate(_HTML_SAFE).encode()
    return JSONReply(error.status, body, [(k.lower(), v) for k, v in error.headers.items()])


def method_not_allowed() -> ChatKitHTTPError:
    return ChatKitHTTPError(
        405, "Only POST is allowed on the ChatKit endpoint", headers={"Allow": "POST"}
    )


def too_large(limit: int) -> ChatKitHTTPError:
    return ChatKitHTTPError(413, f"Request body is larger than {limit} bytes")


def content_length(headers: Headers, limit: int) -> int | None:
    """The declared body length (``None`` without one); 400 if malformed, 413 above *limit*.

    Only ASCII digits count (``str.isdigit`` also accepts ``"²"`` and ``"١٢"``).
    """
    raw = headers.get("content-length")
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if not (value.isascii() and value.isdigit()):
        raise ChatKitHTTPError(400, f"Invalid Content-Length: {excerpt(value)}")
    declared = int(value)
    if declared > limit:
        raise too_large(limit)
    return declared


def check_request(method: str, headers: Headers, options: Options) -> int | None:
    """Steps 1-4: raise :class:`ChatKitHTTPError` or return the declared body length."""
    if method.upper() != "POST":
        raise method_not_allowed()
    check_origin(method, headers, options)
    declared = content_length(headers, options.max_body_size)
    if options.require_json and not _is_preflighted(headers.get("content-type")):
        raise ChatKitHTTPError(415, "Content-Type must be application/json")
    return declared


class BodyCollector:
    """Accumulates body chunks under the limit (413 as soon as it is exceeded)."""

    __slots__ = ("_chunks", "_limit", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            raise too_large(self._limit)
        self._chunks.append(chunk)

    def body(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)


ExceptionTypes = tuple[type[BaseException], ...]


def _server_parse_error(exc: BaseException) -> bool:
    """gunicorn's request parser refusing the body's framing (``InvalidChunkSize``, ...):
    looked up in ``sys.modules``, so nothing is imported, and only when gunicorn runs."""
    errors = sys.modules.get("gunicorn.http.errors")
    parse_error = getattr(errors, "ParseException", None)
    return isinstance(parse_error, type) and isinstance(exc, parse_error)


def body_error(exc: Exception, disconnects: ExceptionTypes = ()) -> Exception:
    """What a failure to read the request body means, as the exception to raise instead.

    ``raise body_error(exc, disconnects) from exc`` inside ``except Exception as exc``.

    - :class:`ClientDisconnected` (the client left: nothing will be answered) for
      *disconnects*, the framework's own "client disconnected" exceptions;
    - a 400 :class:`ChatKitHTTPError` for a body the server could not deliver: ``OSError``
      (a reset, werkzeug's and Django's unreadable input) or the server's parser refusing
      broken chunked framing;
    - anything else is returned as is, to propagate: it is a bug in the server, a
      middleware or here, and the framework's error handling and logs must see it.
    """
    if isinstance(exc, (ChatKitHTTPError, ClientDisconnected)):
        return exc
    if disconnects and isinstance(exc, disconnects):
        return ClientDisconnected()
    if isinstance(exc, OSError) or _server_parse_error(exc):
        logger.debug("could not read a ChatKit request body", exc_info=exc)
        return ChatKitHTTPError(400, "Could not read the request body")
    return exc


async def read_body(
    chunks: AsyncIterable[bytes], options: Options, disconnects: ExceptionTypes = ()
) -> bytes:
    """Step 5 for async frameworks: collect *chunks* under ``max_body_size``."""
    collector = BodyCollector(options.max_body_size)
    try:
        async for chunk in chunks:
            collector.add(chunk)
    except Exception as exc:
        error = body_error(exc, disconnects)
        if error is exc:
            raise
        raise error from exc
    return collector.body()


async def aiterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """*chunks* as an async iterator (a body the framework already holds in memory).

    ``handle(..., body=lambda: aiterate(chunks), ...)``
    """
    for chunk in chunks:
        yield chunk


def read_body_sync(
    chunks: Iterable[bytes], options: Options, disconnects: ExceptionTypes = ()
) -> bytes:
    """Step 5 for sync frameworks: collect *chunks* under ``max_body_size``."""
    collector = BodyCollector(options.max_body_size)
    try:
        for chunk in chunks:
            collector.add(chunk)
    except Exception as exc:
        error = body_error(exc, disconnects)
        if error is exc:
            raise
        raise error from exc
    return collector.body()


ContextFactory = Callable[[Any], Any]
"""A callable taking the native request and returning a context (or an awaitable of one)."""


async def build_context(factory: ContextFactory | None, request: Any) -> Any:
    """Step 5 for async frameworks: call the factory, awaiting its result if needed."""
    if factory is None:
        return {}
    value = factory(request)
    if inspect.isawaitable(value):
        value = await value
    return value


def build_context_sync(factory: ContextFactory | None, request: Any) -> Any:
    """Step 5 for sync frameworks: the factory runs in the request thread."""
    if factory is None:
        return {}
    value = factory(request)
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()  # do not leave a never-awaited coroutine behind
        raise TypeError(
            "context factories of sync frameworks must return the context, not an awaitable"
        )
    return value


def factory_context(factory: ContextFactory | None, request: Any) -> Callable[[], Awaitable[Any]]:
    """The *context* argument of :func:`handle` for a view: *factory* called with *request*.

    ``await handle(..., context=factory_context(context, request), ...)``
    """

    async def context() -> Any:
        return await build_context(factory, request)

    return context


def ready_context(value: Any) -> Callable[[], Awaitable[Any]]:
    """The *context* argument of :func:`handle` when the caller already built the context.

    ``await handle(..., context=ready_context(MyContext(user=user)), ...)``
    """

    async def context() -> Any:
        return value

    return context


_REQUEST: Final = TypeAdapter(ChatKitReq)
"""Built once: ``ChatKitServer.process`` builds a new one per request, which is most of a
small request's CPU time (see the README's benchmarks)."""


def _request_schema_title() -> str:
    try:
        _REQUEST.validate_json(b"")
    except ValidationError as exc:
        return exc.title
    raise AssertionError("an empty body validated as a ChatKit request")  # pragma: no cover


_REQUEST_TITLE: Final = _request_schema_title()


# The names ChatKitServer.process uses: parse, log, route to _process_streaming or
# _process_non_streaming. While they are exactly these, _process_parsed below does the
# same with the request parsed once (by _REQUEST); a ChatKit that changes process() is
# simply called as is.
_PROCESS_NAMES: Final = (
    "TypeAdapter",
    "ChatKitReq",
    "validate_json",
    "logger",
    "info",
    "type",
    "is_streaming_req",
    "StreamingResult",
    "_process_streaming",
    "NonStreamingResult",
    "_process_non_streaming",
)
_CHATKIT_PROCESS: Final = ChatKitServer.process
PARSE_ONCE: Final = (
    _CHATKIT_PROCESS.__code__.co_names == _PROCESS_NAMES
    and os.environ.get("CHATKIT_ADAPTERS_PARSE_ONCE", "1") != "0"
)
"""True when the installed ChatKit's ``process()`` is the one :func:`process` mirrors (and
``CHATKIT_ADAPTERS_PARSE_ONCE=0`` does not turn the fast path off)."""


def parses_once(server: ChatKitServer[Any]) -> bool:
    """Whether :func:`process` parses for *server* instead of calling its ``process()``.

    Decided per call: only while ``process`` is ChatKit's own function, unwrapped, on the
    class and the instance. A tracing or APM tool that patches ``ChatKitServer.process``
    (or one server's) at run time, or a subclass overriding it, is called as is.
    """
    return (
        PARSE_ONCE
        and ChatKitServer.process is _CHATKIT_PROCESS
        and getattr(type(server), "process", None) is _CHATKIT_PROCESS
        and "process" not in getattr(server, "__dict__", ())
    )


async def _process_parsed(
    server: ChatKitServer[Any], request: Any, context: Any
) -> StreamingResult | NonStreamingResult:
    """``ChatKitServer.process`` after its parse: ChatKit's own steps, request parsed once."""
    _chatkit_logger.info("Received request op: %s", request.type)
    if is_streaming_req(request):
        return StreamingResult(server._process_streaming(request, context))
    return NonStreamingResult(await server._process_non_streaming(request, context))


_BASE64_REQUESTS: Final = frozenset({"input.transcribe"})
"""Request types carrying base64 that ChatKit decodes (``audio_base64``)."""


def _request_type(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def _is_bad_request(exc: ValidationError) -> bool:
    # process() validates the body against ChatKitReq; a ValidationError of any other
    # model comes from the server or the store and is a server bug, not a client error.
    return exc.title == _REQUEST_TITLE


def _bad_request(exc: ValidationError) -> ChatKitHTTPError:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0] if errors else {"msg": "invalid", "loc": ()}
    loc = ".".join(str(part) for part in first.get("loc", ()))
    where = f" at {excerpt(loc)}" if loc else ""
    return ChatKitHTTPError(
        400, f"Not a valid ChatKit request: {excerpt(str(first.get('msg', '')))}{where}"
    )


async def process(server: ChatKitServer[Any], body: bytes, context: Any, options: Options) -> Reply:
    """Steps 6-7: run ``server.process`` and map its outcome to a :class:`Reply`.

    Must run on the event loop that will drive the stream (the request's loop in async
    frameworks, the background loop for sync ones).
    """
    call: Awaitable[StreamingResult | NonStreamingResult]
    kind: str | None = None
    if parses_once(server):
        # Parsed by a validator built once: ChatKit's process() builds a new one per
        # request, most of a small request's CPU time. Otherwise the server's own
        # process() parses (once): a wrapper or an override decides alone.
        try:
            parsed = _REQUEST.validate_json(body)
        except ValidationError as exc:
            return error_reply(_bad_request(exc))
        kind = parsed.type
        call = _process_parsed(server, parsed, context)
    else:
        call = server.process(body, context)
    try:
        result = await call
    except ValidationError as exc:
        if _is_bad_request(exc):
            return error_reply(_bad_request(exc))
        raise
    except binascii.Error:
        # A request that validated but carries undecodable base64 (``input.transcribe``'s
        # ``audio_base64``): ChatKit decodes it before calling anything else. From any
        # other request it is a bug of the server's, and propagates.
        if (kind or _request_type(body)) not in _BASE64_REQUESTS:
            raise
        return error_reply(ChatKitHTTPError(400, "Not a valid ChatKit request: invalid base64"))
    except NotFoundError as exc:
        return error_reply(ChatKitHTTPError(404, _not_found_message(exc)))
    except ChatKitHTTPError as exc:
        return error_reply(exc)

    if isinstance(result, NonStreamingResult):
        return JSONReply(200, result.json)
    if not isinstance(result, StreamingResult):  # pragma: no cover - defensive
        raise TypeError(f"server.process returned {type(result).__name__}")

    stream = EventStream(
        result, heartbeat=options.heartbeat, cleanup_timeout=options.cleanup_timeout
    )
    try:
        await stream.prime()
    except NotFoundError as exc:
        return error_reply(ChatKitHTTPError(404, _not_found_message(exc)))
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    return StreamReply(stream)


def _not_found_message(exc: NotFoundError) -> str:
    detail = str(exc)
    return f"Not found: {excerpt(detail)}" if detail else "Not found"


CLIENT_CLOSED: Final = 499
"""Status of the reply to a client that left before the response started (never seen by
it; servers log it)."""


def client_closed() -> JSONReply:
    """The reply to a request whose client left before it could be answered."""
    return error_reply(
        ChatKitHTTPError(CLIENT_CLOSED, "Client closed the request", type="client_closed")
    )


async def handle(
    server: ChatKitServer[Any],
    *,
    method: str,
    headers: Headers,
    body: Callable[[], AsyncIterable[bytes]],
    context: Callable[[], Awaitable[Any]],
    options: Options,
    disconnects: ExceptionTypes = (),
) -> Reply:
    """The whole request for async frameworks, steps 1-8, as one template.

    *body* returns the native body chunk iterator; *disconnects* are the framework's
    exceptions for a client that left while sending it; *context* builds the context (it
    is called after the body was read). Framework exceptions raised by *context* propagate.
    """
    try:
        check_request(method, headers, options)
        data = await read_body(body(), options, disconnects)
        ctx = await context()
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    except ClientDisconnected:
        return client_closed()
    return await process(server, data, ctx, options)
