"""The attachment routes (design.md, "Attachments"), written once, run against every
adapter's ``chatkit_routes`` (and the raw apps mounted under ``/chatkit``).

Every safety point of the attachments issue has a test here: authorization through the
context factory (another user's attachment is 404), signed URLs, the size and type limits,
sniffing, safe content headers, strict ids, 409 after an upload, ETag/Range/HEAD, and the
cross-origin protection of uploads.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
import pytest
from chatkit.store import NotFoundError
from chatkit.types import Attachment

from chatkit_adapters.attachments import Attachments
from tests.chatkit_app import JournalStore, ScriptedServer
from tests.conftest import load_client
from tests.http_clients import CLIENTS
from tests.http_clients.base import HttpClient, Response
from tests.s3server import S3Server, s3  # noqa: F401  (the session fixture, for BACKEND=s3)
from tests.test_conformance import assert_json_error

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(200))
GIF = b"GIF89a" + b"\x01" * 50
BOUNDARY = "testboundary7MA4YWxk"
OTHER = {"x-user": "mallory"}
ALICE = {"x-user": "alice"}


@dataclass
class UserStore(JournalStore):
    """The test store with attachments scoped by the context's user."""

    owners: dict[str, str] = field(default_factory=dict)

    async def save_attachment(self, attachment: Attachment, context: Any) -> None:
        self.owners.setdefault(attachment.id, context["user"])
        await super().save_attachment(attachment, context)

    async def load_attachment(self, attachment_id: str, context: Any) -> Attachment:
        if self.owners.get(attachment_id) != context["user"]:
            raise NotFoundError(attachment_id)
        return await super().load_attachment(attachment_id, context)


def multipart(
    data: bytes, name: str = "a.png", kind: str | None = "image/png", field: str = "file"
) -> tuple[bytes, dict[str, str]]:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
    if kind is not None:
        part += f"Content-Type: {kind}\r\n"
    body = (head + part + "\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _params() -> list[Any]:
    return [
        pytest.param(name, id=name, marks=[getattr(pytest.mark, name.split("_")[0])])
        for name in CLIENTS
    ]


class Routes:
    """One adapter's ``chatkit_routes`` app around a server with an ``Attachments`` store."""

    def __init__(self, client: HttpClient, attachments: Attachments | None, server: Any) -> None:
        self.client, self.attachments, self.server = client, attachments, server
        self.prefix = client.routes_path.rstrip("/")
        self.slash = "/" if client.name.startswith("django") else ""

    def path(self, rest: str) -> str:
        return f"{self.prefix}/{rest}{self.slash}"

    async def request(
        self, method: str, path: str, body: Any = b"", headers: Any = None
    ) -> Response:
        return await self.client.request(method, body, headers or {}, path=path)

    async def upload(self, data: bytes = PNG, user: dict[str, str] = ALICE, **kw: Any) -> Response:
        body, headers = multipart(data, **kw)
        return await self.request("POST", self.path("attachments"), body, {**headers, **user})

    async def create(
        self, name: str, size: int, kind: str, user: dict[str, str] = ALICE
    ) -> Response:
        body = {
            "type": "attachments.create",
            "params": {"name": name, "size": size, "mime_type": kind},
        }
        headers = {"content-type": "application/json", **user}
        return await self.client.request("POST", json.dumps(body).encode(), headers)

    def content(self, attachment_id: str) -> str:
        return self.path(f"attachments/{attachment_id}/content")

    def committed(self) -> list[str]:
        """Attachment ids whose upload was committed (their record exists)."""
        return sorted(p.split("/")[0] for p in self.objects() if p.endswith("/meta.json"))

    def files(self, attachment_id: str) -> list[str]:
        return [p for p in self.objects() if p.startswith(attachment_id + "/")]

    def objects(self) -> list[str]:
        """Every object of the store (a directory or an S3 bucket prefix)."""
        assert self.attachments is not None
        return [str(o["path"]) for o in obstore.list(self.attachments.objects).collect()]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


MakeRoutes = Callable[..., Awaitable[Routes]]


BACKEND = os.environ.get("CHATKIT_TEST_ATTACHMENTS_BACKEND", "file")
"""``file`` (a directory, the default) or ``s3`` (SeaweedFS, see tests/s3server.py): the
same suite runs on both (``tox -e s3``)."""


def _location(request: pytest.FixtureRequest, tmp_path: Path, index: int) -> dict[str, Any]:
    if BACKEND == "s3":
        server: S3Server = request.getfixturevalue("s3")
        return {
            "location": server.url(f"suite-{uuid.uuid4().hex}/files{index}"),
            "s3": {
                "endpoint": server.endpoint,
                "access_key_id": server.access_key,
                "secret_access_key": server.secret_key,
                "region": server.region,
            },
            "redirect": False,  # in-process clients cannot follow a redirect to the bucket
        }
    assert BACKEND == "file", BACKEND
    return {"location": tmp_path / f"files{index}"}


@pytest.fixture(params=_params())
async def make_routes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeRoutes]:
    client_class = load_client(request.param)
    clients: list[HttpClient] = []

    def context(native: Any) -> dict[str, str]:
        user = client_class.header(native, "x-user")
        if not user:
            raise client_class.unauthorized()
        return {"user": user}

    async def factory(
        attach: bool = True, options: Any = None, **attachment_options: Any
    ) -> Routes:
        server = ScriptedServer(UserStore(write_delay=0.0))
        attachments = None
        if attach:
            attachment_options.setdefault("secret", "test-secret")
            attachment_options.update(_location(request, tmp_path, len(clients)))
            attachments = Attachments(**attachment_options)
            server.attachment_store = attachments
        client = client_class(server, context=context, variant="routes", **(options or {}))
        clients.append(client)
        return Routes(client, attachments, server)

    yield factory
    for client in clients:
        await client.aclose()


# -- uploads and content --------------------------------------------------------------


async def test_direct_upload_and_signed_preview(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    response = await routes.upload(PNG, name="cat.png")
    assert response.status == 200, response.body
    attachment = response.json
    assert attachment["type"] == "image" and attachment["name"] == "cat.png"
    assert attachment["mime_type"] == "image/png" and "upload_descriptor" not in attachment
    assert attachment["id"].startswith("atc_") and len(attachment["id"]) == 36
    preview = attachment["preview_url"]
    assert preview.startswith("http") and "signature=" in preview
    assert local(preview).startswith(routes.content(attachment["id"]))
    # an <img> sends no credentials: the signature alone is enough
    content = await routes.request("GET", local(preview))
    assert content.status == 200, content.body
    assert content.body == PNG
    assert content.headers["content-type"] == "image/png"
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["content-disposition"].startswith("inline;")
    assert content.headers["etag"]
    assert routes.committed() == [attachment["id"]]


async def test_content_is_authorized_by_the_context(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    attachment_id = (await routes.upload()).json["id"]
    path = routes.content(attachment_id)
    owner = await routes.request("GET", path, headers=ALICE)
    assert owner.status == 200 and owner.body == PNG
    assert_json_error(await routes.request("GET", path, headers=OTHER), 404, "not_found")
    assert (await routes.request("GET", path)).status == 401  # the factory's own rejection


async def test_bad_signatures_are_not_accepted(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    first = (await routes.upload()).json
    second = (await routes.upload()).json
    query = urlsplit(first["preview_url"]).query
    assert (await routes.request("GET", local(first["preview_url"]))).status == 200
    tampered = query[:-2] + ("AA" if not query.endswith("AA") else "BB")
    expired = query.replace(query.split("&")[0], "expires=1000")
    for bad in (
        f"{routes.content(first['id'])}?{tampered}",
        f"{routes.content(first['id'])}?{expired}",
        f"{routes.content(second['id'])}?{query}",  # bound to the id
        f"{routes.content(first['id'])}?{query.split('&')[0]}&signature=%C3%A9t%C3%A9",
    ):
        # without a valid signature the context decides: no credentials, no file
        assert (await routes.request("GET", bad)).status == 401
        assert_json_error(await routes.request("GET", bad, headers=OTHER), 404, "not_found")
    other_secret = Attachments("memory://", secret="another")  # signs alike, another key
    forged = f"{routes.content(first['id'])}?{other_secret.signature(first['id'])}"
    assert (await routes.request("GET", forged)).status == 401


async def test_two_phase_upload_put_then_409(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    created = await routes.create("notes.txt", 5, "text/plain")
    assert created.status == 200, created.body
    descriptor = created.json["upload_descriptor"]
    assert descriptor["method"] == "PUT" and descriptor["url"].startswith("http")
    upload = local(descriptor["url"])
    attachment_id = created.json["id"]
    assert upload == routes.path(f"attachments/{attachment_id}/upload")
    path = routes.content(attachment_id)
    assert_json_error(await routes.request("GET", path, headers=ALICE), 404, "not_found")
    assert_json_error(await routes.request("PUT", upload, b"hello", OTHER), 404, "not_found")
    done = await routes.request("PUT", upload, b"hello", ALICE)
    assert done.status == 200, done.body
    assert done.json["id"] == attachment_id and "upload_descriptor" not in done.json
    assert_json_error(await routes.request("PUT", upload, b"hello", ALICE), 409, "conflict")
    body, headers = multipart(b"hello", "notes.txt", "text/plain")
    assert_json_error(
        await routes.request("POST", upload, body, {**headers, **ALICE}), 409, "conflict"
    )
    content = await routes.request("GET", path, headers=ALICE)
    assert content.status == 200 and content.body == b"hello"
    disposition = content.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''notes.txt" in disposition


async def test_two_phase_upload_as_multipart_post(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    created = (await routes.create("cat.png", len(PNG), "image/png")).json
    assert created["type"] == "image" and created["preview_url"].startswith("http")
    body, headers = multipart(PNG)
    upload = local(created["upload_descriptor"]["url"])
    done = await routes.request("POST", upload, body, {**headers, **ALICE})
    assert done.status == 200, done.body
    assert (await routes.request("GET", local(created["preview_url"]))).body == PNG


async def test_two_phase_size_mismatch_is_400_and_not_uploaded(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    created = (await routes.create("notes.txt", 5, "text/plain")).json
    upload = local(created["upload_descriptor"]["url"])
    for wrong in (b"hell", b"hello!"):
        assert_json_error(await routes.request("PUT", upload, wrong, ALICE), 400, "invalid_request")
    assert routes.committed() == []
    assert (await routes.request("PUT", upload, b"hello", ALICE)).status == 200


async def test_urls_follow_the_request_or_public_url(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    body, headers = multipart(PNG)
    headers.update({"host": "chat.example:8443", **ALICE})
    response = await routes.request("POST", routes.path("attachments"), body, headers)
    assert response.status == 200, response.body
    preview = response.json["preview_url"]
    assert preview.startswith(f"http://chat.example:8443{routes.prefix}/attachments/atc_"), preview
    routes = await make_routes(public_url="https://cdn.example/app/chatkit/")
    created = (await routes.create("a.txt", 1, "text/plain")).json
    upload = created["upload_descriptor"]["url"]
    assert upload.startswith("https://cdn.example/app/chatkit/attachments/atc_"), upload
    assert upload.endswith("/upload" + routes.slash)


# -- limits -----------------------------------------------------------------------------


async def test_upload_size_limit_from_content_length(make_routes: MakeRoutes) -> None:
    routes = await make_routes(max_upload_size=100)
    assert_json_error(await routes.upload(PNG + bytes(100_000)), 413, "payload_too_large")
    assert_json_error(
        await routes.create("big.bin", 101, "application/octet-stream"), 413, "payload_too_large"
    )
    created = (await routes.create("small.bin", 50, "application/octet-stream")).json
    upload = local(created["upload_descriptor"]["url"])
    big = await routes.request("PUT", upload, bytes(101), ALICE)
    assert_json_error(big, 413, "payload_too_large")
    assert routes.committed() == []


async def test_upload_size_limit_while_streaming(make_routes: MakeRoutes) -> None:
    routes = await make_routes(max_upload_size=1000)

    async def chunked(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 300):
            yield data[start : start + 300]

    body, headers = multipart(PNG + bytes(2000))
    response = await routes.request(
        "POST", routes.path("attachments"), chunked(body), {**headers, **ALICE}
    )
    assert_json_error(response, 413, "payload_too_large")
    body, headers = multipart(PNG + bytes(500))  # chunked and under the limit: accepted
    response = await routes.request(
        "POST", routes.path("attachments"), chunked(body), {**headers, **ALICE}
    )
    assert response.status == 200, response.body
    assert routes.committed() == [response.json["id"]]


async def test_allowed_types_with_wildcards(make_routes: MakeRoutes) -> None:
    routes = await make_routes(allowed_types=["image/*", "application/pdf"])
    assert_json_error(
        await routes.upload(b"text", name="a.txt", kind="text/plain"), 415, "unsupported_media_type"
    )
    assert_json_error(await routes.create("a.txt", 4, "text/plain"), 415, "unsupported_media_type")
    assert (await routes.upload(GIF, name="a.gif", kind="image/gif")).status == 200
    assert (await routes.upload(b"%PDF-1.4", name="a.pdf", kind="application/pdf")).status == 200
    assert len(routes.committed()) == 2


async def test_declared_type_is_sniffed(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    for fake in (b"<html><script>alert(1)</script></html>", GIF, b""):
        error = await routes.upload(fake, name="x.png", kind="image/png")
        assert_json_error(error, 415, "unsupported_media_type")
    assert routes.committed() == []


async def test_active_content_is_never_inline(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    for data, name, kind in (
        (svg, "x.svg", "image/svg+xml"),
        (b"<html><script>alert(1)</script>", "résumé 1.html", "text/html"),
    ):
        attachment = (await routes.upload(data, name=name, kind=kind)).json
        assert attachment["type"] == "file" and "preview_url" not in attachment
        content = await routes.request("GET", routes.content(attachment["id"]), headers=ALICE)
        assert content.status == 200 and content.body == data
        assert content.headers["content-type"] == "application/octet-stream"
        assert content.headers["x-content-type-options"] == "nosniff"
        disposition = content.headers["content-disposition"]
        assert disposition.startswith("attachment;"), disposition
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%201.html" in disposition
    assert 'filename="r_sum_ 1.html"' in disposition


async def test_malformed_multipart_is_400(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    body, headers = multipart(PNG)
    cases = [
        (body[: len(body) // 2], headers),  # cut short
        (multipart(PNG, field="other")[0], headers),  # no file field
        (body, {"content-type": "multipart/form-data"}),  # no boundary
    ]
    for data, head in cases:
        response = await routes.request("POST", routes.path("attachments"), data, {**head, **ALICE})
        assert_json_error(response, 400, "invalid_request")
    response = await routes.request(
        "POST", routes.path("attachments"), PNG, {"content-type": "image/png", **ALICE}
    )
    assert_json_error(response, 415, "unsupported_media_type")
    assert routes.committed() == []


# -- ids, methods, cross-origin ------------------------------------------------------


async def test_ids_are_validated_on_every_route(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    for rest in (
        "attachments/..%2F..%2Fetc%2Fpasswd/content",
        "attachments/atc_XYZ/content",
        "attachments/atc_0123456789abcdef0123456789abcdef/content",  # well-formed, unknown
        "attachments/atc_0123456789abcdef0123456789abcdef/upload",
        "attachments/atc_0123456789abcdef0123456789abcdef/other",
    ):
        method = "PUT" if rest.endswith("upload") else "GET"
        response = await routes.request(method, routes.path(rest), b"x", ALICE)
        assert_json_error(response, 404, "not_found")
    assert routes.committed() == []


async def test_methods(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    attachment_id = (await routes.upload()).json["id"]
    response = await routes.request("DELETE", routes.content(attachment_id), headers=ALICE)
    assert response.status == 405 and "GET" in response.headers["allow"]
    response = await routes.request("GET", routes.path("attachments"), headers=ALICE)
    assert response.status == 405 and response.headers["allow"] == "POST"


async def test_cross_origin_uploads_are_refused(make_routes: MakeRoutes) -> None:
    routes = await make_routes(options={"trusted_origins": ["https://app.example"]})
    for origin, status in (("https://evil.example", 403), ("https://app.example", 200)):
        body, headers = multipart(PNG)
        headers.update({"sec-fetch-site": "cross-site", "origin": origin, **ALICE})
        response = await routes.request("POST", routes.path("attachments"), body, headers)
        assert response.status == status, response.body
    assert len(routes.committed()) == 1


# -- conditional requests, ranges, HEAD ----------------------------------------------


async def test_etag_range_and_head(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    attachment_id = (await routes.upload()).json["id"]
    path = routes.content(attachment_id)
    full = await routes.request("GET", path, headers=ALICE)
    etag = full.headers["etag"]
    cached = await routes.request("GET", path, headers={"if-none-match": etag, **ALICE})
    assert cached.status == 304 and cached.body == b""
    changed = await routes.request("GET", path, headers={"if-none-match": '"other"', **ALICE})
    assert changed.status == 200 and changed.body == PNG
    part = await routes.request("GET", path, headers={"range": "bytes=2-9", **ALICE})
    assert part.status == 206 and part.body == PNG[2:10]
    assert part.headers["content-range"] == f"bytes 2-9/{len(PNG)}"
    tail = await routes.request("GET", path, headers={"range": "bytes=-5", **ALICE})
    assert tail.status == 206 and tail.body == PNG[-5:]
    beyond = await routes.request("GET", path, headers={"range": f"bytes={len(PNG)}-", **ALICE})
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{len(PNG)}"
    head = await routes.request("HEAD", path, headers=ALICE)
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(PNG)) and head.headers["etag"] == etag


# -- the endpoint, deletion, model input ---------------------------------------------


async def test_without_attachments_the_paths_are_404(make_routes: MakeRoutes) -> None:
    routes = await make_routes(attach=False)
    response = await routes.upload()
    assert_json_error(response, 404, "not_found")
    threads = await routes.client.request(
        "POST",
        b'{"type":"threads.list","params":{}}',
        {"content-type": "application/json", **ALICE},
    )
    assert threads.status == 200 and threads.json["data"] == []


async def test_delete_removes_the_bytes_of_the_owner_only(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    attachment_id = (await routes.upload()).json["id"]
    request = json.dumps({"type": "attachments.delete", "params": {"attachment_id": attachment_id}})
    headers = {"content-type": "application/json"}
    refused = await routes.client.request("POST", request.encode(), {**headers, **OTHER})
    assert refused.status == 404
    assert routes.committed() == [attachment_id]
    deleted = await routes.client.request("POST", request.encode(), {**headers, **ALICE})
    assert deleted.status == 200, deleted.body
    assert routes.committed() == []
    assert routes.files(attachment_id) == []


async def test_model_input_helper_is_authorized(make_routes: MakeRoutes) -> None:
    routes = await make_routes()
    attachment_id = (await routes.upload()).json["id"]
    attachments = routes.attachments
    assert attachments is not None
    assert await attachments.read_bytes(attachment_id, {"user": "alice"}) == PNG
    data_url = await attachments.data_url(attachment_id, {"user": "alice"})
    assert data_url.startswith("data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(NotFoundError):
        await attachments.read_bytes(attachment_id, {"user": "mallory"})


# -- the core, without a framework ---------------------------------------------------


async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    attachments = Attachments(tmp_path, secret="s")
    attachment_id = attachments.generate_attachment_id("text/plain", {})

    async def leaving() -> AsyncIterator[bytes]:
        yield b"x" * 3_000_000
        await asyncio.sleep(0)
        raise ConnectionResetError("client left")

    with pytest.raises(ConnectionResetError):
        await attachments.write(attachment_id, "a.bin", "application/octet-stream", leaving())
    assert files_under(tmp_path) == []
    assert await attachments.record(attachment_id) is None


def test_signatures_expire(tmp_path: Path) -> None:
    attachments = Attachments(tmp_path, secret="s", url_ttl=60)
    query = dict(part.split("=", 1) for part in attachments.signature("atc_" + "0" * 32).split("&"))
    assert attachments.verify("atc_" + "0" * 32, query["expires"], query["signature"])
    assert not attachments.verify("atc_" + "1" * 32, query["expires"], query["signature"])
    old = dict(
        part.split("=", 1)
        for part in attachments.signature("atc_" + "0" * 32, now=time.time() - 120).split("&")
    )
    assert not attachments.verify("atc_" + "0" * 32, old["expires"], old["signature"])
