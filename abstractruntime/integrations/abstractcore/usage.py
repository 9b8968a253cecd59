"""What an LLM call spent: tokens from the response, latency, and cost from the operator's price table.

There are no built-in prices (they would go stale): cost is computed only from a price table
the operator gives, a small TOML or JSON file::

    currency = "USD"

    [models."openai/gpt-4o-mini"]          # "provider/model", or just the model name
    input_per_million = 0.15
    output_per_million = 0.60

The ``llm_call`` handler records ``ext.usage`` on each call's outcome —
``{"provider", "model", "input_tokens", "output_tokens", "latency_ms", "cost"?}`` — and the
table itself as ``ext.prices`` wherever the table in force changes (docs/llm.md).
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ...core.canonical import canonical_json, sha256_hex
from ...core.errors import InvalidInputError
from ...llm_config import routed_model

PRICES_ENV = "ABSTRACTRUNTIME_PRICES"
_RATES = ("input_per_million", "output_per_million")


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PriceTable:
    """Per-model prices per million tokens; :meth:`cost` of a call, :meth:`to_record` as recorded."""

    models: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    currency: str = "USD"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "price table") -> "PriceTable":
        """Check and normalise ``{"currency"?, "models": {name: {input_per_million, output_per_million}}}``."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{source}: expected an object with a 'models' table")
        unknown = sorted(set(data) - {"currency", "models"})
        if unknown:
            raise InvalidInputError(f"{source}: unknown field(s) {', '.join(unknown)} (expected currency, models)")
        currency = data.get("currency", "USD")
        if not isinstance(currency, str) or not currency.strip():
            raise InvalidInputError(f"{source}: currency must be text such as \"USD\"")
        models = data.get("models") or {}
        if not isinstance(models, Mapping):
            raise InvalidInputError(f"{source}: models must be a table of model names")
        checked: dict[str, dict[str, float]] = {}
        for name, entry in models.items():
            where = f"{source}: models.{name!r}"
            if not isinstance(entry, Mapping) or not entry:
                raise InvalidInputError(f"{where} must set input_per_million and output_per_million")
            extra = sorted(set(entry) - set(_RATES))
            if extra:
                raise InvalidInputError(f"{where}: unknown field(s) {', '.join(extra)}")
            checked[str(name)] = {rate: _rate(entry.get(rate, 0), f"{where}.{rate}") for rate in _RATES}
        return cls(models=checked, currency=currency.strip())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PriceTable":
        """Read a ``.toml`` or ``.json`` price table (:class:`InvalidInputError` naming the file)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"price table {file}: cannot read ({getattr(exc, 'strerror', None) or exc})") \
                from None
        if file.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise InvalidInputError(f"price table {file}: not valid JSON ({exc})") from None
        else:
            try:
                tomllib: Any = importlib.import_module("tomllib")  # Python 3.11+
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                raise InvalidInputError(f"price table {file}: TOML needs Python 3.11 or newer; use a .json "
                                        "table") from None
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise InvalidInputError(f"price table {file}: not valid TOML ({exc})") from None
        return cls.from_dict(data, source=f"price table {file}")

    def rates_for(self, provider: Optional[str], model: Optional[str]) -> Optional[Mapping[str, float]]:
        """The entry for ``provider/model``, else for ``model`` alone (``None``: not priced)."""
        if not model:
            return None
        for name in (routed_model(provider, model), model):
            entry = self.models.get(name)
            if entry is not None:
                return entry
        return None

    def cost(self, provider: Optional[str], model: Optional[str], input_tokens: int,
             output_tokens: int) -> Optional[float]:
        """The call's cost in :attr:`currency` (``None`` when the model has no price here)."""
        rates = self.rates_for(provider, model)
        if rates is None:
            return None
        value = (input_tokens * rates["input_per_million"] + output_tokens * rates["output_per_million"]) / 1e6
        return round(value, 10)

    def to_record(self) -> dict[str, Any]:
        """The table as recorded in ``ext.prices`` (with its sha256, so a change is easy to see)."""
        body = {"currency": self.currency, "models": {k: dict(v) for k, v in sorted(self.models.items())}}
        return {**body, "sha256": sha256_hex(canonical_json(body))}


def _tokens(usage: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return int(value)
    return 0


def usage_record(raw: Any, *, provider: Optional[str], model: Optional[str], latency_ms: float,
                 prices: Optional[PriceTable] = None) -> dict[str, Any]:
    """``ext.usage`` of one call from the response's ``usage`` (OpenAI or AbstractCore names)."""
    usage = raw if isinstance(raw, Mapping) else {}
    input_tokens = _tokens(usage, "input_tokens", "prompt_tokens")
    output_tokens = _tokens(usage, "output_tokens", "completion_tokens")
    record: dict[str, Any] = {"provider": provider, "model": model, "input_tokens": input_tokens,
                              "output_tokens": output_tokens, "latency_ms": round(max(latency_ms, 0.0), 1)}
    if not usage:
        record["reported"] = False  # the response carried no usage: the zeros are not the server's
    if prices is not None:
        cost = prices.cost(provider, model, input_tokens, output_tokens)
        if cost is not None:
            record["cost"] = cost
    return record


def prices_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[PriceTable]:
    """The table named by ``$ABSTRACTRUNTIME_PRICES`` (``None`` when unset)."""
    import os  # noqa: PLC0415

    path = (environ if environ is not None else os.environ).get(PRICES_ENV)
    return PriceTable.load(path) if path else None


__all__ = ["PRICES_ENV", "PriceTable", "prices_from_env", "usage_record"]
