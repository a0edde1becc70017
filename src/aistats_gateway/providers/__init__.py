"""Provider adapters. Importing this package registers every adapter with the registry."""

from aistats_gateway.providers import local, openai  # noqa: F401
