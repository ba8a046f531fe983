"""Framework limits: timeouts never cut a ChatKit stream (Quart, Sanic); Quart's body
limit answers an upload with the JSON error.

Quart limits a whole response to ``RESPONSE_TIMEOUT`` (60 s by default) and Sanic cancels
a connection that sent nothing for its ``RESPONSE_TIMEOUT`` while it handles a request; a
model may stream, or think silently, for longer. Each test lowers the framework's timeout,
first shows that it does cut a plain streamed response of the same app (so the setting
is in force), then runs a ChatKit stream that outlasts it: every event arrives and the
stream ends with its last event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chatkit_app import ScriptedServer, create_thread, sse_events
from tests.conftest import load_client

TIMEOUT = 0.5
# deltas 0.15 s apart with a silent 1.5 s after the second: longer than the timeout both as
# a whole (Quart) and as one idle stretch (Sanic)
LONG_STREAM = create_thread(f"deltas=6 delay=0.15 idle={3 * TIMEOUT} idle_after=2")


def assert_complete(body: bytes) -> None:
    events = sse_events(body)
    updates = [e for e in events if e["type"] == "thread.item.updated"]
    assert len(updates) == 6, [e["type"] for e in events]
    assert events[-1]["type"] == "thread.item.done", events[-1]


async def call_asgi(app: Any, method: str, path: str, body: bytes = b"") -> tuple[bytes, bool]:
    """Run one request through an ASGI app: the body it sent and whether it ended it."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await done.wait()  # the client stays until the response ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    ended = bool(bodies) and not bodies[-1].get("more_body")
    return b"".join(m.get("body", b"") for m in bodies), ended


@pytest.mark.quart
async def test_quart_response_timeout_does_not_cut_a_stream(server: ScriptedServer) -> None:
    import quart

    app: quart.Quart = load_client("quart").make_app(server)
    app.config["RESPONSE_TIMEOUT"] = TIMEOUT

    @app.get("/slow")
    async def slow() -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"tick\n"
                await asyncio.sleep(TIMEOUT)

        return chunks()

    body, ended = await call_asgi(app, "GET", "/slow")
    assert not ended and body.count(b"tick") < 4  # Quart cut it at RESPONSE_TIMEOUT

    body, ended = await call_asgi(app, "POST", "/chatkit", LONG_STREAM)
    assert ended
    assert_complete(body)


@pytest.mark.sanic
async def test_sanic_response_timeout_does_not_cut_a_stream(server: ScriptedServer) -> None:
    from sanic import Request
    from sanic.response import json

    client: Any = load_client("sanic")(server)
    client.app.config.RESPONSE_TIMEOUT = TIMEOUT

    async def slow(request: Request) -> None:
        response = await request.respond(content_type="text/plain")
        await response.send(b"tick\n")
        await asyncio.sleep(3 * TIMEOUT)  # silent for longer than the timeout
        await response.send(b"tock\n")
        await response.eof()

    client.app.add_route(slow, "/slow")
    http = await client._start()
    try:
        plain = await http.get("/slow")
        cut = b"tock" not in plain.content
    except httpx.RemoteProtocolError:  # the connection closed mid-body
        cut = True
    assert cut  # Sanic cut it at RESPONSE_TIMEOUT

    # one connection for what follows: the stream's connection gets its timeout back
    async def probe(request: Request) -> Any:
        return json({"conn": id(request.protocol), "timeout": request.protocol.response_timeout})

    client.app.add_route(probe, "/probe")
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=http.base_url, limits=limits, timeout=30) as one:
        before = (await one.get("/probe")).json()
        response = await one.post("/chatkit", content=LONG_STREAM)
        assert response.status_code == 200
        assert_complete(response.content)
        after = (await one.get("/probe")).json()
    assert after == before == {"conn": before["conn"], "timeout": TIMEOUT}
    await client.aclose()


@pytest.mark.quart
async def test_quart_max_content_length_refuses_an_upload_as_the_json_413(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """Quart's own body limit still bounds uploads; its refusal is the JSON error."""
    from chatkit_adapters.attachments import Attachments
    from tests.http_clients.base import Response
    from tests.test_conformance import assert_json_error

    server.attachment_store = Attachments(tmp_path, secret="s")
    app = load_client("quart").make_routes_app(server)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for size, status in ((2000, 413), (100, 200)):
            files = {"file": ("a.bin", bytes(size), "application/octet-stream")}
            reply = await client.post("/chatkit/attachments", files=files)
            if status == 413:
                response = Response(reply.status_code, reply.headers, reply.content)
                assert_json_error(response, 413, "payload_too_large")
            assert reply.status_code == status, reply.text
