"""Fixtures: the scripted ChatKit server, and one client per installed adapter and variant.

``http_client`` is parametrized over every client in ``tests.http_clients.CLIENTS`` whose
framework is installed (others are skipped with the import error as the reason), and over
each client's variants. Tests request ``make_client`` to pass options or a context factory.
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.chatkit_app import JournalStore, ScriptedServer, make_server
from tests.http_clients import CLIENTS
from tests.http_clients.base import HttpClient
from tests.pgserver import postgres_url  # noqa: F401  (a session fixture)

MEASUREMENTS: list[str] = []

# A shell without job control starts background commands with SIGINT ignored, and child
# processes inherit that: the servers these tests stop with SIGINT (Ctrl-C) would not stop.
# A handled signal is reset to its default in a child, so handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def load_client(name: str) -> type[HttpClient]:
    module_name, _, attr = CLIENTS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.skip(f"{name} client unavailable: {exc}")
    return getattr(module, attr)  # type: ignore[no-any-return]


def _client_params() -> list[Any]:
    params = []
    for name in CLIENTS:
        try:
            variants = load_client(name).variants
        except pytest.skip.Exception:
            variants = ("view",)
        for variant in variants:
            params.append(
                pytest.param(
                    (name, variant),
                    id=f"{name}-{variant}",
                    marks=[getattr(pytest.mark, name.split("_")[0])],
                )
            )
    return params


@pytest.fixture
def server() -> ScriptedServer:
    return make_server(write_delay=0.001, journal="")


@pytest.fixture
def store(server: ScriptedServer) -> JournalStore:
    return server.journal_store


MakeClient = Callable[..., Awaitable[HttpClient]]


@pytest.fixture(params=_client_params())
async def make_client(
    request: pytest.FixtureRequest, server: ScriptedServer
) -> AsyncIterator[MakeClient]:
    name, variant = request.param
    client_class = load_client(name)
    clients: list[HttpClient] = []

    async def factory(context: Any = None, **options: Any) -> HttpClient:
        client = client_class(server, context=context, variant=variant, **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def http_client(make_client: MakeClient) -> HttpClient:
    return await make_client()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("chatkit-adapters measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
