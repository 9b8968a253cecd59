"""The plain option converters reach every simple parameter through typer's private names."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import typer.core

from abstractruntime.cli.fastparams import PlainCoercion
from abstractruntime.cli.main import build_command


def _params(command: Any) -> Iterator[Any]:
    yield from getattr(command, "params", [])
    for sub in getattr(command, "commands", {}).values():
        yield from _params(sub)


def test_typer_keeps_the_private_names_the_converters_use() -> None:
    # If typer renames these, install_plain_coercion does nothing and every command imports
    # pydantic: update cli/fastparams.py and typer's pin in pyproject.toml together.
    parameter = typer.core._TyperParameter
    assert {"_runtime_param", "type_descriptor"} <= set(parameter.__annotations__)
    assert callable(getattr(parameter, "get_runtime_param", None))
    from typer._coercion import TypeDescriptor

    fields = {f.name for f in dataclasses.fields(TypeDescriptor)}
    assert {"annotation", "parameter_info", "file_annotation"} <= fields
    assert isinstance(getattr(TypeDescriptor, "is_choice", None), property)


def test_every_simple_parameter_gets_a_plain_converter() -> None:
    command = build_command()
    patched = 0
    for param in _params(command):
        descriptor = param.type_descriptor
        if descriptor.annotation in (str, int, float, bool) and not descriptor.is_choice:
            assert isinstance(param.get_runtime_param(), PlainCoercion), param.name
            patched += 1
    assert patched > 50  # the whole command tree, not one command


@pytest.mark.parametrize(("raw", "expected"), [("7", 7), ("0", 0)])
def test_a_plain_converter_gives_typers_results(raw: str, expected: int) -> None:
    option = SimpleNamespace(name="n", multiple=False, nargs=1)
    info = typer.models.OptionInfo(min=0)
    assert PlainCoercion(int, False, info).coerce(raw, option, None) == expected
    with pytest.raises(typer.BadParameter, match="smaller than the minimum"):
        PlainCoercion(int, False, info).coerce("-1", option, None)


def test_command_modules_keep_evaluated_annotations() -> None:
    # typer evaluates string annotations (one eval per parameter, every start-up): the modules
    # that declare commands write them evaluated.
    import __future__
    import importlib
    from pathlib import Path

    import abstractruntime.cli as cli

    folder = Path(cli.__file__).parent
    names = sorted(p.stem for p in folder.glob("cmd_*.py")) + ["app"]
    assert len(names) > 10
    for name in names:
        module = importlib.import_module(f"abstractruntime.cli.{name}")
        assert getattr(module, "annotations", None) is not __future__.annotations, name
