"""One PostgreSQL database as the stores see it: a shared connection and lock connections.

psycopg 3 is imported here, lazily, when a store is opened: ``import abstractruntime`` and
the kernel load no third-party module. Every psycopg error that leaves this package is turned
into an :class:`~abstractruntime.core.errors.AbstractRuntimeError` whose message has passed
through the store's :class:`~abstractruntime.storage.dsn.ConnectionString`, so a password in
a URL or a key/value string never reaches a log or ``--json``. An error that retrying can fix
(the server restarting, a cut connection, a server-side timeout) is a
:class:`~abstractruntime.core.errors.DatabaseUnavailableError`; anything else (a refused
password, an unknown database, a bad parameter) a plain :class:`StorageError`.

The shared connection (autocommit; explicit transactions where several statements must be
atomic) serves every read and write, serialised by a lock because a psycopg connection runs
one statement at a time. Run locks are PostgreSQL session-level advisory locks, so each held
lock needs its own connection: those come from a small pool and go back to it when released.
An idle connection the server closed (a restart, ``idle_session_timeout``,
``pg_terminate_backend``) is noticed before it is used and replaced, so it costs no error.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import threading
from typing import Any, Iterator, Optional

from ...core.errors import (
    StoreNotFoundError,
    CorruptRecordError,
    DatabaseUnavailableError,
    MissingExtraError,
    StorageError,
    UnsupportedFormatError,
)
from ..dsn import parse as parse_connection_string
from .keys import advisory_key
from .schema import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    check_schema_name,
    installed_version,
    migrate,
    quoted,
    refuse_newer,
)

# Idle lock connections kept for reuse (more are opened when needed and closed on release).
LOCK_POOL_SIZE = 4
APPLICATION_NAME = "abstractruntime"

# SQLSTATEs of a lost or refused connection that a later attempt may not meet: class 08
# (connection exception), the server shutting down or starting up, an idle-session timeout,
# too many connections.
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "53300"})
# Connection failures that retrying cannot fix: the server answered and refused, or libpq
# refused the parameters. Anything else (refused, unreachable, starting up, reset) is an outage.
_CONFIGURATION_FAILURES = ("password authentication failed", "authentication failed", "no pg_hba.conf entry",
                           "does not exist", "is not permitted to log in", "permission denied", "invalid ",
                           "server does not support ssl", "ssl is not enabled", "certificate", "requires a valid")


def is_transient_connect_failure(message: str) -> bool:
    """Whether libpq's message for a failed connection attempt describes an outage (retry)
    rather than a configuration error (stop)."""
    text = message.lower()
    return not any(marker in text for marker in _CONFIGURATION_FAILURES)


def _usable(conn: Any) -> bool:
    """Whether an idle connection can take a statement: open, not broken, and nothing unread
    on its socket (an idle session hears from the server only when it is being closed)."""
    if conn.closed or conn.broken:
        return False
    try:
        if conn.pgconn.transaction_status != 0:  # inside a transaction of an enclosing block
            return True
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return False
    return not readable


def _psycopg() -> Any:
    """psycopg 3, loaded only when a PostgreSQL store is opened (the ``postgres`` extra)."""
    try:
        return importlib.import_module("psycopg")
    except ImportError:
        raise MissingExtraError("psycopg", "postgres", "A PostgreSQL store") from None


def parse_document(data: Any, where: str, *, kind: str, newest: int) -> dict[str, Any]:
    """Parse an exact JSON column strictly: a :class:`CorruptRecordError` naming ``where`` when it
    is not a JSON object, an :class:`UnsupportedFormatError` when its ``format`` is newer than
    ``newest`` (a ``kind`` written by a newer abstractruntime)."""
    from ..fsio import loads_strict

    try:
        doc = loads_strict(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptRecordError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptRecordError(f"{where} is not a JSON object")
    found = doc.get("format")
    if isinstance(found, int) and not isinstance(found, bool) and found > newest:
        raise UnsupportedFormatError(f"{where}: {kind} format {found} is newer than this abstractruntime "
                                     f"understands ({newest}); upgrade abstractruntime")
    return doc


class PgDatabase:
    """The connections of one store: ``url`` (libpq URL; ``PG*`` variables fill the gaps) and
    the PostgreSQL ``schema`` holding its tables.

    ``create=False`` refuses a database without the schema (``StoreNotFoundError``) instead
    of creating it. A schema newer than this code is refused (``UnsupportedFormatError``).
    """

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, create: bool = True,
                 connect_timeout: int = 10) -> None:
        self.conninfo = parse_connection_string(url)  # refused here, redacted, when libpq would misread it
        self.url = self.conninfo.text
        self.schema = check_schema_name(schema)
        self.s = quoted(schema)
        self.connect_timeout = connect_timeout
        self.psycopg = _psycopg()
        self._guard = threading.RLock()
        self._pool_guard = threading.Lock()
        self._pool: list[Any] = []
        self._closed = False
        self._conn: Optional[Any] = None
        # A cursor of the shared connection kept for the statements of every step (a new
        # cursor per statement costs more Python than the rest of psycopg's work on it).
        self._cursor: Optional[Any] = None
        self._depth = 0
        self._pid = os.getpid()
        # run id -> the checkpoint_token (version, xmin) of its ``runs`` row as this store's own
        # writes left it: a checkpoint written, or the ledger append that marked the row ahead.
        # Shared by the run and ledger stores of this database (see PostgresRunStore.written_token).
        self.written_tokens: dict[str, tuple[int, str]] = {}
        try:
            self._prepare(create)
        except BaseException:
            self.close()
            raise

    def _prepare(self, create: bool) -> None:
        with self.connection() as conn:
            if create:
                migrate(conn, self.schema, lock_key=advisory_key("migrate", self.schema), where=self.describe())
                return
            version = installed_version(conn, self.schema, where=self.describe())
            if 0 < version < SCHEMA_VERSION:
                # ``create=False`` keeps a store from being made where there is none; a store of
                # an older release is upgraded in place as on any open, or every query naming a
                # newer column would fail (a worker after an upgrade, on every pass).
                migrate(conn, self.schema, lock_key=advisory_key("migrate", self.schema), where=self.describe())
                return
        if version == 0:
            raise StoreNotFoundError(f"no abstractruntime store in {self.describe()}", path=self.describe())
        refuse_newer(version, self.describe())

    def describe(self) -> str:
        """The connection string with its password redacted, plus the schema when not the default."""
        where = self.conninfo.redacted()
        return where if self.schema == DEFAULT_SCHEMA else f"{where} (schema {self.schema})"

    # -- connections --------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` (e.g. a libpq message) with this store's passwords, in any form, removed."""
        return self.conninfo.scrub(text)

    def connect(self) -> Any:
        """A new autocommit connection; when the server cannot be had, a redacted
        :class:`DatabaseUnavailableError` (an outage) or :class:`StorageError` (a configuration error)."""
        psycopg = self.psycopg
        # fallback_application_name names us in pg_stat_activity unless the URL names itself;
        # the connect timeout applies unless the URL or PGCONNECT_TIMEOUT sets one.
        options: dict[str, Any] = {"fallback_application_name": APPLICATION_NAME}
        if "connect_timeout" not in self.conninfo.params and not os.environ.get("PGCONNECT_TIMEOUT"):
            options["connect_timeout"] = self.connect_timeout
        try:
            conn = psycopg.connect(self.url, autocommit=True, **options)
        except psycopg.Error as exc:
            text = self.scrub(str(exc).strip())
            error = DatabaseUnavailableError if is_transient_connect_failure(text) else StorageError
            raise error(f"cannot connect to PostgreSQL at {self.describe()}: {text}", store=self.describe()) from None
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """The shared connection, held exclusively for the block; reopened if it broke or the
        server closed it while it was idle.

        A psycopg error raised in the block becomes a redacted :class:`StorageError`
        (:class:`DatabaseUnavailableError` when the connection was lost).
        """
        with self._guard:
            if self._closed:
                raise StorageError(f"the PostgreSQL store {self.describe()} is closed")
            self._forget_if_forked()
            conn = self._conn
            if conn is None or (self._depth == 0 and not _usable(conn)):
                if conn is not None:
                    conn.close()
                self._conn = None
                self._conn = conn = self.connect()
            self._depth += 1
            try:
                yield conn
            except self.psycopg.Error as exc:
                raise self.storage_error(exc, lost=conn.closed or conn.broken) from None
            finally:
                self._depth -= 1

    def cursor(self, conn: Any) -> Any:
        """A cursor of ``conn`` (the connection of an enclosing :meth:`connection` block), kept
        and reused while ``conn`` is the shared connection."""
        cursor = self._cursor
        if cursor is None or cursor.connection is not conn or cursor.closed:
            cursor = self._cursor = conn.cursor()
        return cursor

    def storage_error(self, exc: BaseException, *, lost: bool = False) -> StorageError:
        """A redacted :class:`StorageError` for a psycopg error: a
        :class:`DatabaseUnavailableError` when the connection was ``lost`` or the server says it
        is going away, starting up or full."""
        state = getattr(exc, "sqlstate", None)
        text = self.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        transient = lost or (isinstance(state, str) and (state.startswith("08") or state in _TRANSIENT_STATES))
        error = DatabaseUnavailableError if transient else StorageError
        return error(f"PostgreSQL error in {self.describe()}: {text}", sqlstate=state)

    def _forget_if_forked(self) -> None:
        """In a child of ``fork()``, drop the parent's connections without closing them.

        Their sockets are the parent's sessions: using or closing them here would break the
        parent's work and release its locks. psycopg does not close them when collected in
        a child either.
        """
        if self._pid != os.getpid():
            with self._pool_guard:
                self._conn, self._cursor, self._pool, self._pid = None, None, [], os.getpid()

    def take_lock_connection(self) -> Any:
        """A connection for holding one advisory lock (from the pool, else a new one)."""
        self._forget_if_forked()
        with self._pool_guard:
            while self._pool:
                conn = self._pool.pop()
                if _usable(conn):
                    return conn
                conn.close()
        return self.connect()

    def give_back(self, conn: Any) -> None:
        """Return a lock connection that holds no lock any more (closed if the pool is full)."""
        with self._pool_guard:
            if not self._closed and not conn.closed and not conn.broken and len(self._pool) < LOCK_POOL_SIZE:
                self._pool.append(conn)
                return
        conn.close()

    def lock_key(self, run_id: str) -> int:
        """The advisory-lock key of a run (scoped by schema: two stores in one database do not clash)."""
        return advisory_key("run", self.schema, run_id)

    def close(self) -> None:
        """Close every connection; locks still held are released by the server with them.

        In a child of ``fork()`` the parent's connections are dropped, not closed.
        """
        self._forget_if_forked()
        with self._guard, self._pool_guard:
            self._closed = True
            pool, self._pool = self._pool, []
            for conn in pool:
                conn.close()
            if self._conn is not None:
                self._conn.close()
                self._conn = self._cursor = None


__all__ = ["LOCK_POOL_SIZE", "PgDatabase", "advisory_key", "is_transient_connect_failure"]
