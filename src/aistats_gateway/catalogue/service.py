"""Catalogue sync (file → database) and the in-memory snapshot every server process reads from.

Sync replaces the catalogue rows in one transaction and bumps ``catalogue_state.version``;
readers keep serving the previous snapshot until the commit, then each server process notices the
new version (checked at most every ``catalogue_refresh_seconds``) and swaps its snapshot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
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
    if s.bind.dialect.name == "postgresql":
        # Serialise concurrent syncs; the first sync ever creates the row, so also take a lock.
        await s.execute(select(_advisory_lock()))
        stmt = stmt.with_for_update()
    return (await s.execute(stmt)).scalar_one_or_none()


def _advisory_lock() -> Any:
    from sqlalchemy import func

    return func.pg_advisory_xact_lock(7_340_002)


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


@dataclass
class Snapshot:
    version: int
    models: list[ModelEntry]
    by_id: dict[str, ModelEntry]
    providers: dict[str, dict[str, Any]]
    organisations: dict[str, dict[str, Any]]
    # Rendered-response caches keyed by the normalised query; cleared with the snapshot.
    cache: dict[Any, bytes] = field(default_factory=dict)

    def resolve(self, model: str) -> ModelEntry | None:
        """A model by id or alias."""
        entry = self.by_id.get(model)
        if entry is not None:
            return entry
        return self.by_id.get(self._aliases().get(model, ""))

    def _aliases(self) -> dict[str, str]:
        cached = self.cache.get("__aliases__")
        if cached is None:
            cached = {a: m.spec.model_id for m in self.models for a in m.spec.aliases}
            self.cache["__aliases__"] = cached  # type: ignore[assignment]
        return cached  # type: ignore[return-value]


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
    async with sessions() as s:
        state = (await s.execute(select(CatalogueState.version).where(CatalogueState.id == 1))).scalar()
        orgs = (await s.execute(select(CatalogueOrganisation.doc))).scalars().all()
        provs = (await s.execute(select(CatalogueProvider.doc))).scalars().all()
        models = (await s.execute(select(CatalogueModel.doc).order_by(CatalogueModel.position))).scalars().all()
    cat = CatalogueFile.model_validate({"organisations": list(orgs), "providers": list(provs), "models": list(models)})
    return build_snapshot(int(state or 0), cat)


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


def offer_supports(offer: ProviderOffer, endpoint: str, name: str) -> bool:
    params = offer.spec.parameters.get(endpoint) or {}  # type: ignore[call-overload]
    if name in params:
        return params[name].supported
    return any(name in d.aliases and d.supported for d in params.values())


def is_active(offer: ProviderOffer, endpoint: str) -> bool:
    return registry.is_routable(offer.provider_id, endpoint, builtin=offer.builtin)


def price_rules(offer: ProviderOffer) -> list[dict[str, Any]]:
    return [
        {"meter": r.meter, "unit": r.unit, "unit_size": r.unit_size, "price": r.price,
         "price_nanos": r.price_nanos, "currency": "usd", "when": r.when, "plan": r.plan}
        for r in offer.spec.pricing
    ]
