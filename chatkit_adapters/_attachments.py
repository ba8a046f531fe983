"""The framework-neutral routes of ``chatkit_routes``: every decision of the endpoint,
upload and content routes, once.

A framework module matches its prefix P and hands over the rest of the path (``rest``),
the absolute URL of the request (``url``, so generated URLs are absolute and honour the
framework's forwarded-header settings) and the query string; this module routes:

- ``""``: the ChatKit endpoint (:func:`chatkit_adapters._core.handle`);
- ``attachments``: direct upload (POST, ``multipart/form-data`` field ``file``);
- ``attachments/{id}/upload``: two-phase upload (POST multipart, or PUT the raw body);
- ``attachments/{id}/content``: GET/HEAD the bytes, with ETag/If-None-Match, Range and a
  signed-URL alternative to the context;
- anything else: 404 (the raw apps, which answer every path, treat it as the endpoint).

Each route runs in three steps so the sync (WSGI) face can call the context factory in
the request thread: :func:`prepare` (method, cross-origin, declared length, content type,
signature; no I/O), the context factory, then :func:`run` on an event loop with the body
as an async iterator. Replies are :class:`~chatkit_adapters._core.JSONReply`,
:class:`~chatkit_adapters._core.StreamReply` or :class:`FileReply`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from chatkit.server import ChatKitServer
from chatkit.store import NotFoundError

from . import _core
from ._core import (
    ChatKitHTTPError,
    ClientDisconnected,
    ExceptionTypes,
    Headers,
    JSONReply,
    Options,
    StreamReply,
    body_error,
    check_origin,
    client_closed,
    error_reply,
)

if TYPE_CHECKING:
    from .attachments import Attachments

MULTIPART_OVERHEAD: Final = 64 * 1024
"""Bytes a multipart body may carry besides the file (boundaries, headers, small fields)."""

ENDPOINT: Final = "endpoint"
DIRECT: Final = "direct"
UPLOAD: Final = "upload"
CONTENT: Final = "content"
MISSING: Final = "missing"


@dataclass
class FileReply:
    """A file response: send ``status`` and ``headers``, then the chunks of ``body``
    (``None``: no body, as for HEAD and 304). Always ``await aclose()`` at the end."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The body, closed at the end (for frameworks that iterate bodies)."""
        return iterate(self)

    async def aclose(self) -> None:
        body, self.body = self.body, None
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()


Reply = JSONReply | StreamReply | FileReply


@dataclass(frozen=True)
class Site:
    """Where the routes of the current request live: the absolute URL of the prefix P
    (ends in ``/``) and the framework's trailing-slash convention (Django: ``True``)."""

    base: str
    slash: bool = False

    def url(self, path: str, query: str = "") -> str:
        return self.base + path + ("/" if self.slash else "") + (f"?{query}" if query else "")


current_site: ContextVar[Site | None] = ContextVar("chatkit_adapters_site", default=None)
"""Set while the endpoint handles a request (``create_attachment`` builds URLs from it)."""


def route(rest: str, strict: bool = True) -> tuple[str, str]:
    """``(kind, id)`` for the path relative to P; *strict* False: unknown paths are the
    endpoint (the raw apps serve every path)."""
    parts = [part for part in rest.strip("/").split("/") if part] if rest else []
    if not parts:
        return ENDPOINT, ""
    if parts[0] != "attachments":
        return (MISSING if strict else ENDPOINT), ""
    if len(parts) == 1:
        return DIRECT, ""
    if len(parts) == 3 and parts[2] in (UPLOAD, CONTENT):
        return parts[2], parts[1]
    return MISSING, ""


def site_for(url: str | Callable[[], str], rest: str, slash: bool) -> Site:
    """The prefix P's absolute URL from the request's URL (or a function returning it)
    and the path relative to P."""
    base = (url if isinstance(url, str) else url()).split("?", 1)[0]
    tail = rest.strip("/")
    stripped = base.rstrip("/")
    if tail and stripped.endswith("/" + tail):
        stripped = stripped[: -len(tail) - 1]
    elif tail:  # an endpoint reached at another path (raw apps): its directory
        stripped = stripped.rsplit("/", 1)[0]
    return Site(stripped + "/", slash)


def attachments_of(server: ChatKitServer[Any]) -> Attachments | None:
    """The server's :class:`~chatkit_adapters.attachments.Attachments`, if it has one
    (without importing obstore when nobody did)."""
    module = sys.modules.get("chatkit_adapters.attachments")
    store = getattr(server, "attachment_store", None)
    if module is None or not isinstance(store, module.Attachments):
        return None
    if store.store is None:
        store.store = server.store  # authorization goes through the ChatKit store
    found: Attachments = store
    return found


def _multipart() -> Any:
    from .attachments import multipart_module

    return multipart_module()


def not_found(message: str = "Not found") -> ChatKitHTTPError:
    return ChatKitHTTPError(404, message)


# -- step 1: checks without I/O ---------------------------------------------------------


@dataclass
class Plan:
    """What :func:`prepare` decided for one attachment request."""

    kind: str
    attachment_id: str
    method: str
    headers: Headers
    signed: bool = False
    boundary: str | None = None  # multipart uploads
    declared: int | None = None  # Content-Length


def prepare(
    store: Attachments,
    kind: str,
    attachment_id: str,
    method: str,
    headers: Headers,
    query: str,
    options: Options,
) -> Plan:
    """Route-level checks in order: 404 (no such route or id), 405, 403 (cross-origin),
    413/400 (``Content-Length``), 415 (upload body type). Raises ``ChatKitHTTPError``."""
    from .attachments import valid_id

    method = method.upper()
    if kind == MISSING or (kind != DIRECT and not valid_id(attachment_id)):
        raise not_found()
    allowed = {DIRECT: ("POST",), UPLOAD: ("POST", "PUT"), CONTENT: ("GET", "HEAD")}[kind]
    if method not in allowed:
        raise ChatKitHTTPError(
            405, f"Method {method} not allowed here", headers={"Allow": ", ".join(allowed)}
        )
    check_origin(method, headers, options)
    plan = Plan(kind, attachment_id, method, headers)
    if kind == CONTENT:
        params = parse_qs(query)
        expires, signature = params.get("expires", [""])[0], params.get("signature", [""])[0]
        plan.signed = bool(signature) and store.verify(attachment_id, expires, signature)
        return plan
    if method == "POST":
        plan.boundary = _boundary(headers.get("content-type"))
    limit = store.max_upload_size + (MULTIPART_OVERHEAD if plan.boundary else 0)
    plan.declared = _core.content_length(headers, limit)  # 413 above the limit
    return plan


def _boundary(content_type: str | None) -> str:
    value, params = _multipart().parse_options_header(content_type or "")
    boundary = params.get("boundary", "")
    if value.lower() != "multipart/form-data":
        raise ChatKitHTTPError(415, "Uploads must be multipart/form-data with a file field")
    if not boundary or len(boundary) > 200:
        raise ChatKitHTTPError(400, "Malformed multipart/form-data boundary")
    return str(boundary)


# -- step 3: on the loop -----------------------------------------------------------------


async def run(
    server: ChatKitServer[Any],
    store: Attachments,
    plan: Plan,
    context: Any,
    body: AsyncIterable[bytes],
    site: Site,
    disconnects: ExceptionTypes = (),
) -> JSONReply | FileReply:
    """The route's work with the context built (``None`` for a signed content request)."""
    try:
        if plan.kind == CONTENT:
            return await _content(server, store, plan, context)
        return await _upload(server, store, plan, context, body, site, disconnects)
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    except ClientDisconnected:
        return client_closed()


async def _load(server: ChatKitServer[Any], attachment_id: str, context: Any) -> Any:
    try:
        return await server.store.load_attachment(attachment_id, context)
    except NotFoundError:
        raise not_found() from None


class _Source:
    """The file's bytes out of the request body, counted against the limits."""

    def __init__(
        self, body: AsyncIterable[bytes], plan: Plan, limit: int, disconnects: ExceptionTypes
    ) -> None:
        self._chunks = _guarded(body, disconnects)
        self._limit = limit
        self.size = 0
        self.name = ""
        self.kind: str | None = None
        self._parser: Any = None
        self._events: list[Any] = []
        self._body_size = 0
        self._body_limit = limit + MULTIPART_OVERHEAD
        if plan.boundary is not None:
            self._parser = _multipart().PushMultipartParser(
                plan.boundary, max_header_size=8192, max_segment_count=16
            )

    async def _feed(self) -> bool:
        """Parse the next body chunk into events; False at the end of the body."""
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            chunk = b""
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:
            raise _core.too_large(self._limit)
        try:
            self._events.extend(self._parser.parse(chunk))
        except _multipart().MultipartError as exc:
            raise ChatKitHTTPError(
                400, f"Malformed multipart body: {_core.excerpt(str(exc))}"
            ) from exc
        return bool(chunk)

    async def start(self) -> None:
        """Multipart: read up to the ``file`` part's headers (400 if there is none)."""
        if self._parser is None:
            return
        while True:
            while self._events:  # other fields are skipped (bounded by the overhead)
                event = self._events.pop(0)
                if getattr(event, "name", None) == "file":
                    self.name = event.filename or "file"
                    self.kind = event.content_type
                    return
            if not await self._feed():
                raise ChatKitHTTPError(400, "No file field in the multipart body")

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The file's bytes; 413 as soon as they pass the limit."""
        if self._parser is None:
            async for chunk in self._chunks:
                yield self._count(chunk)
            return
        while True:
            while self._events:
                event = self._events.pop(0)
                if event is None:  # the file part ended: check the rest of the body
                    await self._drain()
                    return
                yield self._count(bytes(event))
            if not await self._feed():
                raise ChatKitHTTPError(400, "Incomplete multipart body")

    async def _drain(self) -> None:
        while await self._feed():
            self._events.clear()
        if not self._parser.closed:  # pragma: no cover - parse(b"") closes or raises
            raise ChatKitHTTPError(400, "Incomplete multipart body")

    def _count(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self._limit:
            raise _core.too_large(self._limit)
        return chunk


async def _guarded(body: AsyncIterable[bytes], disconnects: ExceptionTypes) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            if chunk:
                yield chunk
    except Exception as exc:
        error = body_error(exc, disconnects)
        if error is exc:
            raise
        raise error from exc


async def _upload(
    server: ChatKitServer[Any],
    store: Attachments,
    plan: Plan,
    context: Any,
    body: AsyncIterable[bytes],
    site: Site,
    disconnects: ExceptionTypes,
) -> JSONReply:
    from .attachments import SNIFF_SIZE, clean_type, sniff_ok

    existing = None
    if plan.kind == UPLOAD:
        existing = await _load(server, plan.attachment_id, context)
        if existing.upload_descriptor is None or await store.record(plan.attachment_id):
            raise ChatKitHTTPError(409, "This attachment was uploaded already", type="conflict")
    source = _Source(body, plan, store.max_upload_size, disconnects)
    await source.start()
    if existing is not None:
        name, kind = existing.name, existing.mime_type
        expected = (existing.metadata or {}).get("size")
    else:
        name, kind, expected = source.name, clean_type(source.kind), None
    store.check_type(kind)
    chunks = source.chunks()
    head = b""
    async for chunk in chunks:  # the first bytes decide whether the type is honest
        head += chunk
        if len(head) >= SNIFF_SIZE:
            break
    if not sniff_ok(kind, head):
        await chunks.aclose()
        raise ChatKitHTTPError(415, f"The file's content is not {kind}")

    async def content() -> AsyncIterator[bytes]:
        if head:
            yield head
        async for chunk in chunks:
            yield chunk
        if expected is not None and source.size != expected:
            raise ChatKitHTTPError(
                400, f"Received {source.size} bytes, the attachment declared {expected}"
            )

    attachment_id = plan.attachment_id or store.generate_attachment_id(kind, context)
    if not await store.write(attachment_id, name, kind, content()):
        raise ChatKitHTTPError(409, "This attachment was uploaded already", type="conflict")
    if existing is not None:
        attachment = existing.model_copy(update={"upload_descriptor": None})
    else:
        attachment = store.attachment(attachment_id, name, kind, site)
    await server.store.save_attachment(attachment, context)
    return JSONReply(200, server._serialize(attachment))


async def _content(
    server: ChatKitServer[Any], store: Attachments, plan: Plan, context: Any
) -> FileReply | JSONReply:
    from .attachments import RASTER_TYPES, filename_header, served_type

    if not plan.signed:
        await _load(server, plan.attachment_id, context)
    record = await store.record(plan.attachment_id)
    if record is None:
        raise not_found("This attachment has no uploaded content")
    redirect = store.download_url(plan.attachment_id, record)
    if redirect is not None:  # authorized above; the bucket serves the bytes
        return FileReply(302, [("location", redirect), ("cache-control", "no-store")])
    etag = f'"{record.token}"'
    inline = record.mime_type in RASTER_TYPES
    headers = [
        ("content-type", served_type(record.mime_type)),
        ("x-content-type-options", "nosniff"),
        ("content-disposition", filename_header(record.name, inline)),
        ("content-security-policy", "default-src 'none'; sandbox"),
        ("etag", etag),
        ("accept-ranges", "bytes"),
        ("cache-control", "private, max-age=3600"),
    ]
    if _matches(plan.headers.get("if-none-match"), etag):
        return FileReply(304, [h for h in headers if h[0] in ("etag", "cache-control")])
    size = record.size
    start, end, status = 0, size, 200
    wanted = plan.headers.get("range")
    if wanted and _if_range_ok(plan.headers.get("if-range"), etag):
        span = parse_range(wanted, size)
        if isinstance(span, str):
            return FileReply(416, [("content-range", f"bytes */{size}"), *headers[:2]])
        if span is not None:
            start, end = span
            status = 206
            headers.append(("content-range", f"bytes {start}-{end - 1}/{size}"))
    headers.append(("content-length", str(end - start)))
    if plan.method == "HEAD":
        return FileReply(status, headers)
    return FileReply(status, headers, store.read(plan.attachment_id, record, start, end))


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _if_range_ok(header: str | None, etag: str) -> bool:
    return header is None or header.strip() == etag


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as ``(start, end)`` (end exclusive); ``"unsatisfiable"``;
    ``None`` to ignore it (malformed, or several ranges: the whole file is sent)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "" or int(last) == 0:
            return "unsatisfiable" if last else None
        return max(0, size - int(last)), size
    begin = int(first)
    if begin >= size:
        return "unsatisfiable"
    stop = size if last == "" else min(size, int(last) + 1)
    if stop <= begin:
        return None
    return begin, stop


# -- the async face ----------------------------------------------------------------------


async def dispatch(
    server: ChatKitServer[Any],
    *,
    rest: str,
    url: str | Callable[[], str],
    query: str,
    method: str,
    headers: Headers,
    body: Callable[[], AsyncIterable[bytes]],
    context: Callable[[], Awaitable[Any]],
    options: Options,
    disconnects: ExceptionTypes = (),
    slash: bool = False,
    strict: bool = True,
) -> Reply:
    """One request to ``chatkit_routes`` (async frameworks and the raw ASGI app)."""
    kind, attachment_id = route(rest, strict)
    if kind == ENDPOINT:
        token = current_site.set(
            None if attachments_of(server) is None else site_for(url, rest, slash)
        )
        try:
            return await _core.handle(
                server,
                method=method,
                headers=headers,
                body=body,
                context=context,
                options=options,
                disconnects=disconnects,
            )
        finally:
            current_site.reset(token)
    store = attachments_of(server)
    try:
        if store is None:
            raise not_found()
        plan = prepare(store, kind, attachment_id, method, headers, query, options)
        ctx = None if plan.signed else await context()
    except ChatKitHTTPError as exc:
        return error_reply(exc)
    return await run(server, store, plan, ctx, body(), site_for(url, rest, slash), disconnects)


async def iterate(reply: FileReply) -> AsyncIterator[bytes]:
    """The body of *reply*, closed at the end (for frameworks that iterate bodies)."""
    try:
        if reply.body is not None:
            async for chunk in reply.body:
                yield chunk
    finally:
        await reply.aclose()


# -- rendering over ASGI (raw app, Starlette, FastAPI, Litestar) -------------------------


async def send_file(reply: FileReply, send: Callable[[Any], Awaitable[None]]) -> None:
    """Send a :class:`FileReply` over ASGI, chunk by chunk; the body is always closed.

    A client that left is noticed by the server (an ``OSError`` from ``send``) or not at
    all (uvicorn drops the writes): either way at most the requested range is read.
    """
    from ._asgi import raw_headers

    try:
        start = {"type": "http.response.start", "status": reply.status}
        await send({**start, "headers": raw_headers(reply.headers)})
        if reply.body is not None:
            async for chunk in reply.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass
    finally:
        await reply.aclose()


async def send_asgi(reply: Reply, receive: Any, send: Any) -> None:
    """Send any reply of :func:`dispatch` over ASGI."""
    from ._asgi import send_reply

    if isinstance(reply, FileReply):
        await send_file(reply, send)
    else:
        await send_reply(reply, receive, send)


def asgi_url(scope: Any) -> tuple[str, str]:
    """``(absolute URL, path relative to the mount point)`` of an ASGI request: the part
    of ``path`` after ``root_path`` (Starlette's ``Mount`` convention)."""
    from ._asgi import ScopeHeaders

    root = scope.get("root_path", "")
    path = scope.get("path", "/")
    rest = path[len(root) :] if root and path.startswith(root) else path
    host = ScopeHeaders(scope).get("host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    full = root + rest if not path.startswith(root) else path
    return f"{scope.get('scheme', 'http')}://{host}{full}", rest
