"""Provider credentials and base URLs: ``AISTATS_PROVIDER_<ID>_API_KEY`` / ``_BASE_URL``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


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


def load(provider_id: str, env: Mapping[str, str] | None = None) -> ProviderConfig:
    env = os.environ if env is None else env
    prefix = env_prefix(provider_id)
    return ProviderConfig(
        provider_id=provider_id,
        api_key=env.get(prefix + "API_KEY") or None,
        base_url=(env.get(prefix + "BASE_URL") or None),
    )
