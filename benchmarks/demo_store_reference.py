"""The demo store before SQLStore (hand-written SQL), kept as the benchmark reference.

benchmarks/stores.py compares SQLStore with it. It is not used anywhere else.

Both stores implement every method of :class:`chatkit.store.Store` with the same semantics:

- Threads, items and attachments are serialised as JSON (``model_dump_json`` /
  ``TypeAdapter(...).validate_json``), as the ChatKit docs recommend, so that model changes
  between ChatKit versions do not need schema migrations. A few columns are kept next to
  the JSON for keys and ordering.
- Every row carries the context's ``user_id`` and every query filters by it: another
  user's thread, item or attachment does not exist (:class:`~chatkit.store.NotFoundError`).
  Ids are scoped per user, so two users never collide even on equal ids.
- Threads and items are ordered by ``created_at`` (naive datetimes, which ChatKit uses,
  are taken as local time), then by insertion order. Saving an existing row again (an
  upsert) keeps its place in the insertion order.
- ``load_*`` raise ``NotFoundError`` for a missing thread, item, attachment or ``after``
  cursor. ``load_thread_items`` of an unknown thread returns an empty page.
  ``add_thread_item``/``save_item`` raise ``NotFoundError`` when the thread does not exist
  (an item never outlives its thread). ``add_thread_item`` of an existing id replaces the
  item. Deletes are idempotent.
- Every write really awaits the database and is committed when the call returns. A call
  cancelled mid-way leaves either all or none of its writes, and the store stays usable.

A store connects lazily, on first use, inside the running event loop, and then belongs
to that loop: it may be created in one thread and used from an event loop running in
another, but not from two loops at once. It is safe for any number of concurrent
coroutines on its loop. Call :meth:`DemoStore.aclose` (or use ``async with``) when done.

:func:`open_store` picks the backend from a URL (``DATABASE_URL`` by default).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pydantic import BaseModel, TypeAdapter
from typing_extensions import Self

from examples.demo.context import DemoContext

if TYPE_CHECKING:
    import aiosqlite
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DemoStore",
    "PostgresStore",
    "SQLiteStore",
    "open_store",
]

DEFAULT_DATABASE_URL: Final = "sqlite:///chatkit-demo.db"
"""Used by :func:`open_store` when neither an URL nor ``DATABASE_URL`` is given."""

_ITEM: Final[TypeAdapter[ThreadItem]] = TypeAdapter(ThreadItem)
_ATTACHMENT: Final[TypeAdapter[Attachment]] = TypeAdapter(Attachment)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_METADATA_FIELDS: Final = frozenset(ThreadMetadata.model_fields)

_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """Return ``moment`` as an aware UTC datetime (a naive one is taken as local time)."""
    return moment.astimezone(timezone.utc)


def _micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch: SQLite's sortable ``created_at``."""
    return (_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def _thread_json(thread: ThreadMetadata) -> str:
    """Serialise only the metadata of ``thread`` (ChatKit sometimes passes a full ``Thread``)."""
    extra = set(type(thread).model_fields) - _METADATA_FIELDS
    return thread.model_dump_json(exclude=extra or None)


def _descending(order: str) -> bool:
    """Validate a ChatKit ``order`` argument; return whether it is descending."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order == "desc"


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit!r}")


def _page(rows: Sequence[tuple[Any, ...]], limit: int, parse: Callable[[str], _M]) -> Page[_M]:
    """Build a page from up to ``limit + 1`` rows whose first column is the JSON text."""
    data = [parse(row[0]) for row in rows[:limit]]
    has_more = len(rows) > limit
    after = getattr(data[-1], "id", None) if has_more and data else None
    return Page(data=data, has_more=has_more, after=after)


def _parse_thread(text: str) -> ThreadMetadata:
    return ThreadMetadata.model_validate_json(text)


def _parse_item(text: str) -> ThreadItem:
    return _ITEM.validate_json(text)


def _keyset(descending: bool) -> tuple[str, str]:
    """SQL for keyset pagination on ``(created_at, seq)``: (comparison, ORDER BY direction)."""
    return ("<", "DESC") if descending else (">", "ASC")


def _redact(url: str) -> str:
    """``url`` without its password, for reprs and error messages."""
    if "://" not in url:  # a libpq "key=value" string
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class DemoStore(Store[DemoContext], ABC):
    """Common base of the demo stores: event-loop binding, ``aclose`` and ``async with``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def _bind_loop(self) -> asyncio.Lock:
        """Bind the store to the running loop on first use; return the loop's lock.

        The lock is created here, lazily, because the store may be constructed outside of
        (or before) the event loop that will use it.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                idle = not self._is_open() and not (self._lock and self._lock.locked())
                if not idle:
                    raise RuntimeError(
                        f"{type(self).__name__} is already in use by another event loop; "
                        "use one store per event loop (or aclose() it there first)"
                    )
            if self._loop is not None:
                self._abandon()  # its loop is gone (or done with it): drop what was bound
            self._loop = loop
            self._lock = asyncio.Lock()
        assert self._lock is not None
        return self._lock

    @abstractmethod
    def _is_open(self) -> bool:
        """Whether a connection (or pool) is open."""

    @abstractmethod
    def _abandon(self) -> None:
        """Forget the connection(s) of a closed event loop without awaiting anything."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection(s). The store reconnects if it is used again."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------

_SQLITE_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS chatkit_threads (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
        data TEXT NOT NULL,           -- ThreadMetadata JSON
        UNIQUE (user_id, id)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS chatkit_threads_by_time
        ON chatkit_threads (user_id, created_at, seq)
    """,
    """
    CREATE TABLE IF NOT EXISTS chatkit_items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        data TEXT NOT NULL,           -- ThreadItem JSON
        UNIQUE (user_id, thread_id, id),
        FOREIGN KEY (user_id, thread_id)
            REFERENCES chatkit_threads (user_id, id) ON DELETE CASCADE
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS chatkit_items_by_time
        ON chatkit_items (user_id, thread_id, created_at, seq)
    """,
    """
    CREATE TABLE IF NOT EXISTS chatkit_attachments (
        user_id TEXT NOT NULL,
        id TEXT NOT NULL,
        data TEXT NOT NULL,           -- Attachment JSON
        PRIMARY KEY (user_id, id)
    )
    """,
)

_SQLITE_UPSERT_ITEM: Final = """
    INSERT INTO chatkit_items (user_id, thread_id, id, created_at, data)
    SELECT ?, ?, ?, ?, ?
    WHERE EXISTS (SELECT 1 FROM chatkit_threads WHERE user_id = ? AND id = ?)
    ON CONFLICT (user_id, thread_id, id)
        DO UPDATE SET created_at = excluded.created_at, data = excluded.data
"""


def _sqlite_path(url: str) -> str:
    """The database path of a ``sqlite://`` URL (SQLAlchemy's spelling).

    ``sqlite:///rel/file.db`` is relative to the working directory,
    ``sqlite:////abs/file.db`` is absolute, ``sqlite://`` and ``sqlite:///:memory:`` are
    a private in-memory database. A ``+driver`` suffix on the scheme is ignored.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() != "sqlite":
        raise ValueError(f"not a sqlite:// URL: {url!r}")
    if rest == "":
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError(
            f"a sqlite URL has no host: use sqlite:///relative or sqlite:////absolute: {url!r}"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(f"sqlite URL options are not supported: {url!r}")
    return unquote(rest[1:]) or ":memory:"


async def _run(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Execute one statement, close its cursor, return its row count."""
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


class SQLiteStore(DemoStore):
    """A ChatKit store in one SQLite database file (or in memory), through aiosqlite.

    One connection per store, in WAL mode with a busy timeout, so that several processes
    may share the file. All operations of the store go through one ``asyncio.Lock`` and
    each runs in its own transaction, so concurrent coroutines never interleave inside
    a transaction.
    """

    def __init__(self, path: str | os.PathLike[str] = "chatkit-demo.db") -> None:
        """Create the store; nothing is opened until the first call.

        ``path`` is a file path or ``":memory:"`` (a private database that lives as long
        as the store's connection).
        """
        super().__init__()
        self.path = os.fspath(path)
        self._conn: aiosqlite.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Create a store from a ``sqlite:///path`` URL."""
        return cls(_sqlite_path(url))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- connection ----------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        """Open the connection and create the schema (called with the lock held)."""
        import aiosqlite

        pending = aiosqlite.connect(self.path, isolation_level=None)
        # aiosqlite's worker thread is not a daemon: a store that is never closed would
        # keep the interpreter from exiting. Nothing is lost by making it one, since every
        # write is committed before its call returns.
        worker = getattr(pending, "_thread", None)
        if isinstance(worker, threading.Thread) and not worker.is_alive():
            worker.daemon = True
        conn = await pending
        try:
            await _run(conn, "PRAGMA busy_timeout = 10000")
            await _run(conn, "PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                await _run(conn, "PRAGMA journal_mode = WAL")
            try:
                await _run(conn, "BEGIN IMMEDIATE")
                for statement in _SQLITE_SCHEMA:
                    await _run(conn, statement)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        except BaseException:
            await conn.close()
            raise
        return conn

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the store's lock and run one transaction on its connection.

        aiosqlite queues statements to its worker thread in the order they are awaited and
        each ``await`` enqueues before it can be cancelled, so the ``ROLLBACK`` of a
        cancelled call always runs before the next call's ``BEGIN``.
        """
        async with self._bind_loop():
            if self._conn is None:
                self._conn = await self._connect()
            conn = self._conn
            try:
                await _run(conn, "BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    def _is_open(self) -> bool:
        return self._conn is not None

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.stop()

    async def aclose(self) -> None:
        """Close the connection (the store reconnects if used again)."""
        if self._conn is None:
            return
        async with self._bind_loop():
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    # -- small query helpers ---------------------------------------------------------------

    @staticmethod
    async def _one(
        conn: aiosqlite.Connection, sql: str, params: Sequence[Any]
    ) -> tuple[Any, ...] | None:
        async with conn.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return None if row is None else tuple(row)

    @staticmethod
    async def _all(
        conn: aiosqlite.Connection, sql: str, params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        async with conn.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    # -- threads -------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: DemoContext) -> ThreadMetadata:
        """Load a thread's metadata, or raise ``NotFoundError``."""
        async with self._transaction(write=False) as conn:
            row = await self._one(
                conn,
                "SELECT data FROM chatkit_threads WHERE user_id = ? AND id = ?",
                (context.user_id, thread_id),
            )
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return _parse_thread(row[0])

    async def save_thread(self, thread: ThreadMetadata, context: DemoContext) -> None:
        """Insert or update a thread's metadata."""
        async with self._transaction(write=True) as conn:
            await _run(
                conn,
                """
                INSERT INTO chatkit_threads (user_id, id, created_at, data) VALUES (?, ?, ?, ?)
                ON CONFLICT (user_id, id)
                    DO UPDATE SET created_at = excluded.created_at, data = excluded.data
                """,
                (context.user_id, thread.id, _micros(thread.created_at), _thread_json(thread)),
            )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: DemoContext
    ) -> Page[ThreadMetadata]:
        """A page of the user's threads by creation time; ``after`` is a thread id."""
        _check_limit(limit)
        compare, direction = _keyset(_descending(order))
        async with self._transaction(write=False) as conn:
            where, params = "user_id = ?", [context.user_id]
            if after is not None:
                cursor = await self._one(
                    conn,
                    "SELECT created_at, seq FROM chatkit_threads WHERE user_id = ? AND id = ?",
                    (context.user_id, after),
                )
                if cursor is None:
                    raise NotFoundError(f"Thread {after} not found")
                where += f" AND (created_at, seq) {compare} (?, ?)"
                params += cursor
            rows = await self._all(
                conn,
                f"SELECT data FROM chatkit_threads WHERE {where}"
                f" ORDER BY created_at {direction}, seq {direction} LIMIT ?",
                (*params, limit + 1),
            )
        return _page(rows, limit, _parse_thread)

    async def delete_thread(self, thread_id: str, context: DemoContext) -> None:
        """Delete a thread and all its items (a no-op if it does not exist)."""
        async with self._transaction(write=True) as conn:
            key = (context.user_id, thread_id)
            await _run(conn, "DELETE FROM chatkit_items WHERE user_id = ? AND thread_id = ?", key)
            await _run(conn, "DELETE FROM chatkit_threads WHERE user_id = ? AND id = ?", key)

    # -- items ---------------------------------------------------------------------------

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: DemoContext,
    ) -> Page[ThreadItem]:
        """A page of a thread's items by creation time; ``after`` is an item id."""
        _check_limit(limit)
        compare, direction = _keyset(_descending(order))
        async with self._transaction(write=False) as conn:
            where, params = "user_id = ? AND thread_id = ?", [context.user_id, thread_id]
            if after is not None:
                cursor = await self._one(
                    conn,
                    "SELECT created_at, seq FROM chatkit_items"
                    " WHERE user_id = ? AND thread_id = ? AND id = ?",
                    (context.user_id, thread_id, after),
                )
                if cursor is None:
                    raise NotFoundError(f"Item {after} not found in thread {thread_id}")
                where += f" AND (created_at, seq) {compare} (?, ?)"
                params += cursor
            rows = await self._all(
                conn,
                f"SELECT data FROM chatkit_items WHERE {where}"
                f" ORDER BY created_at {direction}, seq {direction} LIMIT ?",
                (*params, limit + 1),
            )
        return _page(rows, limit, _parse_item)

    async def _upsert_item(self, thread_id: str, item: ThreadItem, context: DemoContext) -> None:
        async with self._transaction(write=True) as conn:
            try:
                written = await _run(
                    conn,
                    _SQLITE_UPSERT_ITEM,
                    (
                        context.user_id,
                        thread_id,
                        item.id,
                        _micros(item.created_at),
                        item.model_dump_json(),
                        context.user_id,
                        thread_id,
                    ),
                )
            except sqlite3.IntegrityError as exc:  # the thread went away (another process)
                raise NotFoundError(f"Thread {thread_id} not found") from exc
            if written == 0:
                raise NotFoundError(f"Thread {thread_id} not found")

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: DemoContext) -> None:
        """Append an item to an existing thread (an existing id is replaced in place)."""
        await self._upsert_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: DemoContext) -> None:
        """Insert or update an item of an existing thread."""
        await self._upsert_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: DemoContext) -> ThreadItem:
        """Load one item of a thread, or raise ``NotFoundError``."""
        async with self._transaction(write=False) as conn:
            row = await self._one(
                conn,
                "SELECT data FROM chatkit_items WHERE user_id = ? AND thread_id = ? AND id = ?",
                (context.user_id, thread_id, item_id),
            )
        if row is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        return _parse_item(row[0])

    async def delete_thread_item(self, thread_id: str, item_id: str, context: DemoContext) -> None:
        """Delete one item of a thread (a no-op if it does not exist)."""
        async with self._transaction(write=True) as conn:
            await _run(
                conn,
                "DELETE FROM chatkit_items WHERE user_id = ? AND thread_id = ? AND id = ?",
                (context.user_id, thread_id, item_id),
            )

    # -- attachments ---------------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: DemoContext) -> None:
        """Insert or update an attachment's metadata."""
        async with self._transaction(write=True) as conn:
            await _run(
                conn,
                """
                INSERT INTO chatkit_attachments (user_id, id, data) VALUES (?, ?, ?)
                ON CONFLICT (user_id, id) DO UPDATE SET data = excluded.data
                """,
                (context.user_id, attachment.id, attachment.model_dump_json()),
            )

    async def load_attachment(self, attachment_id: str, context: DemoContext) -> Attachment:
        """Load an attachment's metadata, or raise ``NotFoundError``."""
        async with self._transaction(write=False) as conn:
            row = await self._one(
                conn,
                "SELECT data FROM chatkit_attachments WHERE user_id = ? AND id = ?",
                (context.user_id, attachment_id),
            )
        if row is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return _ATTACHMENT.validate_json(row[0])

    async def delete_attachment(self, attachment_id: str, context: DemoContext) -> None:
        """Delete an attachment's metadata (a no-op if it does not exist)."""
        async with self._transaction(write=True) as conn:
            await _run(
                conn,
                "DELETE FROM chatkit_attachments WHERE user_id = ? AND id = ?",
                (context.user_id, attachment_id),
            )


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------

_PG_SCHEMA_LOCK: Final = 0x43484B54  # pg_advisory_xact_lock key: "CHKT"

_PG_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS chatkit_threads (
        user_id TEXT NOT NULL,
        id TEXT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        created_at TIMESTAMPTZ NOT NULL,
        data JSON NOT NULL,            -- ThreadMetadata; JSON (not JSONB) keeps \\u0000
        PRIMARY KEY (user_id, id)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS chatkit_threads_by_time
        ON chatkit_threads (user_id, created_at, seq)
    """,
    """
    CREATE TABLE IF NOT EXISTS chatkit_items (
        user_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        id TEXT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        created_at TIMESTAMPTZ NOT NULL,
        data JSON NOT NULL,
        PRIMARY KEY (user_id, thread_id, id),
        FOREIGN KEY (user_id, thread_id)
            REFERENCES chatkit_threads (user_id, id) ON DELETE CASCADE
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS chatkit_items_by_time
        ON chatkit_items (user_id, thread_id, created_at, seq)
    """,
    """
    CREATE TABLE IF NOT EXISTS chatkit_attachments (
        user_id TEXT NOT NULL,
        id TEXT NOT NULL,
        data JSON NOT NULL,
        PRIMARY KEY (user_id, id)
    )
    """,
)

_PG_UPSERT_ITEM: Final = """
    INSERT INTO chatkit_items (user_id, thread_id, id, created_at, data)
    SELECT %s, %s, %s, %s, %s::json
    WHERE EXISTS (SELECT 1 FROM chatkit_threads WHERE user_id = %s AND id = %s)
    ON CONFLICT (user_id, thread_id, id)
        DO UPDATE SET created_at = EXCLUDED.created_at, data = EXCLUDED.data
"""

_PG_SCHEMES: Final = ("postgresql", "postgres")


def _postgres_conninfo(url: str) -> str:
    """A libpq URI from a ``postgresql://`` / ``postgres://`` URL (``+driver`` is dropped)."""
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if not sep or base not in _PG_SCHEMES:
        raise ValueError(f"not a postgresql:// URL: {_redact(url)!r}")
    return f"postgresql://{rest}"


class PostgresStore(DemoStore):
    """A ChatKit store in PostgreSQL, through psycopg 3 and a ``psycopg_pool`` pool.

    The pool is opened lazily on first use. Any number of processes may share the
    database: nothing is cached in the process, every call is its own transaction.
    On Windows psycopg's async mode needs a ``SelectorEventLoop``.
    """

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 10) -> None:
        """Create the store; nothing is opened until the first call.

        ``conninfo`` is a libpq connection string or ``postgresql://`` URL; ``min_size``
        and ``max_size`` bound the connection pool.
        """
        super().__init__()
        self.conninfo = conninfo
        self.min_size = min_size
        self.max_size = max_size
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Create a store from a ``postgresql://`` or ``postgres://`` URL."""
        return cls(_postgres_conninfo(url))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_redact(self.conninfo)!r})"

    # -- connection ----------------------------------------------------------------------

    async def _open_pool(self) -> AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]:
        async with self._bind_loop():
            if self._pool is not None:
                return self._pool
            from psycopg_pool import AsyncConnectionPool

            pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
                self.conninfo,
                min_size=self.min_size,
                max_size=self.max_size,
                kwargs={"autocommit": True},
                check=AsyncConnectionPool.check_connection,
                open=False,
                name="chatkit-demo",
            )
            try:
                await pool.open(wait=True, timeout=30.0)
                async with pool.connection() as conn, conn.transaction():
                    # Concurrent CREATE TABLE IF NOT EXISTS can still collide: serialise
                    # the schema set-up of every process on one advisory lock.
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                    for statement in _PG_SCHEMA:
                        await conn.execute(statement)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
            return pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[tuple[Any, ...]]]:
        """A pooled connection in autocommit mode (use ``conn.transaction()`` for more)."""
        pool = self._pool
        if pool is None or self._loop is not asyncio.get_running_loop():
            pool = await self._open_pool()
        async with pool.connection() as conn:
            yield conn

    def _is_open(self) -> bool:
        return self._pool is not None

    def _abandon(self) -> None:
        # Its workers and connections died with their loop: nothing can be awaited any more.
        # (aclose() the store on the loop that used it to close them cleanly.)
        self._pool = None

    async def aclose(self) -> None:
        """Close the connection pool (the store reopens it if used again)."""
        if self._pool is None:
            return
        async with self._bind_loop():
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()

    async def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount

    async def _page_query(
        self,
        table: str,
        keys: dict[str, str],
        after: str | None,
        limit: int,
        order: str,
        missing: str,
    ) -> list[tuple[Any, ...]]:
        """Rows ``(data,)`` of one keyset page of ``table`` (threads or items)."""
        _check_limit(limit)
        compare, direction = _keyset(_descending(order))
        where = " AND ".join(f"{column} = %s" for column in keys)
        params: list[Any] = list(keys.values())
        async with self._connection() as conn, conn.transaction():
            if after is not None:
                cursor = await conn.execute(
                    f"SELECT created_at, seq FROM {table} WHERE {where} AND id = %s",
                    (*params, after),
                )
                position = await cursor.fetchone()
                if position is None:
                    raise NotFoundError(missing)
                where += f" AND (created_at, seq) {compare} (%s, %s)"
                params += position
            cursor = await conn.execute(
                f"SELECT data::text FROM {table} WHERE {where}"
                f" ORDER BY created_at {direction}, seq {direction} LIMIT %s",
                (*params, limit + 1),
            )
            return await cursor.fetchall()

    # -- threads -------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: DemoContext) -> ThreadMetadata:
        """Load a thread's metadata, or raise ``NotFoundError``."""
        row = await self._one(
            "SELECT data::text FROM chatkit_threads WHERE user_id = %s AND id = %s",
            (context.user_id, thread_id),
        )
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return _parse_thread(row[0])

    async def save_thread(self, thread: ThreadMetadata, context: DemoContext) -> None:
        """Insert or update a thread's metadata."""
        await self._write(
            """
            INSERT INTO chatkit_threads (user_id, id, created_at, data)
            VALUES (%s, %s, %s, %s::json)
            ON CONFLICT (user_id, id)
                DO UPDATE SET created_at = EXCLUDED.created_at, data = EXCLUDED.data
            """,
            (context.user_id, thread.id, _utc(thread.created_at), _thread_json(thread)),
        )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: DemoContext
    ) -> Page[ThreadMetadata]:
        """A page of the user's threads by creation time; ``after`` is a thread id."""
        rows = await self._page_query(
            "chatkit_threads",
            {"user_id": context.user_id},
            after,
            limit,
            order,
            f"Thread {after} not found",
        )
        return _page(rows, limit, _parse_thread)

    async def delete_thread(self, thread_id: str, context: DemoContext) -> None:
        """Delete a thread and all its items (a no-op if it does not exist)."""
        key = (context.user_id, thread_id)
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM chatkit_items WHERE user_id = %s AND thread_id = %s", key
            )
            await conn.execute("DELETE FROM chatkit_threads WHERE user_id = %s AND id = %s", key)

    # -- items ---------------------------------------------------------------------------

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: DemoContext,
    ) -> Page[ThreadItem]:
        """A page of a thread's items by creation time; ``after`` is an item id."""
        rows = await self._page_query(
            "chatkit_items",
            {"user_id": context.user_id, "thread_id": thread_id},
            after,
            limit,
            order,
            f"Item {after} not found in thread {thread_id}",
        )
        return _page(rows, limit, _parse_item)

    async def _upsert_item(self, thread_id: str, item: ThreadItem, context: DemoContext) -> None:
        from psycopg import errors

        try:
            written = await self._write(
                _PG_UPSERT_ITEM,
                (
                    context.user_id,
                    thread_id,
                    item.id,
                    _utc(item.created_at),
                    item.model_dump_json(),
                    context.user_id,
                    thread_id,
                ),
            )
        except errors.ForeignKeyViolation as exc:  # the thread was deleted concurrently
            raise NotFoundError(f"Thread {thread_id} not found") from exc
        if written == 0:
            raise NotFoundError(f"Thread {thread_id} not found")

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: DemoContext) -> None:
        """Append an item to an existing thread (an existing id is replaced in place)."""
        await self._upsert_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: DemoContext) -> None:
        """Insert or update an item of an existing thread."""
        await self._upsert_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: DemoContext) -> ThreadItem:
        """Load one item of a thread, or raise ``NotFoundError``."""
        row = await self._one(
            "SELECT data::text FROM chatkit_items"
            " WHERE user_id = %s AND thread_id = %s AND id = %s",
            (context.user_id, thread_id, item_id),
        )
        if row is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        return _parse_item(row[0])

    async def delete_thread_item(self, thread_id: str, item_id: str, context: DemoContext) -> None:
        """Delete one item of a thread (a no-op if it does not exist)."""
        await self._write(
            "DELETE FROM chatkit_items WHERE user_id = %s AND thread_id = %s AND id = %s",
            (context.user_id, thread_id, item_id),
        )

    # -- attachments ---------------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: DemoContext) -> None:
        """Insert or update an attachment's metadata."""
        await self._write(
            """
            INSERT INTO chatkit_attachments (user_id, id, data) VALUES (%s, %s, %s::json)
            ON CONFLICT (user_id, id) DO UPDATE SET data = EXCLUDED.data
            """,
            (context.user_id, attachment.id, attachment.model_dump_json()),
        )

    async def load_attachment(self, attachment_id: str, context: DemoContext) -> Attachment:
        """Load an attachment's metadata, or raise ``NotFoundError``."""
        row = await self._one(
            "SELECT data::text FROM chatkit_attachments WHERE user_id = %s AND id = %s",
            (context.user_id, attachment_id),
        )
        if row is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return _ATTACHMENT.validate_json(row[0])

    async def delete_attachment(self, attachment_id: str, context: DemoContext) -> None:
        """Delete an attachment's metadata (a no-op if it does not exist)."""
        await self._write(
            "DELETE FROM chatkit_attachments WHERE user_id = %s AND id = %s",
            (context.user_id, attachment_id),
        )


# --------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------


def open_store(url: str | None = None) -> DemoStore:
    """Create the store an URL names (nothing is opened until first use).

    ``url`` defaults to the ``DATABASE_URL`` environment variable, else
    :data:`DEFAULT_DATABASE_URL` (``sqlite:///chatkit-demo.db`` in the working directory).

    - ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db``,
      ``sqlite:///:memory:``: :class:`SQLiteStore` (needs ``aiosqlite``);
    - ``postgresql://user:password@host:port/dbname`` (or ``postgres://``):
      :class:`PostgresStore` (needs ``psycopg[binary]`` and ``psycopg_pool``).
    """
    if url is None:
        url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    scheme = url.partition(":")[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteStore.from_url(url)
    if scheme in _PG_SCHEMES:
        return PostgresStore.from_url(url)
    raise ValueError(
        f"unsupported database URL {_redact(url)!r}: use sqlite:///path/to/file.db, "
        "sqlite:///:memory: or postgresql://user:password@host/dbname"
    )
