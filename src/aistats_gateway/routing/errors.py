"""Routing's domain errors. The HTTP layer (``http/errors.py``) answers them as 400s with ``param``/``code``."""

from __future__ import annotations


class RoutingError(Exception):
    """The request cannot be routed: an unknown model, a provider filter that leaves nothing, …"""

    def __init__(self, message: str, param: str | None, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
