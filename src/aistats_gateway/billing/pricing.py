"""Prices from the catalogue: pick the rule for a meter and a request, and price a quantity.

For each meter, the rules of the plan whose ``when`` conditions all match the request are
candidates; the one with the most conditions wins (a rule without ``when`` is the fallback).
Quantities are billed in whole blocks of ``unit_size``, rounded up. The engine is general: video
seconds, tokens, images, characters and requests are all meters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aistats_gateway.catalogue.schema import PriceRule


@dataclass(frozen=True)
class Line:
    meter: str
    quantity: float
    units: int
    unit_price_nanos: int
    nanos: int
    rule: PriceRule | None

    def as_dict(self) -> dict[str, Any]:
        return {"meter": self.meter, "quantity": self.quantity, "billable_units": self.units,
                "unit_size": self.rule.unit_size if self.rule else 1, "unit_price_nanos": self.unit_price_nanos,
                "nanos": self.nanos, "when": dict(self.rule.when) if self.rule else {}}


def _eq(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return bool(expected) == bool(actual) and actual is not None
    if isinstance(expected, (list, tuple)):
        return any(_eq(e, actual) for e in expected)
    return str(expected).lower() == str(actual).lower()


def pick(rules: Iterable[PriceRule], meter: str, context: Mapping[str, Any],
         plan: str = "standard") -> PriceRule | None:
    best: PriceRule | None = None
    for r in rules:
        if r.meter != meter or r.plan != plan:
            continue
        matches = all(k in context and _eq(v, context[k]) for k, v in r.when.items())
        if matches and (best is None or len(r.when) > len(best.when)):
            best = r
    return best


def price(rules: Iterable[PriceRule], meter: str, quantity: float, context: Mapping[str, Any],
          plan: str = "standard") -> Line:
    rule = pick(list(rules), meter, context, plan)
    if rule is None or quantity <= 0:
        return Line(meter, quantity, 0, rule.price_nanos if rule else 0, 0, rule)
    units = math.ceil(round(quantity / rule.unit_size, 9))
    return Line(meter, quantity, units, rule.price_nanos, units * rule.price_nanos, rule)


def video(rules: Iterable[PriceRule], *, seconds: float, count: int, resolution: str | None,
          audio: bool, size: str | None = None) -> Line:
    """Price ``count`` videos of ``seconds`` each (the ``output_video_seconds`` meter, else per video)."""
    rules = list(rules)
    context = {"resolution": resolution, "audio": audio, "size": size}
    line = price(rules, "output_video_seconds", seconds * count, context)
    if line.rule is None:
        line = price(rules, "output_video", count, context)
    return line


def has_price(rules: Iterable[PriceRule], meters: Iterable[str]) -> bool:
    wanted = set(meters)
    return any(r.meter in wanted for r in rules)
