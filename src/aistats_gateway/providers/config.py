"""Per-provider operator settings, read from the environment when a call is made.

``AISTATS_PROVIDER_<ID>_API_KEY``
    The provider's credential. A provider that needs one and has none is not routed to.
``AISTATS_PROVIDER_<ID>_BASE_URL``
    Another base URL for the provider's API (a proxy, a regional endpoint, a fake).
``AISTATS_PROVIDER_<ID>_POLL_INTERVAL``
    Seconds before the first status poll of a job; later polls back off (x1.5 each) up to
``AISTATS_PROVIDER_<ID>_MAX_POLL_INTERVAL``
    the longest wait between two polls.
``AISTATS_PROVIDER_<ID>_DEADLINE_SECONDS``
    How long a job may stay unfinished at the provider before it is marked ``expired``.

Timing values are numbers of seconds; one that is not (or is negative) is logged and ignored.

``<ID>`` is the provider id in upper case with ``-`` and ``.`` replaced by ``_`` (``google-vertex``
→ ``AISTATS_PROVIDER_GOOGLE_VERTEX_API_KEY``). Timing settings left unset use the adapter's defaults.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("aistats_gateway.providers")
_WARNED: set[tuple[str, str]] = set()

@functools.lru_cache(maxsize=1024)
def env_prefix(provider_id: str) -> str:
    return "AISTATS_PROVIDER_" + provider_id.upper().replace("-", "_").replace(".", "_") + "_"


@dataclass(frozen=True)
class ProviderConfig:
    provider_id: str
    api_key: str | None
    base_url: str | None

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key)


@dataclass(frozen=True)
class Timing:
    """When to poll a provider's job and when to give up on it."""

    poll_interval: float
    max_poll_interval: float
    deadline_seconds: float


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool) -> float:
    """A number of seconds from ``env[name]``; ``default`` when unset or invalid (logged once)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        if (name, raw) not in _WARNED:
            _WARNED.add((name, raw))
            log.warning("ignoring invalid provider setting %s=%r: expected a %s number of seconds", name, raw,
                        "non-negative" if allow_zero else "positive")
        return default
    return value


def load(provider_id: str, env: Mapping[str, str] | None = None) -> ProviderConfig:
    env = os.environ if env is None else env
    prefix = env_prefix(provider_id)
    return ProviderConfig(
        provider_id=provider_id,
        api_key=env.get(prefix + "API_KEY") or None,
        base_url=(env.get(prefix + "BASE_URL") or None),
    )


def timing(provider_id: str, adapter: Any, env: Mapping[str, str] | None = None) -> Timing:
    """The adapter's polling defaults with the operator's overrides applied."""
    env = os.environ if env is None else env
    prefix = env_prefix(provider_id)
    poll = _seconds(env, prefix + "POLL_INTERVAL", float(adapter.poll_interval), allow_zero=True)
    cap = _seconds(env, prefix + "MAX_POLL_INTERVAL", float(adapter.max_poll_interval), allow_zero=True)
    deadline = _seconds(env, prefix + "DEADLINE_SECONDS", float(adapter.deadline_seconds), allow_zero=False)
    return Timing(poll_interval=poll, max_poll_interval=max(cap, poll), deadline_seconds=deadline)
