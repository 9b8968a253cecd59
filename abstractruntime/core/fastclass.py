"""``dataclass`` for the kernel's own classes, with one ``exec`` instead of several.

The standard library's decorator (up to Python 3.12) compiles every method it generates
separately: ``__init__``, ``__repr__``, ``__eq__`` and, for a frozen class, ``__setattr__``,
``__delattr__`` and ``__hash__`` — 0.2 ms for a plain class and 0.4 ms for a frozen one, the
largest part of what ``import abstractruntime`` spends on about forty classes. Here the
standard decorator only collects the fields (``init``, ``repr`` and ``eq`` off: no code
generated); ``__init__``, the one method on the hot path, is compiled from source as the
standard decorator writes it, and the others are closures over the field names
(``operator.attrgetter`` reads the values in C). The class is a real dataclass afterwards:
``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` see what they would
see, and ``__dataclass_params__`` reports the options given.

Only the shapes the kernel uses take the fast path; any other (``order``, ``unsafe_hash``,
``slots``, ``init=False``, an ``InitVar``, a dataclass base class, a class without a
docstring, a method the decorator would have to respect, a field named ``self`` or ``__ar_…``
like the helpers ``__init__``'s source names) goes to the standard decorator
unchanged. ``tests/kernel/test_fastclass.py`` compares both on every shape taken here.

Type checkers see ``dataclasses.dataclass`` itself.
"""

from __future__ import annotations

import dataclasses
import reprlib
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable

__all__ = ["dataclass"]

# Names the standard decorator would respect when a class defines them itself.
_OWN = ("__init__", "__repr__", "__eq__", "__setattr__", "__delattr__", "__hash__")


class _Factory:
    """The default of a field built by a factory, in ``__init__``'s signature (as the standard one shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _plain(cls: type) -> bool:
    """Whether ``cls`` is a shape this module builds the same way the standard decorator does."""
    if cls.__doc__ is None:  # the standard decorator writes a docstring from the signature
        return False
    own = cls.__dict__
    if any(name in own for name in _OWN):
        return False
    if any(hasattr(base, "__dataclass_fields__") for base in cls.__mro__[1:]):
        return False
    annotations = own.get("__annotations__", {})
    # A field named ``self`` or like the names ``__init__``'s source uses for its helpers would clash with them.
    if any(name == "self" or name.startswith("__ar_") for name in annotations):
        return False
    return not any("InitVar" in str(annotation) for annotation in annotations.values())


def _frozen_methods(cls: Any, names: frozenset[str]) -> tuple[Callable[..., None], Callable[..., None]]:
    """A frozen class's ``__setattr__`` and ``__delattr__``, as the standard decorator writes them
    (a subclass that is not a dataclass may still set attributes that are not fields)."""

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __setattr__, __delattr__


def _values(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning an instance's values of ``names``, as a tuple (in C: ``attrgetter``)."""
    if not names:
        return lambda obj: ()
    get = attrgetter(*names)
    return get if len(names) > 1 else lambda obj: (get(obj),)


def _repr(names: list[str]) -> Callable[[Any], str]:
    values = _values(names)

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(names, values(self)))
        return f"{self.__class__.__qualname__}({shown})"

    return __repr__


def _eq(names: list[str]) -> Callable[[Any, Any], Any]:
    values = _values(names)

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _hash(names: list[str]) -> Callable[[Any], int]:
    values = _values(names)

    def __hash__(self: Any) -> int:
        return hash(values(self))

    return __hash__


def _build(cls: type, *, frozen: bool, eq: bool, repr: bool, kw_only: bool, match_args: bool) -> type:
    dataclasses.dataclass(cls, init=False, repr=False, eq=False, frozen=False, kw_only=kw_only,
                          match_args=match_args)
    fields = dataclasses.fields(cls)
    namespace: dict[str, Any] = {"__ar_missing__": _FACTORY, "__ar_set__": object.__setattr__}
    args: list[str] = []
    kw_args: list[str] = []
    body: list[str] = []
    for f in fields:
        name = f.name
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_factory:
            namespace[f"__ar_factory_{name}__"] = f.default_factory
        if f.init:
            if f.default is not dataclasses.MISSING:
                namespace[f"__ar_default_{name}__"] = f.default
                arg = f"{name}=__ar_default_{name}__"
            elif has_factory:
                arg = f"{name}=__ar_missing__"
            else:
                arg = name
            (kw_args if f.kw_only else args).append(arg)
            value = f"__ar_factory_{name}__() if {name} is __ar_missing__ else {name}" if has_factory else name
        elif has_factory:
            value = f"__ar_factory_{name}__()"
        elif f.default is not dataclasses.MISSING:
            namespace[f"__ar_default_{name}__"] = f.default
            value = f"__ar_default_{name}__"
        else:
            continue
        body.append(f"  __ar_set__(self, {name!r}, {value})" if frozen else f"  self.{name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    params = ", ".join(["self", *args, *(["*", *kw_args] if kw_args else [])])
    lines = [f"def __init__({params}):", *(body or ["  pass"])]
    exec("\n".join(lines), namespace)  # noqa: S102 - the source is built above from field names only
    init = namespace["__init__"]
    init.__annotations__ = {**{f.name: f.type for f in fields if f.init}, "return": None}
    methods: dict[str, Any] = {"__init__": init}
    if repr:
        methods["__repr__"] = _repr([f.name for f in fields if f.repr])
    if eq:
        methods["__eq__"] = _eq([f.name for f in fields if f.compare])
        hashed = [f.name for f in fields if (f.compare if f.hash is None else f.hash)]
        methods["__hash__"] = _hash(hashed) if frozen else None
    if frozen:
        methods["__setattr__"], methods["__delattr__"] = _frozen_methods(cls, frozenset(f.name for f in fields))
    for name, method in methods.items():
        if method is not None:
            method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)
    options = cls.__dataclass_params__  # type: ignore[attr-defined]
    options.init, options.repr, options.eq, options.frozen = True, repr, eq, frozen
    return cls


def _dataclass(cls: Any = None, /, *, init: bool = True, repr: bool = True, eq: bool = True, order: bool = False,
               unsafe_hash: bool = False, frozen: bool = False, match_args: bool = True, kw_only: bool = False,
               slots: bool = False) -> Any:
    """``dataclasses.dataclass`` with the same arguments; see the module's docstring."""

    def wrap(cls: type) -> type:
        if init and not (order or unsafe_hash or slots) and _plain(cls):
            return _build(cls, frozen=frozen, eq=eq, repr=repr, kw_only=kw_only, match_args=match_args)
        return dataclasses.dataclass(cls, init=init, repr=repr, eq=eq, order=order, unsafe_hash=unsafe_hash,
                                     frozen=frozen, match_args=match_args, kw_only=kw_only, slots=slots)

    return wrap if cls is None else wrap(cls)


if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
else:
    dataclass = _dataclass
