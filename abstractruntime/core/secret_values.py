"""Secrets in format-3 records: markers that commit to a value, and the values kept beside the run.

Before a record is hashed, every value the redactor flags is replaced by a marker
``{"$secret": COMMITMENT, "$shown": TEXT}`` (:func:`seal_value`). The commitment is
``HMAC-SHA256(run key, JCS(real value))``: the run key is 32 random bytes kept with the run's
secrets and never in the ledger, so a short secret cannot be guessed from the ledger, and the
real value cannot be swapped for another (a second value with the same HMAC cannot be found).

:class:`SecretKeeper` holds the key and the values of one run. It fills a marker only with a
value whose HMAC *is* the marker's commitment (:meth:`SecretKeeper.fill`): an entry that matches
no marker standing in the ledger is never applied to anything, so the secrets store cannot set a
status, a node or an answer. A marker whose value is gone raises :class:`SecretMissingError`.
"""

from __future__ import annotations

import hashlib
import os
import copy
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

from .errors import SecretMissingError
from .jcs import jcs
from .markers import LIT, SECRET, SHOWN, escape, marker_kind, secret_marker
from .redaction import REDACTED, Redactor
from .values import json_copy

if TYPE_CHECKING:
    from .values import ValueTable

KEY_FIELD, COMMITMENT_FIELD, VALUE_FIELD = "key", "commitment", "value"


class SecretKeeper:
    """One run's commitment key and the real values its markers commit to."""

    def __init__(self, key: Optional[bytes] = None, values: Optional[dict[str, Any]] = None) -> None:
        self._key = key
        self._values: dict[str, Any] = dict(values or {})
        self._new_key = False
        self._unsaved: list[dict[str, Any]] = []
        # Entries of format-2 records (filed by record hash and path), for replaying those records.
        self.legacy: list[dict[str, Any]] = []

    @classmethod
    def from_entries(cls, entries: Iterable[dict[str, Any]]) -> "SecretKeeper":
        """The keeper of a run's stored entries. Values whose HMAC does not match their
        commitment under the run's key are dropped: they commit to nothing."""
        key: Optional[bytes] = None
        candidates: list[dict[str, Any]] = []
        legacy: list[dict[str, Any]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if KEY_FIELD in entry and key is None and isinstance(entry[KEY_FIELD], str):
                try:
                    key = bytes.fromhex(entry[KEY_FIELD])
                except ValueError:
                    continue
            elif COMMITMENT_FIELD in entry and VALUE_FIELD in entry:
                candidates.append(entry)
            elif "record_hash" in entry:
                legacy.append(entry)
        keeper = cls(key)
        keeper.legacy = legacy
        if key is not None:
            for entry in candidates:
                commitment = entry[COMMITMENT_FIELD]
                if isinstance(commitment, str) and keeper._matches(commitment, entry[VALUE_FIELD]):
                    keeper._values[commitment] = entry[VALUE_FIELD]
        return keeper

    def load(self, entries: Iterable[dict[str, Any]]) -> None:
        """Add stored entries (the run's key, if this keeper has none yet; values that match)."""
        other = SecretKeeper.from_entries(entries)
        if self._key is None and other._key is not None:
            self._key = other._key
        if other._key == self._key:
            for commitment, value in other._values.items():
                self._values.setdefault(commitment, value)
        known = {(e.get("record_hash"), repr(e.get("path")), e.get("field")) for e in self.legacy}
        self.legacy.extend(e for e in other.legacy if (e.get("record_hash"), repr(e.get("path")), e.get("field"))
                           not in known)

    @property
    def has_key(self) -> bool:
        """True once the run has a commitment key."""
        return self._key is not None

    def commit(self, value: Any) -> str:
        """The commitment to ``value``; the value is kept (to be stored before the record)."""
        if self._key is None:
            self._key = os.urandom(32)
            self._new_key = True
        commitment = self._hmac(value)
        if commitment not in self._values:
            # A copy: the run may change the object in place before its record is written.
            value = json_copy(value)
            self._values[commitment] = value
            self._unsaved.append({COMMITMENT_FIELD: commitment, VALUE_FIELD: value})
        return commitment

    def _hmac(self, value: Any) -> str:
        assert self._key is not None
        import hmac  # on first use: a run that holds no secret never commits to one

        return hmac.new(self._key, jcs(value), hashlib.sha256).hexdigest()

    def _matches(self, commitment: str, value: Any) -> bool:
        import hmac

        try:
            return hmac.compare_digest(self._hmac(value), commitment)
        except Exception:  # a stored value that cannot even be encoded commits to nothing
            return False

    def mark(self) -> int:
        """A point :meth:`rollback` can return to."""
        return len(self._unsaved)

    def rollback(self, mark: int) -> None:
        """Forget the values committed to since ``mark`` (their record was never written)."""
        for entry in self._unsaved[mark:]:
            self._values.pop(entry[COMMITMENT_FIELD], None)
        del self._unsaved[mark:]

    def take_unsaved(self) -> list[dict[str, Any]]:
        """The entries to store before the records that commit to them (the key first, when new)."""
        entries = list(self._unsaved)
        if self._new_key and self._key is not None:
            entries.insert(0, {KEY_FIELD: self._key.hex()})
            self._new_key = False
        self._unsaved = []
        return entries

    def knows(self, commitment: str) -> bool:
        """True when the value committed to is here."""
        return commitment in self._values

    def fill(self, marker: dict[str, Any]) -> Any:
        """The real value a marker commits to (:class:`SecretMissingError` when it is gone)."""
        commitment = marker[SECRET]
        if commitment not in self._values:
            raise SecretMissingError(
                f"the real value of a redacted secret ({marker[SHOWN]!r}) is missing from the run's secrets store; "
                "restore it from a backup — the run is not continued with a placeholder", commitment=commitment)
        return self._values[commitment]

    def entries(self) -> list[dict[str, Any]]:
        """Every entry this keeper holds (the key first): what a copy of the run needs."""
        out: list[dict[str, Any]] = [{KEY_FIELD: self._key.hex()}] if self._key is not None else []
        out.extend({COMMITMENT_FIELD: c, VALUE_FIELD: v} for c, v in self._values.items())
        return out


def shown_text(marker: dict[str, Any]) -> Any:
    """What a reader shows for a marker: its ``$shown`` text."""
    return marker[SHOWN]


def seal_value(value: Any, path: Sequence[Any], redactor: Redactor, keeper: SecretKeeper) -> Any:
    """``value`` as a record stores it: user objects using marker keys escaped, secrets replaced by
    markers committing to them (``path`` names where the value sits, e.g. ``["password"]``).

    A redactor without ``redact_at`` (a custom one) replaces secrets with its own text and
    keeps nothing beside the run.
    """
    escaped = escape(value)
    at = getattr(redactor, "redact_at", None)
    if at is None:
        return redactor.redact(escaped)
    redacted, found = at(list(path), escaped)
    if not found:
        return redacted
    for relpath, original in found:
        if not relpath:
            return secret_marker(keeper.commit(original), redacted if isinstance(redacted, str) else REDACTED)
        target = redacted
        for part in relpath[:-1]:
            target = target[part]
        shown = target[relpath[-1]]
        target[relpath[-1]] = secret_marker(keeper.commit(original), shown if isinstance(shown, str) else REDACTED)
    return redacted


def commitments_in(stored: Any, table: "ValueTable") -> set[str]:
    """The commitments of every secret marker in ``stored`` (a state document, a record's part),
    including those inside the stored values it refers to (``table`` defines them)."""
    found: set[str] = set()
    stack: list[Any] = [stored]
    for vid in table.closure(stored):
        node = table.node(vid)
        stack.extend(node[1:] if node[0] == "ext" else [node[1]])
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            kind = marker_kind(item)
            if kind == "secret":
                found.add(item[SECRET])
            elif kind == "lit":  # (its keys are names: only its values are values)
                stack.extend(item[LIT].values())
            else:
                stack.extend(item.values())
    return found


class _Sealed:
    """A secret met while resolving a stored value, to be filled in at a known path."""

    __slots__ = ("marker",)

    def __init__(self, marker: dict[str, Any]) -> None:
        self.marker = marker


KnownSecret = tuple[tuple[Any, ...], Any, str]
"""``(path, real value, shown text)`` of a secret in a live value."""


def resolve_sealed(stored: Any, table: "ValueTable") -> Any:
    """``stored`` with its stored values resolved and each secret left sealed (an opaque object
    :func:`fill_sealed` fills in), so the paths of the secrets in the live value can be known."""
    return table.resolve(stored, _Sealed)


def fill_sealed(value: Any, keeper: SecretKeeper, path: tuple[Any, ...] = (),
                known: Optional[list["KnownSecret"]] = None) -> Any:
    """``value`` (from :func:`resolve_sealed`) with every sealed secret filled in from ``keeper``
    (:class:`SecretMissingError` when one is gone); each one's ``(path, value, shown)`` is added
    to ``known``."""
    if isinstance(value, _Sealed):
        real = keeper.fill(value.marker)
        if known is not None:
            known.append((path, real, value.marker[SHOWN]))
        return copy.deepcopy(real)
    if isinstance(value, dict):
        return {k: fill_sealed(v, keeper, (*path, k), known) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_sealed(v, keeper, (*path, i), known) for i, v in enumerate(value)]
    return value


def is_sealed(value: Any) -> bool:
    """True for a secret left sealed by :func:`resolve_sealed`."""
    return isinstance(value, _Sealed)


def fill_secrets(stored: Any, table: "ValueTable", keeper: SecretKeeper) -> tuple[Any, list["KnownSecret"]]:
    """The live value ``stored`` stands for — stored values resolved, secrets filled in from
    ``keeper`` (:class:`SecretMissingError` when one is gone) — and where each secret sits in it."""
    known: list[KnownSecret] = []
    return fill_sealed(resolve_sealed(stored, table), keeper, (), known), known


class KeepingRedactor:
    """A redactor that also seals, as secrets, values known to have been secrets at their paths.

    Used when a state whose secrets were sealed by rules this process may not know (a
    workflow's own ``redact_keys``, say) is recorded again — a restore, a fork: each value in
    ``known`` (``(path, real value, shown text)``, paths as the records name them: a variable's
    name first, or ``output``, ``waiting``, ``error``) is sealed where it still sits, with its
    shown text, whatever the rules of ``base`` say. Everything else is ``base``'s.
    """

    def __init__(self, base: Redactor, known: Sequence[KnownSecret]) -> None:
        self._base = base
        self._known = [(tuple(path), jcs(escape(real)), real, shown) for path, real, shown in known]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def redact(self, value: Any) -> Any:
        """``base``'s rules (values without a path are judged by them alone)."""
        return self._base.redact(value)

    def redact_at(self, path: Sequence[Any], value: Any) -> tuple[Any, list[tuple[tuple[Any, ...], Any]]]:
        """``base``'s :meth:`~Redactor.redact_at`, plus every known secret under ``path``."""
        at = getattr(self._base, "redact_at", None)
        redacted, found = at(path, value) if at is not None else (self._base.redact(value), [])
        root = tuple(path)
        wanted = [(p[len(root):], encoded, real, shown) for p, encoded, real, shown in self._known
                  if p[:len(root)] == root]
        if not wanted:
            return redacted, found
        found = list(found)
        copied = False
        for rel, encoded, real, shown in wanted:
            done = [f[0] for f in found]
            if any(rel[:len(d)] == tuple(d) for d in done):
                continue  # already sealed, whole
            stored_path = _stored_path(value, rel)
            if stored_path is None or jcs(_at(value, stored_path)) != encoded:
                continue  # not the value it was (the run changed it): judged by the rules alone
            if not stored_path:
                return shown, [((), real)]
            if not copied:
                redacted, copied = copy.deepcopy(redacted), True
            target = _at(redacted, stored_path[:-1])
            target[stored_path[-1]] = shown
            found = [f for f in found if tuple(f[0])[:len(stored_path)] != stored_path]
            found.append((stored_path, real))
        return redacted, found


def _stored_path(value: Any, rel: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
    """``rel`` (a path in the live value) as a path in its escaped form (through ``$lit`` wrappers)."""
    out: list[Any] = []
    node = value
    for part in rel:
        if isinstance(node, dict) and marker_kind(node) == "lit":
            out.append(LIT)
            node = node[LIT]
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
        out.append(part)
    return tuple(out)


def _at(value: Any, path: Sequence[Any]) -> Any:
    for part in path:
        value = value[part]
    return value


__all__ = ["KeepingRedactor", "KnownSecret", "SecretKeeper", "commitments_in", "fill_sealed", "fill_secrets",
           "is_sealed", "resolve_sealed", "seal_value", "shown_text"]
