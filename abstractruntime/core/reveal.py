"""The real value at one path of a run's state: what an operator asks for explicitly.

Everything the CLI prints shows secrets redacted (docs/redaction.md). ``runs show RUN --reveal
PATH`` asks for the one real value at ``PATH`` (``vars.api_key``, ``vars.headers.0.1``): it is
read from the run's secrets store — by the commitment its marker names — while the store still
holds it, and a value that is gone is said to be gone (:class:`SecretMissingError`), never
replaced by its redacted text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import InvalidInputError, SecretMissingError
from .markers import run_value
from .secret_values import SecretKeeper, fill_sealed, is_sealed, resolve_sealed

if TYPE_CHECKING:
    from .values import ValueTable


def parse_path(path: str) -> list[str]:
    """``"vars.headers.0.1"`` → ``["vars", "headers", "0", "1"]`` (a part that is a list index is
    used as one where the value is a list)."""
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise InvalidInputError(f"a path is names separated by dots, such as vars.api_key (got {path!r})")
    return path.split(".")


def reveal(run_doc: dict[str, Any], path: str, *, run_id: str, table: Optional["ValueTable"] = None,
           secrets: Optional[Callable[[], list[dict[str, Any]]]] = None) -> Any:
    """The real value at ``path`` of ``run_doc`` (the ``run`` part of a state document, resolved by
    ``table`` with secrets filled from ``secrets()``; without a table, a live run's dict)."""
    parts = parse_path(path)
    keeper: list[SecretKeeper] = []

    def fill(value: Any) -> Any:
        if not keeper:
            keeper.append(SecretKeeper.from_entries(secrets() if secrets is not None else []))
        try:
            return fill_sealed(value, keeper[0])
        except SecretMissingError:
            raise SecretMissingError(
                f"run {run_id}: the real value of {path} is no longer in the run's secrets store (dropped when "
                "the run finished, or deleted); only its redacted text is left", run_id=run_id, path=path) from None

    # (A state document's vars root holds names: as a value it is wrapped when one is a marker key.)
    node: Any = resolve_sealed(run_value(run_doc), table) if table is not None else run_doc
    for depth, part in enumerate(parts):
        if is_sealed(node):
            node = fill(node)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            where = ".".join(parts[:depth + 1])
            raise InvalidInputError(f"run {run_id} has no value at {where}", run_id=run_id, path=path)
    return fill(node)


__all__ = ["parse_path", "reveal"]
