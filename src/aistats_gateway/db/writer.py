"""Lean write transactions for the hottest path (an inference call's open and close-out).

A transaction is an ``async def work(tx: Tx) -> T`` that runs a few plain SQL statements through
:class:`Tx` (``?`` placeholders, the same text on both backends; dicts/lists are stored as JSON,
aware datetimes in the column type's own format). :func:`run` commits it and returns its result, or
rolls it back and raises what it raised. No ORM, no unit of work, no statement compilation.

SQLite (:class:`SQLiteWriter`, one per database file and process): **group commit**. Every
transaction submitted during one event-loop iteration joins one group: one ``BEGIN IMMEDIATE …
COMMIT``, each transaction inside its own ``SAVEPOINT`` (one that raises is rolled back to its
savepoint, alone, and its caller gets the exception). Futures resolve only after the ``COMMIT``
returned, so a caller never sees a result that is not committed; the transactions of a group run one
after the other on one connection, so conditional UPDATEs keep their meaning (no balance is ever
overdrawn). A group that cannot commit fails (and is rolled back) as a whole. The group runs right on
the loop with ``busy_timeout=0`` (tens of microseconds, no thread hop); when another connection holds
the write lock (another process, the ORM's pool), the group goes to the writer thread instead, which
waits for the lock and group-commits everything queued meanwhile: the loop never waits for a lock.
``work`` must await nothing but ``tx`` (it is driven synchronously: a ``work`` that suspends on
something else raises ``RuntimeError`` and is rolled back). The WAL stays bounded under sustained
writes: the thread checkpoints it every ``CHECKPOINT_EVERY`` groups and restarts it once it passes
``RESTART_FRAMES`` (a passive checkpoint alone never catches up while the loop keeps writing).

PostgreSQL: a pooled connection of the SQLAlchemy engine, one transaction per ``work``
(``exec_driver_sql``: psycopg's own parameter binding); concurrency is PostgreSQL's row locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

T = TypeVar("T")
MAX_GROUP = 256  # transactions per group commit
IDLE_EXIT_SECONDS = 30.0  # an idle writer thread ends (and closes its connection); the next call starts one
BUSY_TIMEOUT_MS = 10_000
RESTART_FRAMES = 8192  # WAL frames (pages) past which a checkpoint restarts the WAL (~32 MiB)
RESTART_WAIT_MS = 200  # longest wait of that restart for readers to finish
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is truncated to after a checkpoint restarted it


_AS_IS = frozenset({str, int, float, bytes, type(None)})  # bound by sqlite3 itself


def _sqlite_params(params: Sequence[Any]) -> list[Any]:
    """The parameters as SQLite binds them; a set lookup per value, a call only for the others."""
    return [v if type(v) in _AS_IS else _sqlite_value(v) for v in params]


def _sqlite_value(v: Any) -> Any:
    """A value sqlite3 does not bind as is (``_sqlite_params`` passes those through itself)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (dict, list)):
        return orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()
    if isinstance(v, dt.datetime):  # SQLAlchemy's SQLite DATETIME format, in UTC (``db.base.UTCDateTime``)
        return _sqlite_datetime(v)
    return v


def _sqlite_datetime(v: dt.datetime) -> str:
    """``%Y-%m-%d %H:%M:%S.%f`` in UTC (what ``strftime`` gives, at a fraction of its cost: the
    C ``isoformat`` with the fraction always written, without its ``+00:00``)."""
    if v.tzinfo is not dt.UTC:
        v = v.astimezone(dt.UTC)
    return v.isoformat(" ", "microseconds")[:26]


class Tx:
    """The statements of one write transaction. ``exec`` returns the rows an UPDATE/INSERT matched;
    ``one`` the first row of a query (also ``… RETURNING``) or None; ``now`` the transaction's time as a
    DATETIME parameter (on SQLite one formatted string per group commit, taken when the group began)."""

    dialect = "sqlite"

    def now(self) -> dt.datetime | str:
        raise NotImplementedError

    async def exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError

    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        raise NotImplementedError


class _SQLiteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._now: str | None = None

    def now(self) -> str:
        if self._now is None:
            self._now = _sqlite_datetime(dt.datetime.now(dt.UTC))
        return self._now

    async def exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, _sqlite_params(params)).rowcount

    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        cur = self.conn.execute(sql, _sqlite_params(params))
        row = cur.fetchone()
        if row is not None:
            cur.fetchall()  # finish the statement (RETURNING)
        return tuple(row) if row is not None else None


class _PgTx(Tx):
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    @staticmethod
    def _sql(sql: str) -> str:
        got = _PG_SQL.get(sql)
        if got is None:
            got = _PG_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
        return got

    @staticmethod
    def _params(params: Sequence[Any]) -> tuple[Any, ...]:
        from psycopg.types.json import Jsonb

        return tuple(Jsonb(v) if isinstance(v, (dict, list)) else v for v in params)

    async def exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        res = await self.conn.exec_driver_sql(self._sql(sql), self._params(params))
        return int(res.rowcount)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        res = await self.conn.exec_driver_sql(self._sql(sql), self._params(params))
        row = res.first()
        return tuple(row) if row is not None else None


_PG_SQL: dict[str, str] = {}


def _drive(work: Callable[[Tx], Awaitable[T]], tx: Tx) -> T:
    """Run a coroutine that only awaits ``tx`` (which never suspends) to its end, synchronously."""
    coro = work(tx)
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()  # type: ignore[attr-defined]
    raise RuntimeError("a writer transaction waited on something other than its statements")


_Item = tuple[Callable[[Tx], Awaitable[Any]], asyncio.Future[Any]]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]


def _resolve(results: list[_Result]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def _connect(path: str, busy_ms: int, autocheckpoint: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def _group(conn: sqlite3.Connection, items: list[_Item]) -> list[_Result]:
    """One ``BEGIN IMMEDIATE … COMMIT`` around every item, each in its own savepoint (an item alone in
    its group needs none: it has the transaction to itself). Raises
    ``sqlite3.Error`` when the group could not begin or commit (nothing of it is kept then)."""
    tx = _SQLiteTx(conn)
    results: list[_Result] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        if len(items) == 1:  # alone in its group: the group's transaction is its own, no savepoint
            work, fut = items[0]
            try:
                value = _drive(work, tx)
            except BaseException as e:  # handed to the caller
                conn.execute("ROLLBACK")
                return [(fut, None, e)]
            conn.execute("COMMIT")
            return [(fut, value, None)]
        for work, fut in items:
            conn.execute("SAVEPOINT w")
            try:
                value = _drive(work, tx)
            except BaseException as e:  # handed to the caller
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                results.append((fut, None, e))
                continue
            conn.execute("RELEASE w")
            results.append((fut, value, None))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return results


def _checkpoint(conn: sqlite3.Connection, pause: threading.Event) -> None:
    """Copy the WAL back into the database file (PASSIVE: never waits). Under sustained writes a
    passive checkpoint never catches up with the frames appended meanwhile, so the WAL is never
    restarted and grows without bound (and every read gets slower); past ``RESTART_FRAMES`` this
    connection restarts it instead: ``pause`` is set meanwhile (the loops hand their groups to this
    thread, which commits them right after) and it waits at most ``RESTART_WAIT_MS`` for readers."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if row is None or int(row[1]) < RESTART_FRAMES:
        return
    pause.set()
    conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
    finally:
        pause.clear()
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class _Inline:
    """The writes of one event loop, run on that loop: a group per loop iteration."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pending: list[_Item] = []
        self.scheduled = False


class SQLiteWriter:
    """The writer of one SQLite database file.

    Transactions submitted during one event-loop iteration form one group, committed right on the
    loop by a connection with ``busy_timeout=0`` (a few tens of microseconds; no thread hop). When
    the database is locked by another connection (another process, the ORM's pool), the group is
    handed to the writer thread instead, which waits for the lock (``busy_timeout``) and
    group-commits everything queued meanwhile — the loop never waits for a lock. The loop's
    connection does not checkpoint the WAL itself; the thread does, every ``CHECKPOINT_EVERY`` groups."""

    CHECKPOINT_EVERY = 200

    def __init__(self, path: str) -> None:
        self.path = path
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()  # None: checkpoint the WAL
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._inline: dict[asyncio.AbstractEventLoop, _Inline] = {}
        self._since_checkpoint = 0
        self._restarting = threading.Event()  # set while the thread restarts the WAL: groups go to it
        self.groups = 0  # group commits done, on the loop or the thread (for tests and the benchmark)
        self.items = 0
        self.handed_over = 0  # groups the loop handed to the thread (database locked)

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        st = self._inline.get(loop)
        if st is None:
            st = self._inline[loop] = _Inline(_connect(self.path, 0, autocheckpoint=False))
            self._forget_closed_loops()
        st.pending.append((work, fut))
        if not st.scheduled:
            st.scheduled = True
            loop.call_soon(self._flush, st)
        return await fut

    def _forget_closed_loops(self) -> None:
        for lp in list(self._inline):  # a copy: loops of other threads may register meanwhile
            if lp.is_closed():
                st = self._inline.pop(lp, None)
                if st is not None:
                    st.conn.close()

    def _flush(self, st: _Inline) -> None:
        st.scheduled = False
        items, st.pending = st.pending, []
        if self._restarting.is_set():  # the thread is restarting the WAL: it commits these right after
            self.handed_over += 1
            self._submit(items)
            return
        try:
            results = _group(st.conn, items)
        except sqlite3.OperationalError:  # locked by another connection: the thread waits for it
            self.handed_over += 1
            self._submit(items)
            return
        except sqlite3.Error as e:
            _resolve([(fut, None, e) for _, fut in items])
            return
        self._count(len(items))
        _resolve(results)

    def _count(self, n: int) -> None:
        self.groups += 1
        self.items += n
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._q.put(None)
            self._ensure_thread()

    def _submit(self, items: list[_Item]) -> None:
        for item in items:
            self._q.put(item)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:  # the thread clears ``_thread`` under this lock only when the queue is empty
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=f"sqlite-writer:{self.path}", daemon=True)
                self._thread.start()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                try:
                    first = self._q.get(timeout=IDLE_EXIT_SECONDS)
                except queue.Empty:
                    with self._lock:  # exit only if nothing slipped in (_ensure_thread runs after each put)
                        if self._q.empty():
                            self._thread = None
                            return
                    continue
                got = [first]
                while len(got) < MAX_GROUP:
                    try:
                        got.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                items = [i for i in got if i is not None]
                try:
                    if conn is None:
                        conn = _connect(self.path, BUSY_TIMEOUT_MS, autocheckpoint=True)
                    if items:
                        results = _group(conn, items)
                        self.groups += 1
                        self.items += len(items)
                        self._post(results)
                    if len(items) < len(got):
                        _checkpoint(conn, self._restarting)
                except sqlite3.Error as e:
                    self._post([(fut, None, e) for _, fut in items])
        except BaseException:
            with self._lock:
                self._thread = None
            raise
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _post(results: list[_Result]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for r in results:
            by_loop.setdefault(r[0].get_loop(), []).append(r)
        for loop, rs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, rs)


_WRITERS: dict[str, SQLiteWriter] = {}
_WRITERS_LOCK = threading.Lock()


def sqlite_writer(path: str) -> SQLiteWriter:
    """The process's writer of one SQLite file (created on first use)."""
    w = _WRITERS.get(path)
    if w is None:
        with _WRITERS_LOCK:
            w = _WRITERS.get(path)
            if w is None:
                w = _WRITERS[path] = SQLiteWriter(path)
    return w


def _engine(db: AsyncEngine | async_sessionmaker[AsyncSession]) -> AsyncEngine:
    if isinstance(db, AsyncEngine):
        return db
    bind = db.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the session factory has no AsyncEngine bound")
    return bind


async def run(db: AsyncEngine | async_sessionmaker[AsyncSession], work: Callable[[Tx], Awaitable[T]]) -> T:
    """Run ``work`` in one write transaction on ``db`` (an engine or a session factory bound to one)."""
    engine = _engine(db)
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:":
            return await sqlite_writer(path).run(work)
        raise RuntimeError("the lean writer needs a SQLite file, not an in-memory database")
    async with engine.connect() as conn, conn.begin():
        return await work(_PgTx(conn))
