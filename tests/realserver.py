"""Real servers in subprocesses on 127.0.0.1, each started on a free port, stopped by PID."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

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
    "werkzeug": lambda port: [
        sys.executable,
        "-c",
        "import sys; from werkzeug.serving import run_simple; from tests.apps import app; "
        f"run_simple('127.0.0.1', {port}, app(), threaded=True)",
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    adapter: str
    server: str
    port: int
    journal: Path
    process: subprocess.Popen[bytes]
    log: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        return int(self.process.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


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
    journal = workdir / f"journal-{adapter}-{server}-{port}.jsonl"
    log = workdir / f"server-{adapter}-{server}-{port}.log"
    extra_env = env
    env = dict(os.environ)
    env.update(
        CHATKIT_TEST_ADAPTER=adapter,
        CHATKIT_TEST_VARIANT=variant,
        CHATKIT_TEST_OPTIONS=json.dumps(options or {}),
        CHATKIT_TEST_JOURNAL=str(journal),
        CHATKIT_TEST_WRITE_DELAY=str(write_delay),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(
            SERVERS[server](port),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    running = RunningServer(adapter, server, port, journal, process, log, options or {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited early:\n{running.output()}")
        try:
            with socket.create_connection(running.address, timeout=0.5) as probe:
                # a pre-fork master (gunicorn) accepts before its worker imported the app:
                # ready means answering HTTP, not accepting connections
                probe.sendall(b"GET /chatkit HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                probe.settimeout(max(0.1, deadline - time.monotonic()))
                if probe.recv(1):
                    return running
        except OSError:
            time.sleep(0.05)
    running.stop(signal.SIGKILL)
    raise RuntimeError(f"{server} did not start listening:\n{running.output()}")


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


def all_real_targets() -> list[tuple[str, str]]:
    """Every (client name, server) pair of the installed clients' ``real_servers``."""
    import importlib

    from tests.http_clients import CLIENTS

    targets = []
    for name, spec in CLIENTS.items():
        module_name, _, attr = spec.partition(":")
        try:
            client = getattr(importlib.import_module(module_name), attr)
        except ImportError:
            continue
        targets += [(name, server) for server in client.real_servers]
    return targets


def _stop_shared() -> None:
    for future in _shared.values():
        if future.done() and future.exception() is None:
            future.result().stop()


atexit.register(_stop_shared)
