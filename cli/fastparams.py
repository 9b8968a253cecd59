"""Plain coercion of the command's option values, without importing pydantic.

typer converts every parameter value through a pydantic ``TypeAdapter``; importing pydantic
and building the adapters costs more than the rest of a short command (``runs show``,
``resume``). Every parameter of this CLI is a ``str``, ``int``, ``float``, ``bool`` or
``list[str]``, which need no pydantic: this module gives those parameters a converter with
the same results (and ``min``/``max``/``clamp`` bounds) and leaves any other type to typer.

typer has no public hook for this: the converter is the private ``_runtime_param`` of each
parameter, built from its ``type_descriptor``. typer is pinned below the next minor release
(pyproject.toml), and tests/cli/test_cli_fastparams.py fails when those names change (a
command would then import pydantic again: tests/cli/test_cli_lazy_imports.py).
"""

from __future__ import annotations

from typing import Any, Optional

import typer

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}
_NAMES = {int: "integer", float: "number", bool: "boolean"}


class PlainCoercion:
    """What typer's runtime parameter does for one simple annotation."""

    def __init__(self, item_type: type, is_list: bool, info: Any) -> None:
        self.item_type = item_type
        self.is_list = is_list
        self.min: Optional[float] = getattr(info, "min", None)
        self.max: Optional[float] = getattr(info, "max", None)
        self.clamp = bool(getattr(info, "clamp", False))

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """The converted value (``typer.BadParameter`` when it does not convert)."""
        multi = bool(getattr(param, "multiple", False)) or getattr(param, "nargs", 1) == -1
        if value is None:
            return () if multi else None
        if multi or self.is_list:
            if isinstance(value, str):
                raise typer.BadParameter("Value must be an iterable.", ctx=ctx, param=param)
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.item_type
        if kind is str:
            return value if isinstance(value, str) else str(value)
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise typer.BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a valid {_NAMES[kind]}.", ctx=ctx, param=param) from None
        if kind is float and number != number:  # NaN passes every comparison below
            raise typer.BadParameter(f"{value!r} is not a valid number.", ctx=ctx, param=param)
        return self._bounded(number, param, ctx)

    def _bounded(self, number: Any, param: Any, ctx: Any) -> Any:
        low, high = self.min, self.max
        if low is not None and number < low:
            if self.clamp:
                return type(number)(low)
            raise typer.BadParameter(f"{number} is smaller than the minimum {low}.", ctx=ctx, param=param)
        if high is not None and number > high:
            if self.clamp:
                return type(number)(high)
            raise typer.BadParameter(f"{number} is larger than the maximum {high}.", ctx=ctx, param=param)
        return number


def _plain(annotation: Any) -> Optional[tuple[type, bool]]:
    if annotation in (str, int, float, bool):
        return annotation, False
    if getattr(annotation, "__origin__", None) is list:
        args: tuple[Any, ...] = getattr(annotation, "__args__", ())
        if len(args) == 1 and args[0] in (str, int, float):
            return args[0], True
    return None


def _patch(param: Any) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(descriptor, "file_annotation", None) is not None:
        return
    if not hasattr(param, "_runtime_param") or getattr(descriptor, "is_choice", False):
        return
    plain = _plain(descriptor.annotation)
    if plain is not None:
        param._runtime_param = PlainCoercion(plain[0], plain[1], descriptor.parameter_info)


def install_plain_coercion(command: Any) -> Any:
    """Give every simple parameter of ``command`` (and its sub-commands) a plain converter."""
    for param in getattr(command, "params", []):
        _patch(param)
    original = getattr(command, "get_help_option", None)
    if original is not None:
        # The --help option is made afresh for each invocation, so patch it as it is made.
        def get_help_option(ctx: Any, _original: Any = original) -> Any:
            option = _original(ctx)
            if option is not None:
                _patch(option)
            return option

        command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        install_plain_coercion(sub)
    return command


__all__ = ["PlainCoercion", "install_plain_coercion"]
