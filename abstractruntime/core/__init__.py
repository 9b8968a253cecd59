"""Core runtime primitives: models, workflow spec, runtime, policies, errors (standard library only).

Names load on first use: ``core.runtime`` depends on ``storage.base``, which depends on
``core.models``, so eager imports here would make the import order matter.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_EXPORTS = {
    "AbstractRuntimeError": "errors",
    "Effect": "models",
    "EffectType": "models",
    "RunState": "models",
    "RunStatus": "models",
    "StepPlan": "models",
    "StepRecord": "models",
    "WaitReason": "models",
    "WaitState": "models",
    "EffectOutcome": "runtime",
    "Runtime": "runtime",
    "WorkflowSource": "spec",
    "WorkflowSpec": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'abstractruntime.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
