"""Real servers in subprocesses on 127.0.0.1, each started on a free port, stopped by PID."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
Popen = subprocess.Popen[bytes]

# name -> command (with {port}) ; every command serves tests.apps:app
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tests.apps:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ],
    "aiohttp": lambda port: [
        sys.executable,
        "-m",
        "aiohttp.web",
        "-H",
        "127.0.0.1",
        "-P",
        str(port),
        "tests.apps:aiohttp_app",
    ],
    "aiohttp-cancel": lambda port: [
        sys.executable,
        "-m",
        "tests.aiohttp_server",
        "127.0.0.1",
        str(port),
    ],
    "gunicorn-gthread": lambda port: [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "32",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "tests.apps:app()",
    ],
    "gunicorn-preload": lambda port: [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "8",
        "-w",
        "2",
        "--preload",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "tests.apps:app()",
    ],
    "waitress": lambda port: [
        sys.executable,
        "-m",
        "waitress",
        "--host",
        "127.0.0.1",
        f"--port={port}",
        "--threads=32",
        "--channel-request-lookahead=1",
        "--outbuf-high-watermark=262144",
        "--call",
        "tests.apps:app",
    ],
    "daphne": lambda port: [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "tests.apps:asgi_app",
    ],
    # uvicorn cancelling the requests still running 1 s after SIGTERM
    "uvicorn-graceful": lambda port: [
        *SERVERS["uvicorn"](port),
        "--timeout-graceful-shutdown",
        "1",
    ],
    # uvicorn as most deployments run it: uvloop and httptools (uvicorn[standard])
    "uvicorn-uvloop": lambda port: [
        *SERVERS["uvicorn"](port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ],
    "hypercorn": lambda port: [
        sys.executable,
        "-m",
        "hypercorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "tests.apps:app()",  # hypercorn evaluates the expression in the module
    ],
    # Sanic's own server, one process (no worker manager)
    "sanic": lambda port: [
        sys.executable,
        "-m",
        "sanic",
        "--factory",
        "--single-process",
        "--no-motd",
        "--no-access-logs",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "tests.apps:app",
    ],
    "granian-asgi": lambda port: _granian("asgi", port),
    "granian-wsgi": lambda port: _granian("wsgi", port),
    "werkzeug": lambda port: [
        sys.executable,
        "-c",
        "import sys; from werkzeug.serving import run_simple; from tests.apps import app; "
        f"run_simple('127.0.0.1', {port}, app(), threaded=True)",
    ],
}


def _granian(interface: str, port: int) -> list[str]:
    # one worker; a WSGI app runs in granian's blocking threads: 32, like gunicorn's
    threads = ["--blocking-threads", "32"] if interface == "wsgi" else []
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *threads,
        "--log-level",
        "warning",
        "--no-ws",
        "--factory",
        "tests.apps:app",
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Env = Mapping[str, "str | None"]


def spawn(argv: list[str], log: Path, env: Env | None = None) -> Popen:
    """Start *argv* in the repository root (importable), output to *log*, no stdin;
    *env* adds variables to ours (``None`` removes one)."""
    full_env = dict(os.environ)
    full_env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1"
    )
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def answers_http(address: tuple[str, int]) -> Callable[[], bool]:
    """A readiness check: the server answers an HTTP request (not merely accepts: a
    pre-fork master such as gunicorn's accepts before its worker imported the app)."""

    def ready() -> bool:
        with socket.create_connection(address, timeout=0.5) as probe:
            probe.sendall(b"GET /chatkit HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
            probe.settimeout(5)
            return bool(probe.recv(1))

    return ready


def wait_ready(process: Popen, ready: Callable[[], bool], log: Path, timeout: float = 60) -> None:
    """Poll *ready* (``OSError``/``AssertionError`` mean not yet) until it is true; if the
    process exits or *timeout* passes, kill it and fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early:\n{_read(log)}")
        try:
            if ready():
                return
        except (OSError, AssertionError):
            pass
        time.sleep(0.05)
    stop(process, signal.SIGKILL)
    raise RuntimeError(f"{process.args!r} not ready after {timeout} s:\n{_read(log)}")


def stop(process: Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Stop *process* by its own PID with *sig*, then SIGKILL after *timeout*."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
    return int(process.returncode)


@contextlib.contextmanager
def serving(
    argv: list[str],
    log: Path,
    ready: Callable[[], bool],
    env: Env | None = None,
    timeout: float = 60,
) -> Iterator[Popen]:
    """``with serving(argv, log, answers_http(address)):`` a server for the block's length."""
    process = spawn(argv, log, env)
    try:
        wait_ready(process, ready, log, timeout)
        yield process
    finally:
        stop(process)


def _read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


@dataclass
class RunningServer:
    adapter: str
    server: str
    port: int
    journal: Path
    process: Popen
    log: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        return stop(self.process, sig, timeout)

    def output(self) -> str:
        return _read(self.log)


def start_server(
    adapter: str,
    server: str,
    workdir: Path,
    options: dict[str, Any] | None = None,
    variant: str = "view",
    write_delay: float = 0.02,
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Start *server* serving *adapter*; *env* adds variables (e.g. ``CHATKIT_TEST_DEBUG``)."""
    port = free_port()
    journal = workdir / f"journal-{adapter}-{server}-{variant}-{port}.jsonl"
    log = workdir / f"server-{adapter}-{server}-{variant}-{port}.log"
    test_env = {
        "CHATKIT_TEST_ADAPTER": adapter,
        "CHATKIT_TEST_VARIANT": variant,
        "CHATKIT_TEST_OPTIONS": json.dumps(options or {}),
        "CHATKIT_TEST_JOURNAL": str(journal),
        "CHATKIT_TEST_WRITE_DELAY": str(write_delay),
        **(env or {}),
    }
    process = spawn(SERVERS[server](port), log, test_env)
    running = RunningServer(adapter, server, port, journal, process, log, options or {})
    wait_ready(process, answers_http(running.address), log)
    return running


# -- one shared server per adapter x server (reliability suites) ------------------------

SHARED_OPTIONS: dict[str, Any] = {"max_body_size": 1024, "cleanup_timeout": 1.0}
"""Small enough for raw-socket limit tests, short enough for cleanup-timeout tests."""

_shared: dict[tuple[str, str], Future[RunningServer]] = {}
_shared_lock = threading.Lock()
_starter: ThreadPoolExecutor | None = None


def _start_shared(adapter: str, server: str, workdir_root: Path) -> RunningServer:
    workdir = workdir_root / f"shared-{adapter}-{server}"
    workdir.mkdir(parents=True, exist_ok=True)
    return start_server(
        adapter,
        server,
        workdir,
        SHARED_OPTIONS,
        write_delay=0.005,
        env={"CHATKIT_TEST_DEBUG": "1"},
    )


def _shared_future(adapter: str, server: str, workdir_root: Path) -> Future[RunningServer]:
    global _starter
    key = (adapter, server)
    with _shared_lock:
        future = _shared.get(key)
        if future is not None and future.done():
            failed = future.exception() is not None or future.result().process.poll() is not None
            if failed:
                future = None
        if future is None:
            if _starter is None:
                # two at a time: a start is mostly CPU-bound imports
                _starter = ThreadPoolExecutor(2, thread_name_prefix="server-start")
            future = _shared[key] = _starter.submit(_start_shared, adapter, server, workdir_root)
        return future


def shared_server(adapter: str, server: str, workdir_root: Path) -> RunningServer:
    """A server started once per test run (stopped at exit), with ``SHARED_OPTIONS``,
    a fast store (5 ms writes) and the ``/_debug/counts`` route (``tests.apps``)."""
    return _shared_future(adapter, server, workdir_root).result(120)


def prestart_shared(targets: list[tuple[str, str]], workdir_root: Path) -> None:
    """Start the shared servers of *targets* in the background, two at a time, while the
    tests run (the in-process suites use one core, server imports the other)."""
    for adapter, server in targets:
        _shared_future(adapter, server, workdir_root)


def _client_classes() -> list[tuple[str, Any]]:
    """(name, class) of every client whose framework is installed (a broken import raises)."""
    import importlib

    from tests.http_clients import CLIENTS, framework_of
    from tests.needs import installed

    classes = []
    for name, spec in CLIENTS.items():
        if not installed(framework_of(name)):
            continue
        module_name, _, attr = spec.partition(":")
        classes.append((name, getattr(importlib.import_module(module_name), attr)))
    return classes


def all_real_targets() -> list[tuple[str, str]]:
    """Every (client name, server) pair of the installed clients' ``real_servers``."""
    return [(name, server) for name, client in _client_classes() for server in client.real_servers]


def real_server_params(*marks: Any, first_only: bool = False, stacks: bool = False) -> list[Any]:
    """``pytest.param((client name, server))`` for every installed client's real servers (or
    only its first), marked with the client's framework (``django_wsgi`` -> ``django``, so
    ``tox -e NAME`` selects it) and *marks*. With *stacks*, params are ``(client name,
    server, variant)``: the bare view under every server, and each other variant of the
    client's ``real_server_variants`` (the middleware stack) under its first server."""
    import pytest

    params = []
    for name, client in _client_classes():
        framework = getattr(pytest.mark, name.split("_")[0])
        servers = client.real_servers[:1] if first_only else client.real_servers
        for index, server in enumerate(servers):
            variants = ["view"]
            if stacks and index == 0:
                variants += [
                    v for v in client.real_server_variants if v != "view" and v in client.variants
                ]
            for variant in variants:
                value = (name, server, variant) if stacks else (name, server)
                suffix = "" if variant == "view" else f"-{variant}"
                params.append(
                    pytest.param(value, id=f"{name}-{server}{suffix}", marks=[framework, *marks])
                )
    return params


def _stop_shared() -> None:
    for future in _shared.values():
        if future.done() and future.exception() is None:
            future.result().stop()


atexit.register(_stop_shared)
