"""Every runnable example imports, serves a stream and a JSON request, and keeps threads
per user. (The one-command demo is driven end to end in tests/test_browser.py.)"""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chatkit_app import create_thread, get_thread, sse_events

pytestmark = pytest.mark.examples

ASGI_EXAMPLES = {
    "starlette_app": "/chatkit",
    "fastapi_app": "/chatkit",
    "asgi_mounted": "/api/chatkit/",
    "litestar_app": "/chatkit",
    "quart_app": "/chatkit",
    "falcon_app": "/chatkit",
}


def load_example(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("aiosqlite")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'example.db'}")
    monkeypatch.setenv("DEMO_WORD_DELAY", "0")
    monkeypatch.setenv("ATTACHMENTS_URL", str(tmp_path / "files"))
    sys.modules.pop(f"examples.{name}", None)
    try:
        return importlib.import_module(f"examples.{name}")
    except ImportError as exc:
        pytest.skip(f"examples.{name} needs {exc.name}")


@pytest.mark.parametrize("name", ASGI_EXAMPLES)
async def test_asgi_example(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_example(name, tmp_path, monkeypatch)
    path = ASGI_EXAMPLES[name]
    transport = httpx.ASGITransport(app=module.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        alice = {"x-user-id": "alice"}
        response = await client.post(path, content=create_thread("hello"), headers=alice)
        assert response.status_code == 200
        events = sse_events(response.content)
        assert events[-1]["type"] == "thread.item.done"
        text = events[-1]["item"]["content"][0]["text"]
        assert "hello" in text
        thread_id = events[0]["thread"]["id"]
        response = await client.post(path, content=get_thread(thread_id), headers=alice)
        assert response.status_code == 200
        assert [i["type"] for i in json.loads(response.content)["items"]["data"]] == [
            "user_message",
            "assistant_message",
        ]
        # another user does not see alice's thread
        response = await client.post(
            path, content=get_thread(thread_id), headers={"x-user-id": "bob"}
        )
        assert response.status_code == 404
    await module.server.store.aclose()


async def test_aiohttp_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    module = load_example("aiohttp_app", tmp_path, monkeypatch)
    async with TestClient(TestServer(module.create_app())) as client:
        response = await client.post(
            "/chatkit", data=create_thread("hi"), headers={"x-user-id": "a"}
        )
        assert response.status == 200
        events = sse_events(await response.read())
        assert events[-1]["type"] == "thread.item.done"
    await module.server.store.aclose()


@pytest.mark.parametrize(
    ("name", "path"), [("flask_app", "/chatkit"), ("wsgi_dispatcher", "/chatkit")]
)
def test_wsgi_example(
    name: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("werkzeug")
    from werkzeug.test import Client

    module = load_example(name, tmp_path, monkeypatch)
    client = Client(module.app)
    response = client.post(path, data=create_thread("hello"), headers={"X-User-Id": "alice"})
    assert response.status_code == 200
    events = sse_events(response.get_data())
    assert events[-1]["type"] == "thread.item.done"
    thread_id = events[0]["thread"]["id"]
    response = client.post(path, data=get_thread(thread_id), headers={"X-User-Id": "bob"})
    assert response.status_code == 404
    from chatkit_adapters import _bridge

    _bridge.call(module.server.store.aclose(), timeout=10)  # on the loop that used it


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


async def check_attachments(client: httpx.AsyncClient, uploads: str) -> None:
    """An upload, its signed preview without credentials, and another user's 404."""
    files = {"file": ("dot.png", PNG, "image/png")}
    response = await client.post(uploads, files=files, headers={"x-user-id": "alice"})
    assert response.status_code == 200, response.text
    preview = response.json()["preview_url"]
    assert preview.startswith(f"{client.base_url}".rstrip("/") + uploads + "/")
    image = await client.get(preview)
    assert image.status_code == 200 and image.content == PNG
    owner_only = preview.split("?")[0]
    response = await client.get(owner_only, headers={"x-user-id": "bob"})
    assert response.status_code == 404


@pytest.mark.parametrize("name", ASGI_EXAMPLES)
async def test_asgi_example_attachments(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_example(name, tmp_path, monkeypatch)
    uploads = ASGI_EXAMPLES[name].rstrip("/") + "/attachments"
    transport = httpx.ASGITransport(app=module.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        await check_attachments(client, uploads)


@pytest.mark.parametrize(("name", "attr"), [("flask_app", "app"), ("falcon_app", "wsgi_app")])
def test_wsgi_example_attachments(
    name: str, attr: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from werkzeug.test import Client

    module = load_example(name, tmp_path, monkeypatch)
    client = Client(getattr(module, attr))
    data = {"file": (io.BytesIO(PNG), "dot.png", "image/png")}
    response = client.post("/chatkit/attachments", data=data, headers={"X-User-Id": "alice"})
    assert response.status_code == 200, response.get_data()
    preview = response.get_json()["preview_url"]
    assert preview.startswith("http://localhost/chatkit/attachments/atc_")
    image = client.get(preview)
    assert image.status_code == 200 and image.get_data() == PNG
    response = client.get(preview.split("?")[0], headers={"X-User-Id": "bob"})
    assert response.status_code == 404
    from chatkit_adapters import _bridge

    _bridge.call(module.server.store.aclose(), timeout=10)  # on the loop that used it


def test_falcon_wsgi_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.test import Client

    module = load_example("falcon_app", tmp_path, monkeypatch)
    client = Client(module.wsgi_app)
    response = client.post("/chatkit", data=create_thread("hi"), headers={"X-User-Id": "a"})
    assert response.status_code == 200
    events = sse_events(response.get_data())
    assert events[-1]["type"] == "thread.item.done"
    thread_id = events[0]["thread"]["id"]
    response = client.post("/chatkit", data=get_thread(thread_id), headers={"X-User-Id": "b"})
    assert response.status_code == 404
    from chatkit_adapters import _bridge

    _bridge.call(module.server.store.aclose(), timeout=10)  # on the loop that used it


async def test_sanic_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sanic")
    module = load_example("sanic_app", tmp_path, monkeypatch)
    from tests.http_clients.sanic import serve

    served = await serve(module.app)
    await served.startup()
    await served.before_start()
    await served.after_start()
    port = served.server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            alice = {"x-user-id": "alice"}
            response = await client.post("/chatkit", content=create_thread("hi"), headers=alice)
            assert response.status_code == 200
            events = sse_events(response.content)
            assert events[-1]["type"] == "thread.item.done"
            thread_id = events[0]["thread"]["id"]
            response = await client.post(
                "/chatkit", content=get_thread(thread_id), headers={"x-user-id": "bob"}
            )
            assert response.status_code == 404
            await check_attachments(client, "/chatkit/attachments")
    finally:
        await served.before_stop()
        await served.close()
        await served.after_stop()
    await module.server.store.aclose()
