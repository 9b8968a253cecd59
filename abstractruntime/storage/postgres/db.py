"""One PostgreSQL database as the stores see it: a shared connection and lock connections.

psycopg 3 is imported here, lazily, when a store is opened: ``import abstractruntime`` and
the kernel load no third-party module. Every psycopg error that leaves this package is turned
into an :class:`~abstractruntime.core.errors.AbstractRuntimeError` whose message has passed
through :func:`~.url.redact`, so a password in a URL never reaches a log or ``--json``.

The shared connection (autocommit; explicit transactions where several statements must be
atomic) serves every read and write, serialised by a lock because a psycopg connection runs
one statement at a time. Run locks are PostgreSQL session-level advisory locks, so each held
lock needs its own connection: those come from a small pool and go back to it when released.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import threading
from typing import Any, Iterator, Optional

from ...core.errors import CorruptRecordError, MissingExtraError, StorageError, UnsupportedFormatError
from .schema import DEFAULT_SCHEMA, check_schema_name, installed_version, migrate, quoted, refuse_newer
from .url import redact

# Idle lock connections kept for reuse (more are opened when needed and closed on release).
LOCK_POOL_SIZE = 4
APPLICATION_NAME = "abstractruntime"
_NUL_ESCAPE = b"\\u0000"


def _psycopg() -> Any:
    """psycopg 3, loaded only when a PostgreSQL store is opened (the ``postgres`` extra)."""
    try:
        return importlib.import_module("psycopg")
    except ImportError:
        raise MissingExtraError("psycopg", "postgres", "A PostgreSQL store") from None


def jsonb_copy(data: bytes) -> Optional[str]:
    """The text for a ``jsonb`` query column beside exact JSON ``data``, or ``None`` when jsonb
    cannot hold it (it has no U+0000, which canonical JSON writes as an escape).

    The jsonb copy is never read back by the stores: jsonb rewrites numbers and key order.
    """
    return None if _NUL_ESCAPE in data else data.decode("utf-8")


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


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for ``parts`` (stable across processes and versions)."""
    digest = hashlib.sha256("\x1f".join(("abstractruntime", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgDatabase:
    """The connections of one store: ``url`` (libpq URL; ``PG*`` variables fill the gaps) and
    the PostgreSQL ``schema`` holding its tables.

    ``create=False`` refuses a database without the schema (``StoreNotFoundError``) instead
    of creating it. A schema newer than this code is refused (``UnsupportedFormatError``).
    """

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, create: bool = True,
                 connect_timeout: int = 10) -> None:
        self.url = url
        self.schema = check_schema_name(schema)
        self.s = quoted(schema)
        self.connect_timeout = connect_timeout
        self.psycopg = _psycopg()
        self._guard = threading.RLock()
        self._pool_guard = threading.Lock()
        self._pool: list[Any] = []
        self._closed = False
        self._conn: Optional[Any] = None
        self._pid = os.getpid()
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
            version = installed_version(conn, self.schema)
        if version == 0:
            from ..store import StoreNotFoundError

            raise StoreNotFoundError(f"no abstractruntime store in {self.describe()}", path=self.describe())
        refuse_newer(version, self.describe())

    def describe(self) -> str:
        """The URL with its password redacted, plus the schema when not the default."""
        where = redact(self.url)
        return where if self.schema == DEFAULT_SCHEMA else f"{where} (schema {self.schema})"

    # -- connections --------------------------------------------------------------------

    def connect(self) -> Any:
        """A new autocommit connection (``StorageError``, redacted, when the server refuses)."""
        psycopg = self.psycopg
        # fallback_application_name names us in pg_stat_activity unless the URL names itself;
        # the connect timeout applies unless the URL or PGCONNECT_TIMEOUT sets one.
        options: dict[str, Any] = {"fallback_application_name": APPLICATION_NAME}
        try:
            if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(self.url) \
                    and not os.environ.get("PGCONNECT_TIMEOUT"):
                options["connect_timeout"] = self.connect_timeout
            conn = psycopg.connect(self.url, autocommit=True, **options)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {redact(self.url)}: {redact(str(exc).strip())}",
                               store=redact(self.url)) from None
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """The shared connection, held exclusively for the block; reopened if it broke.

        A psycopg error raised in the block becomes a redacted :class:`StorageError`.
        """
        with self._guard:
            if self._closed:
                raise StorageError(f"the PostgreSQL store {self.describe()} is closed")
            self._forget_if_forked()
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self.connect()
            try:
                yield self._conn
            except self.psycopg.Error as exc:
                raise self.storage_error(exc) from None

    def storage_error(self, exc: BaseException) -> StorageError:
        """A redacted :class:`StorageError` for a psycopg error."""
        state = getattr(exc, "sqlstate", None)
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return StorageError(f"PostgreSQL error in {self.describe()}: {text}", sqlstate=state)

    def _forget_if_forked(self) -> None:
        """In a child of ``fork()``, drop the parent's connections without closing them.

        Their sockets are the parent's sessions: using or closing them here would break the
        parent's work and release its locks. psycopg does not close them when collected in
        a child either.
        """
        if self._pid != os.getpid():
            with self._pool_guard:
                self._conn, self._pool, self._pid = None, [], os.getpid()

    def take_lock_connection(self) -> Any:
        """A connection for holding one advisory lock (from the pool, else a new one)."""
        self._forget_if_forked()
        with self._pool_guard:
            while self._pool:
                conn = self._pool.pop()
                if not conn.closed and not conn.broken:
                    return conn
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
                self._conn = None


__all__ = ["LOCK_POOL_SIZE", "PgDatabase", "advisory_key", "jsonb_copy"]
