"""aiohttp specifics the conformance suite cannot express."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from tests.chatkit_app import JournalStore, ScriptedServer, create_thread
from tests.http_clients.aiohttp import AiohttpClient

pytestmark = pytest.mark.aiohttp


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_client_leaving_during_the_upload_is_not_an_error(
    server: ScriptedServer,
    store: JournalStore,
    caplog: pytest.LogCaptureFixture,
    handler_cancellation: bool,
) -> None:
    entered, exited = asyncio.Event(), asyncio.Event()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        entered.set()
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            exited.set()

    app = AiohttpClient.make_app(server)
    app.middlewares.append(record)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        _, writer = await asyncio.open_connection(host, port)
        head = b"POST /chatkit HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"
        writer.write(head + b'{"type": ')
        await writer.drain()
        await asyncio.wait_for(entered.wait(), 5)  # the handler is reading the body
        writer.close()
        await asyncio.wait_for(exited.wait(), 5)  # and it has finished
    finally:
        await runner.cleanup()
    assert store.calls == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_disconnect_cleanup_completes_before_the_handler_returns(
    server: ScriptedServer, store: JournalStore, handler_cancellation: bool
) -> None:
    finished: list[list[str]] = []

    @web.middleware
    async def record_exit(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            finished.append([i.type for items in store.items.values() for i in items])

    app = AiohttpClient.make_app(server)
    app.middlewares.append(record_exit)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        reader, writer = await asyncio.open_connection(host, port)
        body = create_thread("deltas=1000 delay=0.01")
        head = f"POST /chatkit HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        received = b""
        while received.count(b"thread.item.updated") < 3:
            received += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        for _ in range(500):
            if finished:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.cleanup()
    assert finished == [["user_message", "assistant_message", "sdk_hidden_context"]]
