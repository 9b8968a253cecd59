"""A run's state document, kept record by record, and its digest (docs/file-format.md, "State digests").

The state document is the run as the ledger holds it — ``{"run": {...}, "kernel": {...}}`` with
secrets as markers and stored values as references — so it can be written as a checkpoint,
proven against the ledger, and rebuilt by anyone from the ledger alone. :class:`StateImage`
keeps it current as records are written or replayed, and keeps one digest per variable so
:meth:`StateImage.digest` rehashes only the variables that changed since the last digest.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from .canonical import sha256_hex
from .jcs import jcs

RUN_FIELDS = ("run_id", "workflow_id", "status", "current_node", "vars", "waiting", "output", "error",
              "created_at", "updated_at", "actor_id", "parent_run_id")
KERNEL_FIELDS = ("effects", "pending", "metadata", "workflow", "origin")


def blank_document(run_id: str) -> dict[str, Any]:
    """The state before a run's first record."""
    run: dict[str, Any] = {name: None for name in RUN_FIELDS}
    run.update(run_id=run_id, workflow_id="", status="running", current_node="", vars={})
    return {"run": run, "kernel": {"effects": 0, "pending": None, "metadata": {}, "workflow": None, "origin": None}}


class StateImage:
    """The state document of one run and the per-variable digests of its last :meth:`digest`."""

    def __init__(self, document: dict[str, Any]) -> None:
        run, kernel = document["run"], document["kernel"]
        self.run: dict[str, Any] = {name: run.get(name) for name in RUN_FIELDS}
        if not isinstance(self.run["vars"], dict):
            self.run["vars"] = {}
        self.kernel: dict[str, Any] = {name: kernel.get(name) for name in KERNEL_FIELDS}
        self.kernel["effects"] = self.kernel["effects"] or 0
        self.kernel["metadata"] = self.kernel["metadata"] or {}
        self._digests: dict[str, str] = {}
        self._stale: Optional[set[str]] = None  # None: every variable is stale

    @classmethod
    def blank(cls, run_id: str) -> "StateImage":
        """The image of a run with no records yet."""
        return cls(blank_document(run_id))

    @property
    def vars(self) -> dict[str, Any]:
        """The run's variables as the ledger holds them."""
        variables: dict[str, Any] = self.run["vars"]
        return variables

    def touched(self, names: Optional[Iterable[str]]) -> None:
        """Mark variables changed (``None``: all of them, e.g. the whole vars were replaced)."""
        if names is None or self._stale is None:
            self._stale = None
            return
        self._stale.update(names)

    def document(self) -> dict[str, Any]:
        """The state document (shares the image's objects: encode it before the image changes)."""
        return {"run": self.run, "kernel": self.kernel}

    def digest(self) -> str:
        """The state digest: JCS of the document with each variable replaced by its own digest."""
        variables = self.vars
        if self._stale is None:
            self._digests = {name: sha256_hex(jcs(value)) for name, value in variables.items()}
        else:
            for name in self._stale:
                if name in variables:
                    self._digests[name] = sha256_hex(jcs(variables[name]))
                else:
                    self._digests.pop(name, None)
        self._stale = set()
        return document_digest(self.run, self.kernel, self._digests)

    def copy(self) -> "StateImage":
        """An independent image (the document is copied through its JSON form)."""
        import json

        clone = StateImage(json.loads(jcs(self.document())))
        return clone


def document_digest(run: dict[str, Any], kernel: dict[str, Any], var_digests: dict[str, str]) -> str:
    """The digest of a state document whose variables have the given digests."""
    shaped = {"run": {**run, "vars": var_digests}, "kernel": kernel}
    return sha256_hex(jcs(shaped))


def digest_of(document: dict[str, Any]) -> str:
    """The digest of a whole state document (what a checkpoint's proof compares)."""
    run, kernel = document.get("run"), document.get("kernel")
    if not isinstance(run, dict) or not isinstance(kernel, dict) or not isinstance(run.get("vars"), dict):
        raise ValueError("not a state document")
    image = StateImage(document)
    return image.digest()


__all__ = ["KERNEL_FIELDS", "RUN_FIELDS", "StateImage", "blank_document", "digest_of", "document_digest"]
