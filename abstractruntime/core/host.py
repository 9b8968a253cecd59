"""What stepping a run and performing its effects ask of the runtime that runs them.

:class:`~.runtime.Runtime` is the one host; these Protocols name the part of it that
:mod:`.stepping`, :mod:`.effect_exec` and :mod:`.approvals` touch, so a reader sees what a step
can reach (no store but the ledger, no other run) and a type checker holds them to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

if TYPE_CHECKING:
    from .effect_exec import RegisteredHandler
    from .models import EffectType
    from .observe import InFlightLimits
    from .policy import EffectPolicy
    from .ports import LedgerStore
    from .redaction import Redactor
    from .session import RunSession


class EffectHost(Protocol):
    """What performing one effect reads: its handler, the retry policy, the clock, the ledger
    (a result to reuse), the redactor, and whoever observes or limits effects in flight."""

    @property
    def effect_policy(self) -> "EffectPolicy":
        """How many attempts, how long between them, and the idempotency key of an effect."""

    @property
    def missing_handler(self) -> str:
        """``"fail"`` or ``"wait"``: what an effect with no registered handler does."""

    @property
    def ledger_store(self) -> "LedgerStore":
        """Where a completed result with the same key is found again."""

    @property
    def redactor(self) -> "Redactor":
        """The rules an effect is redacted by before it is compared with the ledger's."""

    @property
    def observers(self) -> list[Any]:
        """Told when an attempt starts and ends (``core/observe.py``)."""

    @property
    def in_flight(self) -> Optional["InFlightLimits"]:
        """Per-key limits on effects in flight, or ``None``."""

    def now(self) -> datetime:
        """The clock: current time, aware UTC."""

    def handler_for(self, effect_type: "EffectType | str") -> Optional["RegisteredHandler"]:
        """The handler registered for ``effect_type`` (``None``: none is)."""

    def publisher_for(self, run_id: str, effect_id: int,
                      attempt: int) -> Optional[Callable[[Mapping[str, Any]], None]]:
        """What a handler's ``progress(data)`` calls for this attempt (``None``: nobody observes)."""


class StepHost(EffectHost, Protocol):
    """What advancing a run reads besides its effects: the ``ctx`` its nodes receive, and where
    its state is kept warm for the next tick.

    A code-first workflow's ``flow_steps`` is handed the host as it is: ``abstractruntime.flow``
    reads the runtime's stores and registry through it, so that host is the :class:`Runtime`.
    """

    @property
    def context(self) -> Any:
        """The ``ctx`` node handlers receive."""

    def keep_warm(self, session: "RunSession") -> None:
        """Keep the run's state for the host's next tick (after the tick's last write)."""


__all__ = ["EffectHost", "StepHost"]
