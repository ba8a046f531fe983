"""Django specifics the shared suites do not cover: ``request.user`` in the context factory,
Django's own ways to reject a request, a sync view under ASGI, the right iterator kind, and
concurrent streams under real ASGI and WSGI servers."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import AsyncToSync, iscoroutinefunction, sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.http import Http404, HttpResponseRedirect

from chatkit_adapters.django import chatkit_view
from tests.chatkit_app import (
    ScriptedServer,
    create_thread,
    get_thread,
    list_threads,
    sse_events,
)
from tests.conftest import MEASUREMENTS
from tests.http_clients.django import (
    ASGIApp,
    DjangoClient,
    DjangoWSGIClient,
    URLConf,
    user_view,
)
from tests.rawhttp import open_stream, request
from tests.realserver import (
    RunningServer,
    answers_http,
    free_port,
    serving,
    start_server,
)

pytestmark = pytest.mark.django

# The in-memory database lives as long as this (main) thread's connection stays open.
call_command("migrate", verbosity=0, interactive=False)

CLIENTS = {"asgi": DjangoClient, "wsgi": DjangoWSGIClient}


def login_cookie(username: str) -> str:
    """A session cookie of a freshly created, logged-in user (sync ORM: run in a thread)."""
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(username, password="unused")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


@pytest.mark.parametrize("kind", CLIENTS)
async def test_sync_factory_uses_request_user(server: ScriptedServer, kind: str) -> None:
    seen: list[str] = []

    def context(request: Any) -> dict[str, Any]:
        if not request.user.is_authenticated:  # a lazy, sync-only database lookup
            raise PermissionDenied
        seen.append(request.user.username)
        return {"user": request.user.username}

    client = CLIENTS[kind](server, context=context)
    try:
        assert (await client.post(list_threads())).status == 403
        cookie = await asyncio.to_thread(login_cookie, f"user-{kind}")
        response = await client.post(create_thread(), headers={"cookie": cookie})
        assert response.status == 200, response.body[:300]
        assert sse_events(response.body)[-1]["type"] == "thread.item.done"
        assert seen == [f"user-{kind}"]
    finally:
        await client.aclose()


@pytest.mark.parametrize("kind", CLIENTS)
async def test_async_factory_uses_request_user(server: ScriptedServer, kind: str) -> None:
    async def context(request: Any) -> dict[str, Any]:
        if hasattr(request, "auser"):  # Django >= 5.0
            return {"user": (await request.auser()).username}
        return {"user": await sync_to_async(lambda: request.user.username)()}

    client = CLIENTS[kind](server, context=context)
    try:
        assert (await client.post(list_threads())).status == 200
    finally:
        await client.aclose()


def not_found(request: Any) -> Any:
    raise Http404("no chat here")


def redirect(request: Any) -> Any:
    return HttpResponseRedirect("/login/?next=/chatkit")


async def async_redirect(request: Any) -> Any:
    return HttpResponseRedirect("/login/?next=/chatkit")


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    ("factory", "status"), [(not_found, 404), (redirect, 302), (async_redirect, 302)]
)
async def test_factory_answers_the_django_way(
    server: ScriptedServer, kind: str, factory: Any, status: int
) -> None:
    client = CLIENTS[kind](server, context=factory)
    try:
        response = await client.post(create_thread())
        assert response.status == status
        if status == 302:
            assert response.headers["location"] == "/login/?next=/chatkit"
        assert server.journal_store.calls == []
    finally:
        await client.aclose()


async def test_sync_view_under_asgi_streams(server: ScriptedServer) -> None:
    """``chatkit_response`` in a sync view under ASGI still serves an async iterator."""
    app = ASGIApp(URLConf(user_view(server, None, sync=True)))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            response = await client.post("/chatkit", content=create_thread("deltas=3"))
            assert (await client.post("/chatkit", content=list_threads())).status_code == 200
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert sse_events(response.content)[-1]["type"] == "thread.item.done"
        assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
    finally:
        await client.aclose()


def test_view_is_a_coroutine_function_only_on_an_event_loop(server: ScriptedServer) -> None:
    """Django asks from the thread that will call the view: its ASGI handler on the loop
    (awaited there), its WSGI handler in the request thread (called like a sync view)."""
    view = chatkit_view(server)

    async def on_loop() -> bool:
        return iscoroutinefunction(view)

    assert not iscoroutinefunction(view)
    assert asyncio.run(on_loop())
    assert view.__name__ == "chatkit" and view.csrf_exempt  # type: ignore[attr-defined]


async def test_wsgi_requests_need_no_async_to_sync(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under WSGI the view runs in the request thread: no event loop is started per request."""
    calls: list[object] = []
    original = AsyncToSync.__call__

    def counted(self: AsyncToSync, *args: Any, **kwargs: Any) -> Any:
        calls.append(self.awaitable)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncToSync, "__call__", counted)
    client = DjangoWSGIClient(server, context=lambda request: {"user": "u"})
    try:
        assert (await client.post(list_threads())).status == 200
        response = await client.post(create_thread("deltas=3"))
        assert response.status == 200
        assert sse_events(response.body)[-1]["type"] == "thread.item.done"
        assert calls == []
    finally:
        await client.aclose()


async def test_sync_decorator_around_the_view_under_asgi(server: ScriptedServer) -> None:
    """``login_required(chatkit_view(...))`` is decorated at import time, off any loop, so
    Django sees a sync view and runs it in a thread; the stream still runs on the loop."""
    view = login_required(chatkit_view(server, context=lambda request: {"user": "u"}))
    view.csrf_exempt = True  # type: ignore[attr-defined]
    app = ASGIApp(URLConf(view))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
    try:
        refused = await client.post("/chatkit", content=create_thread())
        assert refused.status_code == 302 and server.journal_store.calls == []
        cookie = await asyncio.to_thread(login_cookie, "decorated")
        response = await client.post(
            "/chatkit", content=create_thread("deltas=3"), headers={"cookie": cookie}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert sse_events(response.content)[-1]["type"] == "thread.item.done"
    finally:
        await client.aclose()


@pytest.mark.parametrize("kind", CLIENTS)
async def test_no_wrong_iterator_kind_warning(server: ScriptedServer, kind: str) -> None:
    client = CLIENTS[kind](server)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            response = await client.post(create_thread("deltas=3"))
        assert response.status == 200
        assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
    finally:
        await client.aclose()


# -- the example project ---------------------------------------------------------------

EXAMPLE_COMMANDS = {
    "uvicorn": ["-m", "uvicorn", "examples.django_project.asgi:application", "--port"],
    "runserver": ["examples/django_project/manage.py", "runserver", "--noreload"],
}


@pytest.mark.examples
@pytest.mark.parametrize("command", EXAMPLE_COMMANDS)
def test_example_project(command: str, tmp_path: Path) -> None:
    pytest.importorskip("aiosqlite")
    port = free_port()
    address = ("127.0.0.1", port)
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}",
        "DEMO_WORD_DELAY": "0",
        "DJANGO_SETTINGS_MODULE": "examples.django_project.settings",
    }
    argv = [sys.executable, *EXAMPLE_COMMANDS[command], str(port)]
    with serving(argv, tmp_path / "server.log", answers_http(address), env, timeout=30):
        stream = open_stream(address, create_thread("hello"), headers={"x-user-id": "al"})
        stream.read_head()
        assert stream.status == 200
        events = [e.data for e in stream.read_all() if e.data is not None]
        stream.close()
        assert events[-1]["type"] == "thread.item.done"
        thread_id = events[0]["thread"]["id"]
        other = open_stream(address, get_thread(thread_id), headers={"x-user-id": "bob"})
        other.read_head()
        assert other.status == 404  # threads are per user
        other.close()


# -- real servers -----------------------------------------------------------------------

CONCURRENT = 20


@pytest.fixture(
    params=[
        ("django", "uvicorn"),
        ("django", "daphne"),
        ("django_wsgi", "gunicorn-gthread"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    adapter, server = request.param
    workdir: Path = tmp_path_factory.mktemp(f"{adapter}-{server}")
    started = start_server(adapter, server, workdir)
    try:
        deadline = time.monotonic() + 30
        while True:  # gunicorn listens before its worker has imported the app
            try:
                request_ok = request_status(started)
            except (OSError, AssertionError):
                request_ok = False
            if request_ok or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        yield started
    finally:
        started.stop()


def request_status(running: RunningServer) -> bool:
    return request(running.address, list_threads()).status == 200


@pytest.mark.realserver
def test_twenty_concurrent_streams(running: RunningServer, request: pytest.FixtureRequest) -> None:
    """20 concurrent streams run at the same time: each answer starts only once all 20 have
    started in the server (``gate=NAME/20``, tests.apps); serialised, the first would wait
    for the others and end with ChatKit's error event after 30 s."""
    body = create_thread(f"deltas=10 delay=0.1 gate=django/{CONCURRENT}")
    results: list[int] = []

    def one() -> None:
        stream = open_stream(running.address, body)
        stream.read_head()
        assert stream.status == 200
        events = stream.read_all()
        stream.close()
        assert events[-1].data is not None and events[-1].data["type"] == "thread.item.done"
        results.append(
            sum(e.data is not None and e.data["type"] == "thread.item.updated" for e in events)
        )

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert results == [10] * CONCURRENT
    MEASUREMENTS.append(
        f"{CONCURRENT} concurrent streams of 1 s [{request.node.callspec.id}]: {elapsed:.2f} s"
    )
