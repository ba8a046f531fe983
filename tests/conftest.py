"""Fixtures: the scripted ChatKit server, and one client per installed adapter and variant.

``http_client`` is parametrized over every client in ``tests.http_clients.CLIENTS`` and
each of its variants. A client whose framework package is not installed is skipped, saying
so; under ``CI=true`` it fails instead (an env that selects a framework's marker must have
that framework). A client module that does not import although its framework is installed
(a broken adapter) fails the run everywhere: it is never turned into a skip. Tests request
``make_client`` to pass options or a context factory.

PostgreSQL (``tests.pgserver``) and Chromium (``tests/test_browser.py``) follow the same
rule (``tests.needs``): missing under ``CI=true`` fails the run, unless a local run opts out
with ``CHATKIT_TEST_NO_POSTGRES=1`` or ``CHATKIT_TEST_NO_BROWSER=1``.
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.chatkit_app import JournalStore, ScriptedServer, make_server
from tests.http_clients import CLIENTS, framework_of
from tests.http_clients.base import HttpClient
from tests.needs import IN_CI, installed, require_package
from tests.pgserver import postgres_url  # noqa: F401  (a session fixture)

MEASUREMENTS: list[str] = []

# A shell without job control starts background commands with SIGINT ignored, and child
# processes inherit that: the servers these tests stop with SIGINT (Ctrl-C) would not stop.
# A handled signal is reset to its default in a child, so handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# test modules that import a framework (or tool) at the top: module -> (package, marker)
MODULE_NEEDS = {
    "test_aiohttp.py": ("aiohttp", "aiohttp"),
    "test_django.py": ("django", "django"),
    "test_flask.py": ("flask", "flask"),
    "test_litestar.py": ("litestar", "litestar"),
    "test_fuzz.py": ("hypothesis", "reliability"),
}
_not_collected: list[str] = []


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    """A module of ``MODULE_NEEDS`` is not collected where its package is not installed,
    except under ``CI=true`` when ``-m`` selects its marker: there it is collected, and its
    import error fails the run. (Not a skip: a module of another env is simply not run.)"""
    needs = MODULE_NEEDS.get(collection_path.name)
    if needs is None or installed(needs[0]):
        return None
    package, marker = needs
    if IN_CI and _selects(marker, config.option.markexpr):
        return None
    _not_collected.append(f"{collection_path.name} ({package} is not installed)")
    return True


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"not collected: {', '.join(_not_collected)}"] if _not_collected else []


def _selects(marker: str, markexpr: str) -> bool:
    """Whether the ``-m`` expression *markexpr* selects a test marked only *marker*."""
    if not markexpr:
        return True
    from _pytest.mark.expression import Expression

    return Expression.compile(markexpr).evaluate(lambda name, **_: name == marker)


def load_client(name: str) -> type[HttpClient]:
    """The client class *name* of ``CLIENTS``. Skips when its framework package is not
    installed (fails under ``CI=true``); any import error of an installed framework's client
    (a broken adapter import) propagates and fails the test."""
    require_package(framework_of(name))
    module_name, _, attr = CLIENTS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def _client_params() -> list[Any]:
    params = []
    for name in CLIENTS:
        # a client is imported at collection when its framework is there (so a broken
        # import is a collection error); otherwise its tests skip or fail at setup
        variants = load_client(name).variants if installed(framework_of(name)) else ("view",)
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
