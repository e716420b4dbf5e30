"""What model tokens cost: the shipped price table, overridable per model by ``BACKLANE_PRICES``.

    shared/data/prices.json  (per model: input, cached_input, output in USD per 1M tokens; the Batch
        │                     discount; the date the figures were taken)
        └─ overlaid by the JSON file BACKLANE_PRICES names: {model: {input, cached_input, output}}

A model that is in neither is counted in tokens and marked "no price": its cost is never guessed.
A dated snapshot name (``gpt-4o-2024-08-06``) takes its model's price (``gpt-4o``): the provider
prices snapshots as their model. Costs are kept as integer nano-dollars, so sums in Redis are exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

#: the fields of one model's price, USD per 1M tokens
PRICE_FIELDS = ("input", "cached_input", "output")
#: ``-YYYY-MM-DD`` at the end of a model name: a dated snapshot of the model before it
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
NANO = 1_000_000_000


class PricesError(ValueError):
    """A price file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True)
class PriceTable:
    models: Mapping[str, Price] = field(default_factory=dict)
    #: the date the shipped figures were taken (``YYYY-MM-DD``)
    taken: str | None = None
    source: str | None = None
    #: the share the Batch API takes off (0.5: half price)
    batch_discount: float = 0.0
    #: models whose price came from BACKLANE_PRICES
    overridden: frozenset[str] = frozenset()

    def price(self, model: str) -> Price | None:
        """The model's price, or its snapshot's model's; None when neither is known."""
        found = self.models.get(model)
        if found is None and _SNAPSHOT.search(model):
            found = self.models.get(_SNAPSHOT.sub("", model))
        return found

    def cost_nusd(self, model: str, *, input_tokens: int, cached_tokens: int, output_tokens: int,
                  batch: bool = False) -> int | None:
        """What one call cost in nano-dollars (cached input tokens are part of the input tokens, priced
        at the cached rate); None when the model has no price."""
        price = self.price(model)
        if price is None:
            return None
        cached = min(cached_tokens, input_tokens)
        usd_per_m = ((input_tokens - cached) * price.input + cached * price.cached_input
                     + output_tokens * price.output)
        if batch:
            usd_per_m *= 1 - self.batch_discount
        return round(usd_per_m * 1000)  # USD per 1M tokens · tokens = µUSD; · 1000 = nUSD


def usd(nusd: int | None) -> float | None:
    """Nano-dollars as dollars (None stays None)."""
    return None if nusd is None else round(nusd / NANO, 9)


def _price(where: str, model: Any, raw: Any) -> Price:
    if not isinstance(model, str) or not model:
        raise PricesError(f"{where}: model names must be non-empty strings")
    if not isinstance(raw, dict):
        raise PricesError(f"{where}: {model}: expected an object with {', '.join(PRICE_FIELDS)}")
    if unknown := sorted(set(raw) - set(PRICE_FIELDS)):
        raise PricesError(f"{where}: {model}.{unknown[0]}: unknown field (expected {', '.join(PRICE_FIELDS)})")
    values = []
    for name in PRICE_FIELDS:
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
            raise PricesError(f"{where}: {model}.{name}: expected a non-negative number of USD per 1M tokens, "
                              f"got {value!r}")
        values.append(float(value))
    return Price(*values)


@cache
def shipped() -> PriceTable:
    """The table that ships with Backlane (``shared/data/prices.json``)."""
    raw = json.loads(resources.files("shared").joinpath("data", "prices.json").read_text())
    models = {model: _price("prices.json", model, value) for model, value in raw["models"].items()}
    return PriceTable(models=models, taken=raw["taken"], source=raw.get("source"),
                      batch_discount=float(raw["batch_discount"]))


def load(path: str | None) -> PriceTable:
    """The shipped table overlaid by the JSON file at ``path`` (``{model: {input, cached_input,
    output}}``); PricesError names the field that is wrong."""
    base = shipped()
    if not path:
        return base
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PricesError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PricesError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PricesError(f"{path}: expected an object of models, {{model: {{input, cached_input, output}}}}")
    overrides = {model: _price(path, model, value) for model, value in raw.items()}
    return PriceTable(models={**base.models, **overrides}, taken=base.taken, source=base.source,
                      batch_discount=base.batch_discount, overridden=frozenset(overrides))
