"""Filtering and rendering the catalogue for ``/v1/models``, ``/v1/videos/models`` and ``/v1/batches/models``.

Responses are rendered to JSON bytes once per (snapshot, normalised query) and cached in the
snapshot, so a repeated query costs a dictionary lookup. A query not in that cache is assembled
from parts made once per snapshot and kept in the entries' ``memo`` (everything but
``is_active_gateway``, which is evaluated at render time), so it costs little more than the
filtering and the JSON encoding. Those parts are shared between responses: never mutate them.

The operator's offers (``catalogue.service.operator_offers``: the providers file) are rendered after
each model's catalogue offers, with ``is_active_gateway`` false once their file is gone; the ``provider``
and endpoint filters match their ids and endpoints; cached responses are keyed by the offers' token, so
a changed file shows at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from aistats_gateway.catalogue.schema import ENDPOINTS, ORGANISATIONS
from aistats_gateway.catalogue.service import (
    ModelEntry,
    OperatorOffers,
    ProviderOffer,
    Snapshot,
    is_active,
    offer_params,
    offer_pricing,
    offer_supports,
    operator_offers,
)
from aistats_gateway.http.errors import bad_request

# Other spellings of gateway endpoint names accepted in filters.
ENDPOINT_ALIASES: dict[str, str] = {
    "video.generate": "video.generation", "video.generations": "video.generation", "videos": "video.generation",
    "/v1/videos": "video.generation", "batches": "batch", "/v1/batches": "batch",
    "chat/completions": "chat.completions", "/v1/chat/completions": "chat.completions",
    "audio/speech": "audio.speech", "audio/transcriptions": "audio.transcription",
    "audio.transcriptions": "audio.transcription", "images/generations": "images.generations",
    "/v1/embeddings": "embeddings", "/v1/moderations": "moderations",
}
_CACHE_LIMIT = 1024
_MATCHES_LIMIT = 256


def split_values(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated query values, trimmed, empties dropped, order kept."""
    out: list[str] = []
    for v in values or []:
        for part in v.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def endpoints_param(values: list[str] | None, param: str) -> frozenset[str]:
    out = set()
    for v in split_values(values):
        canonical = v if v in ENDPOINTS else ENDPOINT_ALIASES.get(v)
        if canonical is None:
            raise bad_request(f"Invalid value {v!r} for '{param}'; allowed: {', '.join(ENDPOINTS)}.", param)
        out.add(canonical)
    return frozenset(out)


def organisations_param(values: list[str] | None) -> frozenset[str]:
    out = set()
    for v in split_values(values):
        if v not in ORGANISATIONS:
            raise bad_request(f"Invalid value {v!r} for 'organisation'; allowed: {', '.join(ORGANISATIONS)}.",
                              "organisation")
        out.add(v)
    return frozenset(out)


@dataclass(frozen=True)
class ModelQuery:
    providers: frozenset[str] = frozenset()
    organisations: frozenset[str] = frozenset()
    include_endpoints: frozenset[str] = frozenset()
    exclude_endpoints: frozenset[str] = frozenset()
    input_types: frozenset[str] = frozenset()
    output_types: frozenset[str] = frozenset()
    include_rumoured: bool = True
    include_deprecated: bool = True
    include_retired: bool = True
    include_data: bool = True
    include_gateway: bool = True
    limit: int = 50
    offset: int = 0


def _matches(e: ModelEntry, q: ModelQuery, ops: OperatorOffers | None = None) -> bool:
    status = e.spec.status
    if (status == "rumoured" and not q.include_rumoured) or (status == "deprecated" and not q.include_deprecated) \
            or (status == "retired" and not q.include_retired):
        return False
    if q.providers and not (e.provider_ids & q.providers) and not any(
            o.provider_id in q.providers for o in _extra(e, ops)):
        return False
    if q.organisations and e.spec.organisation not in q.organisations:
        return False
    endpoint_set = e.endpoint_set
    if ops is not None and (q.include_endpoints or q.exclude_endpoints):
        endpoint_set = endpoint_set | {ep for o in _extra(e, ops) for ep in o.spec.endpoints}
    if q.include_endpoints and not (endpoint_set & q.include_endpoints):
        return False
    if q.exclude_endpoints and (endpoint_set & q.exclude_endpoints):
        return False
    if q.input_types and not (e.input_set & q.input_types):
        return False
    if q.output_types and not (e.output_set & q.output_types):
        return False
    return True


def _extra(e: ModelEntry, ops: OperatorOffers | None) -> list[ProviderOffer]:
    """The operator's offers of this model (none without a providers file)."""
    return list(ops.offers.get(e.spec.model_id, ())) if ops is not None else []


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class _Activity:
    """``is_active_gateway`` of offers at one instant, for one rendering: the routability check
    (adapter registry and credentials) is made once per (provider, builtin, endpoint)."""

    __slots__ = ("_routable", "now")

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)
        self._routable: dict[tuple[str, bool, str], bool] = {}

    def __call__(self, o: ProviderOffer, endpoint: str) -> bool:
        f, t = o.spec.effective_from, o.spec.effective_to
        if (f and f > self.now) or (t and t <= self.now):
            return False
        key = (o.provider_id, o.builtin, endpoint)
        routable = self._routable.get(key)
        if routable is None:
            routable = self._routable[key] = is_active(o, endpoint)
        return routable


def _model_head(e: ModelEntry) -> dict[str, Any]:
    head: dict[str, Any] | None = e.memo.get("model")
    if head is None:
        m = e.spec
        head = e.memo["model"] = {
            "model_id": m.model_id,
            "name": m.name,
            "release_date": m.release_date.isoformat() if m.release_date else None,
            "announcement_date": m.announcement_date.isoformat() if m.announcement_date else None,
            "status": m.status,
            "organisation": m.organisation,
            "aliases": list(m.aliases),
        }
    return head


def _row_parts(o: ProviderOffer, ep: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A /v1/models provider row without ``is_active_gateway``: the keys before it and after it."""
    key = ("row", ep)
    parts: tuple[dict[str, Any], dict[str, Any]] | None = o.memo.get(key)
    if parts is None:
        params = offer_params(o, ep)
        parts = o.memo[key] = (
            {
                "api_provider_id": o.provider_id,
                "api_provider_name": o.name,
                "link": o.link,
                "country_code": o.country_code,
                "endpoint": ep,
                "provider_model_slug": o.spec.provider_model_slug,
            },
            {
                "input_modalities": list(o.spec.input_modalities),
                "output_modalities": list(o.spec.output_modalities),
                "effective_from": _iso(o.spec.effective_from),
                "effective_to": _iso(o.spec.effective_to),
                "alpha": o.spec.alpha,
                "supported_parameters": params.names,
                "supported_parameters_detail": params.detail,
                "pricing": offer_pricing(o),
            },
        )
    return parts


def _render_model(e: ModelEntry, q: ModelQuery, active: _Activity,
                  ops: OperatorOffers | None = None) -> dict[str, Any]:
    out = dict(_model_head(e))
    if q.include_gateway:
        extra = _extra(e, ops)
        endpoints = list(e.endpoints)
        endpoints += [ep for ep in dict.fromkeys(ep for o in extra for ep in o.spec.endpoints) if ep not in endpoints]
        out["endpoints"] = endpoints
        rows = []
        for o in e.offers:
            for ep in o.spec.endpoints:
                head, tail = _row_parts(o, ep)
                rows.append({**head, "is_active_gateway": active(o, ep), **tail})
        for o in extra:
            for ep in o.spec.endpoints:
                head, tail = _row_parts(o, ep)
                on = ops is not None and ops.active and active(o, ep)
                rows.append({**head, "is_active_gateway": on, **tail})
        out["providers"] = rows
    if q.include_data:
        out["input_types"] = e.spec.input_types
        out["output_types"] = e.spec.output_types
    return out


def list_models(snap: Snapshot, q: ModelQuery) -> bytes:
    ops = operator_offers()
    key = ("models", q, ops.token if ops is not None else None)
    cached = snap.cache.get(key)
    if cached is not None:
        return cached
    matches = _matching(snap, q, ops)
    active = _Activity()
    entries = matches[q.offset:q.offset + q.limit]
    page = [_render_model(e, q, active, ops) for e in entries]
    # The seed's page, then the same page as an OpenAI model list (openai SDK, Open WebUI, LangChain …).
    body = orjson.dumps({"ok": True, "limit": q.limit, "offset": q.offset, "models": page, "total": len(matches),
                         "object": "list", "data": [openai_model(e) for e in entries]})
    _store(snap, key, body)
    return body


def openai_model(e: ModelEntry) -> dict[str, Any]:
    """``{id, object: "model", created, owned_by}``; ``created`` is the release (or announcement) date
    at 00:00 UTC in unix seconds, 0 when the catalogue has neither."""
    got: dict[str, Any] | None = e.memo.get("openai")
    if got is None:
        day = e.spec.release_date or e.spec.announcement_date
        created = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) if day else 0
        got = e.memo["openai"] = {"id": e.spec.model_id, "object": "model", "created": created,
                                  "owned_by": e.spec.organisation}
    return got


def get_model(snap: Snapshot, model_id: str) -> bytes | None:
    """One model by id or alias: the OpenAI model object followed by its full catalogue entry."""
    e = snap.resolve(model_id)
    if e is None:
        return None
    return orjson.dumps({**openai_model(e), **_render_model(e, ModelQuery(), _Activity(), operator_offers())})


def _matching(snap: Snapshot, q: ModelQuery, ops: OperatorOffers | None = None) -> list[ModelEntry]:
    """The models matching the query's filters (paging and rendering options aside), kept per
    snapshot (and operator offers) so that paging through one filter filters once."""
    if not (q.providers or q.organisations or q.include_endpoints or q.exclude_endpoints or q.input_types
            or q.output_types) and q.include_rumoured and q.include_deprecated and q.include_retired:
        return snap.models
    key = ("matches", q.providers, q.organisations, q.include_endpoints, q.exclude_endpoints, q.input_types,
           q.output_types, q.include_rumoured, q.include_deprecated, q.include_retired,
           ops.token if ops is not None and (q.providers or q.include_endpoints or q.exclude_endpoints) else None)
    matches: list[ModelEntry] | None = snap.memo.get(key)
    if matches is None:
        if len(snap.memo) >= _MATCHES_LIMIT:
            for k in [k for k in snap.memo if isinstance(k, tuple) and k[:1] == ("matches",)]:
                del snap.memo[k]
        matches = snap.memo[key] = [e for e in snap.models if _matches(e, q, ops)]
    return matches


def _store(snap: Snapshot, key: Any, body: bytes) -> None:
    if len(snap.cache) >= _CACHE_LIMIT:
        aliases = snap.cache.get("__aliases__")
        snap.cache.clear()
        if aliases is not None:
            snap.cache["__aliases__"] = aliases
    snap.cache[key] = body


# ---- capability lists (videos/batches) ------------------------------------------------------


def _merge_detail(target: dict[str, Any], d: dict[str, Any], provider_id: str) -> None:
    if "values" in d:
        values = target.setdefault("values", [])
        for v in d["values"]:
            if v not in values:
                values.append(v)
    for key, pick in (("minimum", min), ("maximum", max)):
        if key in d:
            target[key] = pick(target[key], d[key]) if key in target else d[key]
    for key in ("type", "default", "description"):
        if key in d and key not in target:
            target[key] = d[key]
    if d.get("aliases"):
        aliases = target.setdefault("aliases", [])
        aliases.extend(a for a in d["aliases"] if a not in aliases)
    target["supported"] = target.get("supported", False) or d["supported"]
    target.setdefault("providers", [])
    if provider_id not in target["providers"]:
        target["providers"].append(provider_id)


_CapabilityParts = tuple[
    dict[str, Any], list[tuple[ProviderOffer, dict[str, Any], dict[str, Any]]], dict[str, Any]
]


def _capability_parts(e: ModelEntry, offers: list[ProviderOffer], endpoint: str) -> _CapabilityParts:
    """Everything of a capability entry but ``is_active_gateway``, per (endpoint, offer subset):
    the model's keys before ``providers``, each provider's keys before and after
    ``is_active_gateway``, and ``pricing``."""
    key = ("capability", endpoint, tuple(o.provider_id for o in offers))
    parts: _CapabilityParts | None = e.memo.get(key)
    if parts is not None:
        return parts
    names: list[str] = []
    merged: dict[str, dict[str, Any]] = {}
    providers = []
    for o in offers:
        params = offer_params(o, endpoint)
        for n in params.names:
            if n not in names:
                names.append(n)
        for n, d in params.detail.items():
            _merge_detail(merged.setdefault(n, {}), d, o.provider_id)
        providers.append((
            o,
            {"id": o.provider_id, "provider_model_slug": o.spec.provider_model_slug},
            {
                "alpha": o.spec.alpha,
                "supported_params": params.names,
                "supported_parameters": params.names,
                "supported_params_detail": params.detail,
                "supported_parameters_detail": params.detail,
                "pricing": offer_pricing(o),
            },
        ))
    detail = {n: {"supported": d.pop("supported"), **d} for n, d in merged.items()}
    head = {
        "model": e.spec.model_id,
        "name": e.spec.name,
        "status": e.spec.status,
        "input_types": e.spec.input_types,
        "output_types": e.spec.output_types,
        "supported_params": names,
        "supported_parameters": names,
        "supported_params_detail": detail,
        "supported_parameters_detail": detail,
    }
    pricing = {"currency": "usd", "providers": {o.provider_id: offer_pricing(o) for o in offers}}
    parts = e.memo[key] = (head, providers, pricing)
    return parts


def _render_capability(e: ModelEntry, offers: list[ProviderOffer], endpoint: str,
                       active: _Activity) -> dict[str, Any]:
    head, providers, pricing = _capability_parts(e, offers, endpoint)
    return {
        **head,
        "providers": [{**before, "is_active_gateway": active(o, endpoint), **after} for o, before, after in providers],
        "pricing": pricing,
    }


def capability_list(snap: Snapshot, endpoint: str, params: list[str]) -> bytes:
    key = ("capabilities", endpoint, tuple(params))
    cached = snap.cache.get(key)
    if cached is not None:
        return cached
    data = []
    active = _Activity()
    for e in snap.models:
        if e.spec.status != "active" or endpoint not in e.endpoint_set:
            continue
        offers = [o for o in e.offers if endpoint in o.spec.endpoints
                  and all(offer_supports(o, endpoint, p) for p in params)]
        if offers:
            data.append(_render_capability(e, offers, endpoint, active))
    body = orjson.dumps({"object": "list", "data": data})
    _store(snap, key, body)
    return body
