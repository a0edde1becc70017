"""Where the job engines' sources come from: each domain's ``jobs`` module exposes
``sources(state) -> list[Source]``, and the composition root names the domain modules once.

A new capability (batches, batch rows …) adds its module to that list; nothing here or in the
engines knows the domains.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from aistats_gateway.jobs.engine import Source


def collect(state: Any, modules: Iterable[str]) -> list[Source]:
    """Import each module and gather its sources, in order; source names must be unique."""
    out: list[Source] = []
    seen: set[str] = set()
    for name in modules:
        module = importlib.import_module(name)
        provide = getattr(module, "sources", None)
        if provide is None:
            raise TypeError(f"{name} has no sources(state) function")
        for source in provide(state):
            if source.name in seen:
                raise ValueError(f"two job sources are named {source.name!r}")
            seen.add(source.name)
            out.append(source)
    return out
