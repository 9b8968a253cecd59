"""The kernel's one-``exec`` dataclass builds what ``dataclasses.dataclass`` builds.

Each shape is declared twice, once with each decorator, and the two classes are compared
through what callers use: construction (positional, keyword, defaults, factories, keyword-only),
``repr``, equality, hashing, frozen assignment, ``dataclasses.fields``/``replace``/``asdict``,
``__post_init__``, ``__match_args__`` and the reported options.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

import pytest

from abstractruntime.core.fastclass import _dataclass as fast


def _shapes(decorate: Callable[..., Any]) -> dict[str, type]:
    @decorate
    class Plain:
        """A plain record."""

        name: str
        count: int = 0
        note: Optional[str] = None
        tags: list[str] = dataclasses.field(default_factory=list)
        hidden: str = dataclasses.field(default="h", repr=False, compare=False)

    @decorate(frozen=True)
    class Frozen:
        """A frozen record."""

        key: str
        size: int = 1
        extra: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @decorate(kw_only=True)
    class KwOnly:
        """Keyword-only fields."""

        a: int
        b: int = 2

    @decorate
    class Mixed:
        """Positional fields, then a keyword-only one, a field left out of __init__ and a post-init."""

        a: int
        b: int = dataclasses.field(default=5, kw_only=True)
        c: list[int] = dataclasses.field(default_factory=lambda: [7], init=False)
        d: int = dataclasses.field(default=9, init=False)

        def __post_init__(self) -> None:
            self.c.append(self.a)

    @decorate(eq=False)
    class NoEq:
        """Compared by identity."""

        a: int

    @decorate(repr=False, frozen=True)
    class NoRepr:
        """Its own repr is object's."""

        a: int

    @decorate
    class Empty:
        """No fields at all."""

    return {"Plain": Plain, "Frozen": Frozen, "KwOnly": KwOnly, "Mixed": Mixed, "NoEq": NoEq, "NoRepr": NoRepr,
            "Empty": Empty}


FAST, REAL = _shapes(fast), _shapes(dataclasses.dataclass)

CASES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("Plain", ("x",), {}), ("Plain", ("x", 3, "n", ["t"]), {}), ("Plain", (), {"name": "y", "tags": ["a"]}),
    ("Frozen", ("k",), {}), ("Frozen", ("k", 4, {"a": 1}), {}),
    ("KwOnly", (), {"a": 1}), ("KwOnly", (), {"a": 1, "b": 3}),
    ("Mixed", (1,), {}), ("Mixed", (1,), {"b": 6}),
    ("NoEq", (1,), {}), ("NoRepr", (1,), {}), ("Empty", (), {}),
]


def _observed(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    one, two = cls(*args, **kwargs), cls(*args, **kwargs)
    out: dict[str, Any] = {
        "fields": [(f.name, f.init, f.repr, f.compare, f.kw_only) for f in dataclasses.fields(cls)],
        "asdict": dataclasses.asdict(one),
        "eq": one == two, "eq_self": one == one, "ne_other": one != object(),
        "hash_is_none": cls.__hash__ is None,  # type: ignore[comparison-overlap]
        "match_args": getattr(cls, "__match_args__", None),
        "params": {name: getattr(cls.__dataclass_params__, name)  # type: ignore[attr-defined]
                   for name in ("init", "repr", "eq", "order", "unsafe_hash", "frozen")},
        "signature": str(inspect.signature(cls)),
        "repr": repr(one).split(" object at ")[0],
    }
    if cls.__hash__ is not None:  # type: ignore[comparison-overlap]
        out["hash_equal"] = hash(one) == hash(two)
    fields = dataclasses.fields(cls)
    if fields and fields[0].init:
        out["replace"] = dataclasses.asdict(dataclasses.replace(one, **{fields[0].name: args[0] if args
                                                                         else kwargs[fields[0].name]}))
    if fields:
        try:
            setattr(one, fields[0].name, 99)
            out["assign"] = getattr(one, fields[0].name)
        except dataclasses.FrozenInstanceError as exc:
            out["assign"] = f"frozen: {exc}"
        try:
            delattr(two, fields[0].name)
            out["delete"] = "deleted"
        except dataclasses.FrozenInstanceError as exc:
            out["delete"] = f"frozen: {exc}"
    return out


@pytest.mark.parametrize("shape,args,kwargs", CASES)
def test_fast_class_behaves_as_the_standard_one(shape: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fast_seen = _observed(FAST[shape], args, kwargs)
    real_seen = _observed(REAL[shape], args, kwargs)
    assert fast_seen["repr"].replace(".<locals>", "") == real_seen["repr"].replace(".<locals>", "")
    assert fast_seen == real_seen


def test_bad_calls_fail_as_they_do_with_the_standard_class() -> None:
    for cls in (FAST["Plain"], REAL["Plain"]):
        with pytest.raises(TypeError):
            cls()
        with pytest.raises(TypeError):
            cls("x", nope=1)
    for cls in (FAST["KwOnly"], REAL["KwOnly"]):
        with pytest.raises(TypeError):
            cls(1)


def test_a_frozen_class_hashes_its_compared_fields_and_refuses_new_attributes() -> None:
    cls = FAST["Frozen"]
    assert hash(cls("k", 4, {"a": 1})) == hash(cls("k", 4, {"b": 2}))  # extra: hash=False
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls("k").other = 1  # type: ignore[attr-defined]


def test_a_recursive_value_prints_without_recursing() -> None:
    node = FAST["Plain"]("n")
    node.tags.append(node)
    assert "..." in repr(node)


def test_shapes_outside_the_fast_path_get_the_standard_decorator() -> None:
    @fast(order=True)
    class Ordered:
        """Ordered."""

        a: int

    assert Ordered(1) < Ordered(2)

    class Undocumented:
        a: int

    built = fast(Undocumented)
    assert built.__doc__ == "Undocumented(a: 'int')"

    @fast
    class Child(FAST["Plain"]):  # type: ignore[misc, valid-type]
        """A subclass adds a field."""

        more: int = 1

    assert Child("x").more == 1 and [f.name for f in dataclasses.fields(Child)][-1] == "more"

    @fast
    class OwnRepr:
        """Keeps its own repr."""

        a: int

        def __repr__(self) -> str:
            return "mine"

    assert repr(OwnRepr(1)) == "mine"


def test_every_kernel_dataclass_used_at_import_takes_the_fast_path() -> None:
    """A kernel class that falls back costs the import 0.2-0.4 ms: keep them on the fast path."""
    import sys

    import abstractruntime.loader  # noqa: F401 - and the modules a command that continues a run loads
    import abstractruntime.registry  # noqa: F401
    import abstractruntime.scheduler.events  # noqa: F401
    import abstractruntime.trust  # noqa: F401
    import abstractruntime.usage  # noqa: F401
    from abstractruntime import FileStore, Runtime  # noqa: F401

    slow = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("abstractruntime.") or getattr(module, "dataclass", None) is not fast:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value):
                # The standard decorator compiles __init__ inside a function named __create_fn__
                # (its code's qualified name says so, from Python 3.11); the fast one at top level.
                if "__create_fn__" in getattr(value.__init__.__code__, "co_qualname", ""):
                    slow.append(f"{name}.{value.__qualname__}")
    assert slow == []


def _clashing(decorate: Callable[..., Any]) -> list[Any]:
    """Classes whose field names are the names an ``__init__`` written from source might use."""
    @decorate(frozen=True)
    class Setter:
        """A frozen record with a field named like a helper."""

        _set: int
        items: list[int] = dataclasses.field(default_factory=list)

    @decorate
    class Missing:
        """A field named like the factory marker."""

        _MISSING: int = 0
        items: list[int] = dataclasses.field(default_factory=list)

    @decorate
    class Self:
        """A field named self."""

        self: int = 0

    @decorate
    class Defaults:
        """A field named like another's default."""

        x: int = 0
        _default_x: int = 5

    return [Setter(1), Missing(), Self(3), Defaults()]


def test_fields_named_like_the_generated_code_s_own_names() -> None:
    fast_made, real_made = _clashing(fast), _clashing(dataclasses.dataclass)
    assert [repr(o).split(".")[-1] for o in fast_made] == [repr(o).split(".")[-1] for o in real_made]
    assert [dataclasses.asdict(o) for o in fast_made] == [dataclasses.asdict(o) for o in real_made]


@fast(frozen=True)
class FastKey:
    """A frozen record at module level (pickle finds it by name)."""

    key: str
    size: int = 1


@dataclasses.dataclass(frozen=True)
class RealKey:
    """The same with the standard decorator."""

    key: str
    size: int = 1


class _Sub(FastKey):
    """A user's plain subclass of a fast frozen class."""


def test_pickles_subclasses_and_match_behave_as_with_the_standard_class() -> None:
    import pickle

    for cls in (FastKey, RealKey):
        one = cls("k", 2)
        assert pickle.loads(pickle.dumps(one)) == one
        match one:
            case cls(key, size):  # type: ignore[misc]
                assert (key, size) == ("k", 2)
            case _:
                raise AssertionError("__match_args__ did not match")

        @dataclasses.dataclass(frozen=True)
        class More(cls):  # type: ignore[misc,valid-type]
            """A dataclass subclass with a field of its own."""

            more: int = 3

        m = More("k", 2)
        assert (m.key, m.size, m.more) == ("k", 2, 3) and dataclasses.replace(m, more=4).more == 4
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.more = 5  # type: ignore[misc]
    sub = _Sub("k")
    sub.note = "a plain subclass may add attributes"  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sub.key = "x"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(sub)).key == "k"
    a, b = FAST["Plain"]("a"), FAST["Plain"]("b")
    a.tags.append("only a")
    assert b.tags == []  # a factory's default is not shared
