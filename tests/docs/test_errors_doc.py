"""docs/errors.md lists every error class with its real code and the CLI's real exit code."""

from __future__ import annotations

import re
from pathlib import Path

from abstractruntime.cli.exit_codes import exit_code_for
from abstractruntime.core import errors
from abstractruntime.storage.store import StoreNotFoundError

DOC = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \|[^|]*\|[^|]*\| (\d) \|$", re.M)


def test_every_error_class_is_documented_with_its_code_and_exit() -> None:
    rows = {name: (code, int(exit_code)) for name, code, exit_code in ROW.findall(DOC)}
    # Every error class the library defines, exported or not, plus the store's own.
    classes = {name: cls for name, cls in vars(errors).items()
               if isinstance(cls, type) and issubclass(cls, errors.AbstractRuntimeError)}
    classes["StoreNotFoundError"] = StoreNotFoundError
    assert set(rows) == set(classes)
    for name, cls in classes.items():
        code, documented_exit = rows[name]
        assert cls.code == code, name
        instance = cls.__new__(cls)  # the code table keys on the class's code, not its message
        Exception.__init__(instance, "x")
        instance.code = cls.code
        assert exit_code_for(instance) == documented_exit, name
