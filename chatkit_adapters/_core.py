"""The framework-neutral core: limits, context, ``server.process``, error mapping.

Every decision about a ChatKit request is made here, once. A framework module only
translates its native request into calls on this module and renders what comes back:
either a :class:`JSONReply` (status, headers, body bytes) or a :class:`StreamReply`
(headers and an :class:`~chatkit_adapters._pump.EventStream` already primed with its
first event).

Order of checks for every request (what a client sees first):

1. method other than POST -> 405 with ``Allow: POST``;
2. ``Content-Length`` larger than ``max_body_size`` -> 413 (before reading a byte),
   malformed ``Content-Length`` -> 400;
3. ``Content-Type`` not JSON when ``require_json=True`` -> 415;
4. the body, read under the limit -> 413 as soon as it grows past it;
5. the context factory (it may reject the request with :class:`ChatKitHTTPError` or
   with the framework's own exceptions, which propagate untouched);
6. ``server.process``: a body that is not a ChatKit request -> 400, ``NotFoundError`` -> 404,
   anything else propagates to the framework. The body is parsed once, by a validator
   built once (ChatKit's ``process`` builds one per request), unless the server overrides
   ``process``;
7. streams: the first event is pulled before headers are sent, so steps 6's mapping
   also covers errors raised before it.
"""

from __future__ import annotations

import binascii
import inspect
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, TypedDict, TypeVar

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
    """

    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    heartbeat: float | None = None
    cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT
    require_json: bool = False

    def __post_init__(self) -> None:
        if self.max_body_size < 0:
            raise ValueError("max_body_size must be >= 0")
        if self.heartbeat is not None and self.heartbeat <= 0:
            raise ValueError("heartbeat must be a positive number of seconds or None")
        if self.cleanup_timeout <= 0:
            raise ValueError("cleanup_timeout must be a positive number of seconds")


class OptionsKwargs(TypedDict, total=False):
    """The keyword options every ``chatkit_view``/``chatkit_response``/raw app accepts."""

    max_body_size: int
    heartbeat: float | None
    cleanup_timeout: float
    require_json: bool


class ClientDisconnected(Exception):
    """The client went away before the request body was read; nothing to answer."""


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


def check_request(
    method: str,
    content_length: str | None,
    content_type: str | None,
    options: Options,
) -> int | None:
    """Steps 1-3: raise :class:`ChatKitHTTPError` or return the declared body length."""
    if method.upper() != "POST":
        raise method_not_allowed()
    declared: int | None = None
    if content_length is not None and content_length.strip() != "":
        value = content_length.strip()
        if not value.isdigit():
            raise ChatKitHTTPError(400, f"Invalid Content-Length: {excerpt(value)}")
        declared = int(value)
        if declared > options.max_body_size:
            raise too_large(options.max_body_size)
    if options.require_json:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != JSON_CONTENT_TYPE:
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


def _unreadable(exc: Exception) -> ChatKitHTTPError:
    # The server could not deliver the body: broken chunked framing (werkzeug's OSError,
    # gunicorn's ParseException), or the client left mid-body (Starlette's
    # ClientDisconnect). Either way the request is refused, not a server error.
    logger.debug("could not read a ChatKit request body", exc_info=exc)
    return ChatKitHTTPError(400, "Could not read the request body")


async def read_body(chunks: AsyncIterable[bytes], options: Options) -> bytes:
    """Step 4 for async frameworks: collect *chunks* under ``max_body_size``."""
    collector = BodyCollector(options.max_body_size)
    try:
        async for chunk in chunks:
            collector.add(chunk)
    except (ChatKitHTTPError, ClientDisconnected):
        raise
    except Exception as exc:
        raise _unreadable(exc) from exc
    return collector.body()


def read_body_sync(chunks: Iterable[bytes], options: Options) -> bytes:
    """Step 4 for sync frameworks: collect *chunks* under ``max_body_size``."""
    collector = BodyCollector(options.max_body_size)
    try:
        for chunk in chunks:
            collector.add(chunk)
    except (ChatKitHTTPError, ClientDisconnected):
        raise
    except Exception as exc:
        raise _unreadable(exc) from exc
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
"""Built once: ``ChatKitServer.process`` builds a new one per request (about 12 ms of CPU)."""


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
PARSE_ONCE: Final = ChatKitServer.process.__code__.co_names == _PROCESS_NAMES
"""True when the installed ChatKit's ``process()`` is the one :func:`process` mirrors."""


async def _process_parsed(
    server: ChatKitServer[Any], request: Any, context: Any
) -> StreamingResult | NonStreamingResult:
    """``ChatKitServer.process`` after its parse: ChatKit's own steps, request parsed once."""
    _chatkit_logger.info("Received request op: %s", request.type)
    if is_streaming_req(request):
        return StreamingResult(server._process_streaming(request, context))
    return NonStreamingResult(await server._process_non_streaming(request, context))


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
    if type(server).process is ChatKitServer.process:
        # Parse with a validator built once: ChatKit's process() builds a new one per
        # request, most of a small request's CPU time. A malformed body costs microseconds;
        # a valid one is not parsed again (PARSE_ONCE). A server overriding process() may
        # accept more: it decides alone.
        try:
            parsed = _REQUEST.validate_json(body)
        except ValidationError as exc:
            return error_reply(_bad_request(exc))
        call = (
            _process_parsed(server, parsed, context)
            if PARSE_ONCE
            else server.process(body, context)
        )
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
        # ``audio_base64``): ChatKit decodes it before calling anything else.
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


async def handle(
    server: ChatKitServer[Any],
    *,
    method: str,
    content_length: str | None,
    content_type: str | None,
    body: Callable[[], AsyncIterable[bytes]],
    context: Callable[[], Awaitable[Any]],
    options: Options,
) -> Reply:
    """The whole request for async frameworks, steps 1-7, as one template.

    *body* returns the native body chunk iterator; *context* builds the context (it is
    called after the body was read). Framework exceptions raised by *context* propagate.
    """
    try:
        check_request(method, content_length, content_type, options)
        data = await read_body(body(), options)
        ctx = await context()
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    return await process(server, data, ctx, options)
