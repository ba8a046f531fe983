"""Litestar specifics the conformance suite cannot express: guards, hooks, body limits."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request

from chatkit_adapters.litestar import chatkit_view
from tests.chatkit_app import JournalStore, ScriptedServer, create_thread, list_threads
from tests.http_clients.litestar import LitestarClient

pytestmark = pytest.mark.litestar


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_guard_rejects_before_anything_is_stored(
    server: ScriptedServer, store: JournalStore
) -> None:
    app = LitestarClient.make_app(server, variant="middleware")
    async with client(app) as http:
        response = await http.post("/chatkit", content=create_thread(), headers={"x-deny": "1"})
    assert response.status_code == 401
    assert store.calls == []


async def test_body_already_read_by_a_hook_still_reaches_chatkit(server: ScriptedServer) -> None:
    async def read_body(request: Request[Any, Any, Any]) -> None:
        assert await request.body() == list_threads()

    app = Litestar(route_handlers=[chatkit_view(server)], before_request=read_body)
    async with client(app) as http:
        response = await http.post("/chatkit", content=list_threads())
    assert response.status_code == 200


@pytest.mark.skipif(
    "request_max_body_size" not in inspect.signature(Litestar).parameters,
    reason="Litestar < 2.13 has no body limit of its own",
)
async def test_max_body_size_replaces_litestars_limit(server: ScriptedServer) -> None:
    app = Litestar(
        route_handlers=[chatkit_view(server, path="/ck", max_body_size=1000)],
        request_max_body_size=100,
    )
    async with client(app) as http:
        accepted = await http.post("/ck", content=create_thread("x" * 300))
        refused = await http.post("/ck", content=create_thread("x" * 2000))
    assert accepted.status_code == 200
    assert refused.status_code == 413
    assert refused.json()["error"]["type"] == "payload_too_large"
