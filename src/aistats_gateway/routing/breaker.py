"""Per-provider circuit breaker and observed health (latency, throughput), one per gateway process.

Invariants:

* A provider's circuit *opens* after ``threshold`` consecutive retryable failures
  (``providers.base.RETRYABLE_KINDS``). While open, ``allow`` is False and the fallback loop skips
  the provider (recorded as a ``skipped`` attempt with code ``circuit_open``).
* ``cooldown`` seconds after it opened the circuit is *half-open*: ``allow`` is True again. A success
  closes it (the failure count resets); a retryable failure opens it again for another cooldown.
* A non-retryable outcome (the provider answered, the request was at fault) resets the count too:
  the provider is reachable.
* Time comes from the injected ``clock`` (default ``time.monotonic``), so tests are deterministic.
* State is in memory, per process; ``/metrics`` shows it through :class:`BreakerCollector`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CircuitState = Literal["closed", "open", "half_open"]
_ALPHA = 0.3  # weight of the newest observation in the moving averages


@dataclass
class ProviderHealth:
    failures: int = 0  # consecutive retryable failures
    opened_at: float | None = None
    trips: int = 0
    successes: int = 0
    errors: int = 0
    skipped: int = 0
    latency: float | None = None  # EWMA seconds of successful calls
    throughput: float | None = None  # EWMA units per second, when the caller reports it


class CircuitBreaker:
    def __init__(self, threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1 or cooldown < 0:
            raise ValueError("threshold must be >= 1 and cooldown >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._health: dict[str, ProviderHealth] = {}

    def _get(self, provider_id: str) -> ProviderHealth:
        h = self._health.get(provider_id)
        if h is None:
            h = self._health[provider_id] = ProviderHealth()
        return h

    def state(self, provider_id: str) -> CircuitState:
        h = self._health.get(provider_id)
        if h is None or h.opened_at is None:
            return "closed"
        return "open" if self.clock() - h.opened_at < self.cooldown else "half_open"

    def allow(self, provider_id: str) -> bool:
        """False while the provider's circuit is open (skip it); True when closed or half-open."""
        return self.state(provider_id) != "open"

    def record_success(self, provider_id: str, seconds: float | None = None) -> None:
        h = self._get(provider_id)
        h.failures, h.opened_at = 0, None
        h.successes += 1
        if seconds is not None:
            h.latency = seconds if h.latency is None else (1 - _ALPHA) * h.latency + _ALPHA * seconds

    def record_failure(self, provider_id: str, *, retryable: bool) -> None:
        """A failed call. Only retryable failures count towards opening the circuit."""
        h = self._get(provider_id)
        h.errors += 1
        if not retryable:
            h.failures, h.opened_at = 0, None
            return
        h.failures += 1
        if h.failures >= self.threshold:
            if h.opened_at is None or self.state(provider_id) == "half_open":
                h.trips += 1
            h.opened_at = self.clock()

    def record_skip(self, provider_id: str) -> None:
        self._get(provider_id).skipped += 1

    def observe_throughput(self, provider_id: str, units_per_second: float) -> None:
        """Report a call's throughput (e.g. output tokens per second) for ``sort=throughput``."""
        h = self._get(provider_id)
        h.throughput = units_per_second if h.throughput is None else (
            (1 - _ALPHA) * h.throughput + _ALPHA * units_per_second)

    def latency(self, provider_id: str) -> float | None:
        h = self._health.get(provider_id)
        return h.latency if h else None

    def throughput(self, provider_id: str) -> float | None:
        h = self._health.get(provider_id)
        return h.throughput if h else None

    def health(self) -> dict[str, ProviderHealth]:
        return dict(self._health)


class BreakerCollector(Collector):
    """Exposes a breaker in a prometheus registry (``/metrics``)."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("aistats_provider_circuit_open",
                                  "1 while the provider's circuit is open (skipped by routing)", labels=["provider"])
        trips = CounterMetricFamily("aistats_provider_circuit_trips",
                                    "Times the provider's circuit opened", labels=["provider"])
        attempts = CounterMetricFamily("aistats_provider_attempts",
                                       "Provider calls by outcome (success, error, skipped)",
                                       labels=["provider", "outcome"])
        for pid, h in sorted(self.breaker.health().items()):
            state.add_metric([pid], 1.0 if self.breaker.state(pid) == "open" else 0.0)
            trips.add_metric([pid], float(h.trips))
            for outcome, n in (("success", h.successes), ("error", h.errors), ("skipped", h.skipped)):
                attempts.add_metric([pid, outcome], float(n))
        yield state
        yield trips
        yield attempts
