"""Prices of image and audio calls from the offer's catalogue rules (nano-USD, integers).

Invariants:

* Images: ``output_image`` per image, the rule picked by the request's ``size``/``quality`` (and any
  other ``when`` key the rules use). For the hold, a value the request leaves open (``auto``, absent)
  takes the dearest matching rule; the settlement uses what the provider reports it made, falling
  back to the same dearest rule. Token meters (``input_tokens``/``output_tokens``) are added when the
  offer has them and the provider reported tokens.
* Audio: ``input_characters`` per character, ``input_audio_seconds``/``output_audio_seconds`` per
  second (whole seconds, rounded up), ``input_tokens``/``output_tokens`` per token — all pro rata:
  ``ceil(quantity × price / unit_size)`` per line, so a 20-character speech is not billed a million.
* ``request`` meters are added once per call.
* A hold is an upper bound of the settlement for the same offer (settlement is capped at it by billing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from aistats_gateway.billing.pricing import Line, pick
from aistats_gateway.catalogue.schema import PriceRule

_OPEN = (None, "", "auto")


def pro_rata(rules: Iterable[PriceRule], meter: str, quantity: float,
             context: Mapping[str, Any] | None = None) -> Line | None:
    if quantity <= 0:
        return None
    rule = pick(list(rules), meter, context or {})
    if rule is None:
        return None
    nanos = -(-round(quantity * rule.price_nanos * 1000) // (rule.unit_size * 1000))
    return Line(meter, quantity, math.ceil(quantity), rule.price_nanos, nanos, rule)


def _image_rule(rules: list[PriceRule], context: Mapping[str, Any]) -> PriceRule | None:
    """The ``output_image`` rule for ``context``; open values match any rule, the dearest wins."""
    fixed = {k: v for k, v in context.items() if v not in _OPEN}
    best = pick(rules, "output_image", fixed)
    open_keys = {k for k, v in context.items() if v in _OPEN}
    candidates = [r for r in rules if r.meter == "output_image" and r.plan == "standard"
                  and all(k in open_keys or (k in fixed and str(fixed[k]).lower() == str(v).lower())
                          for k, v in r.when.items())]
    if candidates and (best is None or any(set(r.when) & open_keys for r in candidates)):
        return max(candidates, key=lambda r: r.price_nanos)
    return best


def image_lines(rules: Iterable[PriceRule], *, count: int, context: Mapping[str, Any],
                usage: Mapping[str, Any] | None = None) -> list[Line]:
    rules = list(rules)
    out: list[Line] = []
    rule = _image_rule(rules, context)
    if rule is not None and count > 0:
        out.append(Line("output_image", count, count, rule.price_nanos, count * rule.price_nanos, rule))
    for meter in ("input_tokens", "output_tokens"):
        n = int((usage or {}).get(meter) or 0)
        line = pro_rata(rules, meter, n, context)
        if line is not None:
            out.append(line)
    req = pro_rata(rules, "request", 1, context)
    return out + ([req] if req else [])


def audio_lines(rules: Iterable[PriceRule], quantities: Mapping[str, float],
                context: Mapping[str, Any] | None = None) -> list[Line]:
    """Lines for ``quantities`` per meter (``input_characters``, ``input_audio_seconds`` …)."""
    rules = list(rules)
    out = []
    for meter, qty in quantities.items():
        q = float(-(-qty // 1)) if meter.endswith("_seconds") else qty
        line = pro_rata(rules, meter, q, context)
        if line is not None:
            out.append(line)
    req = pro_rata(rules, "request", 1, context)
    return out + ([req] if req else [])


def total(lines: Iterable[Line]) -> int:
    return sum(line.nanos for line in lines)


def has_media_price(rules: Iterable[PriceRule], meters: Iterable[str]) -> bool:
    wanted = set(meters) | {"request"}
    return any(r.meter in wanted for r in rules)
