"""Typed values: a code-first workflow's steps, inputs and output by their type hints.

A record holds JSON. A step function that declares its return type (``-> Build``, a
dataclass) gets back a value of that type from ``ctx.step`` — built from the recorded JSON,
on the first execution and on every replay alike, so both see the same value. Likewise a
workflow function's parameters are built from the run's variables by their hints, and what
it returns is stored as JSON (a dataclass as its fields).

Understood: dataclasses, ``NamedTuple``, ``Enum``, ``datetime``/``date``/``time``, ``UUID``,
``Decimal``, ``Path``, pydantic models (``model_dump``/``model_validate``), ``float``
(a recorded ``2`` is ``2.0``), and ``list``/``tuple``/``set``/``frozenset``/``dict``/
``Optional``/``Union`` of them. Any other hint (``dict``, ``Any``, a ``TypedDict``, none at
all) leaves the JSON value as it is. A hint whose conversion is not needed costs nothing on
replay (:func:`converter` returns ``None``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import sys
import types
import typing
import uuid
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Callable, Optional

from ..core.errors import InvalidInputError

Convert = Callable[[Any], Any]

_NONE = type(None)
_PLAIN = (str, int, bool, dict, list, object, type(None))
_SCALARS: dict[type, Convert] = {
    dt.datetime: lambda v: dt.datetime.fromisoformat(_iso(v)),
    dt.date: lambda v: dt.date.fromisoformat(_text(v)),
    dt.time: lambda v: dt.time.fromisoformat(_text(v)),
    uuid.UUID: lambda v: uuid.UUID(_text(v)),
    Decimal: lambda v: Decimal(_text(v) if isinstance(v, str) else repr(_number(v))),
}


class TypeMismatch(ValueError):
    """A JSON value that does not fit a type hint (the message says where and why)."""


def to_json(value: Any) -> Any:
    """``value`` as JSON can hold it: dataclasses and pydantic models as their fields, enums as
    their values, dates and times as ISO-8601 text, ``UUID``/``Decimal``/``Path`` as text,
    tuples as lists, sets as sorted lists. Anything else is left for the encoder to judge (a
    value nested too deeply, or holding a reference cycle, is returned as it is: the encoder
    names the problem)."""
    try:
        return _to_json(value)
    except RecursionError:
        return value
    except Exception as exc:  # noqa: BLE001 - a model's own dump failing: the value cannot be recorded
        raise InvalidInputError(f"value cannot be made JSON: {type(exc).__name__}: {exc}") from None


def _to_json(value: Any) -> Any:
    cls = value.__class__
    if cls in (str, int, float, bool) or value is None:
        return value
    if cls is dict:
        return {_key(k): _to_json(v) for k, v in value.items()}
    if cls is list:
        return [_to_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return _to_json(dump(mode="json"))
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z") if value.tzinfo is not None else value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, PurePath)):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {_key(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_to_json(v) for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed kinds: an order that does not depend on the set's
            import json

            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, default=str))
    return value


def _key(key: Any) -> Any:
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, (uuid.UUID, dt.date, dt.time, Decimal, PurePath)):
        return _to_json(key)
    return key


def converter(hint: Any, owner: Any = None) -> Optional[Convert]:
    """A function building a value of type ``hint`` from its JSON, or ``None`` when the JSON
    value already is one (no hint, ``Any``, ``dict``, ``str``, ...). ``owner`` resolves
    forward references (a function, a class)."""
    try:
        return _converter(hint, owner, 0)
    except RecursionError:
        return None


def _converter(hint: Any, owner: Any, depth: int) -> Optional[Convert]:
    if depth > 20 or hint is None or hint is inspect.Parameter.empty or hint is Any:
        return None
    if isinstance(hint, typing.TypeVar) or isinstance(hint, (str, typing.ForwardRef)):
        return None  # unresolved: nothing to go by
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _converter(args[0], owner, depth + 1)
    if origin is typing.Literal or origin is typing.ClassVar:
        return None
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        return _union(args, owner, depth)
    if origin in (list, typing.List) or origin in (set, frozenset) or _is_abc(origin, "Sequence", "Set"):
        item = _converter(args[0], owner, depth + 1) if args else None
        target = origin if origin in (set, frozenset) else list
        if item is None and target is list:
            return None
        return _sequence(target, item, hint)
    if origin is tuple:
        return _tuple(args, owner, depth, hint)
    if origin in (dict, typing.Dict) or _is_abc(origin, "Mapping"):
        key = _converter(args[0], owner, depth + 1) if args else None
        value = _converter(args[1], owner, depth + 1) if len(args) > 1 else None
        if key is None and value is None:
            return None
        return _mapping(key, value, hint)
    if not isinstance(hint, type):
        return None
    if hint in _PLAIN:
        return None
    if hint is float:
        return _float
    if hint in (tuple, set, frozenset):
        return _sequence(hint, None, hint)
    if issubclass(hint, enum.Enum):
        return _enum(hint)
    for scalar, make in _SCALARS.items():
        if hint is scalar:
            return _guard(make, hint)
    if issubclass(hint, PurePath):
        return _guard(lambda v: hint(_text(v)), hint)
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, depth)
    if issubclass(hint, tuple) and hasattr(hint, "_fields"):
        return _named_tuple(hint, depth)
    validate = getattr(hint, "model_validate", None)
    if callable(validate):
        return _guard(validate, hint)
    return None


def _is_abc(origin: Any, *names: str) -> bool:
    import collections.abc as abc

    return any(origin is getattr(abc, name) for name in names)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeMismatch(f"expected text, got {type(value).__name__}")
    return value


def _iso(value: Any) -> str:
    text = _text(value)
    return text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeMismatch(f"expected a number, got {type(value).__name__}")
    return value


def _float(value: Any) -> float:
    return float(_number(value))


def _guard(make: Convert, hint: Any) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, hint):
            return value
        try:
            return make(value)
        except TypeMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to build it means: it does not fit
            raise TypeMismatch(f"{_name(hint)} from {_show(value)}: {exc}") from None

    return convert


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _enum(hint: type[enum.Enum]) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, hint):
            return value
        try:
            return hint(value)
        except ValueError:
            raise TypeMismatch(f"{_show(value)} is not a {hint.__name__}") from None

    return convert


def _sequence(target: type, item: Optional[Convert], hint: Any) -> Convert:
    def convert(value: Any) -> Any:
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise TypeMismatch(f"expected a list for {_name(hint)}, got {type(value).__name__}")
        items = [item(v) for v in value] if item is not None else list(value)
        return target(items)

    return convert


def _tuple(args: tuple[Any, ...], owner: Any, depth: int, hint: Any) -> Convert:
    if len(args) == 2 and args[1] is Ellipsis:
        each = _converter(args[0], owner, depth + 1)
        parts: Optional[list[Optional[Convert]]] = None
    else:
        each = None
        parts = [_converter(a, owner, depth + 1) for a in args] if args and args != ((),) else None

    def convert(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise TypeMismatch(f"expected a list for {_name(hint)}, got {type(value).__name__}")
        if parts is not None:
            if len(value) != len(parts):
                raise TypeMismatch(f"expected {len(parts)} items for {_name(hint)}, got {len(value)}")
            return tuple(p(v) if p is not None else v for p, v in zip(parts, value))
        return tuple(each(v) for v in value) if each is not None else tuple(value)

    return convert


def _mapping(key: Optional[Convert], item: Optional[Convert], hint: Any) -> Convert:
    def convert(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeMismatch(f"expected an object for {_name(hint)}, got {type(value).__name__}")
        return {(key(k) if key is not None else k): (item(v) if item is not None else v) for k, v in value.items()}

    return convert


def _union(args: tuple[Any, ...], owner: Any, depth: int) -> Optional[Convert]:
    options = [a for a in args if a is not _NONE]
    nullable = len(options) < len(args)
    converters = [_converter(a, owner, depth + 1) for a in options]
    if all(c is None for c in converters):
        return None

    def convert(value: Any) -> Any:
        if value is None and nullable:
            return None
        problems = []
        # A member whose JSON the value already is (str, dict, ...) takes it as it is, if it fits.
        for option, make in zip(options, converters):
            if make is None:
                if _fits_plain(option, value):
                    return value
                continue
            try:
                return make(value)
            except TypeMismatch as exc:
                problems.append(str(exc))
        raise TypeMismatch(f"{_show(value)} fits none of {', '.join(_name(a) for a in args)}"
                           + (f" ({problems[0]})" if problems else ""))

    return convert


def _fits_plain(option: Any, value: Any) -> bool:
    origin = typing.get_origin(option) or option
    if origin is Any or origin is object:
        return True
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (str, bool, dict, list):
        return isinstance(value, origin)
    return True  # a hint this module does not judge (Literal, a TypedDict, a class of its own...)


def _hints(target: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an unresolved forward reference: go by what can be read
        return dict(getattr(target, "__annotations__", {}) or {})


def _dataclass(hint: type, depth: int) -> Convert:
    hints = _hints(hint)
    fields = [f for f in dataclasses.fields(hint) if f.init]
    makers = {f.name: _converter(hints.get(f.name, f.type), hint, depth + 1) for f in fields}

    def convert(value: Any) -> Any:
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise TypeMismatch(f"expected an object for {hint.__name__}, got {type(value).__name__}")
        unknown = [k for k in value if k not in makers]
        if unknown:
            raise TypeMismatch(f"{hint.__name__} has no field {unknown[0]!r}")
        kwargs = {}
        for name, raw in value.items():
            make = makers[name]
            try:
                kwargs[name] = make(raw) if make is not None else raw
            except TypeMismatch as exc:
                raise TypeMismatch(f"{hint.__name__}.{name}: {exc}") from None
        try:
            return hint(**kwargs)
        except TypeError as exc:
            raise TypeMismatch(f"{hint.__name__}: {exc}") from None

    return convert


def _named_tuple(hint: type, depth: int) -> Convert:
    hints = _hints(hint)
    names = list(hint._fields)  # type: ignore[attr-defined]
    makers = [_converter(hints.get(n), hint, depth + 1) for n in names]

    def convert(value: Any) -> Any:
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            value = [value[n] for n in names if n in value]
        if not isinstance(value, (list, tuple)):
            raise TypeMismatch(f"expected a list for {hint.__name__}, got {type(value).__name__}")
        try:
            return hint(*(m(v) if m is not None else v for m, v in zip(makers, value)))
        except TypeError as exc:
            raise TypeMismatch(f"{hint.__name__}: {exc}") from None

    return convert


def return_converter(fn: Any) -> Optional[Convert]:
    """The converter of a function's declared return type (``None``: its JSON is its value)."""
    target = getattr(fn, "func", fn)  # a functools.partial
    target = getattr(target, "__wrapped__", target)
    if not callable(target):
        return None
    if inspect.isclass(target):
        return converter(target)  # a class as a step: its instance, rebuilt from its fields
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = inspect.getattr_static(type(target), "__call__", None)  # a callable object
        if not inspect.isfunction(target):
            return None
    hints = _hints(target)
    hint = hints.get("return", inspect.Parameter.empty)
    if inspect.iscoroutinefunction(target) and typing.get_origin(hint) is typing.Coroutine:
        hint = typing.get_args(hint)[-1]
    return converter(hint, target)


def input_converters(fn: Callable[..., Any]) -> dict[str, Convert]:
    """The converters of a workflow function's keyword parameters that need one."""
    hints = _hints(fn)
    found: dict[str, Convert] = {}
    for name, hint in hints.items():
        if name == "return":
            continue
        make = converter(hint, fn)
        if make is not None:
            found[name] = make
    return found


def text_inputs(fn: Callable[..., Any]) -> frozenset[str]:
    """The parameters of a workflow function declared as text (``str``, ``Optional[str]``): a
    command-line ``--var`` for them is taken as its literal text, never parsed as JSON."""
    names = set()
    for name, hint in _hints(fn).items():
        options = [a for a in typing.get_args(hint) if a is not _NONE] if _is_union(hint) else [hint]
        if options == [str]:
            names.add(name)
    return frozenset(names)


def _is_union(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType)


def build_inputs(fn: Callable[..., Any], inputs: dict[str, Any], workflow_id: str, *,
                 strict: bool = True) -> dict[str, Any]:
    """The function's keyword arguments from the run's variables (``InvalidInputError`` naming
    the input that does not fit its hint). Not ``strict`` (a run that exists: its inputs were
    checked when it started, perhaps by older code): an input that does not fit is passed as
    recorded, as the function got it before."""
    hints = _hints(fn)
    built = dict(inputs)
    for name, hint in hints.items():
        if name == "return" or name not in built or built[name] is None:
            continue  # None stays None (``x: str = None`` is common)
        value = built[name]
        make = converter(hint, fn)
        try:
            if make is not None:
                built[name] = make(value)
            elif not _fits_hint(hint, value):
                raise TypeMismatch(f"expected {_name(hint)}, got {type(value).__name__} {_show(value)}")
        except TypeMismatch as exc:
            if not strict:
                continue
            raise InvalidInputError(f"workflow '{workflow_id}': input {name!r} does not fit its type: {exc}") \
                from None
    return built


def _fits_hint(hint: Any, value: Any) -> bool:
    """Whether a JSON value is of a plain hint (``str``, ``int``, ``list[str]``, a union of them)."""
    if _is_union(hint):
        return any(_fits_hint(option, value) for option in typing.get_args(hint) if option is not _NONE)
    if typing.get_origin(hint) is typing.Annotated:
        return _fits_hint(typing.get_args(hint)[0], value)
    return _fits_plain(hint, value)


__all__ = ["Convert", "TypeMismatch", "build_inputs", "converter", "input_converters", "return_converter",
           "text_inputs", "to_json"]
