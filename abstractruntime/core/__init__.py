"""Core runtime primitives: models, workflow spec, runtime, policies, errors (standard library only)."""

from .errors import AbstractRuntimeError
from .models import Effect, EffectType, RunState, RunStatus, StepPlan, StepRecord, WaitReason, WaitState
from .runtime import EffectOutcome, Runtime
from .spec import WorkflowSource, WorkflowSpec

__all__ = [
    "AbstractRuntimeError",
    "Effect",
    "EffectOutcome",
    "EffectType",
    "RunState",
    "RunStatus",
    "Runtime",
    "StepPlan",
    "StepRecord",
    "WaitReason",
    "WaitState",
    "WorkflowSource",
    "WorkflowSpec",
]
