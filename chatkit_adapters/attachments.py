"""Attachments for ChatKit: a ready ``AttachmentStore`` on an object store, and the routes.

Usage::

    from chatkit_adapters.attachments import Attachments

    server = MyServer(store, attachment_store=Attachments("./uploads"))
    # then mount every route of one framework under one prefix, e.g. Starlette:
    app = Starlette(routes=[Mount("/chatkit", routes=chatkit_routes(server, make_context))])

The bytes live in an object store (obstore): a directory (or a ``file://`` URL) by default,
``memory://`` for tests. Each attachment is two objects: its bytes under a key that is
never reused (``{id}/{token}.bin``) and a small JSON record (``{id}/meta.json``) written
last and only if absent. That record is the commit: an upload that fails, or a client
that leaves mid-upload, leaves no record, so nothing is served and the attachment is not
marked uploaded; a second upload of the same attachment finds the record and gets 409.
The record also holds what a signed content URL needs (name, type, size), because such a
request is served without calling the context factory.

Routes (under the prefix P of ``chatkit_routes``; every framework module has it):
``POST P/attachments`` (direct upload, ``multipart/form-data`` field ``file``),
``POST|PUT P/attachments/{id}/upload`` (two-phase upload) and
``GET|HEAD P/attachments/{id}/content``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import time
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import obstore
from chatkit.store import AttachmentStore, NotFoundError, Store
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)
from obstore.exceptions import AlreadyExistsError
from obstore.store import LocalStore, MemoryStore

from ._attachments import Site, current_site
from ._core import ChatKitHTTPError
from ._sigv4 import Credentials, presign

__all__ = ["RASTER_TYPES", "SECRET_ENV", "Attachments", "S3Location", "sweep"]

logger = logging.getLogger("chatkit_adapters")

SECRET_ENV: Final = "CHATKIT_ATTACHMENTS_SECRET"
"""The environment variable holding the URL-signing secret (shared by every process)."""

DEFAULT_MAX_UPLOAD_SIZE: Final = 20 * 1024 * 1024
DEFAULT_URL_TTL: Final = 7 * 24 * 3600.0
DEFAULT_CHUNK_SIZE: Final = 256 * 1024

RASTER_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""The only types served inline (and previewed): their bytes are checked at upload."""

_ID = re.compile(r"atc_[0-9a-f]{32}")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_OCTET: Final = "application/octet-stream"
# types a browser may run as a document or script: always served as bytes to download
_ACTIVE: Final = re.compile(r"(text/(html|xml|javascript|ecmascript)|.*\+xml|.*/xml|.*script)$")


def valid_id(value: str) -> bool:
    """Whether *value* has the shape of an id this store generates (routes check it)."""
    return _ID.fullmatch(value) is not None


def clean_type(value: str | None) -> str:
    """A declared media type, lower-cased without parameters; ``application/octet-stream``
    for anything that is not a plain ``type/subtype``."""
    kind = (value or "").split(";", 1)[0].strip().lower()
    return kind if _MIME.fullmatch(kind) else _OCTET


def served_type(kind: str) -> str:
    """The ``Content-Type`` the content route answers with for a stored type."""
    return _OCTET if _ACTIVE.match(kind) else kind


def sniff_ok(kind: str, head: bytes) -> bool:
    """Whether the first bytes of a file fit its declared raster type (others: always)."""
    if kind == "image/png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if kind == "image/jpeg":
        return head.startswith(b"\xff\xd8\xff")
    if kind == "image/gif":
        return head.startswith((b"GIF87a", b"GIF89a"))
    if kind == "image/webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return True


SNIFF_SIZE: Final = 16
DIRECT_TOKEN: Final = "direct"
"""The key token of bytes uploaded straight to the bucket (``{id}/direct.bin``)."""


@dataclass(frozen=True)
class Record:
    """What is stored with the bytes: enough to serve them without the per-user store."""

    name: str
    mime_type: str
    size: int
    token: str

    @property
    def key(self) -> str:
        return self.token + ".bin"

    def dumps(self) -> bytes:
        data = {"name": self.name, "mime_type": self.mime_type, "size": self.size}
        return json.dumps({**data, "token": self.token}).encode()

    @classmethod
    def loads(cls, data: bytes) -> Record:
        value = json.loads(data)
        return cls(str(value["name"]), str(value["mime_type"]), int(value["size"]), value["token"])


S3_MIN_PART: Final = 5 * 1024 * 1024
"""S3's smallest multipart part: the chunk size (and memory) of a streamed S3 upload."""
S3_URL_TTL: Final = 60
"""Seconds a presigned GET redirect stays valid (it is minted per request)."""
S3_UPLOAD_TTL: Final = 15 * 60
"""Seconds a presigned PUT (``direct_uploads``) stays valid."""


@dataclass(frozen=True)
class S3Location:
    """Where an ``s3://bucket/prefix`` location lives and how to sign for it: options
    first, then the usual environment (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION``/``AWS_DEFAULT_REGION``). With an endpoint (an S3-compatible server),
    addressing is path-style."""

    bucket: str
    prefix: str
    endpoint: str
    credentials: Credentials

    @classmethod
    def parse(cls, url: str, options: Mapping[str, str] | None = None) -> S3Location:
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"Attachments: {url!r} names no bucket (s3://bucket/prefix)")
        given = dict(options or {})
        unknown = set(given) - {
            "endpoint",
            "region",
            "access_key_id",
            "secret_access_key",
            "session_token",
        }
        if unknown:
            raise TypeError(f"Attachments: unknown s3 options {sorted(unknown)}")
        env = os.environ.get
        region = given.get("region") or env("AWS_REGION") or env("AWS_DEFAULT_REGION")
        endpoint = (
            given.get("endpoint")
            or env("AWS_ENDPOINT_URL_S3")
            or env("AWS_ENDPOINT_URL")
            or f"https://s3.{region or 'us-east-1'}.amazonaws.com"
        )
        credentials = Credentials(
            access_key=given.get("access_key_id") or env("AWS_ACCESS_KEY_ID") or "",
            secret_key=given.get("secret_access_key") or env("AWS_SECRET_ACCESS_KEY") or "",
            region=region or "us-east-1",
            session_token=given.get("session_token") or env("AWS_SESSION_TOKEN") or None,
        )
        if not (credentials.access_key and credentials.secret_key):
            raise ValueError("Attachments: no S3 credentials (AWS_ACCESS_KEY_ID/..._SECRET_...)")
        return cls(parts.netloc, parts.path.strip("/"), endpoint.rstrip("/"), credentials)

    def store(self) -> Any:
        from obstore.store import S3Store

        creds = self.credentials
        config: Any = {  # obstore's S3Config (a TypedDict)
            "endpoint": self.endpoint,
            "region": creds.region,
            "access_key_id": creds.access_key,
            "secret_access_key": creds.secret_key,
            "virtual_hosted_style_request": False,
        }
        if creds.session_token:
            config["session_token"] = creds.session_token
        # our own client options make obstore ignore AWS_ALLOW_HTTP: say it here
        client: Any = {"allow_http": self.endpoint.startswith("http://")}
        return S3Store(
            self.bucket, prefix=self.prefix or None, config=config, client_options=client
        )

    def presign(self, method: str, key: str, expires: int, **kwargs: Any) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return presign(
            method, self.endpoint, self.bucket, full, self.credentials, expires=expires, **kwargs
        )


def open_store(
    location: str | os.PathLike[str], s3: Mapping[str, str] | None = None
) -> tuple[Any, S3Location | None]:
    """The obstore store for *location* (a directory path, ``file://`` URL, ``memory://``
    or ``s3://bucket/prefix``), and the S3 location when it is one."""
    text = os.fspath(location)
    if text == "memory://":
        return MemoryStore(), None
    scheme = urlsplit(text).scheme
    if scheme == "file":
        return LocalStore.from_url(text, mkdir=True), None
    if scheme == "s3":
        where = S3Location.parse(text, s3)
        return where.store(), where
    if scheme and len(scheme) > 1:
        raise ValueError(
            f"Attachments: unsupported location {text!r} (a directory, file:// or s3://)"
        )
    return LocalStore(Path(text).resolve(), mkdir=True), None


class Attachments(AttachmentStore[Any]):
    """A ready ``chatkit.store.AttachmentStore``: bytes in an object store, served by the
    routes of every framework's ``chatkit_routes``.

    ``ChatKitServer(store, attachment_store=Attachments("./uploads", max_upload_size=10 << 20))``

    Options (keyword-only):

    - ``max_upload_size``: largest file in bytes (413 above it); default 20 MiB.
    - ``allowed_types``: media types accepted at upload, ``"image/*"`` wildcards allowed
      (415 otherwise); default: any type (served safely: only PNG, JPEG, GIF and WebP,
      whose bytes are checked at upload, are ever shown inline).
    - ``secret``: the key signing preview URLs (an ``<img>`` sends no credentials); by
      default the ``CHATKIT_ATTACHMENTS_SECRET`` environment variable, else a random
      per-process key (with a warning: URLs then work only in the process that made them).
    - ``public_url``: the absolute URL of the routes' prefix, when the request cannot
      tell it (a proxy that rewrites paths); by default it comes from each request.
    - ``url_ttl``: seconds a signed URL stays valid (default 7 days: preview URLs are
      stored with the thread, and a reload shows them again).
    - ``chunk_size``: bytes buffered per write to the store (the upload's memory bound;
      default 256 KiB; on S3 at least 5 MiB, its smallest part).
    - ``s3``: for ``s3://bucket/prefix`` locations, ``endpoint``, ``region``,
      ``access_key_id``, ``secret_access_key``, ``session_token`` overriding the usual
      ``AWS_*`` environment variables (see :class:`S3Location`).
    - ``redirect``: S3 only; the content route answers with a short-lived presigned GET
      (302) whose response type and disposition are the safe ones of this store, instead
      of streaming the bytes through the app. Default: on for S3.
    - ``direct_uploads``: S3 only, off by default; a two-phase upload's
      ``upload_descriptor`` is a presigned PUT straight to the bucket, signed so that the
      bucket itself refuses another ``Content-Length`` or ``Content-Type``. The upload is
      committed (its size and, for images, its bytes checked) when it is first read.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE,
        allowed_types: Collection[str] | None = None,
        secret: str | bytes | None = None,
        public_url: str | None = None,
        url_ttl: float = DEFAULT_URL_TTL,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        s3: Mapping[str, str] | None = None,
        redirect: bool | None = None,
        direct_uploads: bool = False,
    ) -> None:
        if max_upload_size < 0:
            raise ValueError("max_upload_size must be >= 0")
        if isinstance(allowed_types, str):
            raise TypeError("allowed_types must be a collection of types, not one string")
        if url_ttl <= 0:
            raise ValueError("url_ttl must be positive")
        self.location = os.fspath(location)
        self.objects, self.s3 = open_store(location, s3)
        if self.s3 is None and (redirect or direct_uploads):
            raise ValueError("Attachments: redirect and direct_uploads need an s3:// location")
        self.redirect = self.s3 is not None if redirect is None else redirect
        self.direct_uploads = direct_uploads
        if self.s3 is not None:
            chunk_size = max(chunk_size, S3_MIN_PART)
        self.max_upload_size = max_upload_size
        self.allowed_types = (
            None if allowed_types is None else frozenset(t.lower() for t in allowed_types)
        )
        self.public_url = None if public_url is None else public_url.rstrip("/") + "/"
        self.url_ttl = url_ttl
        self.chunk_size = chunk_size
        self.store: Store[Any] | None = None  # bound by chatkit_routes (authorization)
        if secret is None:
            secret = os.environ.get(SECRET_ENV) or None
        if secret is None:
            warnings.warn(
                f"Attachments: no secret given and {SECRET_ENV} is not set; signed URLs "
                "use a random key and work only in this process",
                stacklevel=2,
            )
            secret = secrets.token_bytes(32)
        self._secret = secret.encode() if isinstance(secret, str) else secret

    # -- ChatKit's AttachmentStore ----------------------------------------------------

    def generate_attachment_id(self, mime_type: str, context: Any) -> str:
        """``atc_`` and 32 random hex digits (the routes accept nothing else)."""
        return "atc_" + secrets.token_hex(16)

    async def create_attachment(self, input: AttachmentCreateParams, context: Any) -> Attachment:
        """Two-phase upload: an attachment whose ``upload_descriptor`` is this store's
        upload route (``PUT`` the bytes, or ``POST`` them as multipart ``file``)."""
        if input.size < 0:
            raise ChatKitHTTPError(400, "size must be >= 0")
        if input.size > self.max_upload_size:
            raise ChatKitHTTPError(413, f"File is larger than {self.max_upload_size} bytes")
        kind = clean_type(input.mime_type)
        self.check_type(kind)
        attachment_id = self.generate_attachment_id(kind, context)
        site = self.site()
        url = site.url(f"attachments/{attachment_id}/upload")
        if self.direct_uploads and self.s3 is not None:
            url = await self._direct_upload(attachment_id, input.name, kind, input.size)
        upload = AttachmentUploadDescriptor(
            url=url,  # type: ignore[arg-type]
            method="PUT",
            headers={"content-type": kind},
        )
        return self.attachment(
            attachment_id, input.name, kind, site, upload=upload, size=input.size
        )

    async def delete_attachment(self, attachment_id: str, context: Any) -> None:
        """Remove the bytes (after checking, when bound to a ChatKit store, that the
        attachment is the context's: another user's is ``NotFoundError``)."""
        if self.store is not None:
            await self.store.load_attachment(attachment_id, context)
        if not valid_id(attachment_id):
            return
        record = await self.record(attachment_id)
        await self._delete(f"{attachment_id}/meta.json")
        await self._delete(f"{attachment_id}/pending.json")
        if record is not None:
            await self._delete(f"{attachment_id}/{record.key}")

    # -- model input ------------------------------------------------------------------

    async def read_bytes(self, attachment_id: str, context: Any) -> bytes:
        """The bytes of an uploaded attachment of the context's user (for model input).

        ``data = await attachments.read_bytes(attachment.id, context)`` in a
        ``ThreadItemConverter.attachment_to_message_content``; ``NotFoundError`` for an
        unknown, foreign or not yet uploaded attachment.
        """
        if self.store is None:
            raise RuntimeError("Attachments is not bound to a ChatKit store: use chatkit_routes")
        await self.store.load_attachment(attachment_id, context)
        record = await self.record(attachment_id) if valid_id(attachment_id) else None
        if record is None:
            raise NotFoundError(f"Attachment {attachment_id} has no uploaded content")
        result = await obstore.get_async(self.objects, f"{attachment_id}/{record.key}")
        return bytes(await result.bytes_async())

    async def data_url(self, attachment_id: str, context: Any) -> str:
        """:meth:`read_bytes` as a ``data:`` URL (``input_image`` parts take one)."""
        data = await self.read_bytes(attachment_id, context)
        record = await self.record(attachment_id)
        kind = record.mime_type if record is not None else _OCTET
        return f"data:{kind};base64,{base64.b64encode(data).decode()}"

    # -- used by the routes ------------------------------------------------------------

    def check_type(self, kind: str) -> None:
        """415 unless *kind* matches ``allowed_types``."""
        allowed = self.allowed_types
        if allowed is None or kind in allowed or "*/*" in allowed:
            return
        if kind.split("/", 1)[0] + "/*" in allowed:
            return
        raise ChatKitHTTPError(415, f"Files of type {kind} are not accepted")

    def site(self) -> Site:
        site = current_site.get()
        if self.public_url is not None:
            return Site(self.public_url, site.slash if site is not None else False)
        if site is None:
            raise RuntimeError(
                "Attachments needs the request's URL: serve the endpoint with chatkit_routes "
                "(or a raw app), or pass public_url"
            )
        return site

    def attachment(
        self,
        attachment_id: str,
        name: str,
        kind: str,
        site: Site,
        *,
        upload: AttachmentUploadDescriptor | None = None,
        size: int | None = None,
    ) -> Attachment:
        """The ChatKit attachment: an image (with a signed preview URL) for raster types."""
        metadata = None if size is None else {"size": size}
        if kind in RASTER_TYPES:
            preview = site.url(
                f"attachments/{attachment_id}/content", self.signature(attachment_id)
            )
            return ImageAttachment(
                id=attachment_id,
                name=name,
                mime_type=kind,
                preview_url=preview,  # type: ignore[arg-type]
                upload_descriptor=upload,
                metadata=metadata,
            )
        return FileAttachment(
            id=attachment_id, name=name, mime_type=kind, upload_descriptor=upload, metadata=metadata
        )

    def _mac(self, attachment_id: str, expires: int) -> str:
        message = f"content:{attachment_id}:{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def signature(self, attachment_id: str, now: float | None = None) -> str:
        """The query string of a signed content URL for *attachment_id*."""
        expires = int((time.time() if now is None else now) + self.url_ttl)
        return f"expires={expires}&signature={self._mac(attachment_id, expires)}"

    def verify(self, attachment_id: str, expires: str, signature: str) -> bool:
        """Whether a content URL's signature is this store's for the id and still valid."""
        if not (expires.isascii() and expires.isdigit()) or int(expires) < time.time():
            return False
        expected = self._mac(attachment_id, int(expires)).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))

    async def record(self, attachment_id: str) -> Record | None:
        """The committed record of an uploaded attachment, ``None`` before the upload."""
        try:
            result = await obstore.get_async(self.objects, f"{attachment_id}/meta.json")
            return Record.loads(bytes(await result.bytes_async()))
        except FileNotFoundError:
            pass
        return await self._commit_direct(attachment_id) if self.direct_uploads else None

    # -- S3: presigned uploads and downloads --------------------------------------------

    async def _direct_upload(self, attachment_id: str, name: str, kind: str, size: int) -> str:
        """Note what was declared (``pending.json``) and presign the PUT that binds it."""
        assert self.s3 is not None
        pending = Record(name=name, mime_type=kind, size=size, token=DIRECT_TOKEN)
        await obstore.put_async(
            self.objects, f"{attachment_id}/pending.json", pending.dumps(), mode="create"
        )
        return self.s3.presign(
            "PUT",
            f"{attachment_id}/{pending.key}",
            S3_UPLOAD_TTL,
            headers={"content-length": str(size), "content-type": kind},
        )

    async def _commit_direct(self, attachment_id: str) -> Record | None:
        """Commit an upload made straight to the bucket, once its bytes are there and fit
        what was declared (the bucket checked length and type; images are sniffed here,
        before they are ever served inline). A misfit is deleted."""
        try:
            result = await obstore.get_async(self.objects, f"{attachment_id}/pending.json")
            pending = Record.loads(bytes(await result.bytes_async()))
            key = f"{attachment_id}/{pending.key}"
            meta = await obstore.head_async(self.objects, key)
        except FileNotFoundError:
            return None
        head = b""
        if pending.size:
            got = await obstore.get_async(
                self.objects, key, options={"range": (0, min(SNIFF_SIZE, pending.size))}
            )
            head = bytes(await got.bytes_async())
        if meta["size"] != pending.size or not sniff_ok(pending.mime_type, head):
            logger.warning("Attachments: %s does not match its declaration; deleted", key)
            await self._delete(key)
            return None
        with contextlib.suppress(AlreadyExistsError):
            await obstore.put_async(
                self.objects, f"{attachment_id}/meta.json", pending.dumps(), mode="create"
            )
        await self._delete(f"{attachment_id}/pending.json")
        return pending

    def download_url(self, attachment_id: str, record: Record) -> str | None:
        """A presigned GET of the bytes with safe response headers, when ``redirect``."""
        if not self.redirect or self.s3 is None:
            return None
        inline = record.mime_type in RASTER_TYPES
        return self.s3.presign(
            "GET",
            f"{attachment_id}/{record.key}",
            S3_URL_TTL,
            query={
                "response-content-type": served_type(record.mime_type),
                "response-content-disposition": filename_header(record.name, inline),
                "response-cache-control": "private, max-age=60",
            },
        )

    async def write(
        self, attachment_id: str, name: str, kind: str, chunks: AsyncIterable[bytes]
    ) -> bool:
        """Store the bytes, then commit their record; ``False`` if one was committed first.

        Nothing is visible until the record exists; a failure (the client left, a limit)
        propagates and leaves no record (obstore discards an unfinished write). One part
        of ``chunk_size`` bytes is in flight at a time (``max_concurrency=1``).
        """
        token = secrets.token_hex(16)
        key = f"{attachment_id}/{token}.bin"
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        await obstore.put_async(
            self.objects, key, counted(), chunk_size=self.chunk_size, max_concurrency=1
        )
        record = Record(name=name, mime_type=kind, size=size, token=token)
        try:
            await obstore.put_async(
                self.objects, f"{attachment_id}/meta.json", record.dumps(), mode="create"
            )
        except AlreadyExistsError:
            await self._delete(key)
            return False
        return True

    async def read(
        self, attachment_id: str, record: Record, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` as they come from the store (never all at once)."""
        if end <= start:
            return
        result = await obstore.get_async(
            self.objects, f"{attachment_id}/{record.key}", options={"range": (start, end)}
        )
        async for chunk in result.stream(min_chunk_size=256 * 1024):
            yield bytes(chunk)

    async def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self.objects, key)


async def sweep(attachments: Attachments, older_than: float = 24 * 3600) -> list[str]:
    """Delete what no committed attachment owns, once older than *older_than* seconds:
    two-phase attachments created but never uploaded (``pending.json``, or bytes whose
    upload never committed), and bytes left behind when a delete or a write was cut
    short. Committed attachments are never touched. Returns the deleted keys.

    ``await sweep(Attachments("s3://bucket/prefix"), older_than=86400)``, or from a
    shell or a cron job: ``python -m chatkit_adapters.attachments sweep LOCATION``.
    """
    import datetime as dt

    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=older_than)
    by_id: dict[str, list[Any]] = {}
    async for batch in obstore.list(attachments.objects):
        for meta in batch:
            path = str(meta["path"])
            by_id.setdefault(path.split("/", 1)[0], []).append(meta)
    deleted = []
    for attachment_id, objects in by_id.items():
        if not valid_id(attachment_id):
            continue  # not ours: leave it
        keep: set[str] = set()
        record = await attachments.record(attachment_id)  # commits a finished direct upload
        if record is not None:
            keep = {f"{attachment_id}/meta.json", f"{attachment_id}/{record.key}"}
        for meta in objects:
            path = str(meta["path"])
            if path not in keep and meta["last_modified"] <= cutoff:
                await attachments._delete(path)
                deleted.append(path)
    return deleted


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(
        prog="python -m chatkit_adapters.attachments",
        description="Maintenance of an attachment store (directory, file:// or s3:// URL).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("sweep", help="delete uploads never committed, and leftovers")
    run.add_argument("location")
    run.add_argument(
        "--older-than", type=float, default=24 * 3600, help="seconds (default: one day)"
    )
    args = parser.parse_args(argv)
    store = Attachments(args.location, secret="sweep")  # signs nothing
    for key in asyncio.run(sweep(store, args.older_than)):
        print(f"deleted {key}", flush=True)
    # obstore's runtime threads may abort the interpreter's finalization (SIGABRT, about
    # 1 run in 6 measured against SeaweedFS) after all work is done: skip finalization
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def multipart_module() -> Any:
    """The ``multipart`` push parser (PyPI ``multipart``; python-multipart's ``multipart``
    compatibility shim forwards to it when both are installed)."""
    import multipart

    if not hasattr(multipart, "PushMultipartParser"):  # only python-multipart's shim
        raise ImportError("chatkit_routes needs the 'multipart' package: pip install multipart")
    return multipart


def filename_header(name: str, inline: bool) -> str:
    """``Content-Disposition`` with an ASCII fallback and RFC 6266 ``filename*``."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback or 'file'}\"; filename*=UTF-8''{quote(name, safe='')}"


if __name__ == "__main__":
    raise SystemExit(_main())
