"""Start the servers of ``tests.realserver.SERVERS`` on 127.0.0.1 and read their RSS and CPU.

A server serves ``benchmarks.apps`` (an adapter, or a reference app when ``reference`` is
given). Every process is ours, started here and stopped by its PID.

:data:`SERVERS` is the tests' table plus the variants only the benchmarks add
(:data:`VARIANTS`: uvicorn with uvloop and httptools, as ``uvicorn[standard]`` installs
it, next to the tests' h11 uvicorn); every row on a base server also runs on its variants.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.realserver import ROOT, RunningServer, free_port
from tests.realserver import SERVERS as TEST_SERVERS

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "uvicorn-uvloop": ("uvicorn", ["--loop", "uvloop", "--http", "httptools"]),
}
"""Benchmark-only server name -> (the tests' server it extends, extra arguments)."""

SERVERS: dict[str, Callable[[int], list[str]]] = {
    **{
        name: (lambda port, base=base, extra=extra: [*TEST_SERVERS[base](port), *extra])
        for name, (base, extra) in VARIANTS.items()
        if base in TEST_SERVERS
    },
    **TEST_SERVERS,  # the tests' own definition wins if they add one of the same name
}


def variants_of(server: str) -> list[str]:
    """The benchmark-only variants of the tests' *server* (``uvicorn`` -> ``uvicorn-uvloop``)."""
    return [name for name, (base, _) in VARIANTS.items() if base == server and name in SERVERS]


def server_command(server: str, port: int) -> list[str]:
    """The tests' command line for *server*, serving ``benchmarks.apps`` instead."""
    command = SERVERS[server](port)
    if any("tests.apps" in arg for arg in command) or "-m" not in command:
        return [arg.replace("tests.apps", "benchmarks.apps") for arg in command]
    # ``python -m some.module ...`` that imports tests.apps itself
    index = command.index("-m")
    return [*command[: index + 1], "benchmarks.apps", *command[index + 1 :]]


def server_kind(server: str) -> str:
    """``asgi``, ``wsgi``, ``aiohttp`` or ``sanic``: which kind of app a server command runs."""
    command = " ".join(SERVERS[server](0))
    if "aiohttp" in command:
        return "aiohttp"
    if "-m sanic" in command:
        return "sanic"  # Sanic's own server: neither ASGI nor WSGI
    wsgi = ("gthread", "waitress", "werkzeug", "wsgiref", "--interface wsgi")
    if any(word in command for word in wsgi):
        return "wsgi"
    return "asgi"


def wsgi_capacity(server: str) -> int | None:
    """How many requests a threaded server surely runs at once (threads of ONE worker:
    the kernel may hand every connection to the same worker), read off its command line."""
    args = SERVERS[server](0)
    joined = " ".join(args)
    if "werkzeug" in joined:
        return None  # a thread per request, unbounded

    def value(*names: str) -> int | None:
        for index, arg in enumerate(args):
            for name in names:
                if arg == name and index + 1 < len(args):
                    return int(args[index + 1])
                if arg.startswith(name + "="):
                    return int(arg.split("=", 1)[1])
        return None

    return value("--threads")


def start(server: str, workdir: Path, **kwargs: Any) -> RunningServer:
    """Start *server* and wait until it accepts connections (see :func:`spawn`)."""
    return wait_ready(spawn(server, workdir, **kwargs))


def spawn(
    server: str,
    workdir: Path,
    *,
    adapter: str | None = None,
    reference: str | None = None,
    options: dict[str, Any] | None = None,
    write_delay: float = 0.0,
    label: str = "",
    variant: str = "view",
) -> RunningServer:
    """Start *server* serving the adapter client *adapter* or the reference *reference*.

    Returns at once; :func:`wait_ready` waits for it to listen (start several, then wait).
    """
    port = free_port()
    name = (label or reference or adapter or "app").replace("/", "_")
    journal = workdir / f"journal-{name}-{server}-{port}.jsonl"
    log = workdir / f"server-{name}-{server}-{port}.log"
    env = dict(os.environ)
    env.pop("CHATKIT_BENCH_REFERENCE", None)
    env.update(
        CHATKIT_TEST_ADAPTER=adapter or "",
        CHATKIT_TEST_VARIANT=variant,
        CHATKIT_TEST_OPTIONS=json.dumps(options or {}),
        CHATKIT_TEST_JOURNAL=str(journal),
        CHATKIT_TEST_WRITE_DELAY=str(write_delay),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    if reference:
        env["CHATKIT_BENCH_REFERENCE"] = reference
    with log.open("wb") as out:
        out.write(f"$ {shlex.join(server_command(server, port))}\n".encode())
        out.flush()
        process = subprocess.Popen(
            server_command(server, port),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return RunningServer(adapter or "", server, port, journal, process, log, options or {})


def wait_ready(running: RunningServer, timeout: float = 60.0) -> RunningServer:
    process, server = running.process, running.server
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited early:\n{running.output()[-3000:]}")
        try:
            with socket.create_connection(running.address, timeout=0.5):
                return running
        except OSError:
            time.sleep(0.05)
    running.stop(signal.SIGKILL)
    raise RuntimeError(f"{server} did not start listening:\n{running.output()[-3000:]}")


def process_tree(pid: int) -> list[int]:
    """*pid* and its descendants (gunicorn: master and workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree = [pid]
    index = 0
    while index < len(tree):
        tree.extend(parents.get(tree[index], []))
        index += 1
    return tree


def rss_kib(pid: int) -> int:
    """Resident memory of *pid* and its descendants (VmRSS summed), in KiB."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of *pid* and its descendants so far."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS
