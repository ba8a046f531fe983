"""Real servers in subprocesses on 127.0.0.1, each started on a free port, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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
) -> RunningServer:
    port = free_port()
    journal = workdir / f"journal-{adapter}-{server}-{port}.jsonl"
    log = workdir / f"server-{adapter}-{server}-{port}.log"
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited early:\n{running.output()}")
        try:
            with socket.create_connection(running.address, timeout=0.5):
                return running
        except OSError:
            time.sleep(0.05)
    running.stop(signal.SIGKILL)
    raise RuntimeError(f"{server} did not start listening:\n{running.output()}")
