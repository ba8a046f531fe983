"""Runs every measurement for every adapter x server row, the references and the limit.

Rows are discovered, never listed: every client of ``tests.http_clients.CLIENTS`` whose
framework imports, under every server of its ``real_servers`` that
``tests.realserver.SERVERS`` knows and that is installed. What cannot run is skipped and
said why.

Comparisons are paired: the machine's load drifts during a run (and other work may share
it), so a row's throughput and time-to-first-event are measured in alternation with its
references, which stay up for that purpose: the documented FastAPI wiring (one uvicorn
for the whole run), the in-process limit (one long-lived process) and the framework's
hand-written route (a server of the same kind next to the adapter's). Disconnect,
memory and backpressure figures are measured on one server at a time.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import client, loadgen
from benchmarks.inprocess import InProcess
from benchmarks.references import CACHED, hand_written_name
from benchmarks.servers import (
    SERVERS,
    cpu_seconds,
    server_kind,
    spawn,
    variants_of,
    wait_ready,
    wsgi_capacity,
)
from tests.chatkit_app import get_thread, list_threads
from tests.http_clients import CLIENTS
from tests.realserver import RunningServer

DOCUMENTED = "fastapi-documented"
DOCUMENTED_SERVER = "uvicorn"
DOCUMENTED_LABEL = "documented FastAPI wiring@uvicorn"
HEARTBEAT = 1.0  # of the disconnect servers (the idle figure needs it under WSGI)


@dataclass
class Config:
    """Sizes of one run; ``Config.quick_config()`` is the ``--quick`` smoke run."""

    deltas: int = 20000  # one long stream, no delay, write_delay=0
    stream_repeats: int = 3  # median of, each paired with the references
    connections: int = 16  # keep-alive connections of the request-throughput run
    duration: float = 2.0  # seconds per request-throughput round and side
    request_rounds: int = 2  # adapter, hand-written, adapter, hand-written, ...
    warmup_duration: float = 1.0  # seconds of load on each server first, not counted
    inprocess_requests: int = 200  # threads.get_by_id calls for the in-process req/s
    ttfe_repeats: int = 30
    cancel_repeats: int = 10  # active disconnects per adapter row
    idle_repeats: int = 5  # idle disconnects (heartbeat=1) per adapter row
    reference_cancel_repeats: int = 5
    reference_sweep: float = 1.5  # seconds the references get to persist anything at all
    cancel_write_delay: float = 0.001  # store write_delay of the disconnect figures
    async_streams: int = 500  # open at once for the memory figure (ASGI, aiohttp)
    wsgi_streams: int = 32  # same, threaded WSGI servers (at most their thread count)
    backpressure_wait: float = 2.0  # seconds the non-reading client reads nothing
    paced_streams: int = 200  # concurrent streams at a token rate (threaded WSGI: capacity)
    paced_rate: float = 40.0  # events/s of each
    paced_seconds: float = 4.0  # length of each stream
    paced_stagger: float = 1.0  # the streams start evenly over this many seconds
    only: list[str] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # ADAPTER@SERVER not in real_servers
    loadgen: str | None = None  # "wrk" or "python-asyncio"; default: wrk if installed
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> Config:
        sizes: dict[str, Any] = dict(
            deltas=5000,
            stream_repeats=1,
            duration=1.0,
            request_rounds=1,
            inprocess_requests=50,
            ttfe_repeats=10,
            cancel_repeats=3,
            idle_repeats=2,
            reference_cancel_repeats=3,
            reference_sweep=0.5,
            async_streams=100,
            wsgi_streams=16,
            backpressure_wait=1.0,
            paced_streams=50,
            paced_seconds=2.0,
            paced_stagger=0.5,
            quick=True,
        )
        sizes.update(overrides)
        return cls(**sizes)


@dataclass
class Row:
    adapter: str
    server: str
    kind: str  # asgi | wsgi | aiohttp
    hand_written: str | None

    @property
    def label(self) -> str:
        return f"{self.adapter}@{self.server}"


@dataclass
class Session:
    """What lives for the whole run: the references every row is paired with."""

    config: Config
    workdir: Path
    inprocess: InProcess | None = None
    documented: RunningServer | None = None
    documented_thread: str = ""
    tool: str = "wrk"
    spawned: list[RunningServer] = field(default_factory=list)
    prefetched: RowServers | None = None
    reference_memory: dict[str, Any] | None = None  # the documented wiring's idle streams

    def await_prefetched(self) -> None:
        """Let the next row's servers finish starting (their imports take CPU time)."""
        upcoming, self.prefetched = self.prefetched, None
        if upcoming is None:
            return
        for running in upcoming.all():
            with suppress(Exception):  # a failure is reported by that row
                wait_ready(running)


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"{time.monotonic() - _T0:6.1f}s {message}", file=sys.stderr, flush=True)


# -- discovery -----------------------------------------------------------------------------


# options of a server's command line that need a package of their own
_OPTION_PACKAGES = {("--loop", "uvloop"): "uvloop", ("--http", "httptools"): "httptools"}


def _server_installed(server: str) -> str | None:
    """Why *server* cannot run here, or ``None``."""
    args = SERVERS[server](0)
    module = args[args.index("-m") + 1] if "-m" in args else None
    if module is None and "-c" in args:
        code = args[args.index("-c") + 1]
        module = code.split("from ", 1)[1].split()[0] if "from " in code else None
    needed = [module.split(".")[0]] if module else []
    pairs = set(itertools.pairwise(args))
    needed += [package for option, package in _OPTION_PACKAGES.items() if option in pairs]
    for package in needed:
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
    return None


def _matches(row: Row, patterns: list[str]) -> bool:
    if not patterns:
        return True
    names = (row.adapter, row.server, row.label)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def discover(
    only: list[str], also: list[str] | None = None
) -> tuple[list[Row], list[dict[str, str]]]:
    """The rows to measure (every client x its ``real_servers``, plus *also*) and the skips."""
    rows: list[Row] = []
    skipped: list[dict[str, str]] = []
    extra: dict[str, list[str]] = {}
    for label in also or ():
        adapter, _, server = label.partition("@")
        extra.setdefault(adapter, []).append(server)
        if adapter not in CLIENTS:
            skipped.append({"row": label, "reason": "no such client in tests.http_clients"})
    for name, spec in CLIENTS.items():
        module_name, _, attr = spec.partition(":")
        try:
            client_class = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            skipped.append({"row": f"{name}@*", "reason": f"client unavailable: {exc}"})
            continue
        servers = list(client_class.real_servers)
        servers += [v for s in client_class.real_servers for v in variants_of(s)]
        servers = list(dict.fromkeys(servers))  # a variant the tests list too runs once
        servers += [s for s in extra.get(name, ()) if s not in servers]
        for server in servers:
            kind = server_kind(server) if server in SERVERS else "?"
            row = Row(name, server, kind, None)
            if not _matches(row, only) and server not in extra.get(name, ()):
                continue
            if server not in SERVERS:
                reason = "server not defined in tests.realserver.SERVERS (nor a variant)"
                skipped.append({"row": row.label, "reason": reason})
                continue
            missing = _server_installed(server)
            if missing:
                skipped.append({"row": row.label, "reason": missing})
                continue
            row.hand_written = hand_written_name(name, kind)
            rows.append(row)
    return rows, skipped


# -- plumbing ------------------------------------------------------------------------------


def stop(running: RunningServer, timeout: float = 15.0) -> None:
    """SIGTERM, SIGKILL after *timeout* (3 s for reference routes: one holding idle
    streams it never noticed closed waits for them, a server's graceful shutdown)."""
    if running.process.returncode is not None:
        return  # stopped already
    code = running.stop(timeout=timeout)
    if code not in (0, -15, 143, 1) and not (timeout < 15 and code == -9):
        log(f"    note: {running.server} exited with {code}; log: {running.log}")


def attempt(results: dict[str, Any], key: str, measure: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded and reported, never fatal."""
    started = time.monotonic()
    try:
        results[key] = measure()
    except Exception as exc:
        results[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        log(f"    {key}: FAILED {type(exc).__name__}: {exc}")
        if os.environ.get("CHATKIT_BENCH_DEBUG"):
            traceback.print_exc()
    else:
        log(f"    {key}: {brief(results[key])} ({time.monotonic() - started:.1f}s)")
    return results[key]


def brief(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    keys = (
        "events_per_s",
        "rps",
        "median_ms",
        "max_ms",
        "persisted",
        "per_stream_kib",
        "cpu_ms_per_stream",
    )
    parts = []
    for key in (*keys, "excess_kib"):
        if isinstance(value.get(key), int | float):
            number = value[key]
            parts.append(f"{key}={number:.1f}" if isinstance(number, float) else f"{key}={number}")
    for name, sub in value.items():
        if isinstance(sub, dict) and not parts:
            parts.append(f"{name}: {brief(sub)}")
    return "; ".join(parts) or json.dumps(value, default=str)[:160]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- measurements --------------------------------------------------------------------------


def paired_ttfe(addresses: dict[str, tuple[str, int]], repeats: int) -> dict[str, Any]:
    """Time to first event, one sample per target in turn."""
    samples: dict[str, list[float]] = {name: [] for name in addresses}
    failures = dict.fromkeys(addresses, 0)
    for _ in range(repeats):
        for name, address in addresses.items():
            result = client.time_to_first_event(address, 1)
            samples[name] += result["samples_ms"]
            failures[name] += result["failures"]
    return {
        name: {"failures": failures[name], **client.summary(values)}
        for name, values in samples.items()
    }


def _http_stream(running: RunningServer, deltas: int) -> dict[str, Any]:
    result = client.stream_throughput(running.address, deltas, pid=running.process.pid)
    if result["status"] != 200 or not result["complete"]:
        raise RuntimeError(f"incomplete stream: {result}")
    return result


def paired_streams(
    measures: dict[str, Callable[[], dict[str, Any]]], repeats: int
) -> dict[str, dict[str, Any]]:
    """Events/s (and server CPU per event) of each target, measured in turn for *repeats*
    rounds (each target once per round, so every one has the same number of samples and
    the rounds pair up); medians per target."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    errors: dict[str, str] = {}
    order = list(measures.items())
    for round_ in range(repeats):
        # rotate who goes first, so no target always follows the same one
        shift = round_ % len(order)
        for name, measure in order[shift:] + order[:shift]:
            if name in errors:
                continue
            try:
                runs[name].append(measure())
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                log(f"    stream [{name}]: FAILED {errors[name]}")
    out: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        if name in errors:
            out[name] = {"error": errors[name]}
            continue
        cpu = [r["cpu_us_per_event"] for r in results if r.get("cpu_us_per_event")]
        out[name] = {
            "events_per_s": _median([r["events_per_s"] for r in results]),
            "cpu_us_per_event": _median(cpu),
            "runs": [r["events_per_s"] for r in results],
            "cpu_runs": [r.get("cpu_us_per_event") for r in results],
        }
    return out


def _load(
    running: RunningServer, body: bytes, config: Config, duration: float, tool: str
) -> dict[str, Any]:
    pid = running.process.pid
    before = cpu_seconds(pid)
    result = loadgen.run(running.address, body, config.connections, duration, tool)
    result["server_cpu_seconds"] = cpu_seconds(pid) - before
    return result


def request_body(running: RunningServer, thread_id: str) -> bytes:
    """``threads.get_by_id`` of an existing thread, if every worker of the server has it.

    Servers with several worker processes (gunicorn ``-w 2``) keep one in-memory store per
    worker, so a thread exists in one of them only: those get ``threads.list`` instead.
    """
    body = get_thread(thread_id)
    for _ in range(6):  # new connections: spread over the workers
        if client.check_json(running.address, body)["status"] != 200:
            log(
                f"    note: threads.get_by_id fails on some worker of {running.server}; "
                "using threads.list"
            )
            return list_threads()
    return body


def paired_requests(
    servers: dict[str, tuple[RunningServer, str]], config: Config, tool: str
) -> dict[str, dict[str, Any]]:
    """Requests/s of ``threads.get_by_id``, the targets loaded in turn for some rounds."""
    bodies: dict[str, bytes] = {}
    out: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for name, (running, thread_id) in servers.items():
        bodies[name] = body = request_body(running, thread_id)
        check = client.check_json(running.address, body)
        if check["status"] != 200:
            out[name] = {"error": f"{body[:40]!r}... answered {check}"}
        elif config.warmup_duration > 0:
            _load(running, body, config, config.warmup_duration, tool)
    order = list(servers.items())
    for round_ in range(config.request_rounds):
        # A B, B A, A B, ...: neither side always runs first
        for name, (running, _) in order if round_ % 2 == 0 else order[::-1]:
            if name not in out:
                runs[name].append(_load(running, bodies[name], config, config.duration, tool))
    for name, results in runs.items():
        if name in out:
            continue
        seconds = sum(r["seconds"] for r in results)
        requests = sum(r["requests"] for r in results)
        out[name] = {
            "op": json.loads(bodies[name])["type"],
            "tool": results[0]["tool"],
            "rps": requests / seconds if seconds else 0.0,
            "runs": [r["rps"] for r in results],
            "cpu_runs": [
                1000 * r["server_cpu_seconds"] / r["requests"] if r["requests"] else None
                for r in results
            ],
            "requests": requests,
            "seconds": seconds,
            "connections": config.connections,
            "non_2xx": sum(r["non_2xx"] for r in results),
            "socket_errors": sum(r["socket_errors"] for r in results),
            "mean_latency_ms": _median(
                [r["mean_latency_ms"] for r in results if r["mean_latency_ms"] is not None]
            ),
            "server_cpu_pct": 100 * sum(r["server_cpu_seconds"] for r in results) / seconds,
            "cpu_ms_per_request": 1000
            * sum(r["server_cpu_seconds"] for r in results)
            / max(requests, 1),
            "loadgen_cpu_pct": 100 * sum(r["cpu_seconds"] for r in results) / seconds,
        }
        if out[name]["non_2xx"] or out[name]["socket_errors"]:
            log(f"    note [{name}]: {out[name]['non_2xx']} non-2xx, socket errors")
    return out


def paced_streams_for(kind: str, server: str, config: Config) -> int:
    """Concurrent paced streams: ``paced_streams``, at most a threaded server's capacity."""
    capacity = wsgi_capacity(server) if kind == "wsgi" else None
    return min(config.paced_streams, capacity) if capacity else config.paced_streams


def streams_for(kind: str, server: str, config: Config) -> int:
    if kind != "wsgi":
        return config.async_streams
    capacity = wsgi_capacity(server)
    return min(config.wsgi_streams, capacity) if capacity else config.wsgi_streams


def measure_resources(
    running: RunningServer, config: Config, kind: str, *, cleanup: bool, results: dict[str, Any]
) -> None:
    """Backpressure, then memory, on one server (nothing else running)."""
    bp = attempt(
        results, "backpressure", lambda: client.backpressure(running, config.backpressure_wait)
    )
    if cleanup and "thread_id" in bp:
        # its cancel cleanup also frees a WSGI worker thread before the memory run
        bp["cleanup_persisted"] = client.wait_for_cleanup(running, bp["thread_id"], 15.0)
    else:
        time.sleep(1.0)
    streams = streams_for(kind, running.server, config)
    attempt(results, "memory", lambda: client.memory_per_stream(running, streams))


def measure_disconnects(
    running: RunningServer, config: Config, *, reference: bool, results: dict[str, Any]
) -> None:
    for key, idle in (("cancel_active", False), ("cancel_idle", True)):
        if reference:
            repeats, wait, sweep = config.reference_cancel_repeats, 0.0, config.reference_sweep
        else:
            repeats = config.idle_repeats if idle else config.cancel_repeats
            wait, sweep = 10.0, 0.0
        attempt(
            results,
            key,
            lambda idle=idle, repeats=repeats, wait=wait, sweep=sweep: client.disconnect_to_cancel(
                running, idle=idle, repeats=repeats, wait=wait, sweep=sweep
            ),
        )


def in_process_stream(session: Session) -> Callable[[], dict[str, Any]]:
    def measure() -> dict[str, Any]:
        assert session.inprocess is not None
        return session.inprocess.ask("stream", session.config.deltas)

    return measure


def in_process_limit(inprocess: InProcess, config: Config) -> dict[str, Any]:
    streams = [inprocess.ask("stream", config.deltas) for _ in range(max(config.stream_repeats, 2))]
    requests = inprocess.ask("requests", config.inprocess_requests)
    return {
        "events_per_s": _median([r["events_per_s"] for r in streams]),
        "cpu_us_per_event": _median([r["cpu_us_per_event"] for r in streams]),
        "rps": requests["rps"],
        "cpu_ms_per_request": requests["cpu_ms_per_request"],
    }


def measure_reference(session: Session, prefetch: Callable[[], None]) -> dict[str, Any]:
    """The documented wiring: its own figures; its server stays up for the rows."""
    config = session.config
    results: dict[str, Any] = {"label": DOCUMENTED_LABEL, "server": DOCUMENTED_SERVER}
    log(f"[{DOCUMENTED_LABEL}]")
    running = spawn(DOCUMENTED_SERVER, session.workdir, reference=DOCUMENTED)
    session.documented = running
    cancel = spawn(
        DOCUMENTED_SERVER,
        session.workdir,
        reference=DOCUMENTED,
        write_delay=config.cancel_write_delay,
        label="documented-cancel",
    )
    try:
        wait_ready(running)
        wait_ready(cancel)
        session.documented_thread = client.warm_up(running.address)
        _measure_reference(session, running, cancel, results, prefetch)
    finally:
        stop(cancel)
    return results


def _measure_reference(
    session: Session,
    running: RunningServer,
    cancel: RunningServer,
    results: dict[str, Any],
    prefetch: Callable[[], None],
) -> None:
    config = session.config
    attempt(
        results,
        "ttfe",
        lambda: paired_ttfe({"doc": running.address}, config.ttfe_repeats)["doc"],
    )
    measures = {"doc": lambda: _http_stream(running, config.deltas)}
    if session.inprocess is not None:
        measures["in_process"] = in_process_stream(session)
    streams = paired_streams(measures, config.stream_repeats)
    results["stream"] = streams["doc"]
    results["paired"] = {"in_process_stream": streams.get("in_process")}
    log(f"    stream: {brief(results['stream'])}")
    attempt(
        results,
        "request",
        lambda: paired_requests(
            {"doc": (running, session.documented_thread)}, config, session.tool
        )["doc"],
    )
    prefetch()
    measure_resources(running, config, "asgi", cleanup=False, results=results)
    session.reference_memory = results.get("memory")
    session.await_prefetched()
    measure_disconnects(cancel, config, reference=True, results=results)


@dataclass
class RowServers:
    """A row's servers, spawned together (idle, they cost nothing): the adapter's for the
    throughput, resource and disconnect figures, its hand-written route's and the same
    route's with a cached request validator (``NAME-cached``)."""

    main: RunningServer
    cancel: RunningServer  # write_delay=cancel_write_delay, heartbeat=1
    hand: RunningServer | None
    cached: RunningServer | None = None

    def all(self) -> list[RunningServer]:
        return [s for s in (self.main, self.cancel, self.hand, self.cached) if s is not None]


def spawn_row(row: Row, session: Session) -> RowServers:
    config = session.config
    main = spawn(row.server, session.workdir, adapter=row.adapter)
    cancel = spawn(
        row.server,
        session.workdir,
        adapter=row.adapter,
        options={"heartbeat": HEARTBEAT},
        write_delay=config.cancel_write_delay,
        label=f"{row.adapter}-cancel",
    )
    hand = cached = None
    if row.hand_written and not _shares_documented(row):
        hand = spawn(row.server, session.workdir, reference=row.hand_written)
    if row.hand_written:
        cached = spawn(row.server, session.workdir, reference=row.hand_written + CACHED)
    servers = RowServers(main, cancel, hand, cached)
    session.spawned.extend(servers.all())
    return servers


def _shares_documented(row: Row) -> bool:
    return row.hand_written == DOCUMENTED and row.server == DOCUMENTED_SERVER


def _ready_reference(
    running: RunningServer | None, name: str, server: str
) -> tuple[RunningServer | None, str, dict[str, Any]]:
    """A reference server of the row, warmed up: (server or None if it failed, a thread id
    for the request figure, its results dict)."""
    results: dict[str, Any] = {"name": name, "server": server}
    if running is None:
        return None, "", results
    try:
        wait_ready(running)
        return running, client.warm_up(running.address), results
    except Exception as exc:
        stop(running, timeout=3.0)
        results["error"] = f"{type(exc).__name__}: {exc}"[:500]
        log(f"    reference {name}: FAILED {exc}")
        return None, "", results


def paced(
    servers: dict[str, RunningServer], config: Config, streams: int
) -> dict[str, dict[str, Any]]:
    """CPU per paced stream of each server, one after the other (see client.paced_streams)."""
    out: dict[str, dict[str, Any]] = {}
    for name, running in servers.items():
        attempt(
            out,
            name,
            lambda running=running: client.paced_streams(
                running, streams, config.paced_rate, config.paced_seconds, config.paced_stagger
            ),
        )
    return out


def measure_row(
    row: Row, session: Session, servers: RowServers, prefetch: Callable[[], None]
) -> dict[str, Any]:
    """All figures of one row. *prefetch* starts the next row's servers while this row's
    resource figures run (they do not depend on CPU time); they are ready, and their
    imports done, before this row's latency-sensitive disconnect figures."""
    config = session.config
    results: dict[str, Any] = {
        "label": row.label,
        "adapter": row.adapter,
        "server": row.server,
        "kind": row.kind,
        "hand_written": None,
        "hand_cached": None,
        "paired": {},
    }
    log(f"[{row.label}]")
    started = time.monotonic()
    main, cancel = servers.main, servers.cancel
    try:
        wait_ready(main)
        wait_ready(cancel)
        main_thread = client.warm_up(main.address)
        hand: RunningServer | None
        hand_results: dict[str, Any] | None = None
        if _shares_documented(row):
            hand, hand_thread = session.documented, session.documented_thread
            hand_results = {"name": DOCUMENTED, "server": row.server, "shared": "documented"}
        else:
            hand, hand_thread, hand_results = _ready_reference(
                servers.hand, row.hand_written or "", row.server
            )
        cached, cached_thread, cached_results = _ready_reference(
            servers.cached, (row.hand_written or "") + CACHED, row.server
        )
        if row.hand_written:
            results["hand_written"] = hand_results
            results["hand_cached"] = cached_results
        documented = session.documented
        shared = hand is not None and hand is documented
        # the row's references, by the key their figures are measured under
        references: dict[str, tuple[RunningServer, dict[str, Any] | None]] = {}
        if hand is not None:
            references["doc" if shared else "hand"] = (hand, hand_results)
        if cached is not None:
            references["cached"] = (cached, cached_results)

        # time to first event: adapter, its references, documented wiring in turn
        addresses: dict[str, Any] = {"row": main.address}
        addresses.update({key: running.address for key, (running, _) in references.items()})
        if documented is not None:
            addresses["doc"] = documented.address
        ttfe = paired_ttfe(addresses, config.ttfe_repeats)
        results["ttfe"] = ttfe["row"]
        if "doc" in ttfe:
            results["paired"]["documented_ttfe"] = ttfe["doc"]
        for key, (_, own) in references.items():
            if own is not None:
                own["ttfe"] = ttfe[key]
        log(f"    ttfe: {brief(ttfe)}")

        # stream throughput: adapter, documented, in-process and references in turn, the
        # same number of rounds each
        measures: dict[str, Callable[[], dict[str, Any]]] = {
            "row": lambda: _http_stream(main, config.deltas)
        }
        if documented is not None:
            measures["doc"] = lambda: _http_stream(documented, config.deltas)
        if session.inprocess is not None:
            measures["in_process"] = in_process_stream(session)
        for key, (running, _) in references.items():
            measures.setdefault(key, lambda running=running: _http_stream(running, config.deltas))
        streams = paired_streams(measures, config.stream_repeats)
        results["stream"] = streams["row"]
        results["paired"]["documented_stream"] = streams.get("doc")
        results["paired"]["in_process_stream"] = streams.get("in_process")
        for key, (_, own) in references.items():
            if own is not None:
                own["stream"] = streams[key]
        log(f"    stream: {brief(streams)}")

        # request throughput: adapter and references in turn
        pairs = {"row": (main, main_thread)}
        if hand is not None:
            pairs["hand"] = (hand, hand_thread)
        if cached is not None:
            pairs["cached"] = (cached, cached_thread)
        requests = paired_requests(pairs, config, session.tool)
        results["request"] = requests["row"]
        if hand_results is not None and "hand" in requests:
            hand_results["request"] = requests["hand"]
        if cached is not None:
            cached_results["request"] = requests["cached"]
        log(f"    request: {brief(requests)}")

        # many streams at a token rate: CPU per stream, adapter and references in turn
        count = paced_streams_for(row.kind, row.server, config)
        targets = {"row": main}
        targets.update({key: running for key, (running, _) in references.items()})
        paced_results = paced(targets, config, count)
        results["paced"] = paced_results["row"]
        for key, (_, own) in references.items():
            if own is not None:
                own["paced"] = paced_results[key]

        if hand is not None and hand_results is not None:
            # the same idle streams on the hand-written route: the adapter's overhead is
            # the difference (the documented wiring's server measured its own already)
            # (not for WSGI: a hand-written WSGI route never notices a closed stream, so
            # the warm-up's streams would hold its threads for their whole length)
            if shared:
                hand_results["memory"] = session.reference_memory
            elif row.kind != "wsgi":
                count = streams_for(row.kind, row.server, config)
                attempt(hand_results, "memory", lambda: client.memory_per_stream(hand, count))
                log(f"    hand-written memory: {brief(hand_results.get('memory'))}")
        for reference in (hand, cached):
            if reference is not None and reference is not documented:
                stop(reference, timeout=0.5)  # its idle streams are never noticed closed
        prefetch()
        measure_resources(main, config, row.kind, cleanup=True, results=results)
        stop(main)
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        log(f"    FAILED: {results['error']}")
        if os.environ.get("CHATKIT_BENCH_DEBUG"):
            traceback.print_exc()
    finally:
        prefetch()  # idempotent
        for running in servers.all():
            if running is not cancel:
                stop(running, timeout=3.0)
    try:
        session.await_prefetched()
        wait_ready(cancel)
        measure_disconnects(cancel, config, reference=False, results=results)
    except Exception as exc:
        results.setdefault("error", f"{type(exc).__name__}: {exc}"[:1000])
        log(f"    FAILED: {type(exc).__name__}: {exc}")
    finally:
        stop(cancel)
    results["seconds"] = time.monotonic() - started
    return results


def measure_rows(
    rows: list[Row], session: Session, first: RowServers | None
) -> list[dict[str, Any]]:
    """Every row in turn, each row's successor started during its resource figures."""
    if not rows:
        return []
    results = []
    upcoming = first or spawn_row(rows[0], session)
    for index, row in enumerate(rows):
        current, upcoming_box = upcoming, []

        def prefetch(index: int = index, box: list[RowServers] = upcoming_box) -> None:
            if not box and index + 1 < len(rows):
                box.append(spawn_row(rows[index + 1], session))
                session.prefetched = box[0]

        results.append(measure_row(row, session, current, prefetch))
        if index + 1 < len(rows):
            prefetch()
            upcoming = upcoming_box[0]
    return results


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "openai-chatkit",
        "pydantic",
        "starlette",
        "fastapi",
        "litestar",
        "aiohttp",
        "flask",
        "django",
        "uvicorn",
        "gunicorn",
        "waitress",
        "werkzeug",
        "daphne",
    ):
        with suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def run(config: Config) -> dict[str, Any]:
    """The whole benchmark; returns the results document (see ``report.finish``)."""
    started = time.monotonic()
    rows, skipped = discover(config.only, config.also)
    for skip in skipped:
        log(f"skipped {skip['row']}: {skip['reason']}")
    tool = config.loadgen or loadgen.available()
    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "loadgen": tool,
        "loadgen_note": (
            "wrk, 1 thread, separate process"
            if tool == "wrk"
            else "benchmarks.loadgen asyncio raw-socket client, separate process "
            "(install wrk for a lighter generator)"
        ),
        "versions": _versions(),
        "config": asdict(config),
    }
    log(f"rows: {', '.join(r.label for r in rows) or 'none'}; load generator: {tool}")
    document: dict[str, Any] = {"meta": meta, "skipped": skipped, "reference": None}
    with tempfile.TemporaryDirectory(prefix="chatkit-bench-") as tmp:
        session = Session(config, Path(tmp), tool=tool)
        first: list[RowServers] = []

        def prefetch_first() -> None:
            if rows and not first:
                first.append(spawn_row(rows[0], session))
                session.prefetched = first[0]

        try:
            try:
                session.inprocess = InProcess()
            except Exception as exc:
                log(f"in-process limit unavailable: {exc}")
            missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
            if missing:
                reason = f"{', '.join(missing)} not installed"
                log(f"skipped {DOCUMENTED_LABEL}: {reason}")
                skipped.append({"row": DOCUMENTED_LABEL, "reason": reason})
            else:
                try:
                    document["reference"] = measure_reference(session, prefetch_first)
                except Exception as exc:
                    log(f"    FAILED: {type(exc).__name__}: {exc}")
                    document["reference"] = {
                        "label": DOCUMENTED_LABEL,
                        "error": f"{type(exc).__name__}: {exc}"[:1000],
                    }
            log("[in-process limit]")
            document["in_process"] = {}
            if session.inprocess is not None:
                inprocess = session.inprocess
                attempt(
                    document,
                    "in_process",
                    lambda: in_process_limit(inprocess, config),
                )
            document["rows"] = measure_rows(rows, session, first[0] if first else None)
        finally:
            if session.documented is not None:
                stop(session.documented)
            for running in session.spawned:
                stop(running)
            if session.inprocess is not None:
                session.inprocess.close()
    meta["seconds"] = time.monotonic() - started
    meta["load_average_at_end"] = os.getloadavg()
    return document
