"""Validation of image/audio request values against what each offer advertises in the catalogue.

Invariants:

* A value is checked against an offer's ``ParameterDetail`` for the endpoint (``values``, ``minimum``,
  ``maximum``, ``type``), looked up by name or alias. An offer that does not list the parameter at all
  does not restrict it (the adapter drops what its provider cannot take).
* :func:`filter_offers` keeps the offers that accept every given value, in order; when none does, the
  answer is a 400 naming the first parameter no offer accepts and the values the first offer allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aistats_gateway.catalogue.schema import ParameterDetail
from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.http.errors import APIError, bad_request


def detail(offer: ProviderOffer, endpoint: str, name: str) -> ParameterDetail | None:
    params: dict[str, ParameterDetail] = offer.spec.parameters.get(endpoint) or {}  # type: ignore[call-overload]
    if name in params:
        return params[name]
    return next((d for d in params.values() if name in d.aliases), None)


def _problem(d: ParameterDetail, value: Any) -> str | None:
    """Why ``value`` breaks ``d`` (the allowed values, for the message), or None when it is fine."""
    if not d.supported:
        return "not supported"
    values = value if isinstance(value, (list, tuple)) else [value]
    if d.values is not None:
        allowed = [str(v).lower() for v in d.values]
        for v in values:
            if str(v).lower() not in allowed:
                return "one of " + ", ".join(str(a) for a in d.values)
    if d.type in ("integer", "number") or d.minimum is not None or d.maximum is not None:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"a {d.type or 'number'}"
            if d.type == "integer" and not float(v).is_integer():
                return "an integer"
            if (d.minimum is not None and v < d.minimum) or (d.maximum is not None and v > d.maximum):
                lo = "" if d.minimum is None else f"{d.minimum:g}"
                hi = "" if d.maximum is None else f"{d.maximum:g}"
                return f"between {lo} and {hi}" if lo and hi else (f"at least {lo}" if lo else f"at most {hi}")
    return None


def filter_offers(offers: Sequence[ProviderOffer], endpoint: str, values: Mapping[str, Any],
                  label: str | None = None) -> list[ProviderOffer]:
    """The offers accepting every non-None value in ``values`` (see the module docstring)."""
    given = {k: v for k, v in values.items() if v is not None}
    keep: list[ProviderOffer] = []
    first_problem: tuple[str, str] | None = None
    for o in offers:
        ok = True
        for name, value in given.items():
            d = detail(o, endpoint, name)
            why = _problem(d, value) if d is not None else None
            if why is not None:
                ok = False
                if first_problem is None:
                    first_problem = (name, why)
                break
        if ok:
            keep.append(o)
    if not keep:
        if first_problem is None:
            raise APIError(400, "No provider can serve this request.", param="model", code="no_provider")
        name, why = first_problem
        model = f" for {label}" if label else ""
        raise bad_request(f"Invalid value for '{name}'{model}: {given[name]!r}; expected {why}.", name)
    return keep


def default(offer: ProviderOffer, endpoint: str, name: str) -> Any:
    d = detail(offer, endpoint, name)
    return d.default if d is not None else None
