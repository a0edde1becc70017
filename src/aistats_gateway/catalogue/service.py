"""Catalogue sync (file → database) and the in-memory snapshot every server process reads from.

Sync replaces the catalogue rows in one transaction and bumps ``catalogue_state.version``;
readers keep serving the previous snapshot until the commit, then each server process notices the
new version (checked at most every ``catalogue_refresh_seconds``) and swaps its snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.catalogue import loader
from aistats_gateway.catalogue.schema import CatalogueFile, Model, ModelProvider, ParameterDetail
from aistats_gateway.catalogue.tables import (
    CatalogueModel,
    CatalogueOrganisation,
    CatalogueProvider,
    CatalogueState,
)
from aistats_gateway.db.base import utcnow
from aistats_gateway.providers import registry

SYNC_LOCK = 7_340_002  # PostgreSQL advisory lock id that serialises concurrent syncs

# ---- sync -----------------------------------------------------------------------------------


@dataclass
class SyncResult:
    version: int
    models: int
    providers: int
    organisations: int
    changed: bool
    source: str


async def sync(
    sessions: async_sessionmaker[AsyncSession],
    overlay: dict[str, Any] | None = None,
    overlay_source: str | None = None,
    *,
    keep_overlay: bool = True,
    only_if_changed: bool = False,
) -> SyncResult:
    """Load the shipped catalogue plus an overlay into the database.

    ``overlay`` given: it becomes the stored overlay. Not given and ``keep_overlay``: the overlay
    stored by an earlier sync is re-applied. ``only_if_changed`` skips the write when the effective
    catalogue is identical to what is stored (server start).
    """
    async with sessions() as s, s.begin():
        state = await _lock_state(s)
        if overlay is None and keep_overlay and state is not None:
            overlay, overlay_source = state.overlay, state.overlay_source
        cat, digest = loader.build(overlay, overlay_source or "overlay")
        if only_if_changed and state is not None and state.sha256 == digest:
            return SyncResult(state.version, len(cat.models), len(cat.providers), len(cat.organisations),
                              False, state.source)
        await s.execute(delete(CatalogueModel))
        await s.execute(delete(CatalogueProvider))
        await s.execute(delete(CatalogueOrganisation))
        s.add_all(CatalogueOrganisation(id=o.id, doc=o.model_dump(mode="json")) for o in cat.organisations)
        s.add_all(CatalogueProvider(id=p.id, doc=p.model_dump(mode="json")) for p in cat.providers)
        s.add_all(
            CatalogueModel(model_id=m.model_id, position=i, doc=m.model_dump(mode="json", exclude_defaults=False))
            for i, m in enumerate(cat.models)
        )
        source = str(loader.shipped_path()) + (f" + {overlay_source}" if overlay else "")
        if state is None:
            state = CatalogueState(id=1, version=1, source=source, sha256=digest, overlay=overlay,
                                   overlay_source=overlay_source if overlay else None)
            s.add(state)
        else:
            state.version += 1
            state.source = source
            state.sha256 = digest
            state.overlay = overlay
            state.overlay_source = overlay_source if overlay else None
            state.synced_at = utcnow()
        return SyncResult(state.version, len(cat.models), len(cat.providers), len(cat.organisations), True, source)


async def _lock_state(s: AsyncSession) -> CatalogueState | None:
    stmt = select(CatalogueState).where(CatalogueState.id == 1)
    if s.bind is not None and s.bind.dialect.name == "postgresql":
        # Serialise concurrent syncs; the first sync ever creates the row, so also take a lock.
        await s.execute(select(func.pg_advisory_xact_lock(SYNC_LOCK)))
        stmt = stmt.with_for_update()
    return (await s.execute(stmt)).scalar_one_or_none()


# ---- snapshot -------------------------------------------------------------------------------


@dataclass
class ProviderOffer:
    """One provider of one model, with what the gateway needs to filter and render it."""

    provider_id: str
    spec: ModelProvider
    name: str
    link: str | None
    country_code: str | None
    builtin: bool
    priority: int
    # Values derived from ``spec`` once per snapshot (offer_params, offer_pricing, rendered parts);
    # shared by every response rendered from them, so read-only once made.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ModelEntry:
    spec: Model
    position: int
    offers: list[ProviderOffer]
    endpoints: list[str]
    provider_ids: frozenset[str]
    endpoint_set: frozenset[str]
    input_set: frozenset[str]
    output_set: frozenset[str]
    # Rendered parts derived once per snapshot (see queries); read-only once made.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Snapshot:
    version: int
    models: list[ModelEntry]
    by_id: dict[str, ModelEntry]
    providers: dict[str, dict[str, Any]]
    organisations: dict[str, dict[str, Any]]
    # Rendered-response caches keyed by the normalised query; cleared with the snapshot.
    cache: dict[Any, bytes] = field(default_factory=dict)
    # Other values derived per query (e.g. the models matching a filter); bounded by its users.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def resolve(self, model: str) -> ModelEntry | None:
        """A model by id or alias."""
        entry = self.by_id.get(model)
        if entry is not None:
            return entry
        return self.by_id.get(self._aliases().get(model, ""))

    def _aliases(self) -> dict[str, str]:
        cached: dict[str, str] | None = self.memo.get("__aliases__")
        if cached is None:
            cached = {a: m.spec.model_id for m in self.models for a in m.spec.aliases}
            self.memo["__aliases__"] = cached
        return cached


def build_snapshot(version: int, cat: CatalogueFile) -> Snapshot:
    providers = {p.id: p.model_dump(mode="json") for p in cat.providers}
    organisations = {o.id: o.model_dump(mode="json") for o in cat.organisations}
    entries: list[ModelEntry] = []
    for pos, m in enumerate(cat.models):
        offers = []
        for mp in m.providers:
            pdoc = providers.get(mp.provider, {})
            offers.append(ProviderOffer(
                provider_id=mp.provider, spec=mp, name=pdoc.get("name", mp.provider), link=pdoc.get("link"),
                country_code=pdoc.get("country_code"), builtin=bool(pdoc.get("builtin")),
                priority=int(pdoc.get("priority", 100)),
            ))
        endpoints: list[str] = []
        for o in offers:
            for ep in o.spec.endpoints:
                if ep not in endpoints:
                    endpoints.append(ep)
        entries.append(ModelEntry(
            spec=m, position=pos, offers=offers, endpoints=endpoints,
            provider_ids=frozenset(o.provider_id for o in offers), endpoint_set=frozenset(endpoints),
            input_set=frozenset(m.input_types), output_set=frozenset(m.output_types),
        ))
    return Snapshot(version, entries, {e.spec.model_id: e for e in entries}, providers, organisations)


async def read_snapshot(sessions: async_sessionmaker[AsyncSession]) -> Snapshot:
    # The documents are read as JSON text and decoded, validated and indexed in a worker thread
    # (~0.5 s per 1,000 models), so this process keeps answering other requests meanwhile;
    # callers of CatalogueStore.get still wait for the new snapshot, as before.
    async with sessions() as s:
        state = (await s.execute(select(CatalogueState.version).where(CatalogueState.id == 1))).scalar()
        orgs = (await s.execute(select(cast(CatalogueOrganisation.doc, Text)))).scalars().all()
        provs = (await s.execute(select(cast(CatalogueProvider.doc, Text)))).scalars().all()
        models = (await s.execute(
            select(cast(CatalogueModel.doc, Text)).order_by(CatalogueModel.position))).scalars().all()
    return await asyncio.to_thread(_snapshot_from_rows, int(state or 0), list(orgs), list(provs), list(models))


def _snapshot_from_rows(version: int, orgs: list[str], provs: list[str], models: list[str]) -> Snapshot:
    # The cyclic GC is paused while the (acyclic) snapshot is built: otherwise the hundreds of
    # thousands of new objects trigger full collections that take most of the time and hold the
    # GIL for up to several hundred ms each, stalling the event loop (bench/bench_catalogue.py).
    enabled = gc.isenabled()
    gc.disable()
    try:
        cat = CatalogueFile.model_validate({
            "organisations": [json.loads(d) for d in orgs],
            "providers": [json.loads(d) for d in provs],
            "models": [json.loads(d) for d in models],
        })
        return build_snapshot(version, cat)
    finally:
        if enabled:
            gc.enable()


class CatalogueStore:
    """Holds the current snapshot for one process and refreshes it when the version changes."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], refresh_seconds: float = 1.0) -> None:
        self._sessions = sessions
        self._refresh = refresh_seconds
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Snapshot:
        snap = self._snapshot
        if snap is not None and time.monotonic() - self._checked < self._refresh:
            return snap
        async with self._lock:
            snap = self._snapshot
            if snap is not None and time.monotonic() - self._checked < self._refresh:
                return snap
            async with self._sessions() as s:
                version = (await s.execute(select(CatalogueState.version).where(CatalogueState.id == 1))).scalar()
            if snap is None or (version or 0) != snap.version:
                snap = await read_snapshot(self._sessions)
                self._snapshot = snap
            self._checked = time.monotonic()
            return snap

    def invalidate(self) -> None:
        self._checked = 0.0


# ---- parameter detail -----------------------------------------------------------------------


def detail_dict(d: ParameterDetail) -> dict[str, Any]:
    out: dict[str, Any] = {"supported": d.supported}
    for key in ("type", "values", "minimum", "maximum", "default"):
        value = getattr(d, key)
        if value is not None:
            out[key] = value
    if d.aliases:
        out["aliases"] = list(d.aliases)
    if d.description:
        out["description"] = d.description
    return out


@dataclass(frozen=True)
class OfferParams:
    """One offer's parameters for one endpoint, derived once per snapshot (read-only)."""

    names: list[str]  # the supported parameters, in catalogue order
    detail: dict[str, dict[str, Any]]  # detail_dict of every parameter, in catalogue order
    accepts: frozenset[str]  # the supported parameters and their aliases


def offer_params(offer: ProviderOffer, endpoint: str) -> OfferParams:
    key = ("params", endpoint)
    got: OfferParams | None = offer.memo.get(key)
    if got is None:
        params = offer.spec.parameters.get(endpoint) or {}  # type: ignore[call-overload]
        names = [n for n, d in params.items() if d.supported]
        accepts = set(names)
        for d in params.values():
            if d.supported:
                accepts.update(d.aliases)
        got = offer.memo[key] = OfferParams(names, {n: detail_dict(d) for n, d in params.items()},
                                            frozenset(accepts))
    return got


def offer_supports(offer: ProviderOffer, endpoint: str, name: str) -> bool:
    """True when the offer supports ``name`` (a parameter or an alias of one) for ``endpoint``.

    An alias never equals a parameter name of the same offer (schema validation), so a supported
    name or alias answers True and an unsupported parameter False.
    """
    return name in offer_params(offer, endpoint).accepts


def is_active(offer: ProviderOffer, endpoint: str) -> bool:
    return registry.is_routable(offer.provider_id, endpoint, builtin=offer.builtin)


# ---- offers from outside the catalogue (the operator's providers file) ----------------------


@dataclass(frozen=True)
class OperatorOffers:
    """Offers the operator adds to catalogue models at run time (``AISTATS_PROVIDERS_FILE``).

    ``token`` changes whenever ``offers`` or ``active`` do (rendered responses are cached under it);
    ``active`` is false when the file they came from is gone (they are listed, but not callable)."""

    token: Hashable
    offers: Mapping[str, Sequence[ProviderOffer]]  # model id → offers
    active: bool = True


_OPERATOR: Callable[[], OperatorOffers | None] | None = None


def set_operator_offers(source: Callable[[], OperatorOffers | None] | None) -> None:
    """Install the function that reports the operator's offers (``inference.providers_file`` does)."""
    global _OPERATOR
    _OPERATOR = source


def operator_offers() -> OperatorOffers | None:
    """The operator's offers now, or None when there are none (no providers file)."""
    return _OPERATOR() if _OPERATOR is not None else None


def price_rules(offer: ProviderOffer) -> list[dict[str, Any]]:
    return [
        {"meter": r.meter, "unit": r.unit, "unit_size": r.unit_size, "price": r.price,
         "price_nanos": r.price_nanos, "currency": "usd", "when": r.when, "plan": r.plan}
        for r in offer.spec.pricing
    ]


def offer_pricing(offer: ProviderOffer) -> list[dict[str, Any]]:
    """``price_rules(offer)`` made once per snapshot, for rendering (read-only)."""
    got: list[dict[str, Any]] | None = offer.memo.get("pricing")
    if got is None:
        got = offer.memo["pricing"] = price_rules(offer)
    return got
