"""What the server subprocesses serve: an adapter (``tests.apps``) or a reference app.

The server command lines are those of ``tests.realserver.SERVERS`` with ``tests.apps``
replaced by ``benchmarks.apps``, so every server the tests know is benchmarked the same
way. ``CHATKIT_BENCH_REFERENCE`` names a reference app (``benchmarks.references``);
without it the adapter named by ``CHATKIT_TEST_ADAPTER`` is served, exactly as in the
real-server tests.

A server command that runs its own module (``python -m tests.aiohttp_server ...``) is run
as ``python -m benchmarks.apps tests.aiohttp_server ...``: the app factories of
``tests.apps`` are pointed here first, then the module runs as ``__main__``.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

import tests.apps
from benchmarks.references import reference_app
from tests.chatkit_app import make_server

REFERENCE_ENV = "CHATKIT_BENCH_REFERENCE"

# the tests' factories, kept before _run_module points tests.apps at this module
_tests_app = tests.apps.app
_tests_aiohttp_app = tests.apps.aiohttp_app


def _reference() -> Any | None:
    name = os.environ.get(REFERENCE_ENV)
    return reference_app(name, make_server()) if name else None


def app() -> Any:
    built = _reference()
    return built if built is not None else _tests_app()


def aiohttp_app(argv: list[str] | None = None) -> Any:
    built = _reference()
    return built if built is not None else _tests_aiohttp_app(argv)


def __getattr__(name: str) -> Any:
    # other names a server command takes from tests.apps (e.g. ``asgi_app``, an app
    # object rather than a factory): the reference app itself, or tests.apps' attribute
    if name.startswith("__"):
        raise AttributeError(name)
    if os.environ.get(REFERENCE_ENV):
        built = _reference()
        globals()[name] = built
        return built
    return getattr(tests.apps, name)


def _run_module(module: str, args: list[str]) -> None:
    import benchmarks.apps as this

    tests.apps.app = this.app  # type: ignore[method-assign]
    tests.apps.aiohttp_app = this.aiohttp_app  # type: ignore[method-assign]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _run_module(sys.argv[1], sys.argv[2:])
