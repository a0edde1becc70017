"""Operator-defined OpenAI-compatible providers (Ollama, vLLM, llama.cpp server, LM Studio,
OpenRouter …) from the YAML file named by ``AISTATS_PROVIDERS_FILE``.

```yaml
providers:
  - id: ollama                          # lowercase slug; not a built-in provider id
    name: Ollama
    base_url: http://127.0.0.1:11434/v1 # the server's OpenAI-compatible root (…/chat/completions below it)
    api_key: ollama                     # optional; or api_key_env: NAME_OF_AN_ENV_VAR
    priority: 10                        # lower is tried first (built-in providers default to 100)
    models:
      - model: meta/llama-3.3-70b       # a catalogue model id (or alias)
        provider_model_slug: llama3.3   # the server's own model name
        endpoints: [chat.completions]   # default; embeddings also possible
        pricing: []                     # catalogue price rules; none = free
```

Invariants: the file is validated on load (every error names the entry, e.g.
``providers[0].models[1].model``); models must exist in the shipped catalogue; the providers are
registered with ``providers.registry`` as OpenAI-compatible adapters and their offers are added to
the model's candidates by :mod:`inference.route`. The file is read once per process (and again
when its modification time changes).

Never on the event loop: while serving, a changed file is read, parsed and validated in a worker
thread (one reload at a time per version of the file); calls keep the version being served until
the new one is ready, then the swap (and the registration of new providers) happens on the loop.
The shipped catalogue's model ids, which validation needs, are built once per process.

While serving (:func:`current`, :func:`offers_for`): a file that disappears makes its offers
unroutable (they stay listed by ``GET /v1/models`` with ``is_active_gateway: false``, and come back
when it does); a file edited into an invalid one is logged once and the last valid version keeps
being served. Only :func:`load` (at start) raises. ``GET /v1/models`` lists the offers through
``catalogue.service.set_operator_offers``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aistats_gateway.catalogue import service as catalogue
from aistats_gateway.catalogue.schema import ModelProvider, PriceRule
from aistats_gateway.providers import registry
from aistats_gateway.providers.openai_compat.chat import Family

log = logging.getLogger("aistats_gateway.inference")
ENV = "AISTATS_PROVIDERS_FILE"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FREE = [PriceRule(meter="request", unit="request", price="0")]


class ProvidersFileError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    model: str
    provider_model_slug: str
    endpoints: list[str] = Field(default_factory=lambda: ["chat.completions"])
    pricing: list[PriceRule] = Field(default_factory=list)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in ("chat.completions", "embeddings")]
        if bad or not v:
            raise ValueError("endpoints must be chat.completions and/or embeddings")
        return v


class ProviderEntry(_Strict):
    id: str
    name: str | None = None
    base_url: str
    api_key: str | None = None
    api_key_env: str | None = None
    priority: int = 50
    models: list[ModelEntry]

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _SLUG.match(v):
            raise ValueError("id must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        return v.rstrip("/")


class ProvidersFile(_Strict):
    providers: list[ProviderEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class OperatorOffer:
    provider: ProviderEntry
    offer: catalogue.ProviderOffer

    @property
    def api_key(self) -> str | None:
        if self.provider.api_key_env:
            return os.environ.get(self.provider.api_key_env) or self.provider.api_key
        return self.provider.api_key


@dataclass(frozen=True)
class Loaded:
    path: str
    mtime: float
    offers: dict[str, list[OperatorOffer]]  # model id → offers
    present: bool = True  # False: the file is gone since (its offers are not routed to)


_CACHE: Loaded | None = None
_BUILTIN_IDS: frozenset[str] | None = None


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def parse(text: str, source: str, model_ids: dict[str, str]) -> dict[str, list[OperatorOffer]]:
    """Validate a providers file; ``model_ids`` maps every catalogue model id and alias to its id."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ProvidersFileError(f"{source}: not valid YAML: {e}") from None
    try:
        doc = ProvidersFile.model_validate(data)
    except ValidationError as e:
        errs = [f"{_where(tuple(err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ProvidersFileError(f"{source}: " + "; ".join(errs)) from None
    out: dict[str, list[OperatorOffer]] = {}
    seen: set[str] = set()
    builtin = set(registry.registered())
    for i, p in enumerate(doc.providers):
        if p.id in seen:
            raise ProvidersFileError(f"{source}: providers[{i}].id: {p.id!r} is listed twice")
        if p.id in builtin and p.id not in _operator_ids():
            raise ProvidersFileError(f"{source}: providers[{i}].id: {p.id!r} is a built-in provider")
        seen.add(p.id)
        for j, m in enumerate(p.models):
            model_id = model_ids.get(m.model)
            if model_id is None:
                raise ProvidersFileError(f"{source}: providers[{i}].models[{j}].model: unknown catalogue model "
                                         f"{m.model!r}")
            spec = ModelProvider(provider=p.id, provider_model_slug=m.provider_model_slug,
                                 endpoints=m.endpoints, pricing=m.pricing or FREE)
            offer = catalogue.ProviderOffer(p.id, spec, p.name or p.id, None, None, False, p.priority)
            out.setdefault(model_id, []).append(OperatorOffer(p, offer))
    return out


_REGISTERED: set[str] = set()


def _operator_ids() -> set[str]:
    return _REGISTERED


def _register(offers: dict[str, list[OperatorOffer]]) -> None:
    from aistats_gateway.providers.inference_adapters import register_family

    for entries in offers.values():
        for o in entries:
            if o.provider.id in _REGISTERED:
                continue
            eps = {e for entry in o.provider.models for e in entry.endpoints}
            register_family(Family(o.provider.id, o.provider.base_url, developer_role=False,
                                   max_tokens_key="max_tokens"), embeddings="embeddings" in eps)
            for ep in ("chat.completions", *(["embeddings"] if "embeddings" in eps else [])):
                registry.register(o.provider.id, ep, registry.adapter_for(o.provider.id, ep), needs_credentials=False)
            _REGISTERED.add(o.provider.id)


@functools.cache
def _catalogue_ids() -> dict[str, str]:
    """Catalogue model ids and aliases → model id, of the shipped catalogue (fixed for a process)."""
    from aistats_gateway.catalogue.loader import build

    cat, _ = build(None)
    ids = {m.model_id: m.model_id for m in cat.models}
    for m in cat.models:
        for a in m.aliases:
            ids.setdefault(a, m.model_id)
    return ids


def load(path: str | None = None) -> dict[str, list[OperatorOffer]]:
    """The operator offers by model id (empty without a providers file); raises ProvidersFileError."""
    path = path or os.environ.get(ENV) or None
    if not path:
        return {}
    try:
        mtime = Path(path).stat().st_mtime
    except OSError as e:
        raise ProvidersFileError(f"{path}: cannot read the providers file: {e.strerror or e}") from None
    if _CACHE is not None and _CACHE.path == path and _CACHE.mtime == mtime:
        return _CACHE.offers
    offers = _read(path)
    _install(path, mtime, offers)
    return offers


def _read(path: str) -> dict[str, list[OperatorOffer]]:
    """Read, parse and validate the file (blocking: a worker thread's job while serving)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ProvidersFileError(f"{path}: cannot read the providers file: {e.strerror or e}") from None
    return parse(text, path, _catalogue_ids())


def _install(path: str, mtime: float, offers: dict[str, list[OperatorOffer]]) -> None:
    global _CACHE
    _register(offers)
    _CACHE = Loaded(path, mtime, offers)


_RELOADING: dict[tuple[str, float], asyncio.Task[None]] = {}


async def _reload(path: str, mtime: float) -> None:
    try:
        offers = await asyncio.to_thread(_read, path)
    except ProvidersFileError as e:
        last = _CACHE is not None and _CACHE.path == path
        _once(path, mtime, f"{e}; still serving the last valid version" if last else str(e))
        return
    except Exception:  # never let a reload task die silently
        log.exception("reloading the providers file %s failed", path)
        return
    finally:
        _RELOADING.pop((path, mtime), None)
    if os.environ.get(ENV) == path:  # a late older version is replaced again at the next call (mtime differs)
        _install(path, mtime, offers)


def _start_reload(path: str, mtime: float) -> bool:
    """Start reading this version of the file in a worker thread; False when no loop is running."""
    if (path, mtime) in _RELOADING or (path, mtime) in _LOGGED:
        return True  # already being read, or known to be invalid
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    _RELOADING[(path, mtime)] = loop.create_task(_reload(path, mtime))
    return True


_LOGGED: set[tuple[str, float | None]] = set()


def _once(path: str, mtime: float | None, message: str) -> None:
    if (path, mtime) not in _LOGGED:
        _LOGGED.add((path, mtime))
        log.warning("%s", message)


def current() -> Loaded | None:
    """The providers file as it is being served now (never raises): None without one."""
    path = os.environ.get(ENV) or None
    if not path:
        return None
    last = _CACHE if _CACHE is not None and _CACHE.path == path else None
    try:
        mtime = Path(path).stat().st_mtime
    except OSError as e:
        _once(path, None, f"{path}: the providers file is gone ({e.strerror or e}): its providers are not routed to")
        return replace(last, present=False) if last is not None else None
    if last is not None and last.mtime == mtime:
        return last
    if _start_reload(path, mtime):
        return last  # the version being served, until the worker thread has the new one
    try:
        load(path)
    except ProvidersFileError as e:
        _once(path, mtime, f"{e}; still serving the last valid version" if last else str(e))
        return last
    return _CACHE


def offers_for(model_id: str) -> list[OperatorOffer]:
    """The operator's offers of a model that can be routed to now."""
    got = current()
    return got.offers.get(model_id, []) if got is not None and got.present else []


def _listing() -> catalogue.OperatorOffers | None:
    got = current()
    if got is None or not got.offers:
        return None
    return catalogue.OperatorOffers((got.path, got.mtime, got.present),
                                    {m: [o.offer for o in entries] for m, entries in got.offers.items()},
                                    got.present)


catalogue.set_operator_offers(_listing)
