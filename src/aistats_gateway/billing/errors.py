"""Billing's domain errors, raised by the services; ``http/domain.py`` turns them into 402 answers."""

from __future__ import annotations

from typing import Literal


class InsufficientCredits(Exception):
    """A hold of ``needed`` nano-USD does not fit in the workspace's ``available`` balance."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"needs {needed} nano-USD, {available} nano-USD available")
        self.needed = needed
        self.available = available

    @property
    def shortfall(self) -> int:
        return self.needed - self.available


class SpendLimitExceeded(Exception):
    """The key's daily or monthly spend limit would be exceeded by ``needed`` nano-USD more."""

    def __init__(self, period: Literal["daily", "monthly"], limit: int, used: int, needed: int) -> None:
        super().__init__(f"{period} spend limit {limit} nano-USD: {used} used, {needed} needed")
        self.period = period
        self.limit = limit
        self.used = used
        self.needed = needed
