"""The core's one parse of a request: the same outcome as ``ChatKitServer.process``,
without ChatKit's per-request validator build, and never for a server that overrides
``process``."""

from __future__ import annotations

import importlib.metadata
import json
import os
from typing import Any

import chatkit.server
import pytest
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult

from chatkit_adapters import _core
from tests.chatkit_app import (
    ScriptedServer,
    add_message,
    create_thread,
    get_thread,
    list_threads,
    make_server,
    sse_events,
)
from tests.conftest import MEASUREMENTS

OPTIONS = _core.Options()


async def _via_core(server: ChatKitServer[Any], body: bytes) -> bytes:
    reply = await _core.process(server, body, {}, OPTIONS)
    if isinstance(reply, _core.JSONReply):
        return reply.body
    return b"".join([chunk async for chunk in reply.stream])


async def _via_chatkit(server: ChatKitServer[Any], body: bytes) -> bytes:
    result = await server.process(body, {})
    if isinstance(result, NonStreamingResult):
        return result.json
    assert isinstance(result, StreamingResult)
    return b"".join([chunk async for chunk in result])


def _shape(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e.get("item", {}).get("type", "")) for e in events]


def test_the_fast_path_state_is_reported() -> None:
    """A ChatKit release that changes ``process()`` turns the fast path off by itself (the
    core then calls ``process()``: correct, slower), and CI stays green: this reports it.
    To take it back, compare ``_core._process_parsed`` with the new ``process()`` and
    update ``_PROCESS_NAMES``. ``CHATKIT_ADAPTERS_PARSE_ONCE=0`` turns it off on purpose
    (the ``core-fallback`` tox env runs the core suite so)."""
    mirrors = ChatKitServer.process.__code__.co_names == _core._PROCESS_NAMES
    forced_off = os.environ.get("CHATKIT_ADAPTERS_PARSE_ONCE") == "0"
    assert _core.PARSE_ONCE is (mirrors and not forced_off)
    MEASUREMENTS.append(
        f"parse-once fast path: {'on' if _core.PARSE_ONCE else 'off'}"
        f" (chatkit {importlib.metadata.version('openai-chatkit')} process() mirrored:"
        f" {mirrors}; forced off: {forced_off})"
    )


async def test_parse_once_answers_as_chatkit_process_does() -> None:
    ours, theirs = make_server(write_delay=0), make_server(write_delay=0)
    streams = [sse_events(await _via_core(ours, create_thread("deltas=5")))]
    streams.append(sse_events(await _via_chatkit(theirs, create_thread("deltas=5"))))
    assert _shape(streams[0]) == _shape(streams[1])
    assert _shape(streams[0])[-1] == ("thread.item.done", "assistant_message")

    (thread_id,) = ours.journal_store.threads
    (other_id,) = theirs.journal_store.threads
    more = await _via_core(ours, add_message(thread_id, "deltas=2"))
    assert _shape(sse_events(more)) == _shape(
        sse_events(await _via_chatkit(theirs, add_message(other_id, "deltas=2")))
    )

    # same thread in both stores, same bytes
    theirs.journal_store.threads = ours.journal_store.threads
    theirs.journal_store.items = ours.journal_store.items
    for body in (get_thread(thread_id), list_threads()):
        answer = await _via_core(ours, body)
        assert answer == await _via_chatkit(theirs, body)
        assert json.loads(answer)


async def test_a_valid_request_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the fast path, by the core's validator built once (ChatKit builds none);
    without it, by ChatKit's process() alone (one build per request, none of ours)."""
    built: list[object] = []

    original = chatkit.server.TypeAdapter

    class Counting:  # ChatKit calls TypeAdapter[ChatKitReq](ChatKitReq)
        def __getitem__(self, item: Any) -> Counting:
            return self

        def __call__(self, *args: Any) -> Any:
            built.append(args)
            return original(*args)

    ours: list[bytes] = []
    validator = _core._REQUEST

    class CountingRequest:
        def validate_json(self, body: bytes) -> Any:
            ours.append(body)
            return validator.validate_json(body)

    monkeypatch.setattr(chatkit.server, "TypeAdapter", Counting())
    monkeypatch.setattr(_core, "_REQUEST", CountingRequest())
    server = make_server(write_delay=0)
    await _via_core(server, create_thread("deltas=2"))
    await _via_core(server, list_threads())
    if _core.PARSE_ONCE:
        assert (len(built), len(ours)) == (0, 2)
    else:
        assert (len(built), len(ours)) == (2, 0)
    built.clear()
    await _via_chatkit(server, list_threads())  # the counter does see ChatKit's own build
    assert len(built) == 1


class OwnProcess(ScriptedServer):
    """A server that accepts one more request kind of its own."""

    async def process(self, request: str | bytes | bytearray, context: Any) -> Any:
        if json.loads(request).get("type") == "custom.ping":
            return NonStreamingResult(b'{"pong":true}')
        return await super().process(request, context)


async def test_a_server_overriding_process_decides_alone() -> None:
    server = OwnProcess(make_server(write_delay=0).journal_store)
    assert await _via_core(server, b'{"type":"custom.ping","params":{}}') == b'{"pong":true}'
    reply = await _core.process(server, b'{"type":"nope"}', {}, OPTIONS)
    assert isinstance(reply, _core.JSONReply) and reply.status == 400
