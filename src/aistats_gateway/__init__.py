"""aistats-gateway: a self-hostable AI Stats Gateway."""

__version__ = "0.1.0"
