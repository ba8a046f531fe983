"""The behaviour table of design.md, written once, run against every adapter and variant."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatkit_adapters import ChatKitHTTPError
from tests.chatkit_app import (
    JournalStore,
    ScriptedServer,
    add_message,
    create_thread,
    get_thread,
    list_threads,
    sse_events,
)
from tests.conftest import MakeClient
from tests.http_clients.base import HttpClient, Response

ERROR_EVENT = {"type": "error", "code": "stream.error", "allow_retry": True}


def assert_json_error(response: Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status == status, response.body[:300]
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == error_type
    message = payload["error"]["message"]
    assert isinstance(message, str) and 0 < len(message) < 300
    assert "Traceback" not in message
    return payload["error"]  # type: ignore[no-any-return]


async def start_thread(client: HttpClient, text: str = "deltas=3") -> str:
    response = await client.post(create_thread(text))
    assert response.status == 200
    return str(sse_events(response.body)[0]["thread"]["id"])


# -- valid requests ---------------------------------------------------------------------


async def test_non_streaming_returns_exact_result_json(
    http_client: HttpClient, server: ScriptedServer
) -> None:
    thread_id = await start_thread(http_client)
    response = await http_client.post(get_thread(thread_id))
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    direct = await server.process(get_thread(thread_id), {})
    assert response.body == direct.json  # type: ignore[union-attr]
    assert response.json["id"] == thread_id


async def test_threads_list(http_client: HttpClient) -> None:
    thread_id = await start_thread(http_client)
    response = await http_client.post(list_threads())
    assert response.status == 200
    assert [t["id"] for t in response.json["data"]] == [thread_id]


async def test_streaming_response(http_client: HttpClient, store: JournalStore) -> None:
    response = await http_client.post(create_thread("deltas=4"))
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    assert response.body.endswith(b"\n\n")
    events = sse_events(response.body)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "thread.created"
    assert kinds.count("thread.item.updated") == 4
    assert kinds[-1] == "thread.item.done"
    assert events[-1]["item"]["content"][0]["text"] == "w0 w1 w2 w3 "
    # every byte of the body is part of a well-framed event
    assert all(block.startswith(b"data: ") for block in response.body.split(b"\n\n")[:-1])
    thread_id = events[0]["thread"]["id"]
    assert [i.type for i in store.items[thread_id]] == ["user_message", "assistant_message"]


async def test_streaming_follow_up_message(http_client: HttpClient, store: JournalStore) -> None:
    thread_id = await start_thread(http_client)
    response = await http_client.post(add_message(thread_id, "deltas=2"))
    assert response.status == 200
    kinds = [e["type"] for e in sse_events(response.body)]
    assert kinds[0] == "thread.item.done"  # the user message
    assert kinds.count("thread.item.updated") == 2
    assert len(store.items[thread_id]) == 4


# -- bad input --------------------------------------------------------------------------

BAD_BODIES = {
    "empty": b"",
    "truncated": b'{"type": "threads.get_by_id", "params": {"thread_id": ',
    "not-json": b"hello",
    "array": b"[]",
    "unknown-type": b'{"type": "threads.explode", "params": {}}',
    "missing-params": b'{"type": "threads.get_by_id"}',
    "wrong-type": b'{"type": "threads.get_by_id", "params": {"thread_id": 42}}',
    "invalid-utf8": b'{"type": "threads.get_by_id", "params": {"thread_id": "\xff\xfe"}}',
    "streaming-wrong": b'{"type": "threads.create", "params": {"input": "x"}}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_body_is_400_and_touches_nothing(
    http_client: HttpClient, store: JournalStore, body: bytes
) -> None:
    response = await http_client.post(body)
    assert_json_error(response, 400, "invalid_request")
    assert store.calls == []


async def test_error_message_is_a_short_excerpt(http_client: HttpClient) -> None:
    secret = "<script>" + "A" * 5000
    body = json.dumps({"type": secret, "params": {}}).encode()
    error = assert_json_error(await http_client.post(body), 400, "invalid_request")
    assert "A" * 100 not in error["message"]


async def test_body_too_large_by_content_length(
    make_client: MakeClient, store: JournalStore
) -> None:
    client = await make_client(max_body_size=100)
    response = await client.post(create_thread("x" * 200))
    assert_json_error(response, 413, "payload_too_large")
    assert store.calls == []


async def test_body_too_large_without_content_length(
    make_client: MakeClient, store: JournalStore
) -> None:
    client = await make_client(max_body_size=1000)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b" " * 100

    response = await client.post(chunks())
    assert_json_error(response, 413, "payload_too_large")
    assert store.calls == []
    if client.body_read_on_demand:
        # refused while reading: the chunk that crossed 1000 bytes was the last one taken
        assert sent == 11, sent
    else:
        # the framework or the transport took the whole body before the adapter saw it
        # (Django's ASGIHandler; aiohttp's client writing into socket buffers): the 413
        # still comes from the adapter's limit, decided on what it was given
        assert sent == 100, sent


async def test_body_at_the_limit_is_accepted(make_client: MakeClient) -> None:
    body = list_threads()
    client = await make_client(max_body_size=len(body))
    assert (await client.post(body)).status == 200


async def test_invalid_content_length_is_400(http_client: HttpClient) -> None:
    # sent as given (httpx, werkzeug's environ, a raw socket for aiohttp); where the
    # framework's own HTTP parser refuses it first (aiohttp), its 400 is plain text
    response = await http_client.post(list_threads(), headers={"content-length": "12abc"})
    if http_client.server_refuses_bad_content_length:
        assert response.status == 400, response.body[:300]
        # about the header: aiohttp says "Content-Length", Sanic "Bad content length"
        assert b"content-length" in response.body.lower().replace(b" ", b"-"), response.body
    else:
        error = assert_json_error(response, 400, "invalid_request")
        assert "12abc" in error["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_get_405_with_allow(http_client: HttpClient, method: str) -> None:
    response = await http_client.request(method)
    assert response.status == 405
    assert "POST" in response.headers["allow"]
    if http_client.variant in http_client.own_405_variants:
        assert_json_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "POST"


# -- store errors -----------------------------------------------------------------------


async def test_not_found_non_streaming_is_404(http_client: HttpClient) -> None:
    assert_json_error(await http_client.post(get_thread("thr_missing")), 404, "not_found")


async def test_not_found_before_first_event_is_404(http_client: HttpClient) -> None:
    response = await http_client.post(add_message("thr_missing"))
    assert_json_error(response, 404, "not_found")


async def test_error_before_first_event_gets_a_real_status(http_client: HttpClient) -> None:
    thread_id = await start_thread(http_client)
    response = await http_client.post(add_message(thread_id, "fail_store"))
    assert response.status == 500
    assert b"data:" not in response.body


async def test_error_after_first_event_ends_stream_with_error_event(
    http_client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await http_client.post(create_thread("fail_store"))
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.body.endswith(b"\n\n")
    events = sse_events(response.body)
    assert events[0]["type"] == "thread.created"
    assert events[-1] == ERROR_EVENT
    assert any("after its first event" in r.getMessage() for r in caplog.records)


# -- context factory --------------------------------------------------------------------


async def test_context_factory_sees_native_request(
    make_client: MakeClient, store: JournalStore
) -> None:
    seen: list[Any] = []

    def context(request: Any) -> dict[str, Any]:
        user = type(client).header(request, "x-user")
        seen.append(user)
        return {"user": user}

    client = await make_client(context=context)
    response = await client.post(create_thread(), headers={"x-user": "alice"})
    assert response.status == 200
    assert seen == ["alice"]


async def test_async_context_factory(make_client: MakeClient) -> None:
    client = await make_client()
    if not client.async_context:
        pytest.skip(f"{client.name} context factories are sync")

    async def context(request: Any) -> dict[str, Any]:
        return {"user": "async"}

    client = await make_client(context=context)
    assert (await client.post(list_threads())).status == 200


async def test_context_factory_rejects_with_chatkit_http_error(
    make_client: MakeClient, store: JournalStore
) -> None:
    def context(request: Any) -> Any:
        raise ChatKitHTTPError(401, "Missing credentials", headers={"WWW-Authenticate": "Bearer"})

    client = await make_client(context=context)
    if client.variant == "response":
        pytest.skip("a user-written route builds its context outside the adapter")
    response = await client.post(create_thread())
    error = assert_json_error(response, 401, "unauthorized")
    assert error["message"] == "Missing credentials"
    assert response.headers["www-authenticate"] == "Bearer"
    assert store.calls == []


async def test_context_factory_framework_exception_propagates(
    make_client: MakeClient, store: JournalStore
) -> None:
    client_class: list[type[HttpClient]] = []

    def context(request: Any) -> Any:
        raise client_class[0].unauthorized()

    client = await make_client(context=context)
    client_class.append(type(client))
    response = await client.post(create_thread())
    assert response.status == 401
    assert store.calls == []


# -- options ----------------------------------------------------------------------------


async def test_require_json(make_client: MakeClient, store: JournalStore) -> None:
    client = await make_client(require_json=True)
    response = await client.post(list_threads(), headers={"content-type": "text/plain"})
    assert_json_error(response, 415, "unsupported_media_type")
    assert store.calls == []
    response = await client.post(
        list_threads(), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status == 200


async def test_any_content_type_by_default(http_client: HttpClient) -> None:
    response = await http_client.post(list_threads(), headers={"content-type": "text/plain"})
    assert response.status == 200


async def test_heartbeats_while_idle(make_client: MakeClient) -> None:
    """Heartbeats go out while the answer is idle (1 s, 20 heartbeat periods, after its
    first delta), framed as SSE comments between whole events. (The
    count is not asserted: it depends on scheduling; the real-server test counts five
    before a delta that cannot come earlier.)"""
    client = await make_client(heartbeat=0.05)
    response = await client.post(create_thread("deltas=3 idle=1 idle_after=1"))
    assert response.status == 200
    blocks = response.body.split(b"\n\n")
    kinds = [b"ping" if b == b": ping" else b for b in blocks if b]
    assert all(b == b"ping" or b.startswith(b"data: ") for b in kinds), kinds
    first, second = [i for i, b in enumerate(kinds) if b"thread.item.updated" in b][:2]
    assert b"ping" in kinds[first:second], kinds
    events = sse_events(response.body)
    assert events[-1]["item"]["content"][0]["text"] == "w0 w1 w2 "


async def test_no_heartbeats_by_default(http_client: HttpClient) -> None:
    response = await http_client.post(create_thread("deltas=3 idle=0.3 idle_after=1"))
    assert b": ping" not in response.body
