"""Store benchmarks: SQLStore per backend, side by side with the old demo store, one run.

``python -m benchmarks.stores [--quick] [--backends sqlite,postgres,mariadb] [--requests]``

For each backend: operations per second of ``save_thread`` (a new thread), ``load_thread``,
``add_thread_item`` and ``load_thread_items`` (a 20-item page after a cursor, in a
200-item thread), one caller at a time and 16 at once, for
:class:`chatkit_adapters.stores.SQLStore` and for the demo's previous hand-written store
(``benchmarks/demo_store_reference.py``; SQLite and PostgreSQL only). Each figure is the
best of 5 rounds, the two stores alternating; the ratio column is SQLStore / reference
(target >= 0.9). Each store has its own database (their tables share names). PostgreSQL
and MariaDB are started like the tests do (``tests/pgserver.py``, ``tests/mysqlserver.py``).
``--requests`` adds the demo endpoint's request throughput (``threads.list`` and a
streamed ``threads.create``, in process through the ASGI app) on each backend.
Benchmarks, not tests: nothing is asserted. Prints a table and writes
``benchmarks/results/stores.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chatkit.store import Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadMetadata,
)

from examples.demo.context import DemoContext

RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2025, 1, 1, 12, 0, 0)
OPS = ("save_thread", "load_thread", "add_thread_item", "load_thread_items")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def item(thread_id: str, n: int) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=f"msg_{n:06d}",
        thread_id=thread_id,
        created_at=T0 + timedelta(milliseconds=n),
        content=[AssistantMessageContent(text="A typical answer of a few sentences. " * 8)],
    )


async def measure(store: Store[DemoContext], op: str, count: int, concurrency: int) -> float:
    """Operations per second of ``op`` (``count`` calls, ``concurrency`` at a time)."""
    user = DemoContext(f"bench-{uuid.uuid4().hex[:8]}")
    thread = ThreadMetadata(id="thr_bench", created_at=T0, title="bench")
    await store.save_thread(thread, user)
    if op in ("load_thread_items",):
        for n in range(200):
            await store.add_thread_item(thread.id, item(thread.id, n), user)

    calls: list[Callable[[], Awaitable[Any]]]
    if op == "save_thread":
        calls = [
            lambda n=n: store.save_thread(  # type: ignore[misc]
                ThreadMetadata(id=f"thr_{n}", created_at=T0, title="t"), user
            )
            for n in range(count)
        ]
    elif op == "load_thread":
        calls = [lambda: store.load_thread(thread.id, user)] * count
    elif op == "add_thread_item":
        calls = [
            lambda n=n: store.add_thread_item(thread.id, item(thread.id, n), user)  # type: ignore[misc]
            for n in range(count)
        ]
    else:
        calls = [lambda: store.load_thread_items(thread.id, "msg_000100", 20, "asc", user)] * count

    async def worker(mine: list[Callable[[], Awaitable[Any]]]) -> None:
        for call in mine:
            await call()

    await calls[0]()  # warm: connections, statement caches
    start = time.perf_counter()
    await asyncio.gather(*(worker(calls[k::concurrency]) for k in range(concurrency)))
    return count / (time.perf_counter() - start)


def sql_store(url: str) -> Store[DemoContext]:
    from chatkit_adapters.stores import SQLStore

    return SQLStore(url)


async def other_database(url: str) -> str:
    """A second, empty database next to ``url``'s (the two stores' tables share names)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from chatkit_adapters.stores.sql import normalize_url

    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url.replace("bench.db", "reference.db")
    name = f"reference_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await engine.dispose()
    return parsed.set(database=name, drivername=parsed.get_backend_name()).render_as_string(
        hide_password=False
    )


async def reference_store(url: str) -> Store[DemoContext] | None:
    from benchmarks.demo_store_reference import open_store

    if url.startswith(("mysql", "mariadb")):
        return None  # the old demo store had SQLite and PostgreSQL only
    return open_store(await other_database(url))


async def bench_backend(url: str, count: int, rounds: int) -> dict[str, Any]:
    stores: dict[str, Store[DemoContext] | None] = {
        "reference": await reference_store(url),
        "sqlstore": sql_store(url),
    }
    figures: dict[str, dict[str, float]] = {}
    try:
        for concurrency in (1, 16):
            for op in OPS:
                key = f"{op}@{concurrency}"
                best: dict[str, float] = {}
                for _ in range(rounds):  # rounds alternate between the stores: drift (other
                    for name, store in stores.items():  # jobs on the machine) hits both
                        if store is not None:
                            ops = await measure(store, op, count, concurrency)
                            best[name] = max(best.get(name, 0.0), ops)
                figures[key] = best
                log(f"  {key}: {figures[key]}")
    finally:
        for store in stores.values():
            close = getattr(store, "aclose", None)
            if close is not None:
                await close()
    return figures


@contextlib.contextmanager
def backend_url(name: str) -> Iterator[str]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/bench.db"
    elif name == "postgres":
        from tests.pgserver import temporary_postgres

        with temporary_postgres() as url:
            yield url
    elif name == "mariadb":
        from tests.mysqlserver import temporary_mariadb

        with temporary_mariadb() as url:
            yield url
    else:
        raise ValueError(name)


async def request_throughput(url: str, count: int) -> dict[str, float]:
    """Requests per second of the demo endpoint (in process: the raw ASGI app over httpx)."""
    import httpx

    from chatkit_adapters.asgi import ChatKitASGIApp
    from examples.demo.server import DemoServer

    store = sql_store(url)
    app = ChatKitASGIApp(
        DemoServer(store, word_delay=0),
        context=lambda scope: DemoContext(f"bench-{uuid.uuid4().hex[:6]}"),
    )
    create = json.dumps(
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": "hi"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        }
    ).encode()
    listing = json.dumps({"type": "threads.list", "params": {"limit": 20}}).encode()
    figures: dict[str, float] = {}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            rounds = (("threads.list", listing, count), ("threads.create", create, count // 4))
            for name, body, n in rounds:
                await client.post("/", content=body)

                async def worker(k: int, body: bytes = body, n: int = n) -> None:
                    for _ in range(k, n, 8):
                        response = await client.post("/", content=body)
                        response.raise_for_status()

                start = time.perf_counter()
                await asyncio.gather(*(worker(k) for k in range(8)))
                figures[name] = n / (time.perf_counter() - start)
    finally:
        await store.aclose()  # type: ignore[attr-defined]
    return figures


def table(results: dict[str, Any]) -> str:
    lines = [
        "| backend | operation | callers | old demo store ops/s | SQLStore ops/s | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for backend, figures in results["stores"].items():
        for key, pair in figures.items():
            op, concurrency = key.split("@")
            old, new = pair.get("reference"), pair["sqlstore"]
            ratio = f"{new / old:.2f}" if old else "—"
            old_text = f"{old:,.0f}" if old else "—"
            row = f"| {backend} | {op} | {concurrency} | {old_text} | {new:,.0f} | {ratio} |"
            lines.append(row)
    if results.get("requests"):
        lines += ["", "| backend | request | requests/s |", "|---|---|---:|"]
        for backend, figures in results["requests"].items():
            for name, value in figures.items():
                lines.append(f"| {backend} | {name} | {value:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stores", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--backends", default="sqlite,postgres,mariadb")
    parser.add_argument("--requests", action="store_true", help="also the demo endpoint")
    args = parser.parse_args(argv)
    count, rounds = (50, 1) if args.quick else (400, 5)
    results: dict[str, Any] = {"stores": {}, "requests": {}}
    for backend in args.backends.split(","):
        log(f"{backend}:")
        with backend_url(backend) as url:
            results["stores"][backend] = asyncio.run(bench_backend(url, count, rounds))
            if args.requests:
                results["requests"][backend] = asyncio.run(request_throughput(url, count))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stores.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
