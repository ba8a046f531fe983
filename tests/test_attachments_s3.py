"""Attachments on a real S3-compatible server (SeaweedFS, started by the tests): what only
the bucket can show. The whole attachment suite also runs on S3
(``CHATKIT_TEST_ATTACHMENTS_BACKEND=s3``, ``tox -e s3``); here: the presigned GET redirect,
uploads straight to the bucket, and the sweep of what was never committed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import obstore
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_adapters.attachments import Attachments, sweep
from chatkit_adapters.starlette import chatkit_routes
from tests.chatkit_app import ScriptedServer
from tests.s3server import S3Server, s3  # noqa: F401  (the session fixture)
from tests.test_attachments import ALICE, GIF, OTHER, PNG, UserStore, multipart

pytestmark = pytest.mark.s3  # tox -e s3 (it serves the routes with Starlette)


def _attachments(server: S3Server, **options: Any) -> Attachments:
    return Attachments(
        server.url(f"s3test-{uuid.uuid4().hex}"),
        secret="shared",
        s3={
            "endpoint": server.endpoint,
            "access_key_id": server.access_key,
            "secret_access_key": server.secret_key,
            "region": server.region,
        },
        **options,
    )


def _context(request: Any) -> dict[str, str]:
    return {"user": request.headers.get("x-user", "")}


@pytest.fixture
async def app_client(s3: S3Server) -> AsyncIterator[tuple[httpx.AsyncClient, Attachments]]:  # noqa: F811
    attachments = _attachments(s3, direct_uploads=True)
    server = ScriptedServer(UserStore(write_delay=0.0))
    server.attachment_store = attachments
    app = Starlette(routes=[Mount("/chatkit", routes=chatkit_routes(server, context=_context))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        yield client, attachments


async def test_content_redirects_to_a_presigned_get_with_safe_headers(
    app_client: tuple[httpx.AsyncClient, Attachments],
) -> None:
    client, _ = app_client
    bucket = httpx.AsyncClient()
    try:
        for data, name, kind, served, disposition in (
            (PNG, "dot.png", "image/png", "image/png", "inline"),
            (
                b"<script>alert(1)</script>",
                "x.html",
                "text/html",
                "application/octet-stream",
                "attachment",
            ),
        ):
            body, headers = multipart(data, name=name, kind=kind)
            uploaded = await client.post(
                "/chatkit/attachments", content=body, headers={**headers, **ALICE}
            )
            assert uploaded.status_code == 200, uploaded.text
            content = f"/chatkit/attachments/{uploaded.json()['id']}/content"
            assert (await client.get(content, headers=OTHER)).status_code == 404  # authorized first
            answer = await client.get(content, headers=ALICE)
            assert answer.status_code == 302, answer.text
            assert answer.headers["cache-control"] == "no-store"
            location = answer.headers["location"]
            assert location.startswith("http://127.0.0.1:")  # the bucket, not the app
            got = await bucket.get(location)
            assert got.status_code == 200 and got.content == data
            assert got.headers["content-type"] == served
            assert got.headers["content-disposition"].startswith(disposition)
    finally:
        await bucket.aclose()


async def _create(client: httpx.AsyncClient, name: str, size: int, kind: str) -> dict[str, Any]:
    body = {"type": "attachments.create", "params": {"name": name, "size": size, "mime_type": kind}}
    answer = await client.post(
        "/chatkit/", content=json.dumps(body), headers={"content-type": "application/json", **ALICE}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def test_direct_uploads_go_to_the_bucket_which_enforces_length_and_type(
    app_client: tuple[httpx.AsyncClient, Attachments],
) -> None:
    client, attachments = app_client
    created = await _create(client, "dot.png", len(PNG), "image/png")
    upload = created["upload_descriptor"]
    assert upload["method"] == "PUT" and upload["url"].startswith("http://127.0.0.1:")
    content = f"/chatkit/attachments/{created['id']}/content"
    async with httpx.AsyncClient() as bucket:
        longer = await bucket.put(upload["url"], content=PNG + b"!", headers=upload["headers"])
        assert longer.status_code == 403  # the bucket refuses another Content-Length
        html = await bucket.put(upload["url"], content=PNG, headers={"content-type": "text/html"})
        assert html.status_code == 403  # and another Content-Type
        assert (await client.get(content, headers=ALICE)).status_code == 404  # nothing yet
        ok = await bucket.put(upload["url"], content=PNG, headers=upload["headers"])
        assert ok.status_code == 200, ok.text
        answer = await client.get(content, headers=ALICE)
        assert answer.status_code == 302  # committed on first read
        assert (await bucket.get(answer.headers["location"])).content == PNG
    assert await attachments.record(created["id"]) is not None


async def test_a_direct_upload_that_is_not_what_it_declared_is_never_served(
    app_client: tuple[httpx.AsyncClient, Attachments],
) -> None:
    client, attachments = app_client
    fake = b"<svg onload=alert(1)>" + b" " * 40  # declared image/png, same length as PNG?
    created = await _create(client, "dot.png", len(fake), "image/png")
    upload = created["upload_descriptor"]
    async with httpx.AsyncClient() as bucket:
        ok = await bucket.put(upload["url"], content=fake, headers=upload["headers"])
        assert ok.status_code == 200  # the bucket checks length and type, not bytes
    content = f"/chatkit/attachments/{created['id']}/content"
    assert (await client.get(content, headers=ALICE)).status_code == 404  # sniffed: refused
    keys = [str(o["path"]) for o in obstore.list(attachments.objects).collect()]
    assert f"{created['id']}/direct.bin" not in keys  # and deleted


async def test_sweep_removes_what_was_never_committed(s3: S3Server) -> None:  # noqa: F811
    attachments = _attachments(s3, direct_uploads=True)
    server = ScriptedServer(UserStore(write_delay=0.0))
    server.attachment_store = attachments
    app = Starlette(routes=[Mount("/chatkit", routes=chatkit_routes(server, context=_context))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app.test"
    ) as client:
        body, headers = multipart(GIF, name="kept.gif", kind="image/gif")
        kept = (
            await client.post("/chatkit/attachments", content=body, headers={**headers, **ALICE})
        ).json()["id"]
        never = (await _create(client, "never.png", 10, "image/png"))["id"]
    orphan = attachments.generate_attachment_id("text/plain", {})
    await obstore.put_async(attachments.objects, f"{orphan}/abc.bin", b"cut short")
    await obstore.put_async(attachments.objects, "not-ours/file.txt", b"left alone")

    assert await sweep(attachments, older_than=3600) == []  # too young
    deleted = await sweep(attachments, older_than=0)
    assert sorted(deleted) == sorted([f"{never}/pending.json", f"{orphan}/abc.bin"])
    keys = {str(o["path"]) for o in obstore.list(attachments.objects).collect()}
    assert f"{kept}/meta.json" in keys and "not-ours/file.txt" in keys
    assert await attachments.record(kept) is not None


def test_sweep_command(s3: S3Server) -> None:  # noqa: F811
    attachments = _attachments(s3)
    orphan = attachments.generate_attachment_id("text/plain", {})
    obstore.put(attachments.objects, f"{orphan}/abc.bin", b"x")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatkit_adapters.attachments",
            "sweep",
            attachments.location,
            "--older-than",
            "0",
        ],
        env={**os.environ, **s3.environ()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"deleted {orphan}/abc.bin" in result.stdout
