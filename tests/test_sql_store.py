"""SQLStore: ChatKit's store contract on SQLite, PostgreSQL and MariaDB, and what SQLStore
adds (user keys, exact keys, schema versions, engines per event loop, shielded commits,
SQLite under load). The demo's contract suite (tests/test_store_contract.py) runs on
SQLStore too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from tests.chatkit_store_contract import Context, StoreContract, message, metadata
from tests.mysqlserver import mariadb_url  # noqa: F401  (a session fixture)
from tests.pgserver import postgres_url  # noqa: F401  (a session fixture)
from tests.storedb import SQL_BACKENDS, new_user, sql_url

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 5, 1, 12, 0, 0)


@pytest.fixture(autouse=True)
def _no_stray_sqlite_threads() -> Iterator[None]:
    """Every test leaves no SQLite thread behind (the store's own, aiosqlite's), closed
    loops' ones included: every store is closed, and closing one ends its threads."""
    before = set(threading.enumerate())  # other modules' stores (the examples') are theirs
    yield
    workers = [
        t
        for t in threading.enumerate()
        if t not in before
        and ("_connection_worker" in t.name or t.name.startswith("chatkit-sqlite"))
    ]
    for worker in workers:
        worker.join(timeout=5)  # a closed connection's worker exits right after close()
    assert not [t for t in workers if t.is_alive()]


def _sql() -> Any:
    from chatkit_adapters.stores import SQLStore

    return SQLStore


class TestSQLStoreContract(StoreContract):
    @pytest.fixture(params=SQL_BACKENDS)
    def backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    async def make_store(self, backend: str, request: pytest.FixtureRequest) -> Store[Any]:
        store: Store[Any] = _sql()(sql_url(request, backend))
        return store


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    return sql_url(request, str(request.param))


@pytest.fixture
async def store(url: str) -> AsyncIterator[Any]:
    opened = _sql()(url)
    try:
        yield opened
    finally:
        await opened.aclose()


# --------------------------------------------------------------------------------------
# Import, URLs, user keys
# --------------------------------------------------------------------------------------


def test_importing_the_package_imports_neither_sqlalchemy_nor_django() -> None:
    script = (
        "import sys, chatkit_adapters.stores as s, chatkit_adapters.stores.django as d\n"
        "assert s.default_user_id({'user_id': 7}) == '7'\n"
        "print(sorted(m for m in ('sqlalchemy', 'django') if m in sys.modules))\n"
        "s.SQLStore\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]


def test_urls_pick_the_async_drivers() -> None:
    SQLStore = _sql()
    drivers = {
        "sqlite:///x.db": "sqlite+pysqlite",
        "sqlite://": "sqlite+pysqlite",
        "sqlite+aiosqlite:///x.db": "sqlite+aiosqlite",
        "postgresql://u:s3cret@db/app": "postgresql+psycopg",
        "postgres://u:s3cret@db/app": "postgresql+psycopg",
        "mysql://u:s3cret@db/app": "mysql+asyncmy",
        "mariadb://u:s3cret@db/app": "mariadb+asyncmy",
        "mysql+aiomysql://u:s3cret@db/app": "mysql+aiomysql",
    }
    for given, driver in drivers.items():
        store = SQLStore(given)
        assert store.url.drivername == driver
        assert "s3cret" not in repr(store)
    for bad in ("oracle://db/app", "sqlite://host/x.db", "not a url"):
        with pytest.raises(ValueError):
            SQLStore(bad)


async def test_user_id_option_and_default(tmp_path: Path) -> None:
    SQLStore = _sql()
    url = f"sqlite:///{tmp_path / 'users.db'}"
    async with SQLStore(url) as store:
        await store.save_thread(metadata("thr_a", T0), {"user_id": "alice"})
        assert (await store.load_thread("thr_a", Context("alice"))).id == "thr_a"
        with pytest.raises(TypeError, match="user_id"):
            await store.load_thread("thr_a", object())
        with pytest.raises(TypeError, match="user_id"):
            await store.load_thread("thr_a", {"user_id": ""})
    async with SQLStore(url, user_id=lambda ctx: f"team-{ctx['team']}") as teams:
        await teams.save_thread(metadata("thr_t", T0), {"team": 1, "user_id": "alice"})
        assert (await teams.load_thread("thr_t", {"team": 1})).id == "thr_t"
        with pytest.raises(NotFoundError):
            await teams.load_thread("thr_a", {"team": 1})  # alice's, not the team's


async def test_keys_compare_exactly(store: Any) -> None:
    """MySQL/MariaDB's default collations ignore case and trailing spaces: not here."""
    user = new_user("Case")
    for key in (user, user.lower(), user + " "):
        await store.save_thread(metadata("thr_x", T0), Context(key))
        await store.add_thread_item("thr_x", message("thr_x", "m", key, T0), Context(key))
    for key in (user, user.lower(), user + " "):
        items = (await store.load_thread_items("thr_x", None, 10, "asc", Context(key))).data
        assert [i.content[0].text for i in items] == [key]  # type: ignore[union-attr]
    owner = Context(new_user())
    await store.save_thread(metadata("thr_id", T0), owner)
    for other in ("THR_ID", "thr_id ", "thr_i"):
        with pytest.raises(NotFoundError):
            await store.load_thread(other, owner)
    await store.add_thread_item("thr_id", message("thr_id", "Msg", "1", T0), owner)
    await store.add_thread_item("thr_id", message("thr_id", "msg", "2", T0), owner)
    page = await store.load_thread_items("thr_id", None, 10, "asc", owner)
    assert [i.id for i in page.data] == ["Msg", "msg"]


async def test_saving_the_same_item_twice_is_not_an_error(store: Any) -> None:
    """MySQL reports 0 changed rows for an identical upsert: still the thread exists."""
    owner = Context(new_user())
    await store.save_thread(metadata("thr_same", T0), owner)
    item = message("thr_same", "m", "same", T0)
    for _ in range(3):
        await store.add_thread_item("thr_same", item, owner)
        await store.save_item("thr_same", item, owner)
    assert (await store.load_thread_items("thr_same", None, 10, "asc", owner)).data == [item]


# --------------------------------------------------------------------------------------
# Schema versions
# --------------------------------------------------------------------------------------


def run_command(argv: list[str]) -> str:
    """``python -m chatkit_adapters.stores ARGV`` in this process; its output."""
    import contextlib
    import io

    from chatkit_adapters.stores.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    return out.getvalue()


async def _fresh_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A database with no chatkit tables: a new SQLite file, or a new server database."""
    if backend.startswith("sqlite"):
        return sql_url(request, backend).replace("chatkit.db", "fresh.db")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from chatkit_adapters.stores.sql import normalize_url

    base = normalize_url(sql_url(request, backend))
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_schema_is_versioned_and_upgraded_by_command(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from chatkit_adapters.stores import SCHEMA_VERSION, SchemaError

    SQLStore = _sql()
    url = await _fresh_url(request, backend, tmp_path)
    owner = Context(new_user())
    async with SQLStore(url, migrate=False) as strict:
        assert await strict.schema_version() == 0
        with pytest.raises(SchemaError, match=r"python -m chatkit_adapters\.stores upgrade"):
            await strict.load_thread("thr", owner)

    if backend == "sqlite":  # the command itself, once; in-process for the others
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "chatkit_adapters.stores", "upgrade", url]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        output = done.stdout
    else:
        output = await asyncio.to_thread(run_command, ["upgrade", url])
    assert f"from version 0 to {SCHEMA_VERSION}" in output
    assert "up to date" in await asyncio.to_thread(run_command, ["upgrade", url])
    assert f"schema version {SCHEMA_VERSION} (this release uses {SCHEMA_VERSION})" in (
        await asyncio.to_thread(run_command, ["version", url])
    )

    async with SQLStore(url, migrate=False) as strict:
        await strict.save_thread(metadata("thr", T0), owner)
        assert (await strict.load_thread("thr", owner)).id == "thr"
        assert await strict.schema_version() == SCHEMA_VERSION

        def newer_release_was_here(conn: Any) -> None:
            from sqlalchemy import text

            conn.execute(text("UPDATE chatkit_schema SET version = version + 1"))

        await strict._get_runner().run(newer_release_was_here, write=True, transaction=True)
    async with SQLStore(url) as newer:
        with pytest.raises(SchemaError, match="newer"):
            await newer.load_thread("thr", owner)


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_concurrent_first_use_migrates_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Several stores (as several workers would) start on an empty database at once."""
    SQLStore = _sql()
    url = await _fresh_url(request, backend, tmp_path)
    owner = Context(new_user())
    stores = [SQLStore(url) for _ in range(6)]
    try:
        await asyncio.gather(
            *(s.save_thread(metadata(f"thr_{n}", T0), owner) for n, s in enumerate(stores))
        )
        page = await stores[0].load_threads(10, None, "asc", owner)
        assert sorted(t.id for t in page.data) == [f"thr_{n}" for n in range(6)]
        assert {await s.schema_version() for s in stores} == {1}
    finally:
        for s in stores:
            await s.aclose()


# --------------------------------------------------------------------------------------
# Event loops
# --------------------------------------------------------------------------------------


class LoopThread:
    """An event loop running in its own thread, like the sync adapters' background loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    running = LoopThread()
    try:
        yield running
    finally:
        running.close()


async def test_one_store_serves_two_running_loops_at_once(
    store: Any, loop_thread: LoopThread
) -> None:
    owner = Context(new_user())
    await store.save_thread(metadata("thr_loops", T0), owner)

    async def write(prefix: str) -> None:
        await asyncio.gather(
            *(
                store.add_thread_item(
                    "thr_loops",
                    message("thr_loops", f"{prefix}{n}", "x", T0 + timedelta(seconds=n)),
                    owner,
                )
                for n in range(15)
            )
        )

    await asyncio.gather(write("here"), loop_thread.run(write("there")))
    there = await loop_thread.run(store.load_thread_items("thr_loops", None, 100, "asc", owner))
    here = await store.load_thread_items("thr_loops", None, 100, "asc", owner)
    assert here == there
    assert len(here.data) == 30
    runner = store._runner
    if hasattr(runner, "_bound"):  # the async runner
        assert len(runner._bound) == 2  # an async engine per loop
    await store.aclose()  # disposes the other loop's engine on that loop, too
    assert store._runner is None
    assert (await loop_thread.run(store.load_thread("thr_loops", owner))).id == "thr_loops"


async def test_a_loop_that_ends_without_closing_the_store(url: str) -> None:
    SQLStore = _sql()
    store = SQLStore(url)
    owner = Context(new_user())

    async def use() -> None:
        await store.save_thread(metadata("thr_gone_loop", T0), owner)

    for _ in range(3):  # asyncio.run: a new loop, closed at the end, store never closed
        await asyncio.to_thread(asyncio.run, use())
    assert (await store.load_thread("thr_gone_loop", owner)).id == "thr_gone_loop"
    runner = store._runner
    if hasattr(runner, "_bound"):  # the async runner: closed loops' engines were dropped
        assert list(runner._bound) == [asyncio.get_running_loop()]
    await store.aclose()  # the fixture checks that no connection thread is left


async def test_memory_database_is_shared_by_every_loop(loop_thread: LoopThread) -> None:
    """sqlite:// lives on the store's own thread, so every loop sees the same database;
    on an async driver it belongs to one loop (and says so)."""
    SQLStore = _sql()
    async with SQLStore("sqlite://") as store:
        await store.save_thread(metadata("thr_mem", T0), Context("u"))
        there = await loop_thread.run(store.load_thread("thr_mem", Context("u")))
        assert there.id == "thr_mem"
    async with SQLStore("sqlite+aiosqlite://") as store:
        await store.save_thread(metadata("thr_mem", T0), Context("u"))
        with pytest.raises(RuntimeError, match="one event loop"):
            await loop_thread.run(store.load_thread("thr_mem", Context("u")))
        assert (await store.load_thread("thr_mem", Context("u"))).id == "thr_mem"
        await loop_thread.run(store.aclose())  # (nothing bound there)


# --------------------------------------------------------------------------------------
# Cancellation: all or nothing, the commit shielded
# --------------------------------------------------------------------------------------


def cancel_on(statement_prefix: str, task: asyncio.Task[Any], fired: list[str]) -> Any:
    """A ``before_cursor_execute`` listener that cancels ``task`` when a statement with
    that prefix is about to run, and lets it run only once the task has seen the
    cancellation (deterministic: no timing)."""
    loop = asyncio.get_running_loop()
    loop_thread = threading.current_thread()

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fired or not statement.lstrip().upper().startswith(statement_prefix):
            return
        fired.append(statement)
        if threading.current_thread() is loop_thread:  # an async engine: in the task itself
            task.cancel()
            return
        observed = threading.Event()  # the store's thread: wait until the task has seen it

        def cancel_then_signal() -> None:
            task.cancel()  # schedules the task's wake-up first ...
            loop.call_soon(observed.set)  # ... so this runs after it

        loop.call_soon_threadsafe(cancel_then_signal)
        assert observed.wait(30)

    return listener


def sync_engine(store: Any) -> Any:
    from chatkit_adapters.stores.sql import _ThreadRunner

    runner = store._get_runner()
    return runner.engine if isinstance(runner, _ThreadRunner) else runner._bind().engine.sync_engine


async def test_cancelled_during_a_write_leaves_nothing(store: Any, url: str) -> None:
    from sqlalchemy import event

    owner = Context(new_user())
    await store.save_thread(metadata("thr_cut", T0), owner)
    item = message("thr_cut", "m_cut", "x", T0)
    engine = sync_engine(store)
    fired: list[str] = []
    task = asyncio.create_task(store.add_thread_item("thr_cut", item, owner))
    listener = cancel_on("INSERT", task, fired)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(fired) == 1
    stored = (await store.load_thread_items("thr_cut", None, 10, "asc", owner)).data
    if url.startswith("postgresql"):
        # one statement in autocommit: PostgreSQL cancels it, unless it already finished
        assert stored in ([], [item])
    else:
        assert stored == []  # rolled back (the store's thread; or the connection dropped)
    await store.add_thread_item("thr_cut", message("thr_cut", "after", "y", T0), owner)
    assert (await store.load_item("thr_cut", "after", owner)).id == "after"


async def test_cancelled_during_the_commit_completes_whole(store: Any) -> None:
    """delete_thread is a transaction on every backend: cancelled at its COMMIT, the
    commit completes (shielded) before the caller's CancelledError."""
    from sqlalchemy import event

    owner = Context(new_user())
    await store.save_thread(metadata("thr_commit", T0), owner)
    for n in range(3):
        await store.add_thread_item("thr_commit", message("thr_commit", f"m{n}", "x", T0), owner)
    engine = sync_engine(store)
    fired: list[str] = []
    task = asyncio.create_task(store.delete_thread("thr_commit", owner))
    listener = cancel_on("COMMIT", task, fired)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert fired == ["COMMIT"]
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_commit", owner)
    assert (await store.load_thread_items("thr_commit", None, 10, "asc", owner)).data == []


async def test_cancelled_before_its_turn_never_runs(tmp_path: Path) -> None:
    """SQLite: a write queued behind another one and cancelled there is never run."""
    SQLStore = _sql()
    async with SQLStore(f"sqlite:///{tmp_path / 'queue.db'}") as store:
        owner = Context("u")
        await store.save_thread(metadata("thr_q", T0), owner)
        from chatkit_adapters.stores.sql import _ThreadRunner

        runner = store._get_runner()
        assert isinstance(runner, _ThreadRunner)
        release = threading.Event()
        blocker = runner._executor(True).submit(release.wait, 30)  # the writer is busy
        task = asyncio.create_task(
            store.add_thread_item("thr_q", message("thr_q", "queued", "x", T0), owner)
        )
        await asyncio.sleep(0)  # let it queue its job behind the blocker
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.wrap_future(blocker)
        assert (await store.load_thread_items("thr_q", None, 10, "asc", owner)).data == []


# --------------------------------------------------------------------------------------
# SQLite under load
# --------------------------------------------------------------------------------------

STREAMS = 100


class StreamingServer(ChatKitServer[Context]):
    """Streams five assistant items per turn (each one a store write in ChatKit)."""

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        for n in range(5):
            await asyncio.sleep(0)
            yield ThreadItemDoneEvent(
                item=AssistantMessageItem(
                    id=self.store.generate_item_id("message", thread, context),
                    thread_id=thread.id,
                    created_at=datetime.now(),
                    content=[AssistantMessageContent(text=f"part {n}")],
                )
            )


def _create(text: str) -> bytes:
    return json.dumps(
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": text}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        }
    ).encode()


async def test_sqlite_100_concurrent_streams_and_writers(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    """100 streams through ChatKit plus 100 direct writers, on this loop and on a second
    loop (a second engine: two SQLite writers contend), all land: no "database is locked"."""
    SQLStore = _sql()
    store = SQLStore(f"sqlite:///{tmp_path / 'load.db'}")
    server = StreamingServer(store)
    owner = Context("loaded")
    await store.save_thread(metadata("thr_writers", T0), owner)

    async def stream(n: int) -> str:
        result = await server.process(_create(f"stream {n}"), owner)
        assert isinstance(result, StreamingResult)
        events = [json.loads(chunk[len(b"data: ") :]) async for chunk in result]
        assert [e["type"] for e in events].count("thread.item.done") == 6, events[-1]
        return str(events[0]["thread"]["id"])

    async def writer(prefix: str, n: int) -> None:
        item = message("thr_writers", f"{prefix}{n:03d}", "w" * 500, T0 + timedelta(seconds=n))
        await store.add_thread_item("thr_writers", item, owner)

    async def load(prefix: str, first: int) -> list[str]:
        half = STREAMS // 2
        results = await asyncio.gather(
            *(stream(first + n) for n in range(half)),
            *(writer(prefix, n) for n in range(half)),
        )
        return [r for r in results if isinstance(r, str)]

    here, there = await asyncio.gather(load("a", 0), loop_thread.run(load("b", STREAMS)))
    thread_ids = here + there
    assert len(set(thread_ids)) == STREAMS
    for thread_id in thread_ids:
        items = (await store.load_thread_items(thread_id, None, 20, "asc", owner)).data
        assert [type(i).__name__ for i in items] == ["UserMessageItem"] + [
            "AssistantMessageItem"
        ] * 5
    written = (await store.load_thread_items("thr_writers", None, 200, "asc", owner)).data
    assert len(written) == STREAMS
    threads = await store.load_threads(500, None, "asc", owner)
    assert len(threads.data) == STREAMS + 1
    await store.aclose()


def test_store_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/stores.py (its smoke run on SQLite): both stores measured, every row."""
    from benchmarks.stores import main

    main(["--quick", "--backends", "sqlite"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sqlite")]
    assert len(rows) == 8
    for row in rows:
        old, new, ratio = (cell.strip() for cell in row.strip("|").split("|")[3:6])
        assert float(old.replace(",", "")) > 0 and float(new.replace(",", "")) > 0
        assert float(ratio) > 0
