"""``SQLStore``: a ChatKit store on SQLAlchemy 2 Core (SQLite, PostgreSQL, MySQL/MariaDB).

Usage::

    from chatkit_adapters.stores import SQLStore

    store = SQLStore("sqlite:///chatkit.db")            # the embedded default
    store = SQLStore("postgresql://u:pw@db/app")        # psycopg 3 (async)
    store = SQLStore("mysql://u:pw@db/app")             # asyncmy (MySQL 8 and MariaDB)
    store = SQLStore(url, user_id=lambda ctx: ctx.org_id + ":" + ctx.user_id)

What it guarantees (the contract suites in ``tests/`` check each point on every backend):

- Threads, items and attachments are stored as JSON documents (``model_dump_json``), as the
  ChatKit docs recommend: a ChatKit model change needs no migration. Keys and ordering
  columns sit next to the JSON.
- Every row carries the user key (``user_id`` option, default :func:`default_user_id`:
  ``context.user_id`` or ``context["user_id"]``) and every query filters by it: another
  user's thread, item or attachment does not exist (``NotFoundError``). Keys compare
  byte for byte on every backend (on MySQL they are ``VARBINARY``, so neither case nor
  trailing spaces are ignored).
- Threads and items are ordered by ``created_at`` (microseconds, UTC), then insertion
  order; keyset pagination on those two columns. An upsert keeps the row's place.
- Items can only be written to an existing thread of the same user; deleting a thread
  deletes its items.
- Each call is one transaction, committed when it returns. A call cancelled before its
  commit leaves nothing; once the commit is under way it completes (shielded) before the
  ``CancelledError`` goes on. So ChatKit's cancel cleanup, which writes while a
  cancellation is in flight, lands whole or not at all.
- Nothing connects until the first call. SQLite (``sqlite://``, the stdlib driver) runs
  each call as one job on the store's own threads: one writer (``BEGIN IMMEDIATE``; no
  "database is locked" within the process, a busy timeout for other processes), two WAL
  readers, shared by every event loop of the process. Servers (and
  ``sqlite+aiosqlite://``) run on SQLAlchemy's async engine, one engine per event loop
  that uses the store (so it may serve the sync adapters' background loop and request
  loops at once); an engine whose loop has closed is dropped. :meth:`SQLStore.aclose`
  closes everything.
- The schema is versioned (table ``chatkit_schema``) and migrated on first use
  (``migrate=True``, the default) or explicitly: ``python -m chatkit_adapters.stores
  upgrade URL`` / :meth:`SQLStore.upgrade`. With ``migrate=False`` a store whose database
  is behind raises :class:`SchemaError` naming that command.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeDecorator, TypeEngine
from typing_extensions import Self
from typing_extensions import TypeVar as TypeVarDefault

from ._common import (
    ATTACHMENT,
    ITEM,
    UserId,
    attachment_not_found,
    check_limit,
    default_user_id,
    descending,
    item_not_found,
    micros,
    page,
    thread_json,
    thread_not_found,
)

__all__ = ["SCHEMA_VERSION", "SQLStore", "SchemaError", "metadata"]

TContext = TypeVarDefault("TContext", default=Any)
_T = TypeVar("_T")
Body = Callable[[Connection], _T]
"""A call's work: sync SQLAlchemy Core on a connection (on a thread, or via run_sync)."""

DEFAULT_URL: Final = "sqlite:///chatkit.db"

# scheme (or scheme+driver) -> the async driver used when none is named
_DRIVERS: Final = {
    "sqlite": "sqlite+pysqlite",  # on the store's own threads (see _ThreadRunner)
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}
_MYSQL: Final = ("mysql", "mariadb")


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


class _Key(TypeDecorator[str]):
    """A key (user, thread, item or attachment id, up to 255 bytes) compared byte for byte.

    MySQL/MariaDB's ``VARCHAR`` collations ignore case and trailing spaces: ``"Alice"``
    would read ``"alice "``'s threads. ``VARBINARY`` compares exactly.
    """

    impl = String(255)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.VARBINARY(255))
        return dialect.type_descriptor(String(255))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name in _MYSQL and isinstance(value, str):
            return value.encode()
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode()
        return value


_Seq = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: the rowid itself

metadata = MetaData()
"""The store's tables (for your own Alembic environment's ``target_metadata``, if any)."""

threads = Table(
    "chatkit_threads",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("user_id", _Key(), nullable=False),
    Column("id", _Key(), nullable=False),
    Column("created_at", BigInteger, nullable=False),  # microseconds since the epoch, UTC
    Column("data", JSON, nullable=False),  # ThreadMetadata
    UniqueConstraint("user_id", "id", name="chatkit_threads_key"),
    Index("chatkit_threads_by_time", "user_id", "created_at", "seq"),
)

items = Table(
    "chatkit_items",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("user_id", _Key(), nullable=False),
    Column("thread_id", _Key(), nullable=False),
    Column("id", _Key(), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("data", JSON, nullable=False),  # ThreadItem
    UniqueConstraint("user_id", "thread_id", "id", name="chatkit_items_key"),
    ForeignKeyConstraint(
        ["user_id", "thread_id"],
        ["chatkit_threads.user_id", "chatkit_threads.id"],
        ondelete="CASCADE",
        name="chatkit_items_thread",
    ),
    Index("chatkit_items_by_time", "user_id", "thread_id", "created_at", "seq"),
)

attachments = Table(
    "chatkit_attachments",
    metadata,
    Column("user_id", _Key(), nullable=False),
    Column("id", _Key(), nullable=False),
    Column("data", JSON, nullable=False),  # Attachment
    PrimaryKeyConstraint("user_id", "id"),
)

schema_table = Table(
    "chatkit_schema",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)


def _v1(conn: Connection) -> None:
    """Version 1: threads, items and attachments."""
    existing = [t.name for t in metadata.sorted_tables if conn.dialect.has_table(conn, t.name)]
    if existing:
        raise SchemaError(
            f"the database already has tables named {', '.join(existing)} that SQLStore did "
            "not create (the examples' previous demo store?): use another database, or drop "
            "them to start afresh"
        )
    metadata.create_all(conn, checkfirst=False)


_MIGRATIONS: Final[tuple[Callable[[Connection], None], ...]] = (_v1,)
"""Migration ``n`` brings a database from version ``n`` to ``n + 1``. Append, never edit."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The schema version this release writes and reads."""

_PG_LOCK: Final = 0x43484B54  # pg_advisory_xact_lock key: "CHKT"
_MYSQL_LOCK: Final = "chatkit_schema"


class SchemaError(RuntimeError):
    """The database schema is not the version this release uses (the message says what to do)."""


def _schema_version(conn: Connection) -> int:
    """The database's schema version (0: none), taking the migration lock first."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    elif dialect in _MYSQL:
        got = conn.execute(text("SELECT GET_LOCK(:name, 300)"), {"name": _MYSQL_LOCK}).scalar()
        if got != 1:
            raise SchemaError("timed out waiting for another process migrating the schema")
    # SQLite: the write transaction (BEGIN IMMEDIATE) is the lock.
    schema_table.create(conn, checkfirst=True)
    version = conn.execute(select(schema_table.c.version).where(schema_table.c.id == 1)).scalar()
    return int(version or 0)


def _current_version(conn: Connection) -> int:
    try:
        return _schema_version(conn)
    finally:
        if conn.dialect.name in _MYSQL:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK})


def _migrate(conn: Connection, apply: bool, url: str) -> tuple[int, int]:
    """Check (and with ``apply``, upgrade) the schema; return (version before, after)."""
    try:
        before = _schema_version(conn)
        if before > SCHEMA_VERSION:
            raise SchemaError(
                f"the database {url} has chatkit schema version {before}, newer than this "
                f"release's {SCHEMA_VERSION}: upgrade chatkit-adapters"
            )
        if before < SCHEMA_VERSION and not apply:
            raise SchemaError(
                f"the database {url} has chatkit schema version {before}, this release needs "
                f"{SCHEMA_VERSION}: run  python -m chatkit_adapters.stores upgrade URL  "
                "(or create the store with migrate=True)"
            )
        for version in range(before, SCHEMA_VERSION):
            _MIGRATIONS[version](conn)
            values = {"id": 1, "version": version + 1}
            if version == 0:
                conn.execute(insert(schema_table).values(values))
            else:
                conn.execute(update(schema_table).where(schema_table.c.id == 1).values(values))
        return before, SCHEMA_VERSION
    finally:
        if conn.dialect.name in _MYSQL:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK})


# --------------------------------------------------------------------------------------
# Statements (built once; compiled once per dialect by SQLAlchemy's cache)
# --------------------------------------------------------------------------------------

_USER = bindparam("user_id", type_=_Key())
_ID = bindparam("id", type_=_Key())
_THREAD = bindparam("thread_id", type_=_Key())
_CREATED = bindparam("created_at", type_=BigInteger())
_DATA = bindparam("data", type_=JSON())

_LOAD_THREAD = select(threads.c.data).where(threads.c.user_id == _USER, threads.c.id == _ID)
_LOAD_ITEM = select(items.c.data).where(
    items.c.user_id == _USER, items.c.thread_id == _THREAD, items.c.id == _ID
)
_LOAD_ATTACHMENT = select(attachments.c.data).where(
    attachments.c.user_id == _USER, attachments.c.id == _ID
)
_THREAD_POSITION = select(threads.c.created_at, threads.c.seq).where(
    threads.c.user_id == _USER, threads.c.id == _ID
)
_ITEM_POSITION = select(items.c.created_at, items.c.seq).where(
    items.c.user_id == _USER, items.c.thread_id == _THREAD, items.c.id == _ID
)
_DELETE_THREAD_ITEMS = delete(items).where(items.c.user_id == _USER, items.c.thread_id == _ID)
_DELETE_THREAD = delete(threads).where(threads.c.user_id == _USER, threads.c.id == _ID)
_DELETE_ITEM = delete(items).where(
    items.c.user_id == _USER, items.c.thread_id == _THREAD, items.c.id == _ID
)
_DELETE_ATTACHMENT = delete(attachments).where(
    attachments.c.user_id == _USER, attachments.c.id == _ID
)


def _pages(table: Table, keys: Sequence[Any]) -> dict[tuple[bool, bool], Executable]:
    """Keyset page queries by (descending, after a cursor); ``LIMIT :limit``."""
    queries: dict[tuple[bool, bool], Executable] = {}
    created, seq = table.c.created_at, table.c.seq
    at, at_seq = bindparam("at", type_=BigInteger()), bindparam("at_seq", type_=BigInteger())
    for desc in (False, True):
        for after in (False, True):
            query = select(table.c.data).where(*keys)
            if after:
                if desc:
                    query = query.where(or_(created < at, and_(created == at, seq < at_seq)))
                else:
                    query = query.where(or_(created > at, and_(created == at, seq > at_seq)))
            order = (created.desc(), seq.desc()) if desc else (created.asc(), seq.asc())
            queries[desc, after] = query.order_by(*order).limit(bindparam("limit"))
    return queries


_THREAD_PAGES = _pages(threads, [threads.c.user_id == _USER])
_ITEM_PAGES = _pages(items, [items.c.user_id == _USER, items.c.thread_id == _THREAD])


@dataclass(frozen=True)
class _Upserts:
    """The dialect's INSERT ... ON CONFLICT/DUPLICATE KEY UPDATE statements."""

    thread: Executable
    item: Executable  # inserts nothing (rowcount 0) when the user has no such thread
    attachment: Executable

    @classmethod
    def build(cls, dialect: str) -> _Upserts:
        item_row = select(_USER, _THREAD, _ID, _CREATED, _DATA).where(
            exists().where(threads.c.user_id == _USER, threads.c.id == _THREAD)
        )
        item_columns = ["user_id", "thread_id", "id", "created_at", "data"]
        if dialect in _MYSQL:
            my_thread = mysql.insert(threads).values(
                user_id=_USER, id=_ID, created_at=_CREATED, data=_DATA
            )
            my_item = mysql.insert(items).from_select(item_columns, item_row)
            my_attachment = mysql.insert(attachments).values(user_id=_USER, id=_ID, data=_DATA)
            return cls(
                thread=my_thread.on_duplicate_key_update(created_at=_CREATED, data=_DATA),
                item=my_item.on_duplicate_key_update(created_at=_CREATED, data=_DATA)
                # SQLAlchemy reads an INSERT's rowcount only when asked to
                .execution_options(preserve_rowcount=True),
                attachment=my_attachment.on_duplicate_key_update(data=_DATA),
            )
        module: Any = postgresql if dialect == "postgresql" else sqlite
        thread = module.insert(threads).values(
            user_id=_USER, id=_ID, created_at=_CREATED, data=_DATA
        )
        item = module.insert(items).from_select(item_columns, item_row)
        attachment = module.insert(attachments).values(user_id=_USER, id=_ID, data=_DATA)
        return cls(
            thread=thread.on_conflict_do_update(
                index_elements=["user_id", "id"],
                set_={"created_at": thread.excluded.created_at, "data": thread.excluded.data},
            ),
            item=item.on_conflict_do_update(
                index_elements=["user_id", "thread_id", "id"],
                set_={"created_at": item.excluded.created_at, "data": item.excluded.data},
            ).execution_options(preserve_rowcount=True),
            attachment=attachment.on_conflict_do_update(
                index_elements=["user_id", "id"], set_={"data": attachment.excluded.data}
            ),
        )


# --------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------


def _raw_json(value: Any) -> Any:
    """The JSON (de)serializer of our engines: documents are JSON text already."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode()
    return value


def normalize_url(url: str | URL) -> URL:
    """``url`` with the driver this store uses when it names none.

    Raises ``ValueError`` for a URL that is not SQLite, PostgreSQL or MySQL/MariaDB.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "postgres", *_MYSQL):
        raise ValueError(
            f"SQLStore supports sqlite://, postgresql:// and mysql:// (or mariadb://) URLs, "
            f"not {parsed.render_as_string(hide_password=True)!r}"
        )
    if backend == "sqlite" and (parsed.host or parsed.port):
        raise ValueError(
            "a sqlite URL has no host: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    driver = _DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    elif parsed.drivername.startswith("postgres+"):
        parsed = parsed.set(drivername="postgresql+" + parsed.drivername.partition("+")[2])
    return parsed


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_connection(timeout_ms: int, wal: bool) -> Callable[[Any, Any], None]:
    """A ``connect`` listener: driver autocommit (we BEGIN ourselves), busy timeout,
    foreign keys, WAL."""

    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    return connect


class _Abandoned(Exception):
    """The caller was cancelled before the commit: the transaction is rolled back."""


def _in_transaction(
    conn: Connection, begin: str, body: Body[_T], abandoned: Callable[[], bool]
) -> _T:
    """Run ``body`` between ``begin`` and COMMIT (ROLLBACK if it fails or was abandoned)."""
    conn.exec_driver_sql(begin)
    try:
        result = body(conn)
        if abandoned():
            raise _Abandoned
    except BaseException:
        with contextlib.suppress(Exception):
            conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")
    return result


async def _finish(step: Coroutine[Any, Any, _T]) -> _T:
    """Run ``step`` (a COMMIT or ROLLBACK) to its end even if the caller is cancelled.

    A cancellation that arrives meanwhile is re-raised once the step is done, so the
    caller's connection is never returned to its pool in the middle of a commit.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the step itself was cancelled (its loop is shutting down)
                raise
            cancelled = True
            continue
        except BaseException:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
        if cancelled:
            raise asyncio.CancelledError
        return result


def _never() -> bool:
    return False


_SQLITE_READERS = 2  # WAL readers (they never wait for the writer)


class _ThreadRunner:
    """SQLite through the standard ``sqlite3`` driver on the store's own threads.

    A whole call (BEGIN, its statements, COMMIT) runs as one job on one thread: one
    thread hop per call, where aiosqlite needs several per statement. Writes go to one
    writer thread (one writer at a time: no "database is locked" within the process;
    other processes are waited for up to the busy timeout), reads to two reader threads
    (WAL: they never wait for the writer). Any event loop may submit jobs, so the store
    serves every loop of the process with the same connections.

    A caller cancelled before its job starts cancels the job; cancelled while it runs,
    the job rolls back instead of committing, unless its COMMIT has begun (then it
    completes): all or nothing, settled before the caller's ``CancelledError``.
    """

    def __init__(self, url: URL, busy_timeout: float, engine_options: Mapping[str, Any]) -> None:
        self.memory = _is_memory(url)
        options: dict[str, Any] = {
            "json_serializer": _raw_json,
            "json_deserializer": _raw_json,
            "connect_args": {"check_same_thread": False, "timeout": busy_timeout},
        }
        if self.memory:
            options["poolclass"] = StaticPool  # one connection: the database itself
        else:
            options.update(pool_size=_SQLITE_READERS + 1, max_overflow=2)  # a writer, readers
        options.update(engine_options)
        self.engine = create_engine(url, **options)
        event.listen(
            self.engine,
            "connect",
            _sqlite_connection(int(busy_timeout * 1000), wal=not self.memory),
        )
        self.dialect = self.engine.dialect
        self.upserts = _Upserts.build(self.dialect.name)
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()
        self._local = threading.local()
        self._connections: list[Connection] = []

    def _executor(self, write: bool) -> ThreadPoolExecutor:
        with self._guard:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="chatkit-sqlite-writer")
            if write or self.memory:
                return self._writer
            if self._readers is None:
                self._readers = ThreadPoolExecutor(
                    _SQLITE_READERS, thread_name_prefix="chatkit-sqlite-reader"
                )
            return self._readers

    async def run(self, body: Body[_T], *, write: bool, transaction: bool) -> _T:
        abandoned = threading.Event()

        def job() -> _T:
            conn = self._connection()
            try:
                if write:
                    return _in_transaction(conn, "BEGIN IMMEDIATE", body, abandoned.is_set)
                if transaction:
                    return _in_transaction(conn, "BEGIN", body, _never)
                return body(conn)
            finally:
                self._release(conn)

        submitted = self._executor(write).submit(job)
        result = asyncio.wrap_future(submitted)
        try:
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            abandoned.set()
            if submitted.cancel():  # it had not started: it never will
                raise
            while not result.done():  # it runs: it rolls back (or commits, if it was)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([result])
            if not result.cancelled():
                result.exception()  # retrieved: the caller sees its cancellation
            raise

    def _connection(self) -> Connection:
        """This worker thread's connection, kept between jobs (a pool checkout per call
        costs more than the call)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.invalidated or conn.closed:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    def _release(self, conn: Connection) -> None:
        """End SQLAlchemy's own transaction of a job (the database's is over already)."""
        try:
            conn.rollback()
        except Exception:
            conn.invalidate()

    async def aclose(self) -> None:
        with self._guard:
            executors = [e for e in (self._writer, self._readers) if e is not None]
            self._writer = self._readers = None
        for executor in executors:
            await asyncio.to_thread(executor.shutdown, wait=True)
        with self._guard:  # their threads are gone: close their connections here
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.close()
        self.engine.dispose()


@dataclass
class _Bound:
    """An async engine on one event loop."""

    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    write_lock: asyncio.Lock | None  # aiosqlite: one writer at a time
    drivers: weakref.WeakSet[Any]  # aiosqlite: its connections (stopped if abandoned)
    slots: asyncio.Semaphore  # at most _ASYNC_CONNECTIONS connections at once
    idle: list[AsyncConnection] = field(default_factory=list)  # kept open between calls
    closed: bool = False


def _stop_sqlite_workers(drivers: Iterable[Any]) -> None:
    """Stop the aiosqlite threads of a dead loop's connections (nothing can be awaited).

    ``stop()`` runs on a thread of its own: called on a thread with an event loop it would
    tie its completion to that loop, and the worker would fail if the loop closed first.
    """
    pending = [driver for driver in list(drivers) if callable(getattr(driver, "stop", None))]

    def stop_all() -> None:
        for driver in pending:
            with contextlib.suppress(Exception):
                driver.stop()

    if pending:
        stopper = threading.Thread(target=stop_all, name="chatkit-sqlite-stop", daemon=True)
        stopper.start()
        stopper.join()


_ASYNC_CONNECTIONS = 10  # per event loop; more callers wait for one


def _abandon(bound: _Bound) -> None:
    """Drop the connections of a loop that is gone, without awaiting anything: out of the
    pool, libpq's socket closed at once (psycopg), aiosqlite's threads stopped."""
    bound.closed = True
    idle, bound.idle = bound.idle, []
    for conn in idle:
        if conn.sync_connection is None:
            continue
        with contextlib.suppress(Exception):
            fairy = conn.sync_connection.connection
            fairy.detach()
            pgconn = getattr(fairy.driver_connection, "pgconn", None)
            if pgconn is not None:
                pgconn.finish()
    _stop_sqlite_workers(bound.drivers)


class _AsyncRunner:
    """PostgreSQL (psycopg 3), MySQL/MariaDB (asyncmy), or an explicitly named async SQLite
    driver, through SQLAlchemy's async engine: one engine per event loop that uses the
    store (async connections belong to their loop), dropped when its loop closes.

    Connections are in autocommit mode: a one-statement call is its own transaction (no
    BEGIN/COMMIT round trips; PostgreSQL cancels the statement of a cancelled caller).
    Other calls, and every write on MySQL/SQLite, run between explicit BEGIN and COMMIT;
    the COMMIT (or ROLLBACK) is shielded from cancellation.
    """

    def __init__(self, url: URL, busy_timeout: float, engine_options: Mapping[str, Any]) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.engine_options = dict(engine_options)
        self.sqlite = url.get_backend_name() == "sqlite"
        self.memory = _is_memory(url)
        self._bound: dict[asyncio.AbstractEventLoop, _Bound] = {}
        self._guard = threading.Lock()  # _bound is shared by every loop's thread
        probe = create_async_engine(url)  # connects nothing: the dialect, for statements
        self.dialect = probe.dialect
        self.upserts = _Upserts.build(self.dialect.name)
        self.begin = "START TRANSACTION" if self.dialect.name in _MYSQL else "BEGIN"
        self.write_begin = "BEGIN IMMEDIATE" if self.sqlite else self.begin
        self.autocommit_writes = self.dialect.name == "postgresql"

    def _create(self, drivers: weakref.WeakSet[Any]) -> AsyncEngine:
        options: dict[str, Any] = {
            "json_serializer": _raw_json,
            "json_deserializer": _raw_json,
            "isolation_level": "AUTOCOMMIT",
            # every explicit transaction ends in COMMIT or ROLLBACK (or the connection is
            # invalidated): no reset round trip when a connection goes back to the pool
            "pool_reset_on_return": None,
        }
        if not self.sqlite:  # the connections the store keeps (_Bound.idle) come from here
            options.update(pool_size=_ASYNC_CONNECTIONS, max_overflow=0)
        options.update(self.engine_options)
        engine = create_async_engine(self.url, **options)
        if self.sqlite:
            connect = _sqlite_connection(int(self.busy_timeout * 1000), wal=not self.memory)

            def remember(dbapi_connection: Any, record: Any) -> None:
                drivers.add(dbapi_connection.driver_connection)
                connect(dbapi_connection, record)

            event.listen(engine.sync_engine, "connect", remember)
        return engine

    def _bind(self) -> _Bound:
        loop = asyncio.get_running_loop()
        bound = self._bound.get(loop)
        if bound is not None:
            return bound
        with self._guard:
            for other in [other for other in self._bound if other.is_closed()]:
                _abandon(self._bound.pop(other))
            if self.memory and self._bound:
                raise RuntimeError(
                    "an in-memory SQLite database on an async driver lives on one event "
                    "loop: use sqlite:// (the default driver) or a file"
                )
            drivers: weakref.WeakSet[Any] = weakref.WeakSet()
            bound = _Bound(
                loop=loop,
                engine=self._create(drivers),
                write_lock=asyncio.Lock() if self.sqlite else None,
                drivers=drivers,
                slots=asyncio.Semaphore(_ASYNC_CONNECTIONS),
            )
            self._bound[loop] = bound
            return bound

    async def run(self, body: Body[_T], *, write: bool, transaction: bool) -> _T:
        bound = self._bind()
        if write and bound.write_lock is not None:
            async with bound.write_lock:
                return await self._run(bound, body, write, transaction)
        return await self._run(bound, body, write, transaction)

    async def _run(self, bound: _Bound, body: Body[_T], write: bool, transaction: bool) -> _T:
        # Reads never need BEGIN here: under READ COMMITTED each statement has its own
        # snapshot anyway (SQLite's threads do take one for a multi-statement read).
        explicit = write and (transaction or not self.autocommit_writes)
        async with bound.slots:
            conn = await self._acquire(bound)
            try:
                if not explicit:
                    return await conn.run_sync(body)
                await conn.exec_driver_sql(self.write_begin if write else self.begin)
                try:
                    result = await conn.run_sync(body)
                except BaseException:
                    if not conn.invalidated:
                        try:
                            await _finish(conn.exec_driver_sql("ROLLBACK"))
                        except Exception:
                            await conn.invalidate()  # never reused mid-transaction
                    raise
                await _finish(conn.exec_driver_sql("COMMIT"))
                return result
            finally:
                await self._release(bound, conn)

    @staticmethod
    async def _acquire(bound: _Bound) -> AsyncConnection:
        """A connection kept from an earlier call, else a new one (a pool checkout per call
        costs more than a one-statement call)."""
        while bound.idle:
            conn = bound.idle.pop()
            if not (conn.invalidated or conn.closed):
                return conn
        return await bound.engine.connect()

    @staticmethod
    async def _release(bound: _Bound, conn: AsyncConnection) -> None:
        """Keep ``conn`` for the next call. Nothing to reset: in autocommit every statement
        is committed, and an explicit transaction ended in COMMIT or ROLLBACK (or the
        connection was invalidated). SQLAlchemy's own bookkeeping transaction stays open:
        ending it would cost an await per call."""
        if conn.invalidated or conn.closed or bound.closed:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
            return
        bound.idle.append(conn)

    @staticmethod
    async def _dispose(bound: _Bound) -> None:
        bound.closed = True  # connections in use are closed when their call ends
        idle, bound.idle = bound.idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()
        await bound.engine.dispose()

    async def aclose(self) -> None:
        with self._guard:
            bound_list = list(self._bound.values())
            self._bound.clear()
        current = asyncio.get_running_loop()
        for bound in bound_list:
            if bound.loop is current:
                await self._dispose(bound)
            elif bound.loop.is_running() and not bound.loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(self._dispose(bound), bound.loop)
                await asyncio.wrap_future(future)
            else:  # its loop is gone: nothing there can be awaited any more
                _abandon(bound)


_Runner = _ThreadRunner | _AsyncRunner

# --------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------


def _scalar(statement: Executable, params: dict[str, Any]) -> Body[Any]:
    def body(conn: Connection) -> Any:
        return conn.execute(statement, params).scalar()

    return body


def _execute(statement: Executable, params: dict[str, Any]) -> Body[None]:
    def body(conn: Connection) -> None:
        conn.execute(statement, params)

    return body


class SQLStore(Store[TContext], Generic[TContext]):
    """A ChatKit store in SQLite, PostgreSQL or MySQL/MariaDB, through SQLAlchemy Core.

    Usage: ``store = SQLStore("postgresql://u:pw@db/app")`` then ``MyServer(store)``.
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_URL,
        *,
        user_id: UserId | None = None,
        migrate: bool = True,
        busy_timeout: float = 30.0,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the store; nothing connects until the first call.

        - ``url``: a SQLAlchemy URL. ``sqlite:///relative.db``, ``sqlite:////absolute.db``
          or ``sqlite://`` (memory); ``postgresql://``/``postgres://`` (psycopg 3);
          ``mysql://``/``mariadb://`` (asyncmy). ``scheme+driver://`` names another
          driver (an async one for servers, e.g. ``mysql+aiomysql``; for SQLite,
          ``sqlite+aiosqlite`` runs through SQLAlchemy's async engine instead of the
          store's own threads).
        - ``user_id``: maps a context to the user key (default :func:`default_user_id`).
        - ``migrate``: apply schema migrations on first use (else raise
          :class:`SchemaError` when the database is behind).
        - ``busy_timeout``: SQLite only, seconds a connection waits for another writer.
        - ``engine_options``: passed to SQLAlchemy's ``create_engine`` /
          ``create_async_engine`` (``pool_size``, ``echo``...).
        """
        self.url = normalize_url(url)
        self.user_id: UserId = user_id or default_user_id
        self.migrate = migrate
        self.busy_timeout = busy_timeout
        self.engine_options = dict(engine_options or {})
        self._runner: _Runner | None = None
        self._guard = threading.Lock()
        self._schema_ok = False
        self._ready_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.render_as_string(hide_password=True)!r})"

    # -- connections and schema ----------------------------------------------------------

    def _get_runner(self) -> _Runner:
        runner = self._runner
        if runner is None:
            with self._guard:
                if self._runner is None:
                    threads = self.url.drivername == "sqlite+pysqlite"
                    kind: type[_Runner] = _ThreadRunner if threads else _AsyncRunner
                    self._runner = kind(self.url, self.busy_timeout, self.engine_options)
                runner = self._runner
        return runner

    async def _ready(self) -> _Runner:
        runner = self._get_runner()
        if not self._schema_ok:
            loop = asyncio.get_running_loop()
            with self._guard:
                lock = self._ready_locks.setdefault(loop, asyncio.Lock())
            async with lock:
                if not self._schema_ok:
                    await self._migrate(runner, apply=self.migrate)
                    self._schema_ok = True
                    with self._guard:
                        self._ready_locks.clear()
        return runner

    async def _migrate(self, runner: _Runner, *, apply: bool) -> tuple[int, int]:
        url = self.url.render_as_string(hide_password=True)

        def body(conn: Connection) -> tuple[int, int]:
            return _migrate(conn, apply, url)

        return await runner.run(body, write=True, transaction=True)

    async def upgrade(self) -> tuple[int, int]:
        """Apply the schema migrations now; return (version before, version after).

        Usage: ``await SQLStore(url).upgrade()`` (``python -m chatkit_adapters.stores
        upgrade URL`` does this). Safe to run from several processes at once.
        """
        before_after = await self._migrate(self._get_runner(), apply=True)
        self._schema_ok = True
        return before_after

    async def schema_version(self) -> int:
        """The database's schema version (0 when it has none yet)."""
        return await self._get_runner().run(_current_version, write=True, transaction=True)

    async def aclose(self) -> None:
        """Close every connection. The store reconnects if it is used again."""
        with self._guard:
            runner, self._runner = self._runner, None
        if runner is not None:
            await runner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _read(self, body: Body[_T], *, transaction: bool = False) -> _T:
        runner = await self._ready()
        return await runner.run(body, write=False, transaction=transaction)

    async def _write(self, body: Body[_T], *, transaction: bool = False) -> _T:
        runner = await self._ready()
        return await runner.run(body, write=True, transaction=transaction)

    async def _page(
        self,
        queries: Mapping[tuple[bool, bool], Executable],
        position: Executable,
        keys: dict[str, Any],
        after: str | None,
        limit: int,
        order: str,
        missing: str,
    ) -> list[str]:
        check_limit(limit)
        desc = descending(order)

        def body(conn: Connection) -> list[str]:
            params = {**keys, "limit": limit + 1}
            if after is not None:
                row = conn.execute(position, {**keys, "id": after}).first()
                if row is None:
                    raise NotFoundError(missing)
                params.update(at=row[0], at_seq=row[1])
            return list(conn.execute(queries[desc, after is not None], params).scalars())

        return await self._read(body, transaction=after is not None)

    # -- threads -------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        """Load a thread's metadata, or raise ``NotFoundError``."""
        key = {"user_id": self.user_id(context), "id": thread_id}
        data = await self._read(_scalar(_LOAD_THREAD, key))
        if data is None:
            raise NotFoundError(thread_not_found(thread_id))
        return ThreadMetadata.model_validate_json(data)

    async def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        """Insert or update a thread's metadata (an update keeps its place)."""
        runner = await self._ready()
        params = {
            "user_id": self.user_id(context),
            "id": thread.id,
            "created_at": micros(thread.created_at),
            "data": thread_json(thread),
        }
        await runner.run(_execute(runner.upserts.thread, params), write=True, transaction=False)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        """A page of the user's threads by creation time; ``after`` is a thread id."""
        rows = await self._page(
            _THREAD_PAGES,
            _THREAD_POSITION,
            {"user_id": self.user_id(context)},
            after,
            limit,
            order,
            thread_not_found(str(after)),
        )
        return page([ThreadMetadata.model_validate_json(row) for row in rows], limit)

    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Delete a thread and all its items (a no-op if it does not exist)."""
        params = {"user_id": self.user_id(context), "id": thread_id}

        def body(conn: Connection) -> None:
            conn.execute(_DELETE_THREAD_ITEMS, params)
            conn.execute(_DELETE_THREAD, params)

        await self._write(body, transaction=True)

    # -- items ---------------------------------------------------------------------------

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: TContext,
    ) -> Page[ThreadItem]:
        """A page of a thread's items by creation time; ``after`` is an item id."""
        rows = await self._page(
            _ITEM_PAGES,
            _ITEM_POSITION,
            {"user_id": self.user_id(context), "thread_id": thread_id},
            after,
            limit,
            order,
            item_not_found(thread_id, str(after)),
        )
        return page([ITEM.validate_json(row) for row in rows], limit)

    async def _upsert_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        runner = await self._ready()
        statement = runner.upserts.item
        params = {
            "user_id": self.user_id(context),
            "thread_id": thread_id,
            "id": item.id,
            "created_at": micros(item.created_at),
            "data": item.model_dump_json(),
        }

        def body(conn: Connection) -> int:
            try:
                return conn.execute(statement, params).rowcount
            except IntegrityError as exc:  # the thread was deleted concurrently
                raise NotFoundError(thread_not_found(thread_id)) from exc

        if await runner.run(body, write=True, transaction=False) == 0:
            raise NotFoundError(thread_not_found(thread_id))

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Append an item to an existing thread (an existing id is replaced in place)."""
        await self._upsert_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or update an item of an existing thread."""
        await self._upsert_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        """Load one item of a thread, or raise ``NotFoundError``."""
        key = {"user_id": self.user_id(context), "thread_id": thread_id, "id": item_id}
        data = await self._read(_scalar(_LOAD_ITEM, key))
        if data is None:
            raise NotFoundError(item_not_found(thread_id, item_id))
        return ITEM.validate_json(data)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        """Delete one item of a thread (a no-op if it does not exist)."""
        key = {"user_id": self.user_id(context), "thread_id": thread_id, "id": item_id}
        await self._write(_execute(_DELETE_ITEM, key))

    # -- attachments ---------------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Insert or update an attachment's metadata."""
        runner = await self._ready()
        params = {
            "user_id": self.user_id(context),
            "id": attachment.id,
            "data": attachment.model_dump_json(),
        }
        await runner.run(_execute(runner.upserts.attachment, params), write=True, transaction=False)

    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        """Load an attachment's metadata, or raise ``NotFoundError``."""
        key = {"user_id": self.user_id(context), "id": attachment_id}
        data = await self._read(_scalar(_LOAD_ATTACHMENT, key))
        if data is None:
            raise NotFoundError(attachment_not_found(attachment_id))
        return ATTACHMENT.validate_json(data)

    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Delete an attachment's metadata (a no-op if it does not exist)."""
        key = {"user_id": self.user_id(context), "id": attachment_id}
        await self._write(_execute(_DELETE_ATTACHMENT, key))
