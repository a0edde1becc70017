"""Completion windows: the ones a batch may ask for are exactly the ones advertised.

Invariants:

* A window is ``<n>m``, ``<n>h`` or ``<n>d`` (``24h``), at least an hour and at most 30 days.
* Native mode: the windows the catalogue lists for the provider's batch offer
  (``parameters.batch.completion_window.values``), else ``24h``.
* Gateway mode (the gateway runs the rows itself): the gateway's own windows
  (``AISTATS_BATCHES_COMPLETION_WINDOWS``, default ``24h``) plus any the catalogue lists for an
  offer of the model. ``/v1/batches/models`` and ``/v1/batches/capabilities`` advertise the same
  lists (``advertised``), and create accepts exactly these, else 400 naming ``completion_window``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aistats_gateway.catalogue.service import offer_params

DEFAULT = ("24h",)
_RE = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}
MIN_SECONDS, MAX_SECONDS = 3600, 30 * 86400


def seconds(window: str) -> int | None:
    """The window's length, or None when it is not a window."""
    m = _RE.match(window or "")
    if m is None:
        return None
    n = int(m.group(1)) * _UNIT[m.group(2)]
    return n if MIN_SECONDS <= n <= MAX_SECONDS else None


def gateway_windows(settings: Any) -> tuple[str, ...]:
    raw = str(getattr(settings, "batches_completion_windows", "") or "")
    got = tuple(dict.fromkeys(w.strip() for w in raw.split(",") if w.strip() and seconds(w.strip())))
    return got or DEFAULT


def offer_windows(offer: Any) -> list[str]:
    """The windows the catalogue lists for ``offer``'s batch API (empty when none)."""
    detail = offer_params(offer, "batch").detail.get("completion_window") or {}
    return [str(v) for v in detail.get("values") or () if seconds(str(v))]


def _merge(*groups: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(w for g in groups for w in g))
    return sorted(out, key=lambda w: seconds(w) or 0)


def advertised(offer: Any, gateway: Iterable[str], *, native: bool = False) -> list[str]:
    """What one provider offer accepts: in native mode its catalogue windows (else 24h)."""
    own = offer_windows(offer)
    if native:
        return _merge(own or DEFAULT)
    return _merge(gateway, own)


def for_model(snap: Any, model: str, gateway: Iterable[str], native_provider: str | None = None) -> list[str]:
    """The windows a batch of ``model`` accepts (native: of ``native_provider``'s offer only)."""
    entry = snap.resolve(model)
    gateway = tuple(gateway)
    if entry is None:
        return _merge(gateway) if native_provider is None else list(DEFAULT)
    if native_provider is not None:
        offers = [o for o in entry.offers if o.provider_id == native_provider]
        return _merge(*(advertised(o, gateway, native=True) for o in offers)) if offers else list(DEFAULT)
    return _merge(gateway, *(offer_windows(o) for o in entry.offers))
