"""The ledger as the write-ahead log (format 4): state changes, what record kinds imply, and replay.

Every record changes the run's state by (1) what its kind implies (:func:`implied_pending`),
(2) its ``delta``, (3) ``updated_at = at`` (docs/file-format.md). The ``vars`` part of a delta
is a list of typed operations (:class:`SetOp`, :class:`DeleteOp`, :class:`ResultOp`), stored as
``["s", path, value]``, ``["d", path]`` and ``["r", path(, subpath)]``.

Writers find the operations with a :class:`DeltaTracker`: it keeps a private copy of the
variables as of the last record and compares the run's variables with it *by content* (``==``
runs in C, exactly as JSON compares; see :func:`~abstractruntime.core.values.private_copy`),
descending only into objects that changed, and a list that grew by appending costs its new
items. A container that reports its own changes (:mod:`~abstractruntime.core.tracked`), sealed
at the last record against the private copy now at its place and unchanged since, is not
compared at all — so a record costs what changed, not the size of the state, and a handler
that changes an object in place is seen. :func:`apply_record` replays a stored format-3 or
format-4 record onto a :class:`~abstractruntime.core.state.StateImage`.
"""

from __future__ import annotations

import hashlib
from dataclasses import field
from .fastclass import dataclass
from typing import Any, Callable, Optional, Union

from .errors import InvalidInputError
from .markers import LIT, MARKER_KEYS, REF, VAL, has_marker_key, marker_kind, vars_names
from .state import RUN_FIELDS, StateImage
from .tracked import (UNLOGGED_MOVES, ChangeLog, TrackedDict, TrackedList, appended_only, check_lists,
                      lists_identical, part_moved, register_made, reset, seal, seal_copy, settle, tracked_copy,
                      tracked_copy_lists, unchanged)
from .values import ValueTable, private_copy, same_value

Path = list[str]

SET, DELETE, RESULT = "s", "d", "r"
# Run fields a delta may carry (the rest of the state document's run part is fixed or implied).
DELTA_RUN_FIELDS = ("workflow_id", "status", "current_node", "waiting", "output", "error", "created_at",
                    "actor_id", "parent_run_id")
DELTA_KERNEL_FIELDS = ("effects", "pending", "metadata", "workflow", "origin")


@dataclass(frozen=True)
class SetOp:
    """``vars[path] = value`` (the empty path replaces all vars).

    ``extends``: the value is the list the tracker held at ``path`` — ``base``, a private copy
    of that many items — plus new ones; ``private`` is then the private copy of the whole value
    (``base`` plus copies of the new items), made once and shared with the value writer, which
    stores such a list by its tail.
    """

    path: Path
    value: Any
    extends: int = 0
    base: Any = field(default=None, compare=False, repr=False)
    private: Any = field(default=None, compare=False, repr=False)

    def encode(self, value: Any) -> list[Any]:
        """The stored operation, with ``value`` as the record stores it."""
        return [SET, list(self.path), value]


@dataclass(frozen=True)
class DeleteOp:
    """``del vars[path]``."""

    path: Path

    def encode(self) -> list[Any]:
        """The stored operation."""
        return [DELETE, list(self.path)]


@dataclass(frozen=True)
class ResultOp:
    """``vars[path] = result`` (or ``result[subpath]``): a value the record already holds as its result."""

    path: Path
    subpath: Optional[Path] = None

    def encode(self) -> list[Any]:
        """The stored operation."""
        return [RESULT, list(self.path), list(self.subpath)] if self.subpath else [RESULT, list(self.path)]


VarOp = Union[SetOp, DeleteOp, ResultOp]


def decode_op(op: Any) -> VarOp:
    """A stored ``vars`` operation as its type (``ValueError`` for anything else)."""
    if not isinstance(op, list) or len(op) < 2 or not isinstance(op[1], list) \
            or not all(isinstance(part, str) for part in op[1]):
        raise ValueError(f"bad vars operation {op!r}")
    kind = op[0]
    if kind == SET and len(op) == 3:
        return SetOp(op[1], op[2])
    if kind == DELETE and len(op) == 2:
        if not op[1]:  # the variables are replaced (``["s", [], {}]``), never deleted
            raise ValueError("a delete operation needs a non-empty path")
        return DeleteOp(op[1])
    if kind == RESULT and len(op) in (2, 3):
        sub = op[2] if len(op) == 3 else None
        if sub is not None and (not isinstance(sub, list) or not all(isinstance(p, str) for p in sub)):
            raise ValueError(f"bad vars operation {op!r}")
        return ResultOp(op[1], sub or None)
    raise ValueError(f"bad vars operation {op!r}")


# (run_id, effect_id) -> its positional key: a writer derives the key of the effect it performs
# several times a step (to leave it out of the record, and to replay the record). Bounded.
_POSITIONAL: dict[tuple[str, int], str] = {}


def positional_key(run_id: str, effect_id: int) -> str:
    """The 32-hex idempotency key of the run's ``effect_id``-th effect."""
    if effect_id.__class__ is not int:  # (True would share 1's entry; the key spells it "True")
        return hashlib.sha256(f"{run_id}\x00effect\x00{effect_id}".encode()).hexdigest()[:32]
    key = _POSITIONAL.get((run_id, effect_id))
    if key is None:
        if len(_POSITIONAL) >= 4096:
            _POSITIONAL.clear()
        key = _POSITIONAL[(run_id, effect_id)] = hashlib.sha256(
            f"{run_id}\x00effect\x00{effect_id}".encode()).hexdigest()[:32]
    return key


def explicit_key(run_id: str, key: str) -> str:
    """The 32-hex idempotency key of an effect the workflow named ``key``."""
    return hashlib.sha256(f"{run_id}\x00key\x00{key}".encode()).hexdigest()[:32]


_ABSENT = object()  # (a variable not there)


class DeltaTracker:
    """The variables as of the last record, privately copied, and the operations since.

    The private copy is never changed in place: a record's operations copy the objects on their
    way (so a tracked container sealed against one of them, :mod:`~abstractruntime.core.tracked`,
    is known equal to it for as long as it reports no change).
    """

    def __init__(self, variables: dict[str, Any]) -> None:
        self.reset(variables)

    def reset(self, variables: dict[str, Any]) -> None:
        """Take ``variables`` as what the next operations are relative to."""
        self._private: dict[str, Any] = private_copy(variables)
        self._log = ChangeLog()
        # Tracked containers the last diff found equal to their twins (or changed only by
        # appends): (live holder, key, path, appended), sealed when the record is committed.
        self._later: list[tuple[Any, str, Path, bool]] = []
        # The variables :meth:`hand_over` kept for the next tick (None: none).
        self._handed: Optional[dict[str, Any]] = None
        self._handed_top: dict[str, Any] = {}
        # Tracked containers put where no tracker's log sees them, as counted when the tick began.
        self._unlogged = UNLOGGED_MOVES[0]

    def diff(self, variables: Any, *, result: Any = None, result_path: Optional[Path] = None,
             opaque: Optional[Callable[[Path], bool]] = None) -> list[VarOp]:
        """The operations that turn the last variables into ``variables`` (nothing is remembered
        until :meth:`commit`). ``result`` is the object the record holds as its result: a variable
        that *is* it becomes a :class:`ResultOp` (``result_path``: where in the result it sits).
        ``opaque(path)``: the value there is stored whole (a secret), never changed by paths inside it."""
        if not isinstance(variables, dict):
            raise InvalidInputError(f"Run vars must be a JSON object, not {type(variables).__name__}")
        ops: list[VarOp] = []
        self._later = []
        check_lists(self._log)  # C code may have written into a list no comparison reaches
        self._diff(self._private, variables, [], ops, result, result_path, opaque)
        return ops

    def _diff(self, old: dict[str, Any], new: dict[str, Any], path: Path, ops: list[VarOp], result: Any,
              result_path: Optional[Path], opaque: Optional[Callable[[Path], bool]]) -> None:
        log = self._log
        for key in old:
            if key not in new:
                ops.append(DeleteOp(path + [key]))
        for key, value in new.items():
            if key.__class__ is not str and not isinstance(key, str):
                raise InvalidInputError(f"Value is not canonical JSON: object key {key!r} in "
                                        f"vars{''.join('.' + p for p in path)} is not a string")
            here = path + [key]
            if result is not None and value is result:
                # The variable is, right now, the very object the record holds as its result.
                ops.append(ResultOp(here, result_path))
                continue
            if key not in old:
                ops.append(SetOp(here, value))
                continue
            prev = old[key]
            tracked = value.__class__ is TrackedDict or value.__class__ is TrackedList
            if tracked:
                # A container that reports its changes: known equal to ``prev`` without comparing,
                # or ``prev`` plus appended items (core/tracked.py says what is checked).
                if unchanged(value, prev, log):
                    continue
                if prev.__class__ is list and appended_only(value, prev, log):
                    n = len(prev)
                    if len(value) > n:
                        tail = value[n:]
                        ops.append(SetOp(here, value, extends=n, base=prev,
                                         private=prev + [private_copy(item) for item in tail]) if n else
                                   SetOp(here, value))
                    self._later.append((new, key, here, bool(n)))
                    continue
            if same_value(prev, value):
                if tracked:
                    self._later.append((new, key, here, False))
                continue
            if prev.__class__ is dict and isinstance(value, dict) and not has_marker_key(prev) \
                    and not has_marker_key(value) and not (opaque is not None and opaque(here)):
                # (An object using marker keys is stored whole, escaped, and a secret whole, as a
                # marker: neither has paths inside.)
                if tracked:
                    self._later.append((new, key, here, False))
                self._diff(prev, value, here, ops, result, result_path, opaque)
            elif prev.__class__ is list and isinstance(value, list) and _extends(prev, value):
                n = len(prev)
                ops.append(SetOp(here, value, extends=n, base=prev,
                                 private=prev + [private_copy(item) for item in value[n:]]))
            else:
                ops.append(SetOp(here, value))

    def commit(self, ops: list[VarOp], result: Any, variables: Optional[dict[str, Any]] = None) -> None:
        """Remember the operations (after the record holding them was sealed); ``variables``: the
        live variables they were found in, whose tracked containers are then sealed."""
        fresh: dict[int, Any] = {}  # private objects this commit made (changed in place from here)
        for op in ops:
            if isinstance(op, ResultOp):
                # ``result`` is the object the variable holds (found at op.subpath in the record's result).
                self._put(op.path, private_copy(result), fresh)
            elif isinstance(op, SetOp):
                # A private copy is never changed once made (the writer may hold the same one).
                self._put(op.path, op.private if op.private is not None else private_copy(op.value), fresh)
            else:
                target = self._writable(op.path[:-1], fresh)
                target.pop(op.path[-1], None)
        if variables is not None:
            self._seal(ops, variables)
        self._later = []
        reset(self._log)

    def _writable(self, path: Path, fresh: dict[int, Any]) -> dict[str, Any]:
        """The private object at ``path``, and each on the way, copied once by this commit."""
        root = self._private
        if id(root) not in fresh:
            root = self._private = dict(root)
            fresh[id(root)] = root
        target = root
        for part in path:
            nxt = target.get(part)
            if nxt.__class__ is not dict:
                nxt = {}
            elif id(nxt) in fresh:
                target = nxt
                continue
            else:
                nxt = dict(nxt)
            fresh[id(nxt)] = nxt
            target[part] = nxt
            target = nxt
        return target

    def _put(self, path: Path, value: Any, fresh: dict[int, Any]) -> None:
        if not path:
            self._private = value if isinstance(value, dict) else {}  # already a private copy
            return
        self._writable(path[:-1], fresh)[path[-1]] = value

    def _seal(self, ops: list[VarOp], variables: dict[str, Any]) -> None:
        """Seal each tracked container the record compared against the private copy now at its place."""
        places: dict[tuple[str, ...], tuple[Any, str, Path, bool]] = {}
        for op in ops:
            if isinstance(op, DeleteOp):
                continue
            if not op.path:
                for key in variables:
                    places.setdefault((key,), (variables, key, [key], False))
                continue
            holder = _live(variables, op.path[:-1])
            if holder is not None:
                places.setdefault(tuple(op.path), (holder, op.path[-1], op.path, False))
        for entry in self._later:
            places[tuple(entry[2])] = entry  # found changed only by appends: only its new items are looked at
        log = self._log
        for holder, key, path, appended in places.values():
            live = dict.get(holder, key)
            cls = live.__class__
            if cls is not TrackedDict and cls is not TrackedList:
                continue
            twin = _private_at(self._private, path)
            if twin.__class__ is (dict if cls is TrackedDict else list):
                seal(live, twin, log, appended=appended)

    def adopt(self, live: dict[str, Any], copy: dict[str, Any], made: Optional[list[Any]] = None) -> None:
        """``copy``, a :func:`~abstractruntime.core.tracked.tracked_copy` of each of ``live``'s
        variables, is what the run's next tick starts from: when ``live`` still equals what the
        last record left, its containers are sealed against their private copies at once (the
        next record then compares nothing it did not change). ``made``: every tracked list the
        copy made (looked at before each record, for writes by C code; found in ``copy`` if not given)."""
        try:
            if self.diff(live):
                return
        except InvalidInputError:
            return
        finally:
            self._later = []
            # The live lists are no longer the run's (the copy's are registered as they are sealed below).
            self._log.forget_lists()
            self._log.moved.clear()
            self._unlogged = UNLOGGED_MOVES[0]
        log = self._log
        for key, value in copy.items():
            twin = self._private.get(key)
            if (value.__class__ is TrackedList or value.__class__ is TrackedDict) and value._ar_log is None:
                seal_copy(value, twin, log)  # never sealed: as tracked_copy made it
        if made is None:
            made = []
            for value in copy.values():
                tracked_copy_lists(value, made)
        register_made(made, log)

    def hand_over(self, live: dict[str, Any]) -> bool:
        """At a tick's end: keep ``live``, the run's variables, to start the next tick with as
        they are, when they still equal what the last record left (False: they do not, or hold
        what cannot be stored; nothing is kept). Their containers are sealed against the private
        copy and the plain ones handlers put in are replaced by tracked copies (:func:`settle`),
        so the next tick's records cost what it changes. The caller keeps ``live`` only for the
        runtime: the tick's caller is shown a copy of the private one, equal to ``live`` (checked
        whole here, so that it shows exactly what the handlers left)."""
        self._handed = None
        log = self._log
        try:
            if self.diff(live):
                return False
        except InvalidInputError:
            return False
        if self._unlogged != UNLOGGED_MOVES[0]:
            # A tracked container was put where no log saw it (perhaps this run's, held at two
            # places): the next tick starts from a copy.
            self._later = []
            return False
        if not same_value(self._private, live):
            # A change the last records did not see (``dict``'s own methods called on a tracked
            # container): the caller is shown the live objects as they are, and the next tick
            # starts from a copy of them, as for any other state.
            self._later = []
            return False
        self._seal([], live)  # what the comparison found equal by content
        self._later = []
        reset(log)
        if not lists_identical(log):
            # C code put an object equal to an item in its place (a plain one, or one held
            # elsewhere too): the next tick starts from a copy.
            return False
        private = self._private
        made: list[Any] = []
        # A run opened from its files holds no object at two places: neither does one kept. The
        # tracked containers put somewhere during the tick are copies there, and so is a
        # variable that is another one, or was inside one.
        part_moved(log, made)
        seen: set[int] = set()
        for key, value in live.items():
            twin = private.get(key)
            cls = value.__class__
            if (cls is TrackedDict or cls is TrackedList) and not value._ar_up and id(value) not in seen:
                seen.add(id(value))
                settle(value, twin, log, made)
            elif isinstance(value, (dict, list, tuple)):
                copy = tracked_copy(value, None, made)
                dict.__setitem__(live, key, copy)
                seen.add(id(copy))
                seal_copy(copy, twin, log)
        register_made(made, log)
        self._handed = live
        self._handed_top = dict(live)  # what each variable was (the variables' dict reports nothing)
        self._unlogged = UNLOGGED_MOVES[0]
        return True

    def intact(self, live: dict[str, Any]) -> bool:
        """False when ``live`` are the variables :meth:`hand_over` kept and something changed them
        since (a handler may have kept references to their objects): a change through their
        methods, C code writing into a list, a variable set, replaced or removed. As during a
        tick, a change made by calling ``dict``'s own methods on a tracked container is not seen
        (core/tracked.py). True for any others (a copy nobody else holds)."""
        if live is not self._handed:
            return True
        check_lists(self._log)  # C code writing into a list marks it
        top = self._handed_top
        if self._log.marked or len(live) != len(top) or any(
                dict.get(live, key, _ABSENT) is not value for key, value in top.items()):
            return False
        # One object at two variables (or a variable that is also inside another) is not a
        # content change: the next tick must not start with it.
        seen: set[int] = set()
        for value in live.values():
            if value.__class__ is TrackedDict or value.__class__ is TrackedList:
                if value._ar_up or id(value) in seen:
                    return False
                seen.add(id(value))
        self._unlogged = UNLOGGED_MOVES[0]
        return True

    @property
    def private(self) -> dict[str, Any]:
        """The variables as of the last record (the tracker's own copy, only for comparing: do not change it)."""
        return self._private


def _extends(prev: list[Any], value: list[Any]) -> bool:
    """``value`` is ``prev`` (a private copy) plus more items at its end."""
    n = len(prev)
    return 0 < n < len(value) and same_value(prev[n - 1], value[n - 1]) and same_value(prev, value[:n])


def _live(variables: dict[str, Any], path: Path) -> Optional[dict[str, Any]]:
    target: Any = variables
    for part in path:
        target = dict.get(target, part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else None


def _private_at(root: dict[str, Any], path: Path) -> Any:
    target: Any = root
    for part in path:
        if target.__class__ is not dict:
            return None
        target = target.get(part)
    return target


# -- what record kinds imply ------------------------------------------------------------------


def implied_pending(previous: Optional[dict[str, Any]], doc: dict[str, Any], run_id: str) -> Optional[dict[str, Any]]:
    """The pending effect after ``doc`` (a format-3 or format-4 record, stored form), before its delta.

    ``previous`` is the pending effect before it (a ``Pending.to_dict()``-shaped object, or
    ``None``). See the table of kinds in docs/file-format.md.
    """
    kind, status, effect_id = doc.get("kind"), doc.get("status"), doc.get("effect_id")
    same = previous is not None and effect_id is not None and previous.get("effect_id") == effect_id
    if kind == "effect" and status == "started":
        if not isinstance(effect_id, int) or isinstance(effect_id, bool) or effect_id < 1:
            raise ValueError("an effect's intent needs its effect_id")
        base = previous if same and previous is not None else {}
        effect = doc.get("effect", base.get("effect"))
        node_id = doc.get("node_id", base.get("node_id"))
        if not isinstance(effect, dict) or not isinstance(node_id, str):
            raise ValueError(f"the intent of effect {effect_id} names no effect or node")
        named = doc.get("idempotency_key")
        key = named or base.get("idempotency_key") or positional_key(run_id, effect_id)
        return {"effect_id": effect_id, "node_id": node_id, "effect": effect,
                "next_node": doc["next_node"] if "next_node" in doc else base.get("next_node"),
                "idempotency_key": key, "attempt": doc.get("attempt", 1),
                "explicit": bool(named) or bool(base.get("explicit")),
                "parts": dict(base.get("parts") or {}), "failed": int(base.get("failed") or 0)}
    if kind == "effect" and status in ("completed", "waiting"):
        return None if same or previous is None else previous
    if kind == "effect" and status == "failed":
        if same and previous is not None:
            return {**previous, "failed": int(previous.get("failed") or 0) + 1}
        return previous
    if kind == "part":
        result = doc.get("result")
        if not same or previous is None or not isinstance(result, dict) or not isinstance(result.get("part"), str):
            raise ValueError("a part record must name a part of the pending effect")
        return {**previous, "parts": {**(previous.get("parts") or {}), result["part"]: result.get("value")}}
    return previous


# From this record format on, an effect's outcome that closes its intent implies the node the
# intent named (docs/file-format.md, "Format 4"): the run goes to ``next_node`` unless the
# outcome's delta says otherwise.
NODE_IMPLIED_FORMAT = 4


def implied_node(previous: Optional[dict[str, Any]], doc: dict[str, Any]) -> Optional[str]:
    """The node ``doc`` (stored form) moves the run to by its kind alone, or ``None`` when it implies none.

    A format-4 effect outcome ``completed`` whose ``effect_id`` is the pending effect's
    (``previous``, before the record) implies that effect's ``next_node``, when that is a string.
    Nothing else implies a node: a ``waiting`` or ``failed`` outcome leaves the run where it is,
    an outcome of another effect (a result reused by an explicit key) closes no intent, and a
    format-3 record implies nothing. A ``current_node`` in the record's delta replaces it.
    """
    if not isinstance(previous, dict) or doc.get("kind") != "effect" or doc.get("status") != "completed":
        return None
    fmt = doc.get("format")
    if fmt.__class__ is not int or fmt < NODE_IMPLIED_FORMAT:
        return None
    effect_id = doc.get("effect_id")
    if effect_id is None or previous.get("effect_id") != effect_id:
        return None
    node = previous.get("next_node")
    return node if node.__class__ is str else None


def implied_effects(effects: int, doc: dict[str, Any]) -> int:
    """``effects`` after ``doc``: the highest effect id a record of an effect names."""
    effect_id = doc.get("effect_id")
    if doc.get("kind") in ("effect", "part") and isinstance(effect_id, int) and not isinstance(effect_id, bool):
        return max(effects, effect_id)
    return effects


def carries_whole_state(doc: dict[str, Any]) -> bool:
    """True when ``doc``'s delta sets every run and kernel field and replaces all vars (as the first
    record, ``restore``, ``edit`` and the first record after older formats do)."""
    delta = doc.get("delta")
    if not isinstance(delta, dict) or not all(name in delta for name in (*DELTA_RUN_FIELDS, *DELTA_KERNEL_FIELDS)):
        return False
    ops = delta.get("vars")
    return isinstance(ops, list) and any(isinstance(op, list) and len(op) == 3 and op[0] == "s" and op[1] == []
                                         for op in ops)


# -- replay of a stored record onto the state image -------------------------------------------


def apply_record(image: StateImage, doc: dict[str, Any], table: ValueTable, run_id: str) -> None:
    """Apply one stored format-3 or format-4 record to ``image`` (definitions in it must be filed in ``table``).

    Raises :class:`ValueError` when the record cannot be replayed.
    """
    kernel = image.kernel
    previous = kernel["pending"]
    node = implied_node(previous, doc)
    if node is not None:
        image.run["current_node"] = node  # (the delta, applied below, may set another)
    # The image never shares an object with the record: later records change the image in place.
    kernel["pending"] = table.ref_copy(implied_pending(previous, doc, run_id))
    kernel["effects"] = implied_effects(int(kernel["effects"] or 0), doc)
    delta = doc.get("delta") or {}
    if not isinstance(delta, dict):
        raise ValueError("delta must be an object")
    for key, value in delta.items():
        if key == "vars":
            if not isinstance(value, list):
                raise ValueError("delta.vars must be a list of operations")
            for raw in value:
                _apply_op(image, decode_op(raw), doc.get("result"), table)
        elif key in DELTA_RUN_FIELDS:
            image.run[key] = table.ref_copy(value)
        elif key in DELTA_KERNEL_FIELDS:
            if key == "effects" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError("delta.effects must be a non-negative integer")
            if key == "pending" and value is not None and not isinstance(value, dict):
                # The next record's implied changes read the pending effect as an object.
                raise ValueError("delta.pending must be an object or null")
            kernel[key] = table.ref_copy(value) if key != "metadata" or value is not None else {}
        else:
            raise ValueError(f"unknown delta field {key!r}")
    stamp = doc.get("at")
    if isinstance(stamp, str):
        image.run["updated_at"] = stamp


def _apply_op(image: StateImage, op: VarOp, result: Any, table: ValueTable) -> None:
    if isinstance(op, DeleteOp):
        target = _walk_image(image.vars, op.path[:-1], table)
        target.pop(op.path[-1], None)
        image.touched([op.path[0]])
        return
    if isinstance(op, ResultOp):
        value = navigate(result, op.subpath or [], table)
    else:
        value = op.value
    if not op.path:
        # The whole variables are one stored value (a ``$lit`` wrapper when a name uses a marker
        # key); the image's root holds the names themselves (docs/file-format.md).
        image.run["vars"] = {name: table.ref_copy(item) for name, item in vars_names(value).items()}
        image.touched(None)
        return
    value = table.ref_copy(value)
    target = _walk_image(image.vars, op.path[:-1], table, literal=op.path[-1] in MARKER_KEYS)
    target[op.path[-1]] = value
    image.touched([op.path[0]])


def _walk_image(root: dict[str, Any], path: Path, table: ValueTable, *, literal: bool = False) -> dict[str, Any]:
    """The object at ``path`` in the image's vars, for an operation to change it.

    The root holds the variables by name (never a marker). A path goes through values, not
    through how they are stored: a stored object met on the way (``{"$v": id}``) is put in place
    as the object it stands for (its own stored form), and a ``$lit`` object is entered by its
    literal keys. Anything else that is not an object is replaced by a new, empty one. An object
    below the root that a marker key is written into — one on the way, or the one found when
    ``literal`` (the operation writes a marker key into it) — is wrapped in ``$lit`` in its
    place, so the image stays in stored form (our writer sets such an object whole; a path
    through one is still a valid record).
    """
    target = root
    # Where ``target`` sits when a marker key written into it must wrap it (None: the root,
    # whose keys are names, or an object already read by its literal keys).
    place: Optional[tuple[dict[str, Any], str]] = None
    for part in path:
        if place is not None and part in MARKER_KEYS:
            place[0][place[1]] = {LIT: target}  # (the same object, now read by its literal keys)
        nxt: Any = target.get(part)
        kind = marker_kind(nxt) if isinstance(nxt, dict) else "not an object"
        if kind == "ref":
            node = table.node(nxt[REF])
            value = node[1] if node[0] == "val" else None
            if isinstance(value, dict) and marker_kind(value) in (None, "lit"):
                nxt = table.ref_copy(value)
                target[part] = nxt
                kind = marker_kind(nxt)
        if kind == "lit":
            target, place = nxt[LIT], None
        elif kind is None:
            target, place = nxt, (target, part)
        else:
            nxt = target[part] = {}
            target, place = nxt, (target, part)
    if literal and place is not None:
        place[0][place[1]] = {LIT: target}
    return target


def navigate(stored: Any, subpath: Path, table: ValueTable) -> Any:
    """``stored[subpath]``, looking through stored-value and literal markers on the way."""
    value = stored
    for part in subpath:
        value = _unwrap(value, table)
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"the record's result has no {part!r}")
        value = value[part]
    return value


def _unwrap(value: Any, table: ValueTable) -> Any:
    while isinstance(value, dict):
        kind = marker_kind(value)
        if kind == "val":
            value = value[VAL]
        elif kind == "ref":
            node = table.node(value[REF])
            if node[0] != "val":
                return value
            value = node[1]
        elif kind == "lit":
            return value[LIT]
        else:
            return value
    return value


def record_parts(doc: dict[str, Any]) -> list[Any]:
    """The parts of a record that may hold stored values and secrets (for filing definitions)."""
    return [doc.get(name) for name in ("effect", "result", "delta") if doc.get(name) is not None]


__all__ = ["DELETE", "DELTA_KERNEL_FIELDS", "DELTA_RUN_FIELDS", "NODE_IMPLIED_FORMAT", "RESULT", "RUN_FIELDS", "SET",
           "carries_whole_state",
           "DeleteOp", "DeltaTracker", "Path", "ResultOp", "SetOp", "VarOp", "apply_record", "decode_op",
           "explicit_key", "implied_effects", "implied_node", "implied_pending", "navigate", "positional_key",
           "record_parts"]
