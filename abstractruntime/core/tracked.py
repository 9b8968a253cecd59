"""Containers that report their own changes, so that a record costs what changed.

The variables a tick works on are :class:`TrackedDict` and :class:`TrackedList` containers
(:func:`tracked_copy` of a run opened from its files; between two ticks of one runtime the
same containers, made to hold no plain one by :func:`settle` and no object at two places by
:func:`part_moved`, as a run opened from its files holds none, when nothing changed them — core/wal.py
``DeltaTracker.hand_over``): a ``dict`` and a ``list`` in every way a workflow can tell
(``isinstance``, ``==``, JSON; their copies and pickles are plain), whose methods that change
them also mark them changed, and mark every tracked container holding them "changed below". After each record the delta tracker (:class:`~abstractruntime.core.wal.DeltaTracker`)
*seals* the tracked containers it compared against its private copy of them (their *twin*);
at the next record it skips a container sealed against the very twin it now compares with,
unchanged since, and a list changed only by appends costs its new items. Nothing is replaced
during a tick: the workflow's own objects stay where it put them (between ticks, the plain
ones it put in become tracked copies).

Nothing here trusts object identity alone. A container is skipped only when its own methods
say nothing changed in it or below it, and what those methods cannot see is checked directly:

- a list's items are compared by identity with those it held when sealed (C code such as
  ``heapq`` and ``list.__setitem__(x, …)`` writes into a list without calling its methods),
  as is its length — every tracked list sealed in a tracker's log, however deep (a list inside
  a container known unchanged is not reached by the comparison: :func:`check_lists` marks it);
- a plain ``dict`` or ``list`` the workflow put inside a tracked one (a message it built) cannot
  report changes: the holder keeps where such children sit, and each is compared by content
  with its twin, every record (until the next tick makes it tracked);
- a plain container deeper down (inside a tracked child) makes every holder above it "deep":
  compared by content until the next tick.

Changes made by calling ``dict``'s own methods on a tracked container
(``dict.__setitem__(d, k, v)``) are not seen; workflow code
changes its variables through their methods (docs/file-format.md, "How a writer finds the
state change").

Standard library only (a kernel module).
"""

from __future__ import annotations

from itertools import chain, compress, repeat
from operator import is_, ne
from typing import Any, Iterable, Iterator, Optional, SupportsIndex

from .values import same_value

CLEAN, APPENDED, CHANGED = 0, 1, 2


class ChangeLog:
    """The tracked containers marked changed since a tracker's last record (reset by it), and
    the tracked lists sealed in it, looked at before each record (:func:`check_lists`)."""

    __slots__ = ("marked", "lists", "held", "items", "moved")

    def __init__(self) -> None:
        self.marked: list[Any] = []
        # (holder, value): a tracked container put into ``holder`` since the tick began, perhaps
        # while still held elsewhere. A run opened from its files holds no object at two places:
        # between two ticks these are made copies (DeltaTracker.hand_over), so that a run kept
        # for its next tick holds none either.
        self.moved: list[tuple[Any, Any]] = []
        # The lists, side by side with the items each held when sealed (compared pairwise in C),
        # and where each sits in them by id (emptied when a tick starts from a new copy: see
        # DeltaTracker.adopt, and :meth:`forget_lists`).
        self.lists: dict[int, int] = {}
        self.held: list[Any] = []
        self.items: list[Any] = []

    def forget_lists(self) -> None:
        """Stop looking at the lists registered so far (they are no longer the run's)."""
        self.lists.clear()
        self.held.clear()
        self.items.clear()


_SLOTS = ("_ar_log", "_ar_twin", "_ar_up", "_ar_state", "_ar_below", "_ar_pure", "_ar_deep", "_ar_logged",
          "_ar_items", "_ar_plain", "__weakref__")


def _init(obj: Any) -> None:
    obj._ar_log = None     # the tracker's log it was sealed in
    obj._ar_twin = None    # the tracker's private copy it equalled when sealed
    obj._ar_up = None      # tracked containers holding it (former holders may stay: only more is marked)
    obj._ar_state = CLEAN  # changed itself since sealed: APPENDED (lists: only at the end) or CHANGED
    obj._ar_below = False  # something inside it changed since
    obj._ar_pure = True    # it holds no plain dict or list
    obj._ar_deep = False   # some tracked container inside it holds one (until the next tick)
    obj._ar_logged = None  # the log it is listed in until that tracker's next record
    obj._ar_items = None   # (lists) its items when sealed, compared by identity
    obj._ar_plain = ()     # where its plain children sat when sealed (indexes or keys)


def _mark(obj: Any, state: int, values: Iterable[Any]) -> None:
    """``obj`` changed (``state``), ``values`` were put in it: mark it and every holder above."""
    if state > obj._ar_state:
        obj._ar_state = state
    plain = deep = False
    moved: Optional[list[Any]] = None
    for value in values:
        cls = value.__class__
        if cls is TrackedDict or cls is TrackedList:
            _link(value, obj)
            moved = [value] if moved is None else moved + [value]
            if not value._ar_pure or value._ar_deep:
                deep = True
        elif isinstance(value, (dict, list, tuple)):
            plain = True
    if moved is not None:
        _moved(obj, moved)
    if plain:
        obj._ar_pure = False
    if deep:
        obj._ar_deep = True
    _note(obj)
    # Every holder, every time (a container may be held at several places, and a holder's marks
    # are reset by its own tracker's record, whatever the marks below it).
    for holder in _holders(obj):
        holder._ar_below = True
        if plain or deep:
            holder._ar_deep = True
        _note(holder)


def _holders(obj: Any) -> Iterator[Any]:
    """Every tracked container holding ``obj``, however far up, each once."""
    stack = list(obj._ar_up) if obj._ar_up else []
    seen: set[int] = set()
    while stack:
        holder = stack.pop()
        if id(holder) in seen:
            continue
        seen.add(id(holder))
        yield holder
        if holder._ar_up:
            stack.extend(holder._ar_up)


# Tracked containers put into a container that no tracker's log reaches (counted: a tracker
# that sees this change during a tick keeps nothing for the next one).
UNLOGGED_MOVES = [0]


def _moved(obj: Any, values: list[Any]) -> None:
    """``values`` (tracked) were put into ``obj``: noted in the log of every tracker whose
    containers hold ``obj`` (the first logged ones on each way up)."""
    logs: list[ChangeLog] = []
    stack, seen = [obj], set()
    while stack:
        here = stack.pop()
        if id(here) in seen:
            continue
        seen.add(id(here))
        log = here._ar_log
        if log is not None:
            if not any(known is log for known in logs):
                logs.append(log)
        elif here._ar_up:
            stack.extend(here._ar_up)
    if not logs:
        UNLOGGED_MOVES[0] += 1
    for log in logs:
        log.moved.extend((obj, value) for value in values)


def _note(obj: Any) -> None:
    log = obj._ar_log
    if log is not None and obj._ar_logged is not log:
        obj._ar_logged = log
        log.marked.append(obj)


def _link(child: Any, holder: Any) -> None:
    up = child._ar_up
    if up is None:
        child._ar_up = [holder]
    elif not any(h is holder for h in up):
        up.append(holder)


class _Tracking:
    """The bookkeeping both tracked containers carry in their slots (declared here for type
    checkers; each container class lays the slots out itself)."""

    __slots__ = ()
    _ar_log: Optional[ChangeLog]
    _ar_twin: Any
    _ar_up: Optional[list[Any]]
    _ar_state: int
    _ar_below: bool
    _ar_pure: bool
    _ar_deep: bool
    _ar_logged: Optional[ChangeLog]
    _ar_items: Optional[list[Any]]
    _ar_plain: tuple[Any, ...]


class TrackedDict(_Tracking, dict):  # type: ignore[type-arg]
    """A ``dict`` of a run's variables that marks itself changed (see the module docstring)."""

    __slots__ = _SLOTS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _init(self)
        super().__init__(*args, **kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        _mark(self, CHANGED, (value,))
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        _mark(self, CHANGED, ())
        dict.__delitem__(self, key)

    def pop(self, *args: Any) -> Any:
        """``dict.pop``, marking the dict changed."""
        _mark(self, CHANGED, ())
        return dict.pop(self, *args)

    def popitem(self) -> tuple[Any, Any]:
        """``dict.popitem``, marking the dict changed."""
        _mark(self, CHANGED, ())
        return dict.popitem(self)

    def clear(self) -> None:
        """``dict.clear``, marking the dict changed."""
        _mark(self, CHANGED, ())
        dict.clear(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """``dict.update``, marking the dict changed."""
        merged = dict(*args, **kwargs)
        _mark(self, CHANGED, merged.values())
        dict.update(self, merged)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``dict.setdefault``, marking the dict changed when it adds the key."""
        if key not in self:
            _mark(self, CHANGED, (default,))
        return dict.setdefault(self, key, default)

    def __ior__(self, other: Any) -> "TrackedDict":  # type: ignore[misc]
        self.update(other)
        return self

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        import copy

        out: dict[Any, Any] = {}
        memo[id(self)] = out
        for key, value in dict.items(self):
            out[copy.deepcopy(key, memo)] = copy.deepcopy(value, memo)
        return out

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (dict, (dict(self),))


class TrackedList(_Tracking, list):  # type: ignore[type-arg]
    """A ``list`` of a run's variables that marks itself changed (see the module docstring)."""

    __slots__ = _SLOTS

    def __init__(self, *args: Any) -> None:
        _init(self)
        super().__init__(*args)

    def append(self, value: Any) -> None:
        """``list.append``: a change at the end."""
        _mark(self, APPENDED, (value,))
        list.append(self, value)

    def extend(self, values: Iterable[Any]) -> None:
        """``list.extend``: a change at the end."""
        values = list(values)
        _mark(self, APPENDED, values)
        list.extend(self, values)

    def __iadd__(self, values: Iterable[Any]) -> "TrackedList":  # type: ignore[misc]
        self.extend(values)
        return self

    def insert(self, index: SupportsIndex, value: Any) -> None:
        """``list.insert``, marking the list changed."""
        _mark(self, CHANGED, (value,))
        list.insert(self, index, value)

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = list(value)
            _mark(self, CHANGED, value)
        else:
            _mark(self, CHANGED, (value,))
        list.__setitem__(self, index, value)

    def __delitem__(self, index: Any) -> None:
        _mark(self, CHANGED, ())
        list.__delitem__(self, index)

    def pop(self, index: SupportsIndex = -1) -> Any:
        """``list.pop``, marking the list changed."""
        _mark(self, CHANGED, ())
        return list.pop(self, index)

    def remove(self, value: Any) -> None:
        """``list.remove``, marking the list changed."""
        _mark(self, CHANGED, ())
        list.remove(self, value)

    def clear(self) -> None:
        """``list.clear``, marking the list changed."""
        _mark(self, CHANGED, ())
        list.clear(self)

    def reverse(self) -> None:
        """``list.reverse``, marking the list changed."""
        _mark(self, CHANGED, ())
        list.reverse(self)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        """``list.sort``, marking the list changed."""
        _mark(self, CHANGED, ())
        list.sort(self, *args, **kwargs)

    def __imul__(self, n: SupportsIndex) -> "TrackedList":
        _mark(self, CHANGED, ())
        return list.__imul__(self, n)

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        import copy

        out: list[Any] = []
        memo[id(self)] = out
        out.extend(copy.deepcopy(value, memo) for value in list.__iter__(self))
        return out

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (list, (list(self),))


TRACKED = (TrackedDict, TrackedList)


def tracked_copy(value: Any, holder: Any = None, made: Optional[list[Any]] = None) -> Any:
    """``value`` with every ``dict`` and ``list`` in it (and tuple: JSON holds it as a list) a new
    tracked container linked to the one holding it; scalars are shared. ``made``: a list that
    receives every tracked list made (each remembers the items it was made with)."""
    cls = value.__class__
    items: Any = None
    if cls is dict or (cls is not list and cls is not tuple and isinstance(value, dict)):
        out: Any = _new_dict(_DICT)
        dict.update(out, {k: v if v.__class__ not in _NESTED and not isinstance(v, _CONTAINERS) else
                          tracked_copy(v, out, made) for k, v in value.items()})
    elif isinstance(value, (list, tuple)):
        out = _new_list(_LIST)
        items = [v if v.__class__ not in _NESTED and not isinstance(v, _CONTAINERS) else tracked_copy(v, out, made)
                 for v in value]
        list.extend(out, items)
        if made is not None:
            made.append(out)
    else:
        return value
    # The fields of _init, set here without a call (a tick copies every container of the state).
    out._ar_log = out._ar_twin = out._ar_logged = None
    out._ar_items = items  # (a seal after appends extends it)
    out._ar_up = [holder] if holder is not None else None
    out._ar_state = CLEAN
    out._ar_below = out._ar_deep = False
    out._ar_pure = True
    out._ar_plain = ()
    return out


def tracked_copy_lists(value: Any, made: list[Any]) -> None:
    """Append to ``made`` every tracked list in ``value`` (through tracked containers only)."""
    stack = [value]
    while stack:
        here = stack.pop()
        if here.__class__ is TrackedList:
            made.append(here)
            stack.extend(list.__iter__(here))
        elif here.__class__ is TrackedDict:
            stack.extend(dict.values(here))


def register_made(lists: list[Any], log: ChangeLog) -> None:
    """Look, before each record of ``log``'s tracker, at the lists :func:`tracked_copy` made
    (``made``) for the tick it starts: each against the items it was made with."""
    held = log.held
    start = len(held)
    fresh = [obj for obj in lists if id(obj) not in log.lists]
    held.extend(fresh)
    log.items.extend([obj._ar_items for obj in fresh])
    log.lists.update(zip(map(id, fresh), range(start, start + len(fresh))))


_NESTED = (dict, list, tuple)
_CONTAINERS = (dict, list, tuple)
_DICT, _LIST = TrackedDict, TrackedList
_new_dict = dict.__new__
_new_list = list.__new__


def unchanged(obj: Any, twin: Any, log: ChangeLog) -> bool:
    """True when tracked ``obj`` is known equal to ``twin`` (the tracker's private copy at this
    place) without comparing it whole: sealed against that very copy, nothing changed in or
    below it since, its items the same objects, and its plain children equal to their twins."""
    if obj._ar_twin is not twin or obj._ar_log is not log or obj._ar_state != CLEAN or obj._ar_below \
            or obj._ar_deep:
        return False
    if obj.__class__ is TrackedList and not _same_items(obj, len(obj)):
        return False
    return _plain_equal(obj, twin)


def appended_only(obj: Any, twin: Any, log: ChangeLog) -> bool:
    """True when tracked list ``obj`` is ``twin`` plus the items after ``len(twin)``: sealed
    against ``twin``, changed since only by appends, its old items the same objects, unchanged."""
    return (obj.__class__ is TrackedList and obj._ar_twin is twin and obj._ar_log is log
            and obj._ar_state == APPENDED and not obj._ar_below and not obj._ar_deep and len(obj) >= len(twin)
            and _same_items(obj, len(twin)) and _plain_equal(obj, twin))


def _same_items(obj: Any, n: int) -> bool:
    items = obj._ar_items
    if items is None or len(items) != n:
        return False
    # ``is`` first, in C (then ``==``, which only a replaced item reaches: equal to the one it
    # replaced is equal to its twin, since the replaced one, tracked, would have marked this list).
    return bool(items == (obj[:n] if n != len(obj) else obj))


def _plain_equal(obj: Any, twin: Any) -> bool:
    for where in obj._ar_plain:
        try:
            if not same_value(twin[where], obj[where]):
                return False
        except (KeyError, IndexError):
            return False
    return True


def seal(obj: Any, twin: Any, log: ChangeLog, *, appended: bool = False, fresh: bool = False) -> None:
    """``obj`` (tracked) equals ``twin`` after a record: remember both and reset its marks.

    ``appended``: the record found ``obj`` changed only by appends since it was last sealed (only
    its new items are looked at). ``fresh``: ``obj`` is a :func:`tracked_copy` nothing changed
    yet (every container in it tracked and linked: nothing to look at)."""
    if fresh:
        obj._ar_items = list(list.__iter__(obj)) if obj.__class__ is TrackedList else None
        obj._ar_log, obj._ar_twin = log, twin
        if obj.__class__ is TrackedList:  # (the lists inside it: register_made)
            _register_one(obj, log)
        return
    start = len(obj._ar_items) if appended and obj._ar_items is not None else 0
    plain = list(obj._ar_plain) if start else []
    deep = obj._ar_deep if start else False
    pairs: Iterable[tuple[Any, Any]]
    if obj.__class__ is TrackedList:
        held = obj._ar_items
        if start and held is not None:
            # Its first ``start`` items are those it held (checked by the comparison that found
            # only appends): the new ones are added to that list, not the whole copied again.
            new = obj[start:]
            held.extend(new)
            pairs = enumerate(new, start)
        else:
            obj._ar_items = list(list.__iter__(obj))
            pairs = enumerate(obj._ar_items)
    else:
        pairs = dict.items(obj)
    if _look_at(obj, pairs, log, plain):
        deep = True
    obj._ar_plain = tuple(plain)
    obj._ar_pure = not plain
    obj._ar_deep = deep
    obj._ar_log = log
    obj._ar_twin = twin
    obj._ar_state = CLEAN
    obj._ar_below = False
    _register(obj, log, start)


def _register_one(obj: Any, log: ChangeLog) -> None:
    at = log.lists.get(id(obj))
    if at is None or log.held[at] is not obj:
        log.lists[id(obj)] = len(log.held)
        log.held.append(obj)
        log.items.append(obj._ar_items)
    else:
        log.items[at] = obj._ar_items


def _register(obj: Any, log: ChangeLog, start: int) -> None:
    """Remember, in ``log``, every tracked list in ``obj`` (from its item ``start`` on, for a
    list) and ``obj`` itself with the items it holds now, so that :func:`check_lists` sees C code
    writing into any of them, however deep (its holders may be skipped unseen)."""
    stack: list[Any] = [obj]
    first = True
    while stack:
        here = stack.pop()
        cls = here.__class__
        if cls is TrackedList:
            if not first and (here._ar_log is not log or here._ar_items is None or here._ar_state != CLEAN
                              or here._ar_below):
                # Sealed along with a holder, which equals its twin: so does this list, as it is now
                # (what C code put in it is looked at: a plain container, or a tracked one perhaps
                # held elsewhere too).
                here._ar_items = list(list.__iter__(here))
                here._ar_log, here._ar_twin = log, _UNTWINNED
                here._ar_state, here._ar_below = CLEAN, False
                _look_at_items(here, log)
            if not first and (not here._ar_pure or here._ar_deep):
                _deepen(here)
            _register_one(here, log)
            children: Iterable[Any] = here._ar_items[start:] if first and start else list.__iter__(here)
        elif cls is TrackedDict:
            if not first and (not here._ar_pure or here._ar_deep):
                _deepen(here)
            children = dict.values(here)
        else:
            continue
        first = False
        stack.extend(c for c in children if c.__class__ is TrackedList or c.__class__ is TrackedDict)


def _look_at_items(obj: Any, log: ChangeLog) -> None:
    """Tracked list ``obj``'s items as they are now are what it is sealed with: the plain
    containers among them are remembered (compared by content until the next tick), and the
    tracked ones not linked to it (put by C code) are linked and noted as moved."""
    plain: list[Any] = []
    _look_at(obj, enumerate(list.__iter__(obj)), log, plain)
    obj._ar_plain = tuple(plain)
    obj._ar_pure = not plain


def _look_at(obj: Any, pairs: Iterable[tuple[Any, Any]], log: ChangeLog, plain: list[Any]) -> bool:
    """The items (``(place, item)`` pairs) tracked ``obj`` holds, as it is sealed with them: the
    places of the plain containers go to ``plain``, the tracked ones not linked to it (put by C
    code: a method links what it puts) are linked and noted as moved. True when one of those
    holds a plain container in or below it."""
    deep = False
    for where, item in pairs:
        cls = item.__class__
        if cls is TrackedDict or cls is TrackedList:
            up = item._ar_up
            if up is None or not any(h is obj for h in up):
                log.moved.append((obj, item))
                _link(item, obj)
            if not item._ar_pure or item._ar_deep:
                deep = True
        elif isinstance(item, (dict, list, tuple)):
            plain.append(where)
    return deep


def _deepen(obj: Any) -> None:
    """``obj`` holds a plain container in or below it: every tracked container above it is
    compared by content (not skipped) until the next tick makes it tracked."""
    for holder in _holders(obj):
        holder._ar_deep = True


# The twin of a list sealed only along with a holder: never a tracker's private copy, so the list
# is never skipped on its own account (only its items are remembered, for check_lists).
_UNTWINNED = object()


def check_lists(log: ChangeLog) -> None:
    """Before a record: mark changed each tracked list sealed in ``log`` whose items are no longer
    those it held then (C code — ``heapq``, ``list.append(x, …)`` — wrote into it without calling
    its methods), so that no holder of it is skipped as unchanged."""
    held, sealed = log.held, log.items
    # The usual answer, in one C call: every list holds the very items it held (``is`` first, for
    # each item of each list), once the lists changed through their methods since (marked, so
    # nothing here would change for them) are set aside for the comparison. Only a difference
    # pays for the pairwise look below.
    aside = []
    for obj in log.marked:
        if obj.__class__ is TrackedList and obj._ar_state != CLEAN and obj._ar_items is not None \
                and (obj._ar_log is log or obj._ar_log is None):
            at = log.lists.get(id(obj))
            if at is not None and held[at] is obj:
                aside.append((at, sealed[at]))
                sealed[at] = obj
    same = held == sealed
    for at, items in aside:
        sealed[at] = items
    if same:
        return
    gone = False
    # Every list against its items when sealed, pairwise in C (``is`` first): Python looks only at those that differ.
    for at in compress(range(len(held)), map(ne, held, sealed)):
        obj = held[at]
        if obj._ar_items is None or (obj._ar_log is not log and obj._ar_log is not None):
            gone = True  # changed through its methods and not sealed again, or sealed elsewhere
            sealed[at] = None
        elif obj._ar_state == CLEAN and not _same_items(obj, len(obj)):
            _mark(obj, CHANGED, ())
    if gone:
        keep = [at for at, items in enumerate(sealed) if items is not None]
        log.held[:] = [held[at] for at in keep]
        log.items[:] = [sealed[at] for at in keep]
        log.lists.clear()
        log.lists.update((id(obj), at) for at, obj in enumerate(log.held))


def lists_identical(log: ChangeLog) -> bool:
    """Every tracked list sealed in ``log`` holds the very objects it held then (by identity,
    not ``==``: C code may have put an equal object in, which :func:`check_lists` lets pass —
    a plain container, or a tracked one held elsewhere too). Once per tick, in C."""
    held, items = log.held, log.items
    # (``==`` first, identity first in C: the lengths, so that the items pair up)
    return held == items and all(map(is_, chain.from_iterable(held), chain.from_iterable(items)))


def settle(obj: Any, twin: Any, log: ChangeLog, made: list[Any]) -> bool:
    """Between two ticks: tracked ``obj``, equal to ``twin`` (the tracker's private copy at its
    place), keeps no plain container in or below it. Each plain one a handler put there is
    replaced by a tracked copy sealed against its twin, and the containers on the way are sealed
    again, so that the next tick's records skip all of it until something changes (a plain child
    would be compared by content at every record). ``made``: receives the tracked lists made.
    True when nothing plain is left in or below ``obj``."""
    if obj._ar_pure and not obj._ar_deep and obj._ar_twin is twin and obj._ar_log is log:
        return True
    is_list = obj.__class__ is TrackedList
    if twin.__class__ is not (list if is_list else dict) or len(twin) != len(obj):
        return False  # (not its twin: compared at the next record, as before)
    if obj._ar_twin is not twin or obj._ar_log is not log or obj._ar_state != CLEAN or obj._ar_below:
        # Not sealed against this very twin: sealed whole (its items, its children's links).
        seal(obj, twin, log)
        if obj._ar_pure and not obj._ar_deep:
            return True
    items = obj._ar_items if is_list else None
    for where in obj._ar_plain:
        child = obj[where]
        if child.__class__ is TrackedDict or child.__class__ is TrackedList:
            continue
        seal_copy(_copied_in(obj, where, child, items, made), twin[where], log)
    deep = False
    if obj._ar_deep:
        for where, child in (enumerate(list.__iter__(obj)) if is_list else dict.items(obj)):
            if (child.__class__ is TrackedDict or child.__class__ is TrackedList) \
                    and (not child._ar_pure or child._ar_deep) and not settle(child, twin[where], log, made):
                deep = True
    # Sealed against ``twin`` already: only what changed here is remembered again.
    obj._ar_plain = ()
    obj._ar_pure = True
    obj._ar_deep = deep
    if is_list:
        _register_one(obj, log)
    return not deep


def _copied_in(holder: Any, where: Any, value: Any, items: Optional[list[Any]], made: list[Any]) -> Any:
    """``value``, at ``where`` in tracked ``holder``, replaced there by a tracked copy (returned);
    ``items``: the list holder's sealed items, where only what it was sealed with is replaced (an
    item C code put in since, equal to the one it replaced, stays unknown to it, and is seen when
    it changes)."""
    copy = tracked_copy(value, holder, made)
    (list.__setitem__ if holder.__class__ is TrackedList else dict.__setitem__)(holder, where, copy)
    if items is not None and where < len(items) and items[where] is value:
        items[where] = copy
    return copy


def seal_copy(copy: Any, twin: Any, log: ChangeLog) -> None:
    """Seal ``copy``, a :func:`tracked_copy` nothing changed yet, against ``twin`` (the private copy
    at its place) when that is its plain counterpart (a tuple's is not: it is compared instead)."""
    if (copy.__class__ is TrackedList and twin.__class__ is list) or \
            (copy.__class__ is TrackedDict and twin.__class__ is dict):
        seal(copy, twin, log, fresh=True)


def part_moved(log: ChangeLog, made: list[Any]) -> None:
    """Between two ticks: each tracked container put somewhere during the tick (``log.moved``)
    is replaced there by a tracked copy, so that no object is at two places of the variables
    the next tick starts from (it may still be held where it was). The copy equals it: its
    holder stays sealed. ``made``: receives the tracked lists made."""
    holders: dict[int, tuple[Any, dict[int, Any]]] = {}
    for holder, value in log.moved:
        holders.setdefault(id(holder), (holder, {}))[1][id(value)] = value
    log.moved.clear()
    for holder, values in holders.values():
        is_list = holder.__class__ is TrackedList
        # Each holder looked at once, whatever was put in it (a slice may put a thousand items).
        if len(values) == 1:  # (the usual: by identity, in C)
            one = repeat(next(iter(values.values())))
            places: list[Any] = list(compress(range(len(holder)), map(is_, list.__iter__(holder), one))) if is_list \
                else list(compress(dict.keys(holder), map(is_, dict.values(holder), one)))
        elif is_list:
            places = [at for at, item in enumerate(list.__iter__(holder)) if id(item) in values]
        else:
            places = [key for key, item in dict.items(holder) if id(item) in values]
        items = holder._ar_items if is_list else None
        for where in places:
            _copied_in(holder, where, holder[where], items, made)
        for value in values.values():
            up = value._ar_up
            if up:
                # No longer held there (a variable that is ``value`` need not be copied as well).
                up[:] = [h for h in up if h is not holder]


def reset(log: ChangeLog) -> None:
    """After a record (and its :func:`seal` calls): a container marked since the last record and
    not sealed again no longer equals its twin: it forgets it and is compared from now on."""
    for obj in log.marked:
        if obj._ar_logged is log:
            obj._ar_logged = None
        if obj._ar_log is log and (obj._ar_state != CLEAN or obj._ar_below):
            obj._ar_twin = None
            obj._ar_items = None
            obj._ar_state = CLEAN
            obj._ar_below = False
    log.marked.clear()


__all__ = ["APPENDED", "CHANGED", "CLEAN", "TRACKED", "ChangeLog", "TrackedDict", "TrackedList", "appended_only",
           "check_lists", "lists_identical", "part_moved", "register_made", "reset", "seal", "seal_copy", "settle", "tracked_copy",
           "tracked_copy_lists", "unchanged"]
