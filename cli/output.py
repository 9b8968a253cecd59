"""Output discipline: results on stdout, messages on stderr, JSON through the json module.

- ``--json``: one JSON document on stdout, written by :func:`json_document` (never by rich);
  values inside messages and ``--jsonl`` lines by :func:`json_inline`. These are display
  formats: what the stores write goes through ``abstractruntime.core.json_codec``.
- stdout a TTY: rich tables; every user-supplied string goes in as :class:`rich.text.Text`,
  so markup-like text such as ``[y/n]`` is shown literally.
- stdout piped: tab-separated lines without a header, one record per line (tabs and
  newlines inside values are escaped as ``\\t`` and ``\\n``).
- Error text is never printed as it came: every message on stderr, and every string under an
  ``error``/``errors``/``message`` key of a ``--json`` document, goes through
  :meth:`Settings.scrub` (the run's :class:`~abstractruntime.core.redaction.Redactor`, plus the
  password of the store's URL wherever it appears).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import typer

if TYPE_CHECKING:  # the library is imported when a command needs it, not at start-up
    from abstractruntime.registry import WorkflowFileRegistry

# rich is imported by the two methods that draw on a terminal: a piped or --json command, and
# --help, never pay for it.


def stdout_is_tty() -> bool:
    """True when results go to a terminal (not a pipe, file or test runner)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def interactive() -> bool:
    """True when a person can answer a prompt: stdin and stderr are terminals."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def json_document(value: Any, *, lenient: bool = False) -> str:
    """A ``--json`` document: indented, non-ASCII as is, keys in the order given.

    ``lenient`` (error reports): a value JSON cannot hold, such as a path in an error's
    details, is written as its text rather than failing the report.
    """
    return json.dumps(value, indent=2, ensure_ascii=False, default=str if lenient else None)


def json_inline(value: Any) -> str:
    """A value on one line, keys sorted, non-ASCII as is (messages, ``ledger show --jsonl``)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def tool_call_text(call: dict[str, Any]) -> str:
    """``CALL_ID NAME {arguments}``: one pending tool call as an operator is asked to approve it."""
    return f"{call.get('call_id')} {call.get('name')} {json_inline(call.get('arguments'))}"


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a record's optional sections)."""
    return value if isinstance(value, dict) else {}


# Keys of a --json document whose strings are error text (run errors, effect and tool errors,
# error reports): scrubbed by Settings.scrub_errors before printing.
ERROR_KEYS = frozenset({"error", "errors", "message"})


def tsv_cell(value: Any) -> str:
    """One value as a TSV cell: None is empty, dicts/lists are compact JSON, tabs/newlines escaped."""
    if value is None:
        text = ""
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _is_connection_string(target: str) -> bool:
    from abstractruntime.storage.dsn import is_connection_string

    return is_connection_string(target)


@dataclass
class Settings:
    """Global options, shared by every command through ``ctx.obj``."""

    store: Optional[str] = None
    json: bool = False
    no_input: bool = False
    quiet: bool = False
    verbose: bool = False
    current_run: Optional[str] = None  # the run being advanced, named if the command is interrupted
    workflows: list[str] = field(default_factory=list)  # --workflows entries (the workflow registry)
    signing_key: Optional[str] = None  # --signing-key / $ABSTRACTRUNTIME_SIGNING_KEY: a private key file
    adopt_unsigned: bool = False
    upgrade: bool = False  # --upgrade: a changed workflow file continues a run whose history fits it
    _registry: Optional["WorkflowFileRegistry"] = field(default=None, repr=False)
    redactor: Any = field(default=None, repr=False)  # the run's Redactor once a command has loaded one
    _file_store: Any = field(default=None, repr=False)
    _store_secrets: Optional[list[str]] = field(default=None, repr=False)
    _signer: Any = field(default=None, repr=False)

    def open_store(self, *, create: bool = False) -> Any:
        """The :class:`~abstractruntime.storage.store.FileStore` the command means (opened once).

        Found as git finds ``.git`` (``--store``, ``$ABSTRACTRUNTIME_STORE``, else the nearest
        ``.abstractruntime`` up from here). Only commands that start runs pass ``create=True``;
        for every other command a missing store is exit 4 naming where it was looked for.
        """
        if self._file_store is None:
            from abstractruntime.storage.store import STORE_ENV, FileStore, find_store, locate_store
            from abstractruntime.storage.store import open_store as open_any_store

            target = self.store or os.environ.get(STORE_ENV)
            signer = self.signer()  # a bad key is refused before a store is created
            # A connection string has "://" (a URL) or "=" (key/value pairs): a plain path is
            # told apart without loading the parser.
            if isinstance(target, str) and ("://" in target or "=" in target) and _is_connection_string(target):
                # A PostgreSQL store: the same commands, the same guarantees (docs/postgres.md).
                self._file_store = open_any_store(target, create=create)
            elif create:
                location = locate_store(self.store)
                existed = location.exists
                self._file_store = FileStore(location.path)
                if not existed:
                    self.info(f"created store {location.path.absolute()}")
            else:
                self._file_store = FileStore(find_store(self.store))
            if signer is not None:
                # Every runtime of the command signs: every path that writes a run goes through one.
                self._file_store.runtime_defaults.update(signer=signer, adopt_unsigned=self.adopt_unsigned)
        return self._file_store

    def signer(self) -> Any:
        """The operator's signing key (``--signing-key``), loaded once; ``None`` without one."""
        if self.signing_key is None:
            return None
        if self._signer is None:
            from abstractruntime.storage.signing import Ed25519Signer

            self._signer = Ed25519Signer.from_file(self.signing_key)
        return self._signer

    def store_root(self) -> Optional[str]:
        """The opened store's directory (for messages), or ``None``."""
        if self._file_store is None:
            return None
        root = getattr(self._file_store, "root", None)
        return str(root.absolute()) if root is not None else str(self._file_store.describe())

    def close(self) -> None:
        """Release the store's index connection."""
        if self._file_store is not None:
            self._file_store.close()
            self._file_store = None

    # -- secrets in what is printed ------------------------------------------------------

    def scrub(self, text: Any) -> str:
        """``text`` (a message, an error, an exception) as it may be printed: secrets redacted.

        The run's redactor when the command has one (a workflow's own ``redact_patterns``
        apply), else the default rules; and the password of the store's URL (``--store`` or
        ``$ABSTRACTRUNTIME_STORE``) and its pieces wherever they appear, since a driver's
        message may quote a password it could not parse.
        """
        if self.redactor is None:
            from abstractruntime.core.redaction import Redactor

            self.redactor = Redactor()
        return str(self.redactor.redact_error(text, known=self.store_secrets()))

    def scrub_errors(self, value: Any, *, inside: bool = False) -> Any:
        """A JSON document with every string under an error key (:data:`ERROR_KEYS`) scrubbed.

        Containers are copied only where something changed (a ledger of thousands of records
        without errors is walked, not copied).
        """
        if isinstance(value, str):
            return self.scrub(value) if inside else value
        if isinstance(value, dict):
            out: Optional[dict[Any, Any]] = None
            for k, v in value.items():
                if v is None or v.__class__ in (int, float, bool):
                    continue
                new = self.scrub_errors(v, inside=inside or k in ERROR_KEYS)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if isinstance(value, (list, tuple)):
            items = [self.scrub_errors(v, inside=inside) for v in value]
            return value if all(a is b for a, b in zip(items, value)) else items
        return value

    def store_secrets(self) -> list[str]:
        """The password in the store's URL, decoded and as typed, and its pieces (empty for a folder)."""
        if self._store_secrets is None:
            from urllib.parse import unquote

            from abstractruntime.core.redaction import Redactor
            from abstractruntime.storage.store import STORE_ENV

            target = self.store or os.environ.get(STORE_ENV) or ""
            found: set[str] = set()
            if "://" in target:
                for part in Redactor().secrets_in(target):
                    for text in (part, unquote(part)):
                        found.add(text)
                        found.update(p for p in re.split(r"[@/:?#\s]+", text) if len(p) >= 4)
            self._store_secrets = sorted(found)
        return self._store_secrets

    # -- messages (stderr) -----------------------------------------------------------

    def info(self, message: str) -> None:
        """A progress or status message on stderr (silenced by ``-q``; secrets scrubbed)."""
        if not self.quiet:
            typer.echo(self.scrub(message), err=True)

    def debug(self, message: str) -> None:
        """A message shown only with ``-v`` (secrets scrubbed)."""
        if self.verbose:
            typer.echo(self.scrub(message), err=True)

    def may_prompt(self) -> bool:
        """Whether commands may ask the user (a TTY and no ``--no-input``)."""
        return not self.no_input and interactive()

    # -- results (stdout) ------------------------------------------------------------

    def emit_json(self, document: Any) -> None:
        """Write one JSON document to stdout (error text scrubbed: :meth:`scrub_errors`)."""
        typer.echo(json_document(self.scrub_errors(document)))

    def emit_lines(self, lines: Iterable[str]) -> None:
        """Write plain lines to stdout."""
        for line in lines:
            typer.echo(line)

    def emit_table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: Optional[str] = None,
                   wide: bool = False) -> None:
        """A rich table on a TTY, tab-separated lines (no header) otherwise.

        On a terminal, id columns (``run_id``, ``snapshot_id`` ...) never wrap, so an id
        can be copied whole; other columns wrap or shorten to fit. ``wide`` uses the width
        the values need, whatever the terminal's.
        """
        if not stdout_is_tty():
            for row in rows:
                typer.echo("\t".join(tsv_cell(v) for v in row))
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(title) if title else None, show_lines=False, box=box.SIMPLE_HEAD, pad_edge=False)
        cells = [[Text(_short_cell(_display(col, v))) for col, v in zip(columns, row)] for row in rows]
        for i, column in enumerate(columns):
            if column.endswith("_id") or wide:
                longest = max([len(column)] + [len(r[i]) for r in cells])
                table.add_column(Text(column), no_wrap=True, min_width=longest)
            else:
                table.add_column(Text(column), overflow="fold")
        for row in cells:
            table.add_row(*row)
        console = Console(file=sys.stdout, highlight=False)
        if wide:
            console = Console(file=sys.stdout, highlight=False, width=max(console.width, 10_000))
        console.print(table)

    def emit_fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Key/value pairs: aligned on a TTY, ``key<TAB>value`` lines otherwise."""
        pairs = [(key, self.scrub_errors(value, inside=key in ERROR_KEYS)) for key, value in pairs]
        if not stdout_is_tty():
            for key, value in pairs:
                typer.echo(f"{key}\t{tsv_cell(value)}")
            return
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(Text(key), Text(_short_cell(value, limit=2000)))
        Console(file=sys.stdout, highlight=False).print(table)


def _display(column: str, value: Any) -> Any:
    """A timestamp shown to a person on a terminal: to the second, ``Z`` for UTC (piped output keeps it whole)."""
    if column.endswith("_at") and isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        return value[:10] + " " + value[11:19] + ("Z" if value.endswith(("+00:00", "Z")) else "")
    return value


def _short_cell(value: Any, limit: int = 200) -> str:
    text = tsv_cell(value).replace("\\n", " ").replace("\\t", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["Settings", "stdout_is_tty", "interactive", "tsv_cell", "mapping", "ERROR_KEYS"]
