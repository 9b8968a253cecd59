"""Effect policies: how often an effect is attempted, how long to back off, its idempotency key.

The idempotency key identifies "this effect, at this node, in this run, with this payload".
A completed ledger record with the same key is reused instead of running the handler again,
which is what makes a crash-and-resume never execute a completed effect twice. To repeat the
*same* effect deliberately (a polling loop), put something that changes (a counter) in its payload.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import field
from .fastclass import dataclass
from typing import Optional, Protocol

from .models import Effect, EffectType, RunState


class EffectPolicy(Protocol):
    """Retry and idempotency rules for effects."""

    def max_attempts(self, effect: Effect) -> int:
        """How many times the effect may be attempted (1 = no retry)."""
        ...

    def backoff_seconds(self, *, effect: Effect, attempt: int) -> float:
        """Seconds to sleep after failed ``attempt`` (1-based) before the next one."""
        ...

    def idempotency_key(self, *, run: RunState, node_id: str, effect: Effect) -> str:
        """The key under which a completed result of this effect is reused."""
        ...


def compute_idempotency_key(*, run_id: str, node_id: str, effect: Effect) -> str:
    """Deterministic 32-hex key of (run, node, effect type, payload)."""
    key_data = {
        "run_id": run_id,
        "node_id": node_id,
        "effect_type": EffectType(effect.type).value,
        "effect_payload": effect.payload,
    }
    # Not core.canonical on purpose: keys are recorded in ledgers and matched on replay, so this
    # text must stay byte-identical to AbstractRuntime 0.0.1's (ASCII escapes, NaN allowed). The
    # key is a hash input, never stored as JSON: a payload that is not JSON still gets a key here
    # (default=str) and is refused, with its path, when its intent record is encoded.
    text = json.dumps(key_data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class DefaultEffectPolicy:
    """Configurable retries with exponential backoff; one attempt unless told otherwise.

    ``effect_max_attempts`` maps effect type values (``"llm_call"``) to attempt counts.
    """

    default_max_attempts: int = 1
    default_backoff_base: float = 1.0
    default_backoff_max: float = 60.0
    effect_max_attempts: Optional[dict[str, int]] = field(default=None)

    def __post_init__(self) -> None:
        if self.effect_max_attempts is None:
            self.effect_max_attempts = {}
        if self.default_max_attempts < 1:
            raise ValueError("default_max_attempts must be >= 1")

    def max_attempts(self, effect: Effect) -> int:
        """Attempts allowed for this effect's type."""
        overrides = self.effect_max_attempts or {}
        return max(1, int(overrides.get(EffectType(effect.type).value, self.default_max_attempts)))

    def backoff_seconds(self, *, effect: Effect, attempt: int) -> float:
        """``min(base * 2**(attempt-1), max)``."""
        delay = self.default_backoff_base * (2 ** (attempt - 1))
        return float(min(delay, self.default_backoff_max))

    def idempotency_key(self, *, run: RunState, node_id: str, effect: Effect) -> str:
        """See :func:`compute_idempotency_key`."""
        return compute_idempotency_key(run_id=run.run_id, node_id=node_id, effect=effect)


class RetryPolicy(DefaultEffectPolicy):
    """Retries LLM calls (3 attempts) and tool calls (2) by default; everything else once."""

    def __init__(
        self,
        *,
        llm_max_attempts: int = 3,
        tool_max_attempts: int = 2,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        super().__init__(
            default_max_attempts=1,
            default_backoff_base=backoff_base,
            default_backoff_max=backoff_max,
            effect_max_attempts={"llm_call": llm_max_attempts, "tool_calls": tool_max_attempts},
        )


class NoRetryPolicy(DefaultEffectPolicy):
    """Every effect is attempted exactly once."""

    def __init__(self) -> None:
        super().__init__(default_max_attempts=1)
