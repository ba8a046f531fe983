"""The core's hardening (issue 12): what it catches and what it lets through, the live-stream
registry under several loops, the parse-once fast path and its fallback, streams that cancel
themselves, and declared dependencies."""

from __future__ import annotations

import ast
import asyncio
import binascii
import importlib.metadata
import itertools
import logging
import re
import sys
import threading
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from chatkit.server import ChatKitServer

from chatkit_adapters import _bridge, _core, _sync
from chatkit_adapters._core import ChatKitHTTPError, ClientDisconnected, Options
from chatkit_adapters._pump import ERROR_EVENT, EventStream, drain, live_streams
from tests.chatkit_app import (
    JournalStore,
    ScriptedServer,
    create_thread,
    list_threads,
    make_server,
    sse_events,
)
from tests.http_clients.base import HttpClient
from tests.test_conformance import ERROR_EVENT as ERROR_EVENT_JSON

ROOT = Path(__file__).resolve().parent.parent

# -- 3. catch only what you mean ----------------------------------------------------------


async def _chunks(*items: bytes | BaseException) -> AsyncIterator[bytes]:
    for item in items:
        if isinstance(item, BaseException):
            raise item
        yield item


async def test_a_body_the_server_cannot_deliver_is_400() -> None:
    with pytest.raises(ChatKitHTTPError) as caught:
        await _core.read_body(_chunks(b"{", ConnectionResetError()), Options())
    assert caught.value.status == 400


async def test_a_server_parse_error_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = types.ModuleType("gunicorn.http.errors")

    class ParseException(Exception):
        pass

    class InvalidChunkSize(ParseException):
        pass

    errors.ParseException = ParseException  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gunicorn.http.errors", errors)
    with pytest.raises(ChatKitHTTPError) as caught:
        _core.read_body_sync(itertools.chain([b"x"], _raising(InvalidChunkSize())), Options())
    assert caught.value.status == 400


def _raising(exc: BaseException) -> Any:
    raise exc
    yield b""  # pragma: no cover - makes this a generator


async def test_a_bug_while_reading_propagates() -> None:
    with pytest.raises(TypeError, match="a bug"):
        await _core.read_body(_chunks(b"{", TypeError("a bug")), Options())
    with pytest.raises(TypeError, match="a bug"):
        _core.read_body_sync(_raising(TypeError("a bug")), Options())


class FrameworkDisconnect(Exception):
    pass


async def test_a_framework_disconnect_is_answered_with_nothing() -> None:
    with pytest.raises(ClientDisconnected):
        await _core.read_body(
            _chunks(b"{", FrameworkDisconnect()), Options(), (FrameworkDisconnect,)
        )
    reply = await _core.handle(
        make_server(write_delay=0),
        method="POST",
        headers=_sync.EnvironHeaders({}),
        body=lambda: _chunks(b"{", FrameworkDisconnect()),
        context=_core.ready_context({}),
        options=Options(),
        disconnects=(FrameworkDisconnect,),
    )
    assert isinstance(reply, _core.JSONReply) and reply.status == _core.CLIENT_CLOSED


class Base64Bug(ScriptedServer):
    """A server whose own code fails to decode base64 for a request that carries none."""

    async def load_threads_page(self) -> None:  # pragma: no cover - not used
        pass


async def test_binascii_errors_are_400_only_for_requests_that_carry_base64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server(write_delay=0)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise binascii.Error("Incorrect padding")

    monkeypatch.setattr(server.journal_store, "load_threads", broken)
    with pytest.raises(binascii.Error):
        await _core.process(server, list_threads(), {}, Options())
    transcribe = (
        b'{"type":"input.transcribe","params":{"audio_base64":"AAAAA","mime_type":"audio/webm"}}'
    )
    reply = await _core.process(make_server(write_delay=0), transcribe, {}, Options())
    assert isinstance(reply, _core.JSONReply) and reply.status == 400, reply


def test_a_failing_disconnect_probe_warns_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_sync, "_probe_warned", False)
    asked = 0

    def probe() -> bool:
        nonlocal asked
        asked += 1
        raise OSError("not a socket")

    server = make_server(write_delay=0)
    caplog.set_level(logging.DEBUG, logger="chatkit_adapters")
    for _ in range(2):
        body = create_thread("deltas=3")
        stream = _sync.handle(
            server,
            method="POST",
            headers=_sync.EnvironHeaders({"CONTENT_LENGTH": str(len(body))}),
            read=_reader(body),
            until_eof=False,
            context=dict,
            options=Options(),
            disconnected=probe,
        )
        assert isinstance(stream, _sync.SyncEventStream)
        try:
            events = sse_events(b"".join(stream))
        finally:
            stream.close()
        assert events[-1]["type"] == "thread.item.done"  # detection off, the stream goes on
    assert asked >= 2
    warnings = [r for r in caplog.records if "disconnect probe" in r.getMessage()]
    assert [r.levelno for r in warnings].count(logging.WARNING) == 1
    assert warnings[0].exc_info is not None


def _reader(data: bytes) -> Any:
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        chunk = data[position : position + size]
        position += len(chunk)
        return chunk

    return read


class _FailingClose:
    async def aclose(self) -> None:
        raise RuntimeError("the store's close failed")


def test_a_failing_close_is_not_reported_as_a_dead_loop(caplog: pytest.LogCaptureFixture) -> None:
    loop = _bridge.get_loop()
    reply = _core.StreamReply(stream=_FailingClose())  # type: ignore[arg-type]
    _sync.SyncEventStream(reply, loop, cleanup_timeout=1).close()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == ["closing a ChatKit stream failed"], messages


# -- 4. the live-stream registry under several loops ----------------------------------


async def _events(count: int) -> AsyncIterator[bytes]:
    for index in range(count):
        await asyncio.sleep(0)
        yield b"data: %d\n\n" % index


def test_registry_is_safe_across_loops() -> None:
    """Loops in three threads start and finish streams while a fourth drains and counts
    its own: no "changed size during iteration", no stream of another loop touched."""
    stop = threading.Event()
    errors: list[BaseException] = []
    started = [0]

    def churn() -> None:
        async def run() -> None:
            while not stop.is_set():
                streams = [EventStream(_events(3)) for _ in range(30)]
                for stream in streams:
                    await stream.prime()
                started[0] += len(streams)
                for stream in streams:
                    async for _ in stream:
                        pass
                    await stream.aclose()
                    assert not stream.cancelled_at  # another loop's drain() never cancels it

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: make races happen
    threads = [threading.Thread(target=churn) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()

        async def watch() -> int:
            counted = 0
            for _ in range(3000):
                counted += live_streams()
                await drain(timeout=1)
            return counted

        counted = asyncio.run(watch())
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        sys.setswitchinterval(interval)
    assert errors == []
    assert started[0] > 0 and counted > 0
    assert live_streams() == 0


# -- 6. the parse-once fast path: per call, and its fallback parses once ------------------


async def _answer(server: ChatKitServer[Any], body: bytes) -> bytes:
    reply = await _core.process(server, body, {}, Options())
    if isinstance(reply, _core.JSONReply):
        assert reply.status == 200, reply.body
        return reply.body
    return b"".join([chunk async for chunk in reply.stream])


async def test_a_wrapper_installed_on_process_at_run_time_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = ChatKitServer.process

    async def traced(self: Any, request: Any, context: Any) -> Any:  # an APM tool's patch
        calls.append("class")
        return await original(self, request, context)

    monkeypatch.setattr(ChatKitServer, "process", traced)
    server = make_server(write_delay=0)
    assert not _core.parses_once(server)
    events = sse_events(await _answer(server, create_thread("deltas=2")))
    assert events[-1]["type"] == "thread.item.done"
    await _answer(server, list_threads())
    assert calls == ["class", "class"]


async def test_a_wrapper_installed_on_one_server_is_called() -> None:
    server = make_server(write_delay=0)
    calls: list[str] = []
    original = server.process

    async def traced(request: Any, context: Any) -> Any:
        calls.append("instance")
        return await original(request, context)

    server.process = traced  # type: ignore[method-assign]
    assert not _core.parses_once(server)
    await _answer(server, list_threads())
    assert calls == ["instance"]
    assert _core.parses_once(make_server(write_delay=0)) == _core.PARSE_ONCE


async def test_without_the_fast_path_a_body_is_parsed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import chatkit.server

    built: list[object] = []
    original_adapter = chatkit.server.TypeAdapter

    class Counting:
        def __getitem__(self, item: Any) -> Counting:
            return self

        def __call__(self, *args: Any) -> Any:
            built.append(args)
            return original_adapter(*args)

    ours: list[bytes] = []

    class CountingRequest:
        def validate_json(self, body: bytes) -> Any:
            ours.append(body)
            return _core.TypeAdapter(_core.ChatKitReq).validate_json(body)

    monkeypatch.setattr(chatkit.server, "TypeAdapter", Counting())
    monkeypatch.setattr(_core, "_REQUEST", CountingRequest())
    monkeypatch.setattr(_core, "PARSE_ONCE", False)
    server = make_server(write_delay=0)
    await _answer(server, list_threads())
    assert (len(built), len(ours)) == (1, 0)  # ChatKit's process() parsed it; we did not
    bad = await _core.process(server, b'{"type":"nope"}', {}, Options())
    assert isinstance(bad, _core.JSONReply) and bad.status == 400  # still a 400
    assert store_untouched(server.journal_store)


def store_untouched(store: JournalStore) -> bool:
    return "load_thread" not in store.calls and "save_thread" not in store.calls


# -- 7. a stream that raises CancelledError by itself -------------------------------------


async def test_a_stream_cancelling_itself_ends_with_the_error_event(
    http_client: HttpClient, store: JournalStore, caplog: pytest.LogCaptureFixture
) -> None:
    # (the app is built before caplog starts capturing: Litestar's logging setup replaces
    # the root logger's handlers when an app is created)
    response = await http_client.post(create_thread("deltas=6 cancel_after=2"))
    assert response.status == 200
    events = sse_events(response.body)
    assert events[0]["type"] == "thread.created"
    assert [e["type"] for e in events].count("thread.item.updated") == 2
    assert events[-1] == ERROR_EVENT_JSON  # told the answer is cut short, not complete
    assert any("after its first event" in r.getMessage() for r in caplog.records)
    # ChatKit's own cancel handling ran, as in its test of such a responder
    (thread_id,) = store.threads
    kinds = [item.type for item in store.items[thread_id]]
    assert kinds == ["user_message", "assistant_message", "sdk_hidden_context"]


async def test_a_stream_cancelling_itself_before_its_first_event_is_an_error() -> None:
    async def gives_up() -> AsyncIterator[bytes]:
        await asyncio.sleep(0)
        raise asyncio.CancelledError()
        yield b""  # pragma: no cover

    stream = EventStream(gives_up())
    with pytest.raises(RuntimeError, match="CancelledError by itself"):
        await stream.prime()  # an error of the stream, not a cancel of the request task
    await stream.aclose()


async def test_our_own_cancel_still_ends_a_stream_silently() -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.001)
            yield b"data: {}\n\n"

    stream = EventStream(endless())
    await stream.prime()
    stream.cancel()
    chunks = [chunk async for chunk in stream]
    await stream.aclose()
    assert ERROR_EVENT not in chunks


# -- 5. every runtime import is a declared dependency --------------------------------------

_STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - _STDLIB - {"chatkit_adapters", "__future__"}


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9_.\-]+", requirement)
        assert match is not None, requirement
        names.add(match.group(0).lower().replace("_", "-"))
    return names


def test_every_runtime_import_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    extras = {
        name: _requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()
    }
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted((ROOT / "chatkit_adapters").rglob("*.py")):
        # a module's extra: its own name (flask.py -> flask), or a package's on its path
        # (stores/sql.py -> sql, stores/django/models.py -> django)
        parts = path.relative_to(ROOT / "chatkit_adapters").with_suffix("").parts
        allowed = set(core)
        for part in parts:
            allowed |= extras.get(part, set())
        provided = _top_level_names(allowed)
        for name in _imports(path):
            if name in provided or name.lower().replace("_", "-") in allowed:
                continue  # shipped by a declared distribution, or named like one
            dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if not dists & allowed:
                missing.append(f"{path.relative_to(ROOT)} imports {name} ({', '.join(dists)})")
    assert missing == [], "declare these in pyproject.toml:\n" + "\n".join(missing)


def _top_level_names(requirements: set[str]) -> set[str]:
    """The importable top-level names the installed *requirements* ship (two distributions
    may ship one name: ``multipart`` and python-multipart's shim of it)."""
    names = set()
    for requirement in requirements:
        try:
            files = importlib.metadata.distribution(requirement).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in files:
            top = file.parts[0]
            if top.endswith(".py"):
                names.add(top[:-3])
            elif not top.endswith((".dist-info", ".data")) and top != "..":
                names.add(top)
    return names
